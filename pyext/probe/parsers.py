"""Tree decoders of the perturbed-masking probe (Wu et al., ACL 2020) and their baselines.

Conventions
-----------
* Dependency scores are ``scores[h, d]`` = score of the arc head ``h`` -> dependent ``d`` over
  nodes ``0..n``, node 0 the artificial root (the [CLS] position in the paper).  A tree is
  returned as ``heads`` of length ``n + 1`` with ``heads[0] = -1`` and ``heads[d]`` in ``0..n``.
  :func:`parse_dependency` and the chain baselines return CoNLL-U style heads instead: one
  entry per word (word ``i`` is 1-based position ``i``), 0 = root, comparable with
  :class:`kexue.probe.conllu.Sentence` ``.heads``.
* Impact matrices follow the issue's definition: ``M[i, j]`` = impact of word ``j`` on word ``i``
  (0-based ``W x W``), ``M[i, i] = 0``.
* Constituency trees are nested tuples of 0-based word indices: a leaf is an ``int``, a node a
  tuple of its children in order, e.g. ``((0, 1), (2, (3, 4)))``.

The protocol of the published code (github.com/LividWo/Perturbed-Masking, read at commit
f578592; facts only, no code taken)
-----------------------------------------------------------------------------------------
``dependency/get_matrix_for_dep_probe.py`` builds a token-level matrix over
``[CLS] subwords [SEP]``: ``F[i][j] = d(H_i(x\\{i}), H_i(x\\{i,j}))``.  Masking [CLS]/[SEP] is
a no-op there, so the [CLS] *column* is exactly 0, while the [CLS] *row* holds the impact of
each word on the [CLS] state.  ``dependency/dep_parsing.py`` merges subwords (columns: first
subword; rows: ``--subword`` avg/first/sum), drops [SEP] and keeps [CLS] as node 0, giving the
``(W+1) x (W+1)`` matrix ``A`` with ``A[i, j]`` = impact of ``j`` on ``i`` (our ``M`` bordered by
the [CLS] row/column).  Then:

* gold root (``--root gold``, the default of ``parsing.py``): with ``r`` the word whose gold
  head is 0, ``A[r, :] = 0; A[r, 0] = 1; A[0, 0] = 0``.  The root is *not* forced otherwise.
* Eisner (``dependency/eisner.py``, the LxMLS exercise): ``scores = softmax(A).T`` where the
  published ``softmax`` is ``exp(x - max(x)) / exp(x - max(x)).sum(axis=1)``: numpy broadcasting
  divides *column* ``j`` by the sum of *row* ``j``, so after the transpose
  ``scores[h, d] = exp(A[d, h]) / sum_k exp(A[h, k])`` (a per-head normaliser, not the per-row
  softmax the comment announces).  The DP maximises the *sum* of these scores, lets the root
  take several children, breaks ties by the smallest split point (``np.argmax``) and returns
  ``heads[0] = -1``.
* Chu-Liu-Edmonds (``dependency/standfordMST.py``, Dozat's ``chuliu_edmonds``, not its
  ``_one_root`` variant) runs on ``A`` itself (``A[d, h]`` scores the arc ``h -> d``) after
  ``A[0] = 0`` and the gold-root edit; the contraction multiplies scores, i.e. it maximises
  ``prod A[d, h_d]`` = ``sum log A[d, h_d]``.  The [CLS] column is 0, so without the gold root
  every tree has product 0 and the published result is an artefact of tie-breaking.
* ``right_chain``: word ``i`` -> ``i + 1``, the gold root -> 0, so the last word gets the
  non-existent head ``W + 1`` (always counted wrong unless it is the root).
* Constituency (``constituency/con_parsing.py``, ``constituency/decoder.py``): the [CLS] row and
  column are dropped, ``D = 1 - softmax(M, dim=0)`` (column-normalised, here a correct softmax)
  with a zero diagonal, and MART splits top-down at the ``k`` minimising
  ``sum(D[:k,:k])/(2k) + sum(D[k+1:,k+1:])/(2(n-k)) - (sum(D[:k,k+1:]) + sum(D[k+1:,:k]))/(k(n-k))``
  (first minimum, ``k = 1..n-1``); word ``k`` is left out of the right and between blocks and
  becomes the left sister of the right remainder: ``[mart(:k), [k, mart(k+1:)]]``.  (On clean
  block matrices this cuts one word early; :func:`mart` also offers the contiguous split.)
  ``right_branching`` / ``left_branching`` are ``[w0, [w1, ...]]`` / ``[[..., w_{n-2}], w_{n-1}]``.

Checked against the published decoders run out of tree (not part of this package):
``eisner(..., single_root=False)`` returned the published Eisner's heads on 300 random matrices
(n = 1..24, half with integer scores full of ties), and ``parse_dependency(decoder="cle",
root=r, cls_impact=...)`` the published Chu-Liu-Edmonds' heads on 200 random impact matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .. import _ext  # noqa: F401  (loads the schema and the CPU kernel of kexue::eisner)
from .._validate import as_int, meta_check, meta_dtype, meta_shape

Tree = int | tuple  # a leaf (word index) or a tuple of subtrees

__all__ = [
    "Tree",
    "chu_liu_edmonds",
    "eisner",
    "eisner_reference",
    "gold_root",
    "left_branching",
    "left_chain",
    "mart",
    "mart_distance",
    "parse_dependency",
    "right_branching",
    "right_chain",
    "tree_brackets",
    "tree_spans",
    "tree_words",
]


# --------------------------------------------------------------------------------------------
# Eisner
# --------------------------------------------------------------------------------------------
def _check_scores(scores, lengths, name: str = "eisner") -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validates scores / lengths; returns batched (B, n+1, n+1) scores, (B,) int64 lengths, batched?"""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"kexue.probe.{name}: scores must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"kexue.probe.{name}: scores must be a floating tensor, got {scores.dtype}")
    if scores.dim() not in (2, 3):
        raise ValueError(f"kexue.probe.{name}: scores must have shape (n+1, n+1) or (B, n+1, n+1), "
                         f"got {tuple(scores.shape)}")
    if scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f"kexue.probe.{name}: scores must be square, got shape {tuple(scores.shape)}")
    if scores.shape[-1] < 1:
        raise ValueError(f"kexue.probe.{name}: scores is empty: it needs at least the root node (n+1 >= 1)")
    batched = scores.dim() == 3
    s3 = scores if batched else scores.unsqueeze(0)
    B, n1 = s3.shape[0], s3.shape[-1]
    if lengths is None:
        lens = torch.full((B,), n1 - 1, dtype=torch.int64)
    else:
        lens = torch.as_tensor(lengths)
        if lens.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"kexue.probe.{name}: lengths must be an integer tensor, got {lens.dtype}")
        lens = lens.to(device="cpu", dtype=torch.int64).reshape(-1)
        if lens.numel() != B:
            raise ValueError(f"kexue.probe.{name}: lengths must have shape (B,) = ({B},), got {tuple(lens.shape)}")
        bad = (lens < 0) | (lens > n1 - 1)
        # (data-dependent: skipped while tracing; the C++ kernel checks again with the same message)
        if not torch.compiler.is_compiling() and bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"kexue.probe.{name}: lengths[{i}] = {int(lens[i])} is out of range: it must be in "
                             f"[0, {n1 - 1}] (the number of words; scores has n+1 = {n1} nodes)")
    return s3, lens, batched


