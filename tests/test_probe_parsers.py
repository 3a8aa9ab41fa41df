"""kexue.probe parsers, CoNLL-U reader and metrics.

Oracles: brute force over every head sequence (trees filtered by definition: acyclic, rooted
at 0; projective = every word between a head and its dependent descends from the head) for
Eisner (n <= 7) and Chu-Liu-Edmonds (n <= 6); hand-made matrices and hand-computed scores for
the rest.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.probe import conllu, metrics, parsers
from kexue.probe.parsers import (
    chu_liu_edmonds,
    eisner,
    eisner_reference,
    left_branching,
    left_chain,
    mart,
    parse_dependency,
    right_branching,
    right_chain,
    tree_brackets,
    tree_spans,
    tree_words,
)

PUD = Path(os.environ.get("KEXUE_PUD", "/work/shared/data/ud-english-pud/en_pud-ud-test.conllu"))


# ------------------------------------------------------------------------------------------
# brute force
# ------------------------------------------------------------------------------------------
@functools.cache
def all_trees(n: int, projective: bool) -> np.ndarray:
    """Every tree on nodes 0..n rooted at 0 as rows of parents (P[:, 0] = 0), by filtering."""
    assert n <= 7, "brute force is for small n only"
    codes = np.arange((n + 1) ** n, dtype=np.int64)
    grids = (codes[:, None] // (n + 1) ** np.arange(n, dtype=np.int64)) % (n + 1)  # all head sequences
    P = np.concatenate([np.zeros((len(grids), 1), dtype=np.int64), grids], axis=1)
    rows = np.arange(len(P))[:, None]
    A = P.copy()
    for _ in range(n):  # after n parent steps every node of a tree is at the root
        A = P[rows, A]
    P = P[(A == 0).all(axis=1)]  # self-loops and cycles never reach 0
    if not projective or len(P) == 0:
        return P
    T = len(P)
    rows = np.arange(T)
    anc = np.zeros((T, n + 1, n + 1), dtype=bool)  # anc[t, k, a]: a is k or an ancestor of k
    for k in range(n + 1):
        cur = np.full(T, k)
        for _ in range(n + 1):
            anc[rows, k, cur] = True
            cur = P[rows, cur]
    ok = np.ones(T, dtype=bool)
    for d in range(1, n + 1):
        h = P[:, d]
        lo, hi = np.minimum(h, d), np.maximum(h, d)
        for k in range(1, n + 1):
            between = (lo < k) & (k < hi)
            ok &= ~between | anc[rows, k, h]
    return P[ok]


def brute_force(S: np.ndarray, projective: bool, single_root: bool):
    n = S.shape[0] - 1
    P = all_trees(n, projective)
    if single_root:
        P = P[(P[:, 1:] == 0).sum(axis=1) == 1]
    tot = S[P[:, 1:], np.arange(1, n + 1)].sum(axis=1)
    order = np.argsort(-tot, kind="stable")
    best = tot[order[0]]
    unique = len(tot) == 1 or tot[order[1]] < best - 1e-9
    return best, P[order[0]], unique


def tree_score(S: np.ndarray, heads) -> float:
    h = np.asarray(heads)
    n = len(h) - 1
    return float(S[h[1:], np.arange(1, n + 1)].sum())


def test_tree_counts():
    # Multi-rooted projective trees on n words: the ternary numbers C(3n, n) / (2n + 1);
    # all rooted trees: (n+1)^(n-1) (Cayley).
    assert [len(all_trees(n, True)) for n in range(1, 7)] == [1, 3, 12, 55, 273, 1428]
    assert [len(all_trees(n, False)) for n in range(1, 6)] == [(n + 1) ** (n - 1) for n in range(1, 6)]


# ------------------------------------------------------------------------------------------
# Eisner
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("single_root", [True, False])
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_eisner_brute_force(single_root, backend):
    gen = torch.Generator().manual_seed(1)
    for n in range(1, 8):
        for _ in range(6 if n < 7 else 3):
            S = torch.randn(n + 1, n + 1, generator=gen, dtype=torch.float64)
            heads = eisner(S, single_root=single_root, backend=backend)
            best, arg, unique = brute_force(S.numpy(), True, single_root)
            assert heads.dtype == torch.int64 and heads.shape == (n + 1,) and int(heads[0]) == -1
            assert abs(tree_score(S.numpy(), heads) - best) < 1e-9
            if unique:
                assert heads[1:].tolist() == arg[1:].tolist()
            if single_root:
                assert int((heads[1:] == 0).sum()) == 1


@pytest.mark.parametrize("single_root", [True, False])
def test_eisner_batched_padding_matches_reference(single_root):
    gen = torch.Generator().manual_seed(2)
    lengths = torch.tensor([7, 1, 0, 4, 7, 3])
    S = torch.randn(len(lengths), 8, 8, generator=gen)
    out = eisner(S, lengths, single_root=single_root)
    ref = eisner_reference(S, lengths, single_root=single_root)
    assert out.shape == (6, 8) and torch.equal(out, ref)
    for b, n in enumerate(lengths.tolist()):
        one = eisner(S[b, :n + 1, :n + 1].contiguous(), single_root=single_root)
        assert out[b, :n + 1].tolist() == one.tolist()
        assert (out[b, n + 1:] == -1).all() and int(out[b, 0]) == -1
        if n:
            best, _, _ = brute_force(S[b, :n + 1, :n + 1].double().numpy(), True, single_root)
            assert abs(tree_score(S[b, :n + 1, :n + 1].double().numpy(), out[b, :n + 1]) - best) < 1e-5


def test_eisner_ties_kernel_equals_reference():
    # Integer scores make many ties: the kernel must break them exactly as the reference.
    gen = torch.Generator().manual_seed(3)
    for single_root in (True, False):
        S = torch.randint(0, 3, (12, 8, 8), generator=gen).double()
        S[3] = 0.0  # all trees tie
        out = eisner(S, single_root=single_root)
        assert torch.equal(out, eisner_reference(S, single_root=single_root))
        for b in range(S.shape[0]):
            best, _, _ = brute_force(S[b].numpy(), True, single_root)
            assert tree_score(S[b].numpy(), out[b]) == best
        S = torch.randint(0, 2, (4, 30, 30), generator=gen).double()  # longer, no brute force
        assert torch.equal(eisner(S, single_root=single_root), eisner_reference(S, single_root=single_root))


def test_eisner_dtypes_strides_and_neg_inf():
    gen = torch.Generator().manual_seed(4)
    S = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64)
    ref = eisner(S)
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        # ties may appear after rounding: compare against the reference on the rounded scores
        Sd = S.to(dt)
        assert torch.equal(eisner(Sd), eisner_reference(Sd.double()))
    St = S.transpose(1, 2).contiguous().transpose(1, 2)  # same values, non-contiguous
    assert not St.is_contiguous() and torch.equal(eisner(St), ref)
    # -inf forbids arcs: force the chain 0 -> 1 -> 2 -> ... -> 5
    F = torch.full((6, 6), float("-inf"), dtype=torch.float64)
    for d in range(1, 6):
        F[d - 1, d] = 0.0
    assert eisner(F).tolist() == [-1, 0, 1, 2, 3, 4]
    assert eisner(torch.zeros(1, 1)).tolist() == [-1]  # no words


def test_eisner_paper_example():
    # A sentence whose best projective tree differs from the greedy heads.
    S = torch.tensor([[0, 9, 10, 9], [0, 0, 20, 3], [0, 30, 0, 30], [0, 11, 0, 0]], dtype=torch.float64)
    assert eisner(S, single_root=False).tolist() == [-1, 2, 0, 2]
    assert eisner(S, single_root=True).tolist() == [-1, 2, 0, 2]


@given(n=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), single_root=st.booleans(),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
@settings(max_examples=40, deadline=None)
def test_eisner_property(n, seed, single_root, scale):
    rng = np.random.default_rng(seed)
    S = torch.from_numpy(rng.standard_normal((n + 1, n + 1)) * scale)
    heads = eisner(S, single_root=single_root)
    assert torch.equal(heads, eisner_reference(S, single_root=single_root))
    best, _, _ = brute_force(S.numpy(), True, single_root)
    assert abs(tree_score(S.numpy(), heads) - best) <= 1e-9 * max(1.0, abs(best))
    # shifting all arcs into a word by a constant does not change the tree
    S2 = S.clone()
    S2[:, n] += 3.0
    assert torch.equal(eisner(S2, single_root=single_root), heads)


def test_eisner_bad_input():
    with pytest.raises(ValueError, match="square"):
        eisner(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="empty"):
        eisner(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="shape"):
        eisner(torch.zeros(4))
    with pytest.raises(TypeError, match="floating"):
        eisner(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"lengths\[1\] = 4 is out of range"):
        eisner(torch.zeros(2, 4, 4), torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        eisner(torch.zeros(2, 4, 4), torch.tensor([3]))
    with pytest.raises(TypeError, match="lengths must be an integer"):
        eisner(torch.zeros(2, 4, 4), torch.tensor([3.0, 1.0]))
    S = torch.zeros(4, 4)
    S[1, 2] = float("nan")
    with pytest.raises(RuntimeError, match="NaN"):
        eisner(S)
    with pytest.raises(ValueError, match="NaN"):
        eisner(S, backend="torch")
    with pytest.raises(ValueError, match="backend"):
        eisner(torch.zeros(3, 3), backend="cuda")
    # the op's own checks (called directly)
    with pytest.raises(RuntimeError, match="lengths"):
        torch.ops.kexue.eisner(torch.zeros(1, 3, 3), torch.tensor([5]), True)
    with pytest.raises(RuntimeError, match="square"):
        torch.ops.kexue.eisner(torch.zeros(1, 3, 4), torch.tensor([2]), True)


def test_eisner_opcheck_and_compile():
    gen = torch.Generator().manual_seed(5)
    S = torch.randn(3, 6, 6, generator=gen)
    lengths = torch.tensor([5, 2, 0])
    for single_root in (True, False):
        torch.library.opcheck(torch.ops.kexue.eisner.default, (S, lengths, single_root))
    Sg = S.clone().requires_grad_()
    torch.library.opcheck(torch.ops.kexue.eisner.default, (Sg, lengths, True))  # integer output: no grad
    fn = torch.compile(lambda s, n: torch.ops.kexue.eisner(s, n, True), fullgraph=True, backend="eager")
    assert torch.equal(fn(S, lengths), eisner(S, lengths))
    fn = torch.compile(lambda s, n: eisner(s, n, single_root=False), fullgraph=True, backend="eager")
    assert torch.equal(fn(S, lengths), eisner(S, lengths, single_root=False))


# ------------------------------------------------------------------------------------------
# Chu-Liu-Edmonds
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("single_root", [True, False])
def test_cle_brute_force(single_root):
    rng = np.random.default_rng(6)
    for n in range(1, 7):
        for _ in range(8 if n < 6 else 4):
            S = rng.standard_normal((n + 1, n + 1))
            heads = chu_liu_edmonds(torch.from_numpy(S), single_root=single_root)
            best, arg, unique = brute_force(S, False, single_root)
            assert heads.dtype == torch.int64 and int(heads[0]) == -1
            assert abs(tree_score(S, heads) - best) < 1e-9
            if unique:
                assert heads[1:].tolist() == arg[1:].tolist()


@given(n=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), single_root=st.booleans(),
       ints=st.booleans())
@settings(max_examples=40, deadline=None)
def test_cle_property(n, seed, single_root, ints):
    rng = np.random.default_rng(seed)
    S = rng.integers(0, 3, (n + 1, n + 1)).astype(float) if ints else rng.standard_normal((n + 1, n + 1))
    heads = chu_liu_edmonds(S, single_root=single_root)
    best, _, _ = brute_force(S, False, single_root)
    assert abs(tree_score(S, heads) - best) < 1e-9
    # a tree: every word reaches 0
    h = heads.tolist()
    for d in range(1, n + 1):
        seen, v = set(), d
        while v != 0:
            assert v not in seen
            seen.add(v)
            v = h[v]
    # deterministic
    assert torch.equal(chu_liu_edmonds(S, single_root=single_root), heads)
    # the non-projective optimum is at least the projective one
    assert tree_score(S, heads) >= tree_score(S, eisner(torch.from_numpy(S), single_root=single_root)) - 1e-9


def test_cle_non_projective_and_neg_inf():
    S = np.full((5, 5), -5.0)
    S[0, 2] = 10
    S[2, 4] = S[4, 1] = S[2, 3] = 10
    S[3, 1] = S[1, 4] = 0
    heads = chu_liu_edmonds(S)
    assert heads.tolist() == [-1, 4, 0, 2, 2]
    # a crossing optimum Eisner cannot produce: arcs 1 -> 3 and 2 -> 4 cross
    S = np.full((5, 5), -10.0)
    S[0, 1] = S[1, 3] = S[3, 2] = 10
    S[2, 4] = 10  # (1,3) and (2,4) cross
    assert chu_liu_edmonds(S).tolist() == [-1, 0, 3, 1, 2]
    assert eisner(torch.from_numpy(S)).tolist() != [-1, 0, 3, 1, 2]
    F = np.full((3, 3), -np.inf)
    F[0, 1] = 0.0
    with pytest.raises(ValueError, match="finite"):
        chu_liu_edmonds(F)
    with pytest.raises(ValueError, match="square"):
        chu_liu_edmonds(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        chu_liu_edmonds(np.zeros((0, 0)))
    with pytest.raises(TypeError, match="floating"):
        chu_liu_edmonds(np.zeros((3, 3), dtype=np.int64))


# ------------------------------------------------------------------------------------------
# parse_dependency and baselines
# ------------------------------------------------------------------------------------------
def _published_eisner_scores(A: np.ndarray) -> np.ndarray:
    """The published transform written the way it is published (global max, axis=1 sum, .T)."""
    e = np.exp(A - np.max(A))
    return (e / e.sum(axis=1)).T


def test_parse_dependency_paper_transform_matches_published_formula():
    rng = np.random.default_rng(7)
    W = 6
    M = rng.random((W, W)) * 4
    np.fill_diagonal(M, 0)
    cls = rng.random(W)
    for root in (None, 3):
        A = np.zeros((W + 1, W + 1))
        A[1:, 1:] = M
        A[0, 1:] = cls
        if root is not None:
            A[root] = 0
            A[root, 0] = 1
            A[0, 0] = 0
        S = _published_eisner_scores(A)
        want = eisner(torch.from_numpy(S), single_root=False)[1:]
        got = parse_dependency(torch.from_numpy(M), root=root, cls_impact=cls)
        assert got.tolist() == want.tolist()


def test_parse_dependency_hand_examples():
    M = torch.tensor([[0.0, 3, 0], [1, 0, 1], [0, 3, 0]])
    assert parse_dependency(M, root=2).tolist() == [2, 0, 2]
    for decoder in ("eisner", "cle"):
        for transform in ("paper", "softmax", "raw"):
            h = parse_dependency(M, decoder=decoder, root=2, transform=transform, single_root=True)
            assert h.tolist() == [2, 0, 2], (decoder, transform)
    # the gold root is forced with single_root=True even against the matrix
    h = parse_dependency(M, root=1, single_root=True)
    assert h[0] == 0 and int((h == 0).sum()) == 1
    h = parse_dependency(M, decoder="cle", root=3)
    assert h[2] == 0 and int((h == 0).sum()) == 1
    # cle without a root: single root, root word = best arborescence
    h = parse_dependency(M, decoder="cle")
    assert int((h == 0).sum()) == 1
    # one word
    assert parse_dependency(torch.zeros(1, 1)).tolist() == [0]
    assert parse_dependency(torch.zeros(1, 1), decoder="cle").tolist() == [0]


def test_parse_dependency_bad_input():
    with pytest.raises(ValueError, match="square"):
        parse_dependency(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="empty"):
        parse_dependency(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="root must be a 1-based"):
        parse_dependency(torch.zeros(3, 3), root=0)
    with pytest.raises(ValueError, match="root must be a 1-based"):
        parse_dependency(torch.zeros(3, 3), root=4)
    with pytest.raises(ValueError, match="decoder"):
        parse_dependency(torch.zeros(3, 3), decoder="mst")
    with pytest.raises(ValueError, match="transform"):
        parse_dependency(torch.zeros(3, 3), transform="log")
    with pytest.raises(ValueError, match=">= 0"):
        parse_dependency(-torch.ones(3, 3), decoder="cle")
    with pytest.raises(ValueError, match="finite"):
        parse_dependency(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="cls_impact"):
        parse_dependency(torch.zeros(3, 3), cls_impact=torch.zeros(2))


def test_chains_and_branching():
    assert right_chain(4).tolist() == [2, 3, 4, 0]
    assert right_chain(4, root=2).tolist() == [2, 0, 4, 2]
    assert right_chain(4, root=4).tolist() == [2, 3, 4, 0]
    assert right_chain(4, root=2, paper_compat=True).tolist() == [2, 0, 4, 5]
    assert left_chain(4).tolist() == [0, 1, 2, 3]
    assert left_chain(4, root=3).tolist() == [3, 1, 0, 3]
    assert right_chain(1).tolist() == [0] and left_chain(1, root=1).tolist() == [0]
    for n in range(1, 6):
        for r in [None, *range(1, n + 1)]:
            for h in (right_chain(n, root=r), left_chain(n, root=r)):
                full = [-1, *h.tolist()]
                assert any(np.array_equal(np.array([0, *h.tolist()]), t) for t in all_trees(n, True)), full
                if r is not None:
                    assert h[r - 1] == 0
    assert right_branching(4) == (0, (1, (2, 3))) and left_branching(4) == (((0, 1), 2), 3)
    assert right_branching(1) == 0
    with pytest.raises(ValueError, match="positive"):
        right_chain(0)
    with pytest.raises(ValueError, match="root"):
        right_chain(3, root=4)


# ------------------------------------------------------------------------------------------
# MART
# ------------------------------------------------------------------------------------------
def _block_matrix(sizes, inner=6.0, outer=0.0):
    n = sum(sizes)
    M = np.full((n, n), outer)
    start = 0
    for s in sizes:
        M[start:start + s, start:start + s] = inner
        start += s
    np.fill_diagonal(M, 0.0)
    return M


def _published_cut(D):
    # the published find_best_cut, restated
    n = len(D)
    best, bk = np.inf, -1
    for k in range(1, n):
        sc = D[:k, :k].sum() / (2 * k) + D[k + 1:, k + 1:].sum() / (2 * (n - k)) \
            - (D[:k, k + 1:].sum() + D[k + 1:, :k].sum()) / ((n - k) * k)
        if sc < best:
            best, bk = sc, k
    return bk


def test_mart_blocks():
    c = functools.partial(mart, split="contiguous")
    assert c(_block_matrix([2, 2])) == ((0, 1), (2, 3))
    for sizes in ([3, 3], [2, 4], [4, 2], [5, 5], [3, 2, 3], [2, 2, 2, 2]):
        t = c(_block_matrix(sizes))
        n = sum(sizes)
        assert tree_words(t) == list(range(n))
        starts = np.cumsum([0, *sizes])
        for a, b in zip(starts[:-1], starts[1:], strict=True):  # every block is a constituent
            if b - a > 1:
                assert (a, b) in tree_spans(t, include_root=True), (sizes, t)
    # nested blocks: ((0 1) (2 3)) inside a stronger [4] block, then [2]
    M = _block_matrix([4, 2], inner=3.0)
    M[:2, :2] = M[2:4, 2:4] = 6.0
    np.fill_diagonal(M, 0)
    assert c(M) == (((0, 1), (2, 3)), (4, 5))
    # the published criterion cuts one word early on the same blocks (documented)
    assert mart(_block_matrix([3, 3])) == ((0, 1), (2, (3, (4, 5))))
    assert mart(_block_matrix([2, 2])) == (0, (1, (2, 3)))
    for split in ("published", "contiguous"):
        assert mart(np.zeros((1, 1)), split=split) == 0
        assert mart(np.zeros((2, 2)), split=split) == (0, 1)


def test_mart_matches_published_recursion():
    rng = np.random.default_rng(8)

    def published(D, words):
        if len(words) == 1:
            return words[0]
        k = _published_cut(D)
        left = published(D[:k, :k], words[:k])
        right = words[k] if k + 1 == len(words) else (words[k], published(D[k + 1:, k + 1:], words[k + 1:]))
        return (left, right)

    for n in range(1, 12):
        M = rng.random((n, n)) * 5
        np.fill_diagonal(M, 0)
        e = np.exp(M - M.max())
        D = 1 - e / e.sum(axis=0)
        np.fill_diagonal(D, 0)
        assert mart(M) == published(D, list(range(n)))
        assert mart(D, transform="none") == published(D, list(range(n)))
        assert tree_words(mart(M)) == list(range(n))


def test_tree_helpers():
    t = ((0, 1), (2, (3, 4)))
    assert tree_spans(t) == {(0, 2), (2, 5), (3, 5)}
    assert tree_spans(t, include_root=True) == {(0, 2), (2, 5), (3, 5), (0, 5)}
    assert (1, 2) in tree_spans(t, include_leaves=True)
    assert tree_brackets(t, "a b c d e".split()) == "((a b) (c (d e)))"
    assert tree_brackets(t) == "((0 1) (2 (3 4)))"
    assert tree_spans(0) == set()
    with pytest.raises(ValueError, match="transform"):
        mart(np.zeros((2, 2)), transform="x")
    with pytest.raises(ValueError, match="split"):
        mart(np.zeros((2, 2)), split="x")
    with pytest.raises(ValueError, match="empty"):
        mart(np.zeros((0, 0)))
    with pytest.raises(ValueError, match="square"):
        mart(np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------
# CoNLL-U
# ------------------------------------------------------------------------------------------
SAMPLE = """# newdoc id = d1
# sent_id = s1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
4.1\tknows\tknow\tVERB\tVB\t_\t_\t_\t4:conj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = s2
# text = Hi
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_conllu_sample(tmp_path):
    p = tmp_path / "x.conllu"
    p.write_text(SAMPLE, encoding="utf-8")
    sents = conllu.read_conllu(p)
    assert len(sents) == 2
    s = sents[0]
    assert s.words == ["I", "do", "n't", "know", "."]
    assert s.heads == [4, 4, 4, 0, 4]
    assert s.upos == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert s.deprel == ["nsubj", "aux", "advmod", "root", "punct"]
    assert s.id == "s1" and s.text == "I don't know."
    assert s.multiword_tokens == [(2, 3, "don't")]
    assert s.space_after == [True, False, True, False, True]
    assert s.surface_tokens() == ["I", "don't", "know", "."]
    assert "newdoc id = d1" in s.comments and len(s) == 5
    assert sents[1].words == ["Hi"] and sents[1].heads == [0] and sents[1].text == "Hi"
    # no trailing blank line, CRLF line ends
    assert len(conllu.parse_conllu(SAMPLE.rstrip("\n").replace("\n", "\r\n"))) == 2


