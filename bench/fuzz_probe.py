"""``--op probe`` of bench/fuzz_ops.py: the probe's compiled ops, each seed all three.

* ``eisner`` (kexue.probe.parsers; backends "cpu" = the C++ op, "torch" = eisner_reference): the
  returned heads must form a projective tree (every subtree a contiguous span, node 0 written
  left), with exactly one root child under ``single_root``, and score the optimum: for n <= 7
  words the maximum over every projective tree, enumerated here (``projective_trees``); above,
  the score of eisner_reference's tree (its O(n^3) DP).  Any optimal tree is accepted (ties:
  integer scores in half the draws); "cpu" must also return eisner_reference's heads exactly
  (its docstring's claim: the same tie-breaking, bit for bit).  Scores in every float dtype,
  padded batches with ``lengths``, forbidden (−inf) arcs: with no finite tree a ValueError.
  Scores are compared in float64 up to the rounding of an n-term sum (n·2⁻⁵³·Σ|s|).
* ``segment_distance`` (kexue.probe.kernels; "cpu", "torch", "triton"): out and the gradients in
  h and ref against the float64 composite of its docstring (d = ‖a − b‖ or 1 − a·b / max(‖a‖‖b‖,
  1e−8), the mean per segment, 0 for an empty one), rule of fuzz_ops.py with the composite in
  the accumulation dtype (float32; float64 for float64 inputs) as the baseline, and the larger
  error of 4 evaluations of the rounding model at that dtype's unit (the cosine's gradient
  cancels: ``segment_distance_composite``); h in f16/bf16/f32 (and f64 off Triton), strided,
  ``ref`` = h itself or another matrix, repeated and zero rows (none for float16 "cos": the
  clamp's gradient ~1e8·|b| overflows float16), empty segments, K = 0.
* ``masked_batch`` ("cpu", "torch", "triton"): exactly the rows its docstring defines, written
  here as Python loops (``masked_rows``); invalid rows (a word index out of range, a sentence
  longer than ``length``) must raise an error that names ``seqs``.
"""

from __future__ import annotations

import itertools
import random

import torch
from fuzz_ops import ROUNDING_SAMPLES, ROUNDING_UNIT, UNIT, check, rounding_model, scale_of

from kexue.probe import kernels, parsers

EXHAUSTIVE_MAX_N = 7  # projective trees of 7 words: a few thousand
FLOOR = {torch.float64: 1e-12}  # floors (times the values' scale); float32 and 16-bit: 1e-5


# ---- eisner ----

def _spans(l: int, r: int, parent: int):
    """Every sequence of projective subtrees covering [l, r] whose roots attach to ``parent``:
    lists of (dependent, head) pairs."""
    if l > r:
        yield []
        return
    for m in range(l, r + 1):  # the first subtree covers [l, m]
        for c in range(l, m + 1):
            for first in _subtree(c, l, m):
                for rest in _spans(m + 1, r, parent):
                    yield [(c, parent)] + first + rest


def _subtree(c: int, l: int, r: int):
    """Every projective subtree rooted at c covering exactly [l, r] (c's own head not included)."""
    for left in _spans(l, c - 1, c):
        for right in _spans(c + 1, r, c):
            yield left + right


def projective_trees(n: int, single_root: bool):
    """Heads lists (length n + 1, heads[0] = −1) of every projective tree over words 1..n."""
    if n == 0:
        yield [-1]
        return
    gen = (([(c, 0)] + t) for c in range(1, n + 1) for t in _subtree(c, 1, n)) if single_root else _spans(1, n, 0)
    for arcs in gen:
        heads = [-1] * (n + 1)
        for d, h in arcs:
            heads[d] = h
        yield heads


def is_projective_tree(heads: list[int], n: int, single_root: bool) -> str | None:
    """None if ``heads`` (length n + 1) is a projective tree rooted at 0, else what is wrong."""
    if heads[0] != -1 or any(not 0 <= h <= n or h == d for d, h in enumerate(heads[1:], 1)):
        return f"not a head array: {heads}"
    children: dict[int, list[int]] = {i: [] for i in range(n + 1)}
    for d in range(1, n + 1):
        children[heads[d]].append(d)
    seen, stack, span = set(), [0], {}
    while stack:  # reachability from the root (no cycle)
        v = stack.pop()
        seen.add(v)
        stack += children[v]
    if len(seen) != n + 1:
        return f"not a tree (a cycle): {heads}"

    def cover(v):  # the set of nodes in v's subtree
        if v not in span:
            span[v] = {v}.union(*(cover(c) for c in children[v]))
        return span[v]

    for v in range(n + 1):
        s = cover(v)
        if max(s) - min(s) + 1 != len(s):
            return f"not projective (subtree of {v} is {sorted(s)}): {heads}"
    if single_root and n >= 1 and len(children[0]) != 1:
        return f"root has {len(children[0])} children under single_root: {heads}"
    return None