def eisner_reference(scores: torch.Tensor, lengths: torch.Tensor | None = None, *,
                     single_root: bool = True) -> torch.Tensor:
    """Plain-PyTorch Eisner: the definition of :func:`eisner` (same output, same tie-breaking).

    DP over spans ``[a, b]`` of nodes ``0..n`` in float64 (``C`` complete, ``I`` incomplete;
    ``R``: head at the left end ``a``, ``L``: head at the right end ``b``)::

        I_R(a,b) = max_{a<=r<b}  C_R(a,r) + C_L(r+1,b) + s[a,b]     (arc a -> b)
        I_L(a,b) = max_{a<=r<b}  C_R(a,r) + C_L(r+1,b) + s[b,a]     (arc b -> a; -inf for a = 0)
        C_L(a,b) = max_{a<=r<b}  C_L(a,r) + I_L(r,b)
        C_R(a,b) = max_{a<r<=b}  I_R(a,r) + C_R(r,b)

    with ``C(a,a) = 0``; the best tree scores ``C_R(0,n)``.  ``single_root`` restricts
    ``I_R(0,b)`` to ``r = 0`` so the root takes exactly one child.  Each maximum takes the
    *smallest* maximising ``r`` (first ``argmax``; sums evaluated as ``(x + y) + s``), which the
    C++ kernel reproduces bit for bit.  Python loops over ``(a, b)``: for tests and small inputs.
    """
    s3, lens, batched = _check_scores(scores, lengths, "eisner_reference")
    s3 = s3.detach().to(device="cpu", dtype=torch.float64)
    if torch.isnan(s3).any() or torch.isposinf(s3).any():
        raise ValueError("kexue.probe.eisner_reference: scores must not be NaN or +inf (-inf forbids an arc)")
    B, n1 = s3.shape[0], s3.shape[-1]
    out = torch.full((B, n1), -1, dtype=torch.int64)
    ninf = float("-inf")
    for bi in range(B):
        n = int(lens[bi])
        if n == 0:
            continue
        s = s3[bi]
        CR = torch.zeros(n + 1, n + 1, dtype=torch.float64)  # [a, b]
        CL = torch.zeros(n + 1, n + 1, dtype=torch.float64)
        IR = torch.zeros(n + 1, n + 1, dtype=torch.float64)
        IL = torch.zeros(n + 1, n + 1, dtype=torch.float64)
        bIR = torch.zeros(n + 1, n + 1, dtype=torch.int64)
        bIL = torch.zeros_like(bIR)
        bCR = torch.zeros_like(bIR)
        bCL = torch.zeros_like(bIR)
        for k in range(1, n + 1):
            for a in range(0, n - k + 1):
                b = a + k
                base = CR[a, a:b] + CL[a + 1:b + 1, b]  # r = a..b-1
                vR = base + s[a, b]
                if single_root and a == 0:
                    vR = vR[:1]
                r = int(torch.argmax(vR))
                IR[a, b], bIR[a, b] = vR[r], a + r
                vL = base + s[b, a]
                r = int(torch.argmax(vL))
                IL[a, b], bIL[a, b] = (ninf if a == 0 else vL[r]), a + r
                v = CL[a, a:b] + IL[a:b, b]
                r = int(torch.argmax(v))
                CL[a, b], bCL[a, b] = v[r], a + r
                v = IR[a, a + 1:b + 1] + CR[a + 1:b + 1, b]
                r = int(torch.argmax(v))
                CR[a, b], bCR[a, b] = v[r], a + 1 + r
        heads = out[bi]
        stack = [(0, n, 1)]  # kind: 0 C_L, 1 C_R, 2 I_L, 3 I_R
        while stack:
            a, b, kind = stack.pop()
            if a == b:
                continue
            if kind == 0:
                r = int(bCL[a, b])
                stack += [(a, r, 0), (r, b, 2)]
            elif kind == 1:
                r = int(bCR[a, b])
                stack += [(a, r, 3), (r, b, 1)]
            elif kind == 2:
                heads[a] = b
                r = int(bIL[a, b])
                stack += [(a, r, 1), (r + 1, b, 0)]
            else:
                heads[b] = a
                r = int(bIR[a, b])
                stack += [(a, r, 1), (r + 1, b, 0)]
    _check_finite_tree(s3, out, "eisner_reference")
    out = out.to(scores.device)
    return out if batched else out[0]