def test_conllu_errors():
    with pytest.raises(ValueError, match="10 tab-separated"):
        conllu.parse_conllu("1\tI\tI\tPRON\n")
    with pytest.raises(ValueError, match="out of order"):
        conllu.parse_conllu("2\tI\tI\tPRON\t_\t_\t0\troot\t_\t_\n")
    with pytest.raises(ValueError, match="HEAD"):
        conllu.parse_conllu("1\tI\tI\tPRON\t_\t_\t3\troot\t_\t_\n")
    with pytest.raises(ValueError, match="multiword token 1-2"):
        conllu.parse_conllu("1-2\tab\t_\t_\t_\t_\t_\t_\t_\t_\n1\ta\ta\tX\t_\t_\t0\troot\t_\t_\n")
    with pytest.raises(ValueError, match="HEAD must be an integer"):
        conllu.parse_conllu("1\tI\tI\tPRON\t_\t_\t_\troot\t_\t_\n")


@pytest.mark.skipif(not PUD.exists(), reason=f"UD English-PUD not found at {PUD}")
def test_conllu_pud():
    sents = conllu.read_conllu(PUD)
    assert len(sents) == 1000
    assert all(len(s.words) == len(s.heads) == len(s.upos) for s in sents)
    assert all(sum(h == 0 for h in s.heads) == 1 for s in sents)
    assert sum(len(s.multiword_tokens) for s in sents) > 0
    assert all(s.text and s.id for s in sents)
    # the surface tokens and SpaceAfter rebuild the "# text =" line exactly
    for s in sents:
        toks, spaces, i = s.surface_tokens(), [], 0
        for _t in toks:
            n_words = next((b - a + 1 for a, b, f in s.multiword_tokens if a == i + 1), 1)
            i += n_words
            spaces.append(s.space_after[i - 1])
        rebuilt = "".join(t + (" " if sp else "") for t, sp in zip(toks, spaces, strict=True)).rstrip()
        assert rebuilt == s.text, s.id
    # the baselines and metrics run on the whole treebank
    gold = [s.heads for s in sents]
    rc = [right_chain(len(s), root=parsers.gold_root(s.heads)).tolist() for s in sents]
    assert 0.1 < metrics.uas(rc, gold) < 0.6
    assert metrics.uas(gold, gold) == 1.0