def tree_score(s: torch.Tensor, heads: list[int]) -> float:
    return float(sum(float(s[h, d]) for d, h in enumerate(heads) if d > 0))


def _fuzz_eisner(rng: random.Random, backend: str) -> tuple[list[str], dict]:
    B = rng.choice([1, 1, 2, 3])
    n1 = rng.choice([1, 2, rng.randint(1, EXHAUSTIVE_MAX_N + 1), rng.randint(2, 30)])
    dtype = rng.choice([torch.float64, torch.float32, torch.float32, torch.float16, torch.bfloat16])
    ints = rng.random() < 0.5
    single_root = rng.random() < 0.5
    s = torch.randint(-3, 4, (B, n1, n1)).double() if ints else torch.randn(B, n1, n1, dtype=torch.float64) * 3
    if rng.random() < 0.25:  # forbidden arcs
        s[torch.rand(B, n1, n1) < rng.choice([0.1, 0.5, 0.9])] = float("-inf")
    s = s.to(dtype)
    lengths = torch.tensor([rng.randint(0, n1 - 1) for _ in range(B)]) if rng.random() < 0.4 else None
    cfg = dict(B=B, n=n1 - 1, dtype=dtype, ints=ints, single_root=single_root, lengths=lengths is not None)
    batched = B > 1 or rng.random() < 0.5
    arg = s if batched else s[0]
    lens = lengths if batched else (lengths[:1] if lengths is not None else None)
    s64 = s.double()
    msgs: list[str] = []
    try:
        ref = parsers.eisner_reference(arg, lens, single_root=single_root)
    except ValueError:
        ref = None  # no finite tree in some sentence
    try:
        got = parsers.eisner(arg, lens, single_root=single_root, backend=backend)
    except ValueError as exc:
        if ref is not None:
            msgs.append(f"eisner: error where the reference finds a tree: {exc}")
        elif "no projective tree" not in str(exc):
            msgs.append(f"eisner: unclear error for an impossible sentence: {exc}")
        return msgs, cfg
    got = got.reshape(-1, n1) if got.dim() == 1 else got
    if ref is not None:
        ref = ref.reshape(-1, n1)
    for b in range(got.shape[0]):
        n = int(lengths[b]) if lengths is not None else n1 - 1
        heads = got[b].tolist()
        if any(h != -1 for h in heads[n + 1:]):
            msgs.append(f"sentence {b}: padding heads {heads[n + 1:]} are not -1")
        heads = heads[: n + 1]
        why = is_projective_tree(heads, n, single_root)
        if why:
            msgs.append(f"sentence {b}: {why}")
            continue
        sb = s64[b]
        score = tree_score(sb, heads)
        slack = n * 2.0**-53 * float(sb[torch.isfinite(sb)].abs().sum())
        if n <= EXHAUSTIVE_MAX_N:
            best = max(tree_score(sb, t) for t in projective_trees(n, single_root))
            what = "the exhaustive optimum"
        else:
            best = tree_score(sb, ref[b, : n + 1].tolist()) if ref is not None else float("-inf")
            what = "eisner_reference's score"
        if best == float("-inf"):
            msgs.append(f"sentence {b}: a tree where none has a finite score ({heads})")
        elif not score >= best - slack:
            msgs.append(f"sentence {b}: score {score!r} < {what} {best!r} (heads {heads})")
        if backend != "torch" and ref is not None and ref[b].tolist() != got[b].tolist():
            msgs.append(f"sentence {b}: heads {got[b].tolist()} differ from eisner_reference's {ref[b].tolist()}")
    if ref is None:
        msgs.append("eisner: a tree where the reference raises (no finite tree)")
    return msgs, cfg


# ---- segment_distance ----

def segment_distance_composite(h, rows, ref, ref_rows, seg, num_segments, metric, rnd=None):
    """The docstring's definition in h's dtype (differentiable).  ``rnd`` (fuzz_ops'
    rounding_model, on float64 tensors): every rounded quantity (norms, dot products, quotients,
    sums) and its gradient moved by one unit with random signs: the cosine's gradient
    b / p − c·a / ‖a‖² cancels (exactly, for D = 1) and the composite's own error there is luck."""
    rnd = rnd or (lambda t: t)
    a, b = h[rows], ref[ref_rows]
    if metric == "dist":
        d = rnd(torch.linalg.vector_norm(rnd(a - b), dim=-1))
    else:
        na, nb = rnd(torch.linalg.vector_norm(a, dim=-1)), rnd(torch.linalg.vector_norm(b, dim=-1))
        d = rnd(1 - rnd(rnd((a * b).sum(-1)) / rnd(na * nb).clamp_min(1e-8)))
    sums = rnd(torch.zeros(num_segments, dtype=h.dtype).index_add(0, seg, d))
    counts = torch.zeros(num_segments, dtype=h.dtype).index_add(0, seg, torch.ones_like(d))
    return sums / counts.clamp_min(1)