@torch.library.register_fake("kexue::eisner")
def _eisner_fake(scores, lengths, single_root):
    op = "eisner"
    meta_check(scores.dim() == 3, op, f"scores must have shape (B, n+1, n+1), got {tuple(scores.shape)}")
    meta_check(scores.shape[1] == scores.shape[2], op,
               f"scores must be square in its last two dims, got {tuple(scores.shape)}")
    meta_check(scores.shape[1] >= 1, op, "scores must have at least the root node (n+1 >= 1)")
    meta_check(scores.is_floating_point(), op, f"scores must be a floating tensor, got {scores.dtype}")
    meta_shape(op, "lengths", lengths, (scores.shape[0],), f"(B,) = ({scores.shape[0]},)")
    meta_dtype(op, "lengths", lengths, (torch.int64,), "int64")
    return scores.new_empty((scores.shape[0], scores.shape[1]), dtype=torch.int64)


def eisner(scores: torch.Tensor, lengths: torch.Tensor | None = None, *, single_root: bool = True,
           backend: str = "auto") -> torch.Tensor:
    r"""Maximum-score projective dependency tree (Eisner's algorithm, O(n^3) per sentence).

    Finds :math:`\arg\max_{y} \sum_{d=1}^{n} s[y_d, d]` over the projective trees ``y`` on nodes
    ``0..n`` rooted at the artificial node 0 (no arc crosses another when node 0 is written
    left of the words).  ``single_root=True`` (the default, as UD trees) gives the root exactly
    one child; ``single_root=False`` lets it take several, as the paper's decoder does
    (:func:`parse_dependency` passes that).  Ties go to the smallest split point of each DP
    cell (see :func:`eisner_reference`, the definition); the ``"cpu"`` kernel computes in
    float64 and returns the same heads.  Not differentiable (integer output; the scores get no
    gradient).

    Args:
        scores: ``(n+1, n+1)`` or ``(B, n+1, n+1)`` floating tensor, ``scores[..., h, d]`` = score of
            the arc ``h -> d``; ``-inf`` forbids an arc, NaN and ``+inf`` are errors.  Row/column
            0 is the root; ``scores[..., :, 0]`` and the diagonal are ignored.
        lengths: ``(B,)`` integer number of words of each sentence (``<= n``) for padded batches;
            sentence ``b`` uses ``scores[b, :lengths[b]+1, :lengths[b]+1]``.  Default: all ``n``.
        single_root: exactly one child of the root.
        backend: ``"auto"``/``"cpu"`` (the C++ op ``kexue::eisner``; CUDA inputs are decoded on the
            CPU and the heads moved back) or ``"torch"`` (:func:`eisner_reference`).

    Returns:
        int64 ``heads`` of shape ``(n+1,)`` / ``(B, n+1)`` on scores' device: ``heads[..., 0] = -1``,
        ``heads[b, d]`` the head of word ``d``, and ``-1`` for ``d > lengths[b]``.

    Example:
        >>> import torch
        >>> from kexue.probe.parsers import eisner
        >>> s = torch.full((4, 4), -1.0)
        >>> s[0, 2] = s[2, 1] = s[2, 3] = 5.0      # root -> 2, 2 -> 1, 2 -> 3
        >>> eisner(s).tolist()
        [-1, 2, 0, 2]
    """
    if backend not in ("auto", "cpu", "torch"):
        raise ValueError(f"kexue.probe.eisner: backend must be 'auto', 'cpu' or 'torch', got {backend!r}")
    s3, lens, batched = _check_scores(scores, lengths)
    if backend == "torch":
        out = eisner_reference(s3, lens, single_root=single_root)
    else:
        out = torch.ops.kexue.eisner(s3.detach().cpu(), lens, bool(single_root)).to(scores.device)
        _check_finite_tree(s3, out, "eisner")
    return out if batched else out[0]