# ------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------
def test_attachment_metrics():
    gold = [2, 0, 2, 3]          # 1 <- 2 -> 3 -> 4, 2 root
    pred = [2, 0, 4, 2]          # word 3's head 4 (reversed gold edge), word 4's head 2 (grandparent)
    assert metrics.uas(pred, gold) == 0.5
    assert metrics.uuas(pred, gold) == 0.75
    assert metrics.ned(pred, gold) == 1.0
    assert metrics.attachment_counts(pred, gold) == (2, 4)
    # the root edge: predicted 0 for a non-root word counts in no score
    assert metrics.uuas([0, 0, 2, 3], gold) == 0.75
    # masks and corpus micro-average
    mask = metrics.punct_mask(["NOUN", "VERB", "PUNCT", "NOUN"])
    assert mask == [True, True, False, True]
    assert metrics.uas(pred, gold, mask) == 2 / 3
    corpus_p, corpus_g = [pred, [0]], [gold, [0]]
    assert metrics.uas(corpus_p, corpus_g) == 3 / 5
    assert metrics.uas(torch.tensor(pred), torch.tensor(gold)) == 0.5
    assert metrics.uas([torch.tensor(pred), torch.tensor([0])], corpus_g) == 3 / 5
    assert metrics.punct_mask([["PUNCT"], ["X"]]) == [[False], [True]]
    assert np.isnan(metrics.uas(pred, gold, [False] * 4))
    with pytest.raises(ValueError, match="heads"):
        metrics.uas([1, 0], [2, 0, 2])
    with pytest.raises(ValueError, match="sentences"):
        metrics.uas([[0]], [[0], [0]])
    with pytest.raises(ValueError, match="mask"):
        metrics.uas(pred, gold, [True])