def _fuzz_segment_distance(rng: random.Random, backend: str, seed: int) -> tuple[list[str], dict]:
    R, D = rng.choice([1, 2, rng.randint(1, 40)]), rng.choice([1, 2, 3, rng.randint(1, 100), 64, 129])
    dtypes = [torch.float32, torch.float32, torch.float16, torch.bfloat16] + ([torch.float64] if backend != "triton"
                                                                              else [])
    dtype, metric = rng.choice(dtypes), rng.choice(["dist", "cos"])
    K = rng.choice([0, 1, rng.randint(1, 60), rng.randint(60, 300)])
    S = rng.choice([1, rng.randint(1, 10), rng.randint(1, K + 2)])
    self_ref, strided = rng.random() < 0.5, rng.random() < 0.3
    cfg = dict(R=R, D=D, dtype=dtype, metric=metric, K=K, S=S, self_ref=self_ref, strided=strided)
    h = torch.randn(D, R).t() if strided else torch.randn(R, D)
    h = h * rng.choice([0.1, 1.0, 30.0])
    if rng.random() < 0.3 and not (dtype == torch.float16 and metric == "cos"):
        # zero rows: ‖a‖ = 0, the cosine's clamp (its gradient, ~1e8·|b|, is beyond float16's range:
        # which sums round to ±inf there is decided by float32 rounding, not by the kernels)
        h[torch.rand(R) < 0.3] = 0.0
    R2 = R if self_ref else rng.randint(1, 20)
    ref = h if self_ref else torch.randn(R2, D)
    h, ref = h.to(dtype), ref.to(dtype)
    rows, ref_rows = torch.randint(0, R, (K,)), torch.randint(0, R2, (K,))
    if rng.random() < 0.3 and self_ref:
        ref_rows = rows.clone()  # a = b: distance 0 (gradient 0 by convention)
    seg = torch.randint(0, S, (K,))
    leaves = [h.detach().clone().requires_grad_()] + ([] if self_ref else [ref.detach().clone().requires_grad_()])
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    l64 = [t.detach().double().requires_grad_() for t in leaves]
    llo = [t.detach().to(acc).requires_grad_() for t in leaves]

    def run(ls, fn, **kw):
        return fn(ls[0], rows, ls[0] if self_ref else ls[1], ref_rows, seg, S, metric, **kw)

    out = run(leaves, kernels.segment_distance, backend=backend)
    o64 = run(l64, segment_distance_composite)
    olo = run(llo, segment_distance_composite)
    pert = []  # the rounding model at the accumulation dtype's unit
    for j in range(ROUNDING_SAMPLES):
        lm = [t.detach().double().requires_grad_() for t in leaves]
        rnd = rounding_model(ROUNDING_UNIT.get(acc, 2.0**-53), seed * 64 + j)
        pert.append((lm, run(lm, segment_distance_composite, rnd=rnd)))
    msgs: list[str] = []
    want = torch.float64 if dtype == torch.float64 else torch.float32
    if out.shape != (S,) or out.dtype != want:
        return [f"out: shape {tuple(out.shape)} dtype {out.dtype}"], cfg
    floor = FLOOR.get(dtype, 1e-5)
    check("out", out, o64, olo, floor * scale_of(o64), msgs, [m[1] for m in pert])
    go = torch.randn(S, dtype=torch.float64)
    pert_grads = [torch.autograd.grad((m_out * go).sum(), m_ls) for m_ls, m_out in pert]
    for i, (name, a, r, lo) in enumerate(zip(["dh", "dref"], torch.autograd.grad((out.double() * go).sum(), leaves),
                                             torch.autograd.grad((o64 * go).sum(), l64),
                                             torch.autograd.grad((olo.double() * go).sum(), llo), strict=False)):
        if a.dtype != dtype:
            msgs.append(f"{name}: dtype {a.dtype}")
            continue
        check(name, a, r, lo.to(dtype), (floor + 2 * UNIT.get(dtype, 0.0)) * scale_of(r), msgs,
              [g[i] for g in pert_grads])
    return msgs, cfg


# ---- masked_batch ----