def _check_finite_tree(s3: torch.Tensor, heads: torch.Tensor, name: str) -> None:
    """Raises when a decoded tree uses a forbidden (-inf) arc: no tree exists under the constraints."""
    h = heads.detach().cpu()
    s = s3.detach().cpu()
    used = h[:, 1:] >= 0
    d = torch.arange(1, s.shape[-1]).expand_as(h[:, 1:])
    arc = s[torch.arange(s.shape[0])[:, None], h[:, 1:].clamp(min=0), d]  # scores[b, heads[b, d], d]
    bad = used & torch.isneginf(arc)
    if torch.compiler.is_compiling():  # (fullgraph: no data-dependent branch) the assert raises when run
        torch._assert_async(~bad.any(), f"kexue.probe.{name}: no projective tree with a finite score exists "
                                        "under these constraints (a word is reachable only through -inf arcs)")
        return
    if bool(bad.any()):
        b, w = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"kexue.probe.{name}: no projective tree with a finite score exists"
                         f"{f' in sentence {b}' if s.shape[0] > 1 else ''}: word {w + 1} can only be reached "
                         "through forbidden (-inf) arcs under these constraints")


# --------------------------------------------------------------------------------------------
# Chu-Liu-Edmonds
# --------------------------------------------------------------------------------------------
def _find_cycle(heads: np.ndarray) -> list[int] | None:
    """A cycle of the functional graph ``d -> heads[d]`` (nodes 1..n, heads[0] ignored), or None."""
    n1 = len(heads)
    state = np.zeros(n1, dtype=np.int8)  # 0 new, 1 on the current path, 2 done
    state[0] = 2
    for start in range(1, n1):
        path = []
        v = start
        while state[v] == 0:
            state[v] = 1
            path.append(v)
            v = int(heads[v])
        if state[v] == 1:  # closed a cycle on this path
            return path[path.index(v):]
        for u in path:
            state[u] = 2
    return None


def _cle(S: np.ndarray) -> np.ndarray:
    """Additive Chu-Liu-Edmonds on S[h, d] (float64, -inf = no arc); heads with heads[0] = -1."""
    n1 = S.shape[0]
    heads = np.full(n1, -1, dtype=np.int64)
    if n1 == 1:
        return heads
    sub = S[:, 1:]
    heads[1:] = np.argmax(sub, axis=0)  # first maximum: deterministic
    if not np.all(np.isfinite(sub[heads[1:], np.arange(n1 - 1)])):
        raise ValueError("kexue.probe.chu_liu_edmonds: no spanning arborescence with a finite score "
                         "(some node has no finite-score arc into it)")
    cycle = _find_cycle(heads)
    if cycle is None:
        return heads
    cyc = np.array(sorted(cycle))
    in_cyc = np.zeros(n1, dtype=bool)
    in_cyc[cyc] = True
    rest = np.flatnonzero(~in_cyc)  # contains 0; becomes nodes 0..m-1, the cycle node is m
    m = len(rest)
    T = np.full((m + 1, m + 1), -np.inf)
    T[:m, :m] = S[np.ix_(rest, rest)]
    # Into the cycle from h: best entry d, scored s[h, d] - s[head(d), d] (+ the cycle's constant).
    gain = S[np.ix_(rest, cyc)] - S[heads[cyc], cyc][None, :]
    enter = np.argmax(gain, axis=1)
    T[:m, m] = gain[np.arange(m), enter]
    # Out of the cycle to d: the best cycle node as head.
    out_scores = S[np.ix_(cyc, rest)]
    leave = np.argmax(out_scores, axis=0)
    T[m, :m] = out_scores[leave, np.arange(m)]
    T[:, 0] = -np.inf
    np.fill_diagonal(T, -np.inf)
    sub_heads = _cle(T)
    new = heads.copy()
    for i, v in enumerate(rest):
        if v == 0:
            continue
        h = sub_heads[i]
        new[v] = cyc[leave[i]] if h == m else rest[h]
    h_c = sub_heads[m]
    new[cyc[enter[h_c]]] = rest[h_c]
    return new


