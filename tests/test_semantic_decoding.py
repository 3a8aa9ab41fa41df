"""Valid inputs, right answers: the consistent warpers and kexue.sample / sampling_probs against
independent implementations (Hugging Face's warpers with the eos ids put back, and naive per-row
loops in float64 written here), on the corners: scores already -inf (eos too), top_k >= V,
top_p = 1, min_tokens_to_keep > 1, several eos ids, fp16/bf16, ties, per-row parameters, V = 1, 2.

Ties: Hugging Face's top-p result on a tie at the crossing depends on its sort order; kexue keeps
every tied token (pyext/decoding/reference.py). So every row is checked against the tie-keeping
loop below, and rows without ties also against HF exactly.
"""

from __future__ import annotations

import random

import pytest
import torch

import kexue
from helpers import backend_pairs, expected_backends

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


# --------------------------------------------------------------------------- independent oracles
def _top_p_keep_loop(scores: torch.Tensor, p: float, min_keep: int = 1) -> torch.Tensor:
    """One row: the tokens HF's TopPLogitsWarper keeps, in float64, with every tie at the
    crossing kept (a plain loop over the descending probabilities)."""
    V = scores.numel()
    if p >= 1.0:
        return torch.ones(V, dtype=torch.bool)
    prob = scores.double().softmax(0)
    desc = sorted(prob.tolist(), reverse=True)
    cum, cross = 0.0, V - 1
    for i, q in enumerate(desc):
        cum += q
        if cum >= p:
            cross = i
            break
    cross = max(cross, min(min_keep, V) - 1)
    return prob >= desc[cross]


def _top_k_keep_loop(scores: torch.Tensor, k: int) -> torch.Tensor:
    vals = sorted(scores.double().tolist(), reverse=True)
    return scores.double() >= vals[min(k, len(vals)) - 1]


def _hf_then_eos_back(warper, scores: torch.Tensor, eos: list[int]) -> torch.Tensor:
    out = warper(None, scores.clone())
    idx = torch.tensor(eos)
    return out.index_copy(-1, idx, scores.index_select(-1, idx))


def _has_ties(row: torch.Tensor) -> bool:
    return len(set(row.tolist())) < row.numel()