def test_segmentation_metrics():
    r = metrics.segmentation_prf(["ab", "c", "d"], ["ab", "cd"])
    assert r == metrics.PRF(0.5, 1.0, 2 / 3)
    assert metrics.segmentation_prf(["abc"], ["abc"]) == (1.0, 1.0, 1.0)
    assert metrics.segmentation_prf(["abc"], ["a", "bc"]) == (0.0, 0.0, 0.0)
    assert metrics.segmentation_prf(["a", "b", "c"], ["abc"]) == (0.0, 0.0, 0.0)
    assert metrics.segmentation_prf(["a", "", "bc"], ["a", "bc"]) == (1.0, 1.0, 1.0)
    # corpus: micro over boundaries
    r = metrics.segmentation_prf([["a", "b"], ["cd"]], [["a", "b"], ["c", "d"]])
    assert r == (1.0, 0.5, 2 / 3)
    w = metrics.word_prf(["ab", "c", "d"], ["ab", "cd"])
    assert w == (1 / 3, 0.5, 0.4)
    assert metrics.word_prf(["中国", "人"], ["中国", "人"]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="spell"):
        metrics.segmentation_prf(["ab"], ["ac"])
    with pytest.raises(TypeError, match="string"):
        metrics.segmentation_prf("ab", ["ab"])