def chu_liu_edmonds(scores: torch.Tensor | np.ndarray, single_root: bool = True) -> torch.Tensor:
    r"""Maximum spanning arborescence rooted at node 0 (non-projective; Chu-Liu/Edmonds).

    Maximises :math:`\sum_{d=1}^{n} s[y_d, d]` over all trees ``y`` on nodes ``0..n`` rooted at 0:
    every node takes its best head; a cycle is contracted into one node whose incoming arc
    ``h -> C`` scores ``max_{d in C} s[h, d] - s[y_d, d]`` and outgoing arc ``C -> d`` scores
    ``max_{c in C} s[c, d]``; recurse and expand (O(n^2) numpy work per contraction, at most
    ``n`` contractions).  ``single_root=True``: when the unconstrained optimum has several root
    children, every word is tried as the only root child (its other root arcs set to ``-inf``)
    and the best tree kept (exact; ties go to the smaller word).  Ties otherwise follow
    ``argmax`` (first maximum), so the output is deterministic.  Additive scores: for the
    paper's multiplicative CLE pass ``log`` scores (see :func:`parse_dependency`).

    Args:
        scores: ``(n+1, n+1)`` float tensor/array, ``scores[h, d]`` = score of ``h -> d``, ``-inf``
            forbids an arc; the diagonal and column 0 are ignored.
        single_root: exactly one child of the root.

    Returns:
        int64 tensor ``heads`` ``(n+1,)``, ``heads[0] = -1``.  ``ValueError`` when no tree has a
        finite score.

    Example:
        >>> import torch
        >>> from kexue.probe.parsers import chu_liu_edmonds
        >>> s = torch.zeros(4, 4)
        >>> s[0, 1] = s[1, 3] = s[3, 2] = 5.0    # non-projective-friendly: 1 -> 3 -> 2
        >>> chu_liu_edmonds(s).tolist()
        [-1, 0, 3, 1]
    """
    arr = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"kexue.probe.chu_liu_edmonds: scores must be a square (n+1, n+1) matrix, "
                         f"got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError("kexue.probe.chu_liu_edmonds: scores is empty: it needs at least the root node")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"kexue.probe.chu_liu_edmonds: scores must be floating, got {arr.dtype}")
    S = arr.astype(np.float64, copy=True)
    if np.isnan(S).any() or np.isposinf(S).any():
        raise ValueError("kexue.probe.chu_liu_edmonds: scores must not be NaN or +inf (-inf forbids an arc)")
    S[:, 0] = -np.inf
    np.fill_diagonal(S, -np.inf)
    n1 = S.shape[0]
    heads = _cle(S)
    if single_root and n1 > 2 and int((heads[1:] == 0).sum()) > 1:
        best, best_score = None, -np.inf
        for r in range(1, n1):
            if not np.isfinite(S[0, r]):
                continue
            T = S.copy()
            T[0, :] = -np.inf
            T[0, r] = S[0, r]
            try:
                h = _cle(T)
            except ValueError:
                continue
            sc = float(T[h[1:], np.arange(1, n1)].sum())
            if sc > best_score:
                best, best_score = h, sc
        if best is None:
            raise ValueError("kexue.probe.chu_liu_edmonds: no single-rooted spanning arborescence with a "
                             "finite score")
        heads = best
    return torch.from_numpy(heads)


# --------------------------------------------------------------------------------------------
# Impact matrix -> dependency tree, as the paper
# --------------------------------------------------------------------------------------------
def gold_root(heads: Sequence[int]) -> int | None:
    """The 1-based position of the first word whose head is 0 (the paper's ``find_root``), or None.

    Example:
        >>> gold_root([2, 0, 2])
        2
    """
    for i, h in enumerate(heads):
        if int(h) == 0:
            return i + 1
    return None


def _as_matrix(matrix, name: str) -> np.ndarray:
    arr = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"kexue.probe.{name}: matrix must be a square (W, W) impact matrix, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"kexue.probe.{name}: matrix is empty (a sentence needs at least one word)")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"kexue.probe.{name}: matrix must be a real tensor, got {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"kexue.probe.{name}: matrix must be finite")
    return arr