def _random_scores(rng: random.Random, B: int, V: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    if rng.random() < 0.4:  # integer scores: many ties, at the k-th value and at the top-p crossing
        x = torch.randint(-3, 3, (B, V), generator=gen).double()
    else:
        x = torch.randn(B, V, generator=gen, dtype=torch.float64) * rng.choice([0.5, 1.0, 3.0])
    masked = torch.rand(B, V, generator=gen) < rng.random() * 0.7  # an earlier processor's -inf
    masked[:, rng.randrange(V)] = False
    return x.masked_fill(masked, float("-inf")).to(dtype)


# --------------------------------------------------------------------------- 1. the HF warpers
@pytest.mark.parametrize("dtype", DTYPES)
def test_consistent_warpers_equal_hf_then_eos_back(dtype):
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    from kexue.decoding import ConsistentTopKLogitsWarper, ConsistentTopPLogitsWarper

    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    rows_hf = rows_loop = 0
    for _ in range(150):
        B, V = rng.randint(1, 4), rng.randint(1, 12)
        x = _random_scores(rng, B, V, dtype, gen)
        eos = rng.sample(range(V), rng.randint(1, min(3, V)))
        if rng.random() < 0.3:
            x[:, eos[0]] = float("-inf")  # eos masked by an earlier processor: stays -inf
        mtk, k = rng.choice([1, 1, 2, 3]), rng.randint(1, V + 2)
        p = rng.choice([1.0, 0.5, 0.9, 0.3, 0.99, rng.random() or 0.5])
        kk = max(k, mtk)
        pairs = [(ConsistentTopKLogitsWarper(k, eos_token_id=eos, min_tokens_to_keep=mtk),
                  TopKLogitsWarper(k, min_tokens_to_keep=mtk), lambda r, kk=kk: _top_k_keep_loop(r, kk)),
                 (ConsistentTopPLogitsWarper(p, eos_token_id=eos, min_tokens_to_keep=mtk),
                  TopPLogitsWarper(p, min_tokens_to_keep=mtk), lambda r, p=p, mtk=mtk: _top_p_keep_loop(r, p, mtk))]
        for ours, theirs, keep_loop in pairs:
            got = ours(None, x.clone())
            assert got.dtype == x.dtype
            hf = _hf_then_eos_back(theirs, x, eos)
            for r in range(B):
                want = x[r].masked_fill(~keep_loop(x[r]), float("-inf"))
                want[eos] = x[r, eos]
                assert torch.equal(got[r], want), (x[r], eos, k, p, mtk)
                rows_loop += 1
                if not _has_ties(x[r]):
                    assert torch.equal(got[r], hf[r]), (x[r], eos, k, p, mtk)
                    rows_hf += 1
    assert rows_hf > 150 and rows_loop > 600  # (the case mix really reaches both checks)


@pytest.mark.parametrize("p", [1 - 1e-12, 0.99999999, 1 - 2**-52])
def test_top_p_warper_near_one_keeps_the_nucleus(p):
    """Bug (fixed): with no descending cumulative sum reaching top_p in float32 (top_p within
    rounding of 1), argmax over an all-False mask picked position 0 and kept only the top token.
    Every token whose probability exceeds 1 - p must stay (the tokens cut carry < 1 - p)."""
    from kexue.decoding import ConsistentTopPLogitsWarper

    x = torch.randn(16, 1000, generator=torch.Generator().manual_seed(1))
    got = ConsistentTopPLogitsWarper(p, eos_token_id=0)(None, x)
    must = x.double().softmax(-1) > (1 - p) + 1e-6
    assert bool((torch.isfinite(got) | ~must).all()), "tokens of the nucleus were cut"


def test_top_k_warper_keeps_ties_and_hf_equality_at_eos_not_filtered():
    """With eos inside every kept set the consistent warpers equal HF's own output exactly."""
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    from kexue.decoding import ConsistentTopKLogitsWarper, ConsistentTopPLogitsWarper

    x = torch.tensor([[5.0, 1.0, 1.0, 1.0, 0.0, -float("inf")], [0.0, 3.0, 3.0, 2.0, -1.0, -2.0]])
    got = ConsistentTopKLogitsWarper(2, eos_token_id=1)(None, x)
    assert torch.equal(got, TopKLogitsWarper(2)(None, x))  # all three tied 1.0 stay in row 0
    got = ConsistentTopPLogitsWarper(0.6, eos_token_id=[1, 2], min_tokens_to_keep=2)(None, x)
    assert torch.equal(got, TopPLogitsWarper(0.6, min_tokens_to_keep=2)(None, x).index_copy(
        -1, torch.tensor([1, 2]), x[:, [1, 2]]))


# --------------------------------------------------------------------------- 2. kexue.sample
def _hf_probs_row(x: torch.Tensor, T: float, k: int | None, p: float, keep: list[int]) -> torch.Tensor:
    """HF's Temperature → TopK → TopP in float64, the keep ids put back with their own score, softmax."""
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    s = x.double()[None] / T
    if k is not None:
        s = TopKLogitsWarper(k)(None, s)
    if p < 1.0:
        s = TopPLogitsWarper(p)(None, s)
    if keep:
        s[0, keep] = x.double()[keep] / T
    return s.softmax(-1)[0]


def _loop_probs_row(x: torch.Tensor, T: float, k: int | None, p: float, keep: list[int]) -> torch.Tensor:
    """The same with every tie at the top-p crossing kept (the documented rule), by the loops above."""
    a = x.double() / T
    in_c = _top_k_keep_loop(a, k) if k is not None else torch.ones_like(a, dtype=torch.bool)
    ca = a.masked_fill(~in_c, float("-inf"))
    kept = in_c & _top_p_keep_loop(ca, p)
    kept[keep] = True
    w = torch.where(kept, (a - a.max()).exp(), torch.zeros_like(a))
    return w / w.sum()


def _sampling_cases(n: int, seed: int):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    for _ in range(n):
        B, V = rng.randint(1, 4), rng.choice([1, 2, 3, 5, 8, 13, 40])
        dtype = rng.choice(DTYPES)
        x = _random_scores(rng, B, V, dtype, gen)
        T = [rng.choice([1.0, 0.5, 2.0, 0.7]) for _ in range(B)]
        k = [rng.choice([None, 1, 2, 3, V, V + 5]) for _ in range(B)]
        p = [rng.choice([1.0, 0.5, 0.9, 0.3, rng.random() or 0.5]) for _ in range(B)]
        K = rng.choice([0, 1, 2])
        keep = [[rng.choice([-1, -1, 0, 0] + list(range(V))) for _ in range(K)] for _ in range(B)]
        if rng.random() < 0.5:  # scalars
            T, k, p, keep = [T[0]] * B, [k[0]] * B, [p[0]] * B, [[i for i in keep[0] if i >= 0]] * B
            kw = dict(temperature=T[0], top_k=k[0], top_p=p[0], keep=keep[0] or None)
        else:  # per-row tensors; top_k "none" is a k >= V
            k = [V + 1 if v is None else v for v in k]
            kw = dict(temperature=torch.tensor(T, dtype=torch.float64), top_k=torch.tensor(k),
                      top_p=torch.tensor(p, dtype=torch.float64),
                      keep=torch.tensor(keep, dtype=torch.int64).reshape(B, K) if K else None)
        yield x, kw, T, k, p, [[i for i in row if i >= 0] for row in keep]


@pytest.mark.parametrize("backend,device", backend_pairs(expected_backends()))
def test_sampling_probs_equal_hf_and_the_loop(backend, device):
    n_hf = n_loop = 0
    for x, kw, T, k, p, keep in _sampling_cases(60 if backend == "triton" else 200, seed=3):
        if backend == "triton" and x.dtype in (torch.float64, torch.bfloat16):
            continue  # (Triton takes 16/32-bit logits; the interpreter does no bf16 arithmetic)
        kw = {n: v.to(device) if isinstance(v, torch.Tensor) else v for n, v in kw.items()}
        got = kexue.decoding.sampling_probs(x.to(device), backend=backend, **kw).double().cpu()
        for r in range(x.shape[0]):
            want = _loop_probs_row(x[r], T[r], k[r], p[r], keep[r])
            assert torch.equal(got[r] > 0, want > 0), (x[r], kw, r)
            assert float((got[r] - want).abs().max()) < 1e-5, (x[r], kw, r)
            n_loop += 1
            if not _has_ties(x[r]):
                hf = _hf_probs_row(x[r], T[r], k[r], p[r], keep[r])
                assert torch.equal(got[r] > 0, hf > 0) and float((got[r] - hf).abs().max()) < 1e-5
                n_hf += 1
    assert n_hf > 20 and n_loop > 60


@pytest.mark.parametrize("backend,device", backend_pairs(expected_backends()))
def test_keep_padding_next_to_token_zero(backend, device):
    """Bug (fixed, torch backend): per-row keep ids (B, K) padded with -1 beside a real id 0 lost
    the 0: the reference scattered the -1 (clamped to 0) as False after the 0's True."""
    x = torch.tensor([[0.0, 3.0, -1.0], [0.0, 3.0, -1.0], [0.0, 3.0, -1.0]], device=device)
    keep = torch.tensor([[0, -1], [-1, 0], [-1, -1]], device=device)
    got = kexue.decoding.sampling_probs(x, top_k=1, keep=keep, backend=backend).cpu()
    w = torch.tensor([0.0, 3.0]).exp()
    two = torch.cat([w / w.sum(), torch.zeros(1)])
    want = torch.stack([two, two, torch.tensor([0.0, 1.0, 0.0])])
    assert torch.allclose(got, want, atol=1e-6), got


@pytest.mark.parametrize("backend,device", backend_pairs(expected_backends()))
@pytest.mark.parametrize("p", [1 - 2**-52, 1 - 2**-50, 1 - 1e-12])
def test_sampling_top_p_near_one_keeps_the_nucleus(backend, device, p):
    """Bug (fixed, torch backend): float64 logits with top_p a few ulps below 1: the cumulative sum
    never reached p·Z (sum and cumsum round differently), argmax of all-False gave position 0 and
    only the top token was kept."""
    dtypes = [torch.float32] + ([torch.float64] if backend != "triton" else [])
    for dtype in dtypes:
        x = torch.randn(4, 3000, generator=torch.Generator().manual_seed(2), dtype=dtype).to(device)
        q = kexue.decoding.sampling_probs(x, top_p=p, backend=backend).cpu()
        assert bool((q > 0).all()), f"{dtype}: {(q > 0).sum(1).tolist()} tokens kept of 3000"


@pytest.mark.parametrize("backend,device", backend_pairs(expected_backends()))
def test_sample_draws_from_sampling_probs_on_tied_rows(backend, device):
    """The inverse-CDF draw at u: the first token whose cumulative probability exceeds u (a loop)."""
    for x, kw, *_ in _sampling_cases(20 if backend == "triton" else 40, seed=5):
        if backend == "triton" and x.dtype in (torch.float64, torch.bfloat16):
            continue
        kw = {n: v.to(device) if isinstance(v, torch.Tensor) else v for n, v in kw.items()}
        g = torch.Generator(device=device).manual_seed(0)
        tok, q = kexue.sample(x.to(device), generator=g, return_probs=True, backend=backend, **kw)
        tok, q = tok.cpu(), q.cpu()
        u = torch.rand(x.shape[0], dtype=torch.float64, generator=torch.Generator(device=device).manual_seed(0),
                       device=device).cpu()
        for r in range(x.shape[0]):
            cdf = q[r].double().cumsum(0)
            want = min(int((cdf > u[r] * cdf[-1]).nonzero()[0, 0]), int((q[r] > 0).nonzero()[-1, 0]))
            assert q[r, tok[r]] > 0
            if abs(float(cdf[want] - u[r] * cdf[-1])) > 1e-5:  # (away from a rounding boundary)
                assert int(tok[r]) == want, (x[r], kw)


def _authors_top_k_top_p(x: torch.Tensor, k: int, p: float, eos: int) -> torch.Tensor:
    """uralik/consistency-lm's top_k_top_p_filtering with consistent_sampling, restated: the top-k
    mask with eos unset is applied first, so the top-p softmax sees eos; then eos is unset again."""
    x = x.clone()
    remove = x < torch.topk(x, k)[0][..., -1, None]
    remove[:, eos] = False
    x[remove] = -float("inf")
    s, idx = torch.sort(x, descending=True)
    drop = s.softmax(-1).cumsum(-1) > p
    drop[..., 1:] = drop[..., :-1].clone()
    drop[..., 0] = False
    remove = drop.scatter(1, idx, drop)
    remove[:, eos] = False
    return x.masked_fill(remove, -float("inf"))


def test_warper_chain_top_k_then_top_p_is_the_authors_filter():
    """ConsistentTopK → ConsistentTopP is the authors' combined filter: top-p sees eos (restored by
    top-k).  kexue.sample (and consistent_generate) take top-p over the top-k set and add eos last,
    so the two differ on rows whose eos is outside the top-k set (documented in warpers.py), and
    only there."""
    from kexue.decoding import ConsistentTopKLogitsWarper, ConsistentTopPLogitsWarper

    g = torch.Generator().manual_seed(6)
    eos, differ = 7, 0
    for _ in range(300):
        x = torch.randn(1, 50, generator=g) * 2
        k, p = int(torch.randint(1, 12, (1,), generator=g)), float(torch.rand(1, generator=g)) * 0.9 + 0.05
        chain = ConsistentTopPLogitsWarper(p, eos_token_id=eos)(None, ConsistentTopKLogitsWarper(k, eos_token_id=eos)(
            None, x))
        assert torch.equal(torch.isfinite(chain), torch.isfinite(_authors_top_k_top_p(x, k, p, eos)))
        q = kexue.decoding.sampling_probs(x, top_k=k, top_p=p, keep=eos)
        if not torch.equal(torch.isfinite(chain), q > 0):
            differ += 1
            assert float(x[0, eos]) < float(x[0].topk(k).values[-1])  # eos outside the top-k set
    assert differ > 0  # (the two definitions really differ on some rows)