@st.composite
def _tree_pair(draw):
    n = draw(st.integers(1, 12))
    gold = [draw(st.integers(0, n)) for _ in range(n)]
    pred = [draw(st.integers(0, n)) for _ in range(n)]
    return pred, gold


@given(_tree_pair())
@settings(max_examples=60, deadline=None)
def test_metrics_property(pair):
    pred, gold = pair
    u, uu, ne = metrics.uas(pred, gold), metrics.uuas(pred, gold), metrics.ned(pred, gold)
    assert 0.0 <= u <= uu <= ne <= 1.0
    assert metrics.uas(gold, gold) == 1.0
    # UUAS counts exactly the undirected gold edges hit (root edge: directed)
    n = len(gold)
    edges = {frozenset((d, h)) for d, h in zip(range(1, n + 1), gold, strict=True) if h >= 1}
    hits = sum(1 for d, h in zip(range(1, n + 1), pred, strict=True)
               if (h == 0 and gold[d - 1] == 0) or (h >= 1 and frozenset((d, h)) in edges))
    assert uu == hits / n


@given(st.lists(st.text(alphabet="abc", min_size=1, max_size=3), min_size=1, max_size=8),
       st.lists(st.booleans(), min_size=30, max_size=30))
@settings(max_examples=60, deadline=None)
def test_segmentation_property(gold, cuts):
    text = "".join(gold)
    pred, start = [], 0
    for i in range(1, len(text)):
        if cuts[i % 30]:
            pred.append(text[start:i])
            start = i
    pred.append(text[start:])
    assert metrics.segmentation_prf(gold, gold) == (1.0, 1.0, 1.0)
    assert metrics.word_prf(gold, gold) == (1.0, 1.0, 1.0)
    p, r, f = metrics.segmentation_prf(pred, gold)
    bp = {len("".join(pred[:k])) for k in range(1, len(pred))}
    bg = {len("".join(gold[:k])) for k in range(1, len(gold))}
    if bp:
        assert p == len(bp & bg) / len(bp)
    if bg:
        assert r == len(bp & bg) / len(bg)
    assert 0.0 <= min(p, r, f) and max(p, r, f) <= 1.0