_LOG_FLOAT64_MAX = float(np.log(np.finfo(np.float64).max))


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def parse_dependency(matrix: torch.Tensor | np.ndarray, decoder: str = "eisner", root: int | None = None, *,
                     transform: str = "paper", single_root: bool | None = None,
                     cls_impact: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    r"""Dependency tree of a ``W x W`` impact matrix, decoded as the paper does.

    1. Border ``M`` (``M[i, j]`` = impact of word ``j`` on word ``i``) into the ``(W+1) x (W+1)``
       matrix of the published code, node 0 = [CLS]: ``A[1:, 1:] = M``, ``A[:, 0] = 0``
       (masking [CLS] changes nothing, so that column is exactly 0 there), ``A[0, 1:] =
       cls_impact`` (impact of each word on the [CLS] state; zeros when not given, and it then
       differs from the paper only through the root arcs' normaliser below).
    2. Gold root ``r`` (1-based word position, CoNLL-U numbering; the paper's default
       ``--root gold``): ``A[r, :] = 0; A[r, 0] = 1`` (``A[0, 0] = 0``).  This favours, but does
       not force, ``0 -> r``; with ``single_root=True`` the tree is additionally forced to have
       ``r`` as the root's only child.
    3. Arc scores ``S[h, d]`` by ``transform``:

       * ``"paper"``, ``decoder="eisner"``: ``S[h, d] = exp(A[d, h]) / sum_k exp(A[h, k])`` (the
         published ``softmax(A).T``, whose numpy broadcasting normalises per *head*), summed
         by the DP;
       * ``"paper"``, ``decoder="cle"``: ``S[h, d] = log A[d, h]`` (the published Chu-Liu-Edmonds
         maximises the product of impacts; ``A`` must be ``>= 0``).  Its root arcs are all
         ``log 0`` without a gold root, a degenerate case in the published code; here they
         then all score 0 and one root child is required, so the root is the word whose best
         arborescence scores highest;
       * ``"softmax"``: ``S[h, d] = exp(A[d, h]) / sum_k exp(A[d, k])`` (per-dependent softmax over
         the candidate heads, what the published comment intends);
       * ``"raw"``: ``S[h, d] = A[d, h]``.
    4. Decode with ``decoder`` = ``"eisner"`` (projective, :func:`eisner`) or ``"cle"``
       (:func:`chu_liu_edmonds`).  ``single_root=None`` means the paper's behaviour: ``False``
       for Eisner (several root children allowed), ``True`` for CLE (forced by the gold-root
       edit there).

    Returns:
        int64 tensor ``(W,)``: the head of each word, 1-based, 0 = root (CoNLL-U convention).

    Example:
        >>> import torch
        >>> from kexue.probe.parsers import parse_dependency
        >>> M = torch.tensor([[0., 3, 0], [1, 0, 1], [0, 3, 0]])   # words 1 and 3 lean on word 2
        >>> parse_dependency(M, root=2).tolist()
        [2, 0, 2]
    """
    if decoder not in ("eisner", "cle"):
        raise ValueError(f"kexue.probe.parse_dependency: decoder must be 'eisner' or 'cle', got {decoder!r}")
    if transform not in ("paper", "softmax", "raw"):
        raise ValueError(f"kexue.probe.parse_dependency: transform must be 'paper', 'softmax' or 'raw', "
                         f"got {transform!r}")
    M = _as_matrix(matrix, "parse_dependency")
    W = M.shape[0]
    A = np.zeros((W + 1, W + 1))
    A[1:, 1:] = M
    if cls_impact is not None:
        c = (cls_impact.detach().cpu().numpy() if isinstance(cls_impact, torch.Tensor)
             else np.asarray(cls_impact)).astype(np.float64).reshape(-1)
        if c.shape != (W,):
            raise ValueError(f"kexue.probe.parse_dependency: cls_impact must have shape (W,) = ({W},), got {c.shape}")
        A[0, 1:] = c
    if root is not None:
        root = _int_argument(root, 1, W, f"kexue.probe.parse_dependency: root must be a 1-based word position in "
                                         f"[1, {W}] (or None)")
        A[root, :] = 0.0
        A[root, 0] = 1.0
        A[0, 0] = 0.0
    if single_root is None:
        single_root = decoder == "cle"
    if transform == "paper" and decoder == "eisner":
        lse = np.log(np.exp(A - A.max(axis=1, keepdims=True)).sum(axis=1)) + A.max(axis=1)  # per row h
        logS = A.T - lse[:, None]  # log S: A[d, h] can exceed every A[h, k], so S itself can overflow
        top = logS.max()
        if top > _LOG_FLOAT64_MAX - np.log(logS.size):  # rescale (argmax of Σ S is scale-free)
            logS = logS - top
        S = np.exp(logS)
    elif transform == "paper":
        if (A < 0).any():
            raise ValueError("kexue.probe.parse_dependency: transform='paper' with decoder='cle' takes log of the "
                             "impacts, which must be >= 0; use transform='raw' for signed matrices")
        with np.errstate(divide="ignore"):
            S = np.log(A.T)
        if root is None:
            S[0, 1:] = 0.0
            single_root = True
    elif transform == "softmax":
        S = _softmax_rows(A).T.copy()
    else:
        S = A.T.copy()
    if root is not None and single_root:
        S[0, :] = -np.inf
        S[0, root] = 0.0 if not np.isfinite(S[0, root]) else S[0, root]
        S[1:, root] = -np.inf
    if decoder == "eisner":
        heads = eisner(torch.from_numpy(S), single_root=single_root)
    else:
        heads = chu_liu_edmonds(S, single_root=single_root)
    return heads[1:].clone()


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------
def _int_argument(value, minimum: int, maximum: int | None, message: str) -> int:
    """as_int, with the caller's message (TypeError for a non-integer, ValueError out of range)."""
    try:
        return as_int("value", value, minimum=minimum, maximum=maximum)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{message}, got {value!r}") from None


def _check_n(n: int, name: str) -> int:
    """A positive number of words (int, numpy integer or 0-d integer tensor)."""
    return _int_argument(n, 1, None, f"kexue.probe.{name}: n must be a positive number of words")


def _check_root(root, n: int, name: str) -> int | None:
    if root is None:
        return None
    return _int_argument(root, 1, n, f"kexue.probe.{name}: root must be a 1-based word position in [1, {n}]")


def right_chain(n: int, root: int | None = None, *, paper_compat: bool = False) -> torch.Tensor:
    """Right-chain baseline: every word's head is the next word (CoNLL-U heads, ``(n,)``).

    Without ``root`` the last word is the root.  With a gold ``root`` (1-based) that word
    attaches to 0 and the last word (if it is not the root) to the root, which keeps a
    projective tree.  ``paper_compat=True`` reproduces the published baseline instead: the last
    word's head is ``n + 1`` (no word), so its arc always counts as wrong.

    Example:
        >>> right_chain(4).tolist(), right_chain(4, root=2).tolist()
        ([2, 3, 4, 0], [2, 0, 4, 2])
    """
    n = _check_n(n, "right_chain")
    root = _check_root(root, n, "right_chain")
    heads = torch.arange(2, n + 2, dtype=torch.int64)
    if root is None:
        if not paper_compat:
            heads[-1] = 0
        return heads
    if not paper_compat and root != n:
        heads[-1] = root
    heads[root - 1] = 0
    return heads


def left_chain(n: int, root: int | None = None) -> torch.Tensor:
    """Left-chain baseline: every word's head is the previous word; the first is the root.

    With a gold ``root`` that word attaches to 0 and the first word (if it is not the root)
    to the root.

    Example:
        >>> left_chain(4).tolist(), left_chain(4, root=3).tolist()
        ([0, 1, 2, 3], [3, 1, 0, 3])
    """
    n = _check_n(n, "left_chain")
    root = _check_root(root, n, "left_chain")
    heads = torch.arange(0, n, dtype=torch.int64)
    if root is not None:
        if root != 1:
            heads[0] = root
        heads[root - 1] = 0
    return heads


def right_branching(n: int) -> Tree:
    """Right-branching binary tree over words ``0..n-1``: ``(0, (1, (2, ...)))``.

    Example:
        >>> right_branching(4)
        (0, (1, (2, 3)))
    """
    n = _check_n(n, "right_branching")
    tree: Tree = n - 1
    for i in range(n - 2, -1, -1):
        tree = (i, tree)
    return tree


def left_branching(n: int) -> Tree:
    """Left-branching binary tree over words ``0..n-1``: ``(((0, 1), 2), ...)``.

    Example:
        >>> left_branching(4)
        (((0, 1), 2), 3)
    """
    n = _check_n(n, "left_branching")
    tree: Tree = 0
    for i in range(1, n):
        tree = (tree, i)
    return tree


# --------------------------------------------------------------------------------------------
# MART (constituency)
# --------------------------------------------------------------------------------------------
def mart_distance(matrix: torch.Tensor | np.ndarray) -> np.ndarray:
    r"""The paper's constituency distances: ``D = 1 - softmax(M, dim=0)``, zero diagonal.

    ``softmax(M, dim=0)[i, j] = exp(M[i, j]) / sum_k exp(M[k, j])`` (each column normalised,
    diagonal included), as ``constituency/con_parsing.py`` after dropping [CLS]/[SEP].

    Example:
        >>> import numpy as np
        >>> D = mart_distance(np.zeros((2, 2)))
        >>> D.tolist()
        [[0.0, 0.5], [0.5, 0.0]]
    """
    M = _as_matrix(matrix, "mart_distance")
    e = np.exp(M - M.max(axis=0, keepdims=True))
    D = 1.0 - e / e.sum(axis=0, keepdims=True)
    np.fill_diagonal(D, 0.0)
    return D


def _best_cut(D: np.ndarray, published: bool) -> int:
    n = D.shape[0]
    o = 1 if published else 0  # the published code starts the right block at k + 1
    best, best_k = math.inf, -1
    for k in range(1, n):
        left = D[:k, :k].sum() / (2 * k)
        right = D[k + o:, k + o:].sum() / (2 * (n - k))
        between = (D[:k, k + o:].sum() + D[k + o:, :k].sum()) / ((n - k) * k)
        score = left + right - between
        if score < best:
            best, best_k = score, k
    return best_k


def mart(matrix: torch.Tensor | np.ndarray, *, transform: str = "paper", split: str = "published") -> Tree:
    r"""Top-down constituency tree of an impact matrix (the paper's MART split).

    With ``D`` = :func:`mart_distance` (``transform="paper"``) or ``matrix`` itself
    (``transform="none"``: a distance/dissimilarity matrix), a span of ``n >= 2`` words is cut
    at the ``k`` in ``1..n-1`` minimising (first minimum on ties), with ``o = 1`` for
    ``split="published"`` and ``o = 0`` for ``split="contiguous"``,

    .. math::
        \frac{\sum D_{[:k,:k]}}{2k} + \frac{\sum D_{[k+o:,k+o:]}}{2(n-k)}
        - \frac{\sum D_{[:k,k+o:]} + \sum D_{[k+o:,:k]}}{k(n-k)}.

    ``"published"`` (default) is exactly the published ``find_best_cut`` / ``mart``: word ``k``
    is left out of the right and between blocks and the node is ``(mart(:k), (k, mart(k+1:)))``,
    or ``(mart(:k), k)`` when ``k`` is the last word.  That criterion cuts one word early on
    clean block matrices (blocks ``[3, 3]`` give ``((0, 1), (2, (3, (4, 5))))``).
    ``"contiguous"`` scores the partition ``[:k] | [k:]`` with the same normalisers and builds
    ``(mart(:k), mart(k:))``: it recovers block structure (``((0, (1, 2)), (3, (4, 5)))``).
    A single word is its index.

    Returns:
        nested tuples of 0-based word indices (see the module docstring); :func:`tree_spans`
        and :func:`tree_brackets` convert it.

    Example:
        >>> import numpy as np
        >>> M = np.zeros((4, 4)); M[:2, :2] = M[2:, 2:] = 5.0; np.fill_diagonal(M, 0)
        >>> mart(M, split="contiguous"), mart(M)
        (((0, 1), (2, 3)), (0, (1, (2, 3))))
    """
    if transform not in ("paper", "none"):
        raise ValueError(f"kexue.probe.mart: transform must be 'paper' or 'none', got {transform!r}")
    if split not in ("published", "contiguous"):
        raise ValueError(f"kexue.probe.mart: split must be 'published' or 'contiguous', got {split!r}")
    D = mart_distance(matrix) if transform == "paper" else _as_matrix(matrix, "mart")
    published = split == "published"

    def build(lo: int, hi: int) -> Tree:
        if hi - lo == 1:
            return lo
        k = _best_cut(D[lo:hi, lo:hi], published)
        left = build(lo, lo + k)
        if not published:
            return (left, build(lo + k, hi))
        right: Tree = lo + k if lo + k + 1 == hi else (lo + k, build(lo + k + 1, hi))
        return (left, right)

    return build(0, D.shape[0])


def tree_words(tree: Tree) -> list[int]:
    """The leaves of a tree in order.

    Example:
        >>> tree_words(((0, 1), (2, 3)))
        [0, 1, 2, 3]
    """
    if isinstance(tree, (int, np.integer)):
        return [int(tree)]
    return [w for child in tree for w in tree_words(child)]


def tree_spans(tree: Tree, *, include_root: bool = False, include_leaves: bool = False) -> set[tuple[int, int]]:
    """Constituents of a tree as half-open word spans ``(start, end)``.

    By default, as the paper's evaluation (``get_brackets``): every node covering at least two
    words, except the whole sentence.  Assumes the leaves are ``0..n-1`` in order.

    Example:
        >>> sorted(tree_spans((0, (1, (2, 3)))))
        [(1, 4), (2, 4)]
    """
    spans: set[tuple[int, int]] = set()

    def walk(t: Tree, start: int) -> int:
        if isinstance(t, (int, np.integer)):
            if include_leaves:
                spans.add((start, start + 1))
            return start + 1
        end = start
        for child in t:
            end = walk(child, end)
        if end - start > 1:
            spans.add((start, end))
        return end

    end = walk(tree, 0)
    if not include_root and not isinstance(tree, (int, np.integer)):
        spans.discard((0, end))
    return spans


def tree_brackets(tree: Tree, words: Sequence[str] | None = None) -> str:
    """Bracket string of a tree, e.g. ``((The cat) (sat down))``; leaves are indices without ``words``.

    Example:
        >>> tree_brackets(((0, 1), (2, 3)), "The cat sat down".split())
        '((The cat) (sat down))'
    """
    if isinstance(tree, (int, np.integer)):
        return str(tree) if words is None else str(words[int(tree)])
    return "(" + " ".join(tree_brackets(c, words) for c in tree) + ")"