def masked_rows(sents: list[list[int]], words: list[list[tuple[int, int]]], seqs: list[list[int]], mask_id: int,
                pad_id: int, length: int) -> tuple[list[list[int]], list[list[int]]]:
    """The docstring's rows, as Python loops."""
    ids, att = [], []
    for s, i, j in seqs:
        toks = sents[s]
        spans = [words[s][w] for w in (i, j) if w >= 0]
        row = [mask_id if any(a <= t < b for a, b in spans) else toks[t] for t in range(len(toks))]
        ids.append(row + [pad_id] * (length - len(toks)))
        att.append([1] * len(toks) + [0] * (length - len(toks)))
    return ids, att


def _fuzz_masked_batch(rng: random.Random, backend: str) -> tuple[list[str], dict]:
    n_sent = rng.randint(1, 5)
    sents, words = [], []
    for _ in range(n_sent):
        n = rng.choice([1, 2, rng.randint(1, 25)])
        sents.append([rng.randint(1000, 2000) for _ in range(n)])
        cuts = sorted(rng.sample(range(1, n), rng.randint(0, n - 1))) if n > 1 else []
        bounds = [0, *cuts, n]
        spans = [(bounds[w], bounds[w + 1]) for w in range(len(bounds) - 1)]
        if rng.random() < 0.3 and spans:
            spans.append((spans[0][0], spans[0][0]))  # an empty word span
        words.append(spans)
    K = rng.choice([0, 1, rng.randint(1, 40)])
    seqs = []
    for _ in range(K):
        s = rng.randrange(n_sent)
        seqs.append([s, rng.randint(-1, len(words[s]) - 1), rng.randint(-1, len(words[s]) - 1)])
    longest = max((len(sents[s]) for s, _, _ in seqs), default=0)
    length = longest + rng.choice([0, 0, 1, rng.randint(0, 10)])
    bad = rng.random() < 0.1 and K > 0
    if bad:
        k = rng.randrange(K)
        s = seqs[k][0]
        if rng.random() < 0.5:
            seqs[k][rng.choice([1, 2])] = len(words[s]) + rng.randint(0, 2)  # a word out of range
        else:
            length = len(sents[s]) - 1  # a sentence longer than length
    cfg = dict(n_sent=n_sent, K=K, length=length, bad=bad)
    tok_offsets = torch.tensor([0, *itertools.accumulate(len(t) for t in sents)])
    word_offsets = torch.tensor([0, *itertools.accumulate(len(w) for w in words)])
    tokens = torch.tensor([t for toks in sents for t in toks], dtype=torch.int64)
    ws = torch.tensor([a for sp in words for a, _ in sp], dtype=torch.int64)
    we = torch.tensor([b for sp in words for _, b in sp], dtype=torch.int64)
    seqs_t = torch.tensor(seqs, dtype=torch.int64).reshape(K, 3)
    if rng.random() < 0.3:
        seqs_t = seqs_t.t().contiguous().t()  # strided rows
        cfg["strided"] = True
    msgs: list[str] = []
    try:
        ids, att = kernels.masked_batch(tokens, tok_offsets, ws, we, word_offsets, seqs_t, 103, 0, max(length, 0),
                                        backend=backend)
    except (ValueError, RuntimeError) as exc:
        if not bad or "seqs" not in str(exc) and "length" not in str(exc):
            msgs.append(f"masked_batch: {type(exc).__name__}: {exc}")
        return msgs, cfg
    if bad:
        return ["masked_batch: no error for an invalid row"], cfg
    want_ids, want_att = masked_rows(sents, words, seqs, 103, 0, length)
    if ids.tolist() != want_ids or att.tolist() != want_att or ids.shape != (K, length):
        msgs.append(f"masked_batch: rows differ from the definition ({ids.tolist()} vs {want_ids})")
    return msgs, cfg


def fuzz_probe(seed: int, backend: str, device: str) -> tuple[list[str], dict]:
    """All three ops at this seed (eisner: "cpu" and "torch" only; it has no Triton kernel)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    msgs, cfg = [], {}
    parts = [("eisner", _fuzz_eisner)] if backend in ("cpu", "torch") else []
    parts += [("segment_distance", _fuzz_segment_distance), ("masked_batch", _fuzz_masked_batch)]
    for name, fn in parts:
        m, c = fn(rng, backend, seed) if fn is _fuzz_segment_distance else fn(rng, backend)
        cfg[name] = c
        msgs += [f"{name}: {x}" for x in m]
    return msgs, cfg


def mutate(rel: float) -> None:
    """kernels.segment_distance with its first output moved by ``rel`` × its largest |entry| (at
    least 1): the campaign must report it."""
    right = kernels.segment_distance

    def off(*args, **kwargs):
        out = right(*args, **kwargs)
        if out.numel():
            out = out.clone()
            out.view(-1)[0] += rel * max(1.0, float(out.detach().abs().max()))
        return out

    kernels.segment_distance = off
