"""kexue.sample / kexue.decoding.sampling_probs: every backend against the float64 reference
(pyext/decoding/reference.py), draws by a χ² test, bad input, opcheck and torch.compile."""

from __future__ import annotations

import math

import pytest
import torch

import kexue
from helpers import backend_pairs, error, expected_backends
from kexue.decoding import api, sample_reference, sampling_probs, sampling_probs_reference
from kexue.decoding.reference import row_params

PAIRS = backend_pairs(expected_backends())
# (B, V): one row, one token, two tokens, odd sizes, more than one Triton tile (128 under the interpreter)
SHAPES = [(1, 1), (1, 2), (3, 7), (2, 129), (5, 300)]
OPTIONS = [
    dict(),
    dict(temperature=0.7),
    dict(top_k=1),
    dict(top_k=5),
    dict(top_p=0.5),
    dict(top_p=0.9, temperature=1.3),
    dict(top_k=50, top_p=0.9, keep=0),
    dict(top_k=3, top_p=0.3, keep=[1, 4]),
]


def _logits(B, V, dtype=torch.float32, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, V, generator=g) * scale).to(dtype)


def _fit(opts, V):
    o = dict(opts)
    if "keep" in o:
        ids = [o["keep"]] if isinstance(o["keep"], int) else o["keep"]
        o["keep"] = [i % V for i in ids]
    return o


def _ref(x, opts, dtype=torch.float64):
    T, k, p, E = row_params(x.shape[0], opts.get("temperature"), opts.get("top_k"), opts.get("top_p"),
                            opts.get("keep"), x.device)
    return sampling_probs_reference(x, T, k, p, E, dtype)


def _check_probs(got, x, opts, name):
    ref64 = _ref(x, opts)
    ref32 = _ref(x, opts, torch.float32)
    assert got.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
    assert torch.equal(got > 0, ref64 > 0), f"{name}: kept sets differ"
    err, base = error(got, ref64), error(ref32, ref64)
    # flash-attention's rule with a floor of a few float32 ulps of a probability (<= 1)
    assert err <= 2 * base + 4 * torch.finfo(torch.float32).eps, f"{name}: error {err:.3g} (base {base:.3g})"


# The Triton interpreter runs each bisection step as numpy calls per tile: the full grid runs on the
# compiled backends, and a cross-section of it on Triton (every option once, every shape once).
TRITON_GRID = [(SHAPES[i % len(SHAPES)], OPTIONS[i]) for i in range(len(OPTIONS))]
GRID = [(b, d, shape, opts) for b, d in PAIRS for shape in SHAPES for opts in OPTIONS
        if b != "triton" or (shape, opts) in TRITON_GRID]


@pytest.mark.parametrize("backend,device,shape,opts", GRID,
                         ids=[f"{b}-{d}-B{s[0]}V{s[1]}-" + (",".join(f"{k}={v}" for k, v in o.items()) or "none")
                              for b, d, s, o in GRID])
def test_probs_match_reference(backend, device, shape, opts):
    B, V = shape
    x = _logits(B, V).to(device)
    opts = _fit(opts, V)
    got = sampling_probs(x, backend=backend, **opts)
    _check_probs(got.cpu(), x.cpu(), opts, f"{backend} B{B} V{V} {opts}")


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_and_strides(backend, device, dtype):
    if backend == "triton" and dtype in (torch.float64, torch.bfloat16):
        pytest.skip("the Triton kernel takes fp16/bf16/fp32; bf16 arithmetic is not in the interpreter")
    x = _logits(6, 257, dtype).to(device)
    xt = x.t().contiguous().t()  # column-major: stride (1, 6)
    opts = dict(top_k=20, top_p=0.8, keep=[3])
    got = sampling_probs(xt, backend=backend, **opts)
    _check_probs(got.cpu(), x.cpu(), opts, f"{backend} {dtype}")


@pytest.mark.parametrize("backend,device", PAIRS)
def test_masks_ties_and_per_row(backend, device):
    B, V = 4, 200
    x = _logits(B, V)
    x[0, ::3] = float("-inf")  # masked tokens (HF processors emit -inf)
    x[1] = torch.randint(0, 4, (V,)).float()  # many ties: at the k-th value and at the crossing
    x[2, 1:] = float("-inf")  # one finite token
    x[3, 7] = float("-inf")  # a masked keep id: stays at probability 0
    opts = dict(temperature=torch.tensor([0.5, 1.0, 2.0, 1.0], dtype=torch.float64),
                top_k=torch.tensor([10, 7, 3, 200]), top_p=torch.tensor([0.9, 0.55, 1.0, 0.2]),
                keep=torch.tensor([[5, -1], [199, 0], [7, 8], [7, 9]]))
    got = sampling_probs(x.to(device), backend=backend, **{k: v.to(device) for k, v in opts.items()})
    _check_probs(got.cpu(), x, opts, backend)
    assert got[3, 7] == 0


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("opts", [dict(), dict(temperature=1e-3), dict(top_k=2, keep=[2, 4])], ids=repr)
def test_far_below_the_max_underflows_as_ieee(backend, device, opts):
    """Tokens 87-104 nats below the max have float32 denormal probabilities, and further down 0.
    No backend may give them more: the CPU exp once clamped its input at the smallest normal float,
    so these tokens got 1.2e-38 (a kept set wider than the reference's, and e^-1000 drawn as if it
    were e^-87)."""
    x = torch.tensor([[0.0, -90.0, -95.0, -100.0, -110.0, float("-inf"), -1.0]])
    got = sampling_probs(x.to(device), backend=backend, **opts).cpu()
    ref = _ref(x, opts)  # float64
    denormal_ulp = 2.0 ** -149
    assert (got.double() <= ref * (1 + 1e-6) + 2 * denormal_ulp).all(), f"{got} vs {ref}"
    normal = ref >= torch.finfo(torch.float32).smallest_normal
    assert torch.allclose(got.double()[normal], ref[normal], rtol=1e-6, atol=0)
    assert got[0, 5] == 0


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("T", [1e-300, 1e-40, 1e-6, 1e38], ids=repr)
def test_any_temperature_without_overflow(backend, device, T):
    """A tiny temperature is the greedy limit (ties share it), a huge one scales logits near ±3.4e38.
    Dividing the logits by T first made x / T = ±inf: NaN probabilities on Triton and a false
    "NaN or +inf" error on the CPU, for temperatures below ~1e-38."""
    x = torch.tensor([[0.0, 2.0, -3e38, 2.0, 1.5e38], [1.0, -1.0, float("-inf"), 0.5, 1.0]])
    g = torch.Generator(device=device).manual_seed(0)
    for opts in (dict(temperature=T), dict(temperature=T, top_k=2, top_p=0.5, keep=2)):
        got = sampling_probs(x.to(device), backend=backend, **opts).cpu()
        ref = _ref(x, opts)
        assert torch.isfinite(got).all(), f"{backend} T={T} {opts}: {got}"
        assert (got.double() - ref).abs().max() <= 1e-6, f"{backend} T={T} {opts}: {got} vs {ref}"
        tok = kexue.sample(x.to(device), backend=backend, generator=g, **opts).cpu()
        assert (ref[torch.arange(2), tok] > 0).all()
    if T < 1e-30:
        assert torch.equal(got[1], torch.tensor([0.5, 0, 0, 0, 0.5]))


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("T", [1e39, 1e300], ids=repr)
def test_temperature_beyond_float32_with_masked_tokens(backend, device, T):
    """A finite float64 temperature above float32's range rounds to inf in the float32 kernels:
    every finite token then has gap 0 (the uniform limit), and a masked one must stay at weight 0,
    not -inf / inf = NaN.  Found by ``bench/fuzz_ops.py --op sample`` (seed 52): a masked keep id
    made every probability NaN on "cpu", any masked token did on "triton"."""
    x = torch.tensor([[1.0, 0.5, float("-inf"), -2.0], [0.0, float("-inf"), 3.0, 1.0]])
    want = torch.tensor([[1 / 3, 1 / 3, 0, 1 / 3], [1 / 3, 0, 1 / 3, 1 / 3]], dtype=torch.float64)
    g = torch.Generator(device=device).manual_seed(0)
    for opts in (dict(), dict(keep=[2, 1]), dict(top_p=0.5), dict(top_k=2, keep=1)):
        got = sampling_probs(x.to(device), temperature=T, backend=backend, **opts).cpu()
        ref = _ref(x, dict(opts, temperature=T))
        assert torch.isfinite(got).all(), f"{backend} {opts}: {got}"
        assert (got.double() - ref).abs().max() <= 1e-6, f"{backend} {opts}: {got} vs {ref}"
        if not opts:
            assert torch.allclose(got.double(), want)
        tok = kexue.sample(x.to(device), temperature=T, backend=backend, generator=g, **opts).cpu()
        assert (ref[torch.arange(2), tok] > 0).all(), f"{backend} {opts}: token {tok}"


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("T", [165.85345248431128, 1.5, 3.0])
def test_temperature_above_one_keeps_float32_accuracy(backend, device, T):
    """Large logits and T > 1: the gap (x − m) / T must carry float32's accuracy of the plain
    composite softmax((x − m) / T), not the rounding of the two quotients x / T and m / T (error
    |x| / T units, 100x more at |x| = 1e4, T = 166: bench/fuzz_ops.py --op sample, seed 1292).  The
    quotient form is kept only where x − m overflows float32."""
    x = _logits(3, 300, scale=1e4, seed=1)
    x[0, :2] = torch.tensor([1e4, 1e4 - 1])  # two tokens near the top: x / T rounds by 2.4e-4 at T = 3
    x[2, :2] = torch.tensor([3e38, -3e38])  # x − m overflows: the quotients are needed there
    for opts in (dict(temperature=T), dict(temperature=T, top_k=2), dict(temperature=T, top_p=0.9, keep=[5])):
        got = sampling_probs(x.to(device), backend=backend, **opts).cpu()
        ref64 = _ref(x, opts)
        judged = (ref64 == 0) | (ref64 >= 1e-30)  # (not: weights at float32's underflow)
        assert ((got > 0) == (ref64 > 0))[judged].all(), f"{backend} {opts}: kept sets differ"
        g = (x.double() - x.double().max(dim=1, keepdim=True).values) / T  # plain composite, float32
        plain = torch.where(ref64 > 0, torch.exp(g.float()), torch.zeros(()))
        plain = plain / plain.sum(dim=1, keepdim=True)
        err, base = error(got, ref64), error(plain, ref64)
        assert err <= 2 * base + 4 * torch.finfo(torch.float32).eps, f"{backend} {opts}: {err:.3g} vs {base:.3g}"


@pytest.mark.parametrize("backend,device", PAIRS)
def test_signed_zeros_tie_in_top_k(backend, device):
    """-0.0 == +0.0: a zero logit tied with a θ_k of the other sign is kept (the tie rule).  The
    Triton and CUDA kernels' order-preserving integer key once put -0.0 below +0.0 (found by
    ``bench/fuzz_ops.py --op sample``, seed 1862: logits rounded to halves give signed zeros)."""
    x = torch.tensor([[1.0, 0.0, -0.0, -1.0, -0.0], [1.0, -0.0, 0.0, -1.0, 0.0], [-0.0, 0.0, -2.0, -0.0, 1.0]])
    for opts in (dict(top_k=2), dict(top_k=1), dict(top_k=2, top_p=0.9, keep=3)):
        got = sampling_probs(x.to(device), backend=backend, **opts).cpu()
        ref = _ref(x, opts)
        assert torch.equal(got > 0, ref > 0), f"{backend} {opts}: {got} vs {ref}"
        assert (got.double() - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("T", [0.5, 1e-3, 2.0])
def test_gradient_with_a_tied_max(T):
    """∂q/∂x = q ⊙ (g − ⟨q, g⟩) / T also where the largest logit is tied: the reference (the "torch"
    backend, and every backend's double backward and torch.func route) once sent the gradient of
    the row max to one of the tied tokens (found by ``bench/fuzz_ops.py --op sample``, seed 101)."""
    x0 = torch.tensor([[1.0, 1.0, -2.0, 1.0], [0.3, 0.3, 0.3, 0.3]], dtype=torch.float64)
    go = torch.tensor([[1.0, -2.0, 0.5, 3.0], [1.0, 0.0, -1.0, 2.0]], dtype=torch.float64)

    def want(x):
        q = torch.softmax(x / T, dim=1)
        return q * (go - (q * go).sum(1, keepdim=True)) / T

    for backend in ("torch", "cpu"):
        x = x0.clone().requires_grad_()
        q = sampling_probs(x, temperature=T, backend=backend)
        (g1,) = torch.autograd.grad((q * go).sum(), x, create_graph=True)
        assert torch.allclose(g1, want(x0), rtol=1e-9, atol=1e-12), f"{backend}: {g1} vs {want(x0)}"
        g2 = torch.func.grad(lambda x, b=backend: (sampling_probs(x, temperature=T, backend=b) * go).sum())(x0)
        assert torch.allclose(g2, want(x0), rtol=1e-9, atol=1e-12), f"{backend} torch.func: {g2}"


def test_reference_semantics_by_hand():
    one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    x = torch.tensor([[3.0, 2.0, 2.0, 1.0, 0.0]])
    T, none_k, none_p, E = row_params(1, 1.0, None, None, None, "cpu")
    # top-k=2: the tie at the 2nd value keeps both 2.0 tokens
    q = sampling_probs_reference(x, T, torch.tensor([2]), none_p, E)
    assert (q[0] > 0).tolist() == [True, True, True, False, False]
    # top-p: p(3.0) = 0.53 < 0.6, so the crossing token (and the one tied with it) is kept
    q = sampling_probs_reference(x, T, none_k, one(0.6), E)
    assert (q[0] > 0).tolist() == [True, True, True, False, False]
    q = sampling_probs_reference(x, T, none_k, one(0.5), E)
    assert (q[0] > 0).tolist() == [True, False, False, False, False]
    # keep: eos (id 4) comes back with its own weight e^0 against e^3
    q = sampling_probs_reference(x, T, torch.tensor([1]), none_p, torch.tensor([[4]]))
    assert torch.allclose(q[0, [0, 4]], torch.tensor([math.e**3, 1.0], dtype=torch.float64) / (math.e**3 + 1))


def test_matches_hf_warpers():
    """Without ties and keep ids, the distribution is HF's Temperature → TopK → TopP + softmax."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    x = _logits(16, 1000)
    scores = TopPLogitsWarper(0.9)(None, TopKLogitsWarper(50)(None, TemperatureLogitsWarper(0.8)(None, x.clone())))
    hf = scores.double().softmax(-1)
    for backend in ("torch", "cpu"):
        q = sampling_probs(x, temperature=0.8, top_k=50, top_p=0.9, backend=backend)
        assert torch.equal(q > 0, hf > 0)
        assert error(q, hf) < 1e-6


@pytest.mark.parametrize("backend,device", PAIRS)
def test_same_uniform_same_token(backend, device):
    """The draw is the inverse CDF in token order: every backend returns the reference's token."""
    B = 12 if backend == "triton" and device == "cpu" else 64  # (the interpreter is slow)
    x = _logits(B, 300)
    opts = _fit(dict(top_k=40, top_p=0.8, keep=[0]), 300)
    T, k, p, E = row_params(B, None, 40, 0.8, [0], "cpu")
    g = torch.Generator().manual_seed(1)
    u = torch.rand(B, dtype=torch.float64, generator=g)
    want = sample_reference(x, T, k, p, E, u)
    g = torch.Generator(device=device).manual_seed(1)
    got = kexue.sample(x.to(device), generator=g, backend=backend, **opts)
    assert torch.equal(got.cpu(), want)


# χ² goodness of fit.  With N draws from q' where TV(q, q') = δ, the statistic is noncentral χ²
# with df = m − 1 and λ = N Σ (q'−q)²/q ≥ N (2δ)² (Cauchy–Schwarz, Σ q = 1).  N = 200 000 and
# δ = 0.01 give λ >= 80; with m − 1 = 11 and α = 1e-3 the power is > 0.999
# (scipy.stats.ncx2.sf(chi2.isf(1e-3, 11), 11, 80) = 0.9997).
N_DRAWS = 200_000
ALPHA = 1e-3


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_chi_square_draws(backend):
    scipy_stats = pytest.importorskip("scipy.stats")
    x = _logits(1, 40, seed=3, scale=1.5)
    opts = dict(temperature=0.9, top_k=14, top_p=0.85, keep=[39])
    q = _ref(x, opts)[0]
    support = (q > 0).nonzero()[:, 0]
    g = torch.Generator().manual_seed(2024)
    draws = kexue.sample(x.expand(N_DRAWS, -1), generator=g, backend=backend, **opts)
    assert bool((q[draws] > 0).all()), "a token outside the support was drawn"
    counts = torch.bincount(draws, minlength=40)[support].double()
    expected = q[support] * N_DRAWS
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = support.numel() - 1
    assert scipy_stats.chi2.sf(stat, df) > ALPHA, f"χ² = {stat:.1f} with {df} df"
    power = scipy_stats.ncx2.sf(scipy_stats.chi2.isf(ALPHA, df), df, N_DRAWS * 4 * 0.01**2)
    assert power > 0.99


def test_chi_square_detects_a_wrong_distribution():
    """The test above can fail: draws from a distribution 0.01 away in TV are rejected."""
    scipy_stats = pytest.importorskip("scipy.stats")
    x = _logits(1, 40, seed=3, scale=1.5)
    opts = dict(temperature=0.9, top_k=14, top_p=0.85, keep=[39])
    q = _ref(x, opts)[0]
    support = (q > 0).nonzero()[:, 0]
    wrong = q.clone()
    a, b = support[0], support[-1]
    shift = min(0.01, float(wrong[b]))
    wrong[a] += shift
    wrong[b] -= shift  # TV distance = shift
    g = torch.Generator().manual_seed(7)
    draws = torch.multinomial(wrong, N_DRAWS, replacement=True, generator=g)
    counts = torch.bincount(draws, minlength=40)[support].double()
    expected = q[support] * N_DRAWS
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert scipy_stats.chi2.sf(stat, support.numel() - 1) < ALPHA


def test_consistent_sampling_always_can_end():
    """With keep=eos the eos token has positive probability whatever top-k / top-p cut."""
    x = _logits(32, 500)
    x[:, 0] = -20.0  # eos far below the nucleus
    q = sampling_probs(x, top_k=2, top_p=0.2, keep=0)
    assert bool((q[:, 0] > 0).all())
    assert bool((sampling_probs(x, top_k=2, top_p=0.2)[:, 0] == 0).all())


def test_return_probs_and_generator_reproducible():
    x = _logits(8, 100)
    t1, q = kexue.sample(x, top_p=0.7, generator=torch.Generator().manual_seed(5), return_probs=True)
    t2 = kexue.sample(x, top_p=0.7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(t1, t2)
    assert bool((q.gather(1, t1[:, None]) > 0).all())


BAD_INPUTS = [
    (dict(logits=torch.randn(3)), ValueError, "logits"),
    (dict(logits=torch.randn(2, 3, 4)), ValueError, "logits"),
    (dict(logits=torch.randint(0, 3, (2, 3))), TypeError, "logits"),
    (dict(logits=torch.randn(2, 0)), ValueError, "logits"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(top_p=torch.tensor([0.5, -0.1])), ValueError, "top_p"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(top_k=2.5), TypeError, "top_k"),
    (dict(top_k=torch.tensor([1, 0])), ValueError, "top_k"),
    (dict(top_k=torch.tensor([1.0, 2.0])), TypeError, "top_k"),
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature=torch.tensor([1.0, 1.0, 1.0])), ValueError, "temperature"),
    (dict(keep=10), ValueError, "keep"),
    (dict(keep=-1), ValueError, "keep"),
    (dict(keep=[0, 10]), ValueError, "keep"),
    (dict(keep=torch.tensor([[0], [10]])), ValueError, "keep"),
    (dict(keep=torch.tensor([0.0])), TypeError, "keep"),
    (dict(keep=True), TypeError, "keep"),
    (dict(backend="nope"), ValueError, "backend"),
]


@pytest.mark.parametrize("kw,exc,word", BAD_INPUTS, ids=[f"{w}{i}" for i, (_, _, w) in enumerate(BAD_INPUTS)])
def test_bad_input(kw, exc, word):
    kw = dict(kw)
    logits = kw.pop("logits", torch.randn(2, 10))
    with pytest.raises(exc, match=word):
        kexue.sample(logits, **kw)
    with pytest.raises(exc, match=word):
        sampling_probs(logits, **kw)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("value,word", [(float("nan"), "NaN"), (float("inf"), r"\+inf")])
def test_nonfinite_logits_are_an_error(backend, device, value, word):
    x = _logits(3, 50)
    x[1, 17] = value
    with pytest.raises((ValueError, RuntimeError), match=f"row 1.*{word}|{word}.*row 1|row 1"):
        kexue.sample(x.to(device), backend=backend)
    x = _logits(3, 50)
    x[2] = float("-inf")
    with pytest.raises((ValueError, RuntimeError), match="row 2"):
        kexue.sample(x.to(device), backend=backend)


def test_opcheck():
    x = _logits(3, 70)
    T, k, p, E = row_params(3, 0.8, 5, 0.9, [[1], [2], [-1]], "cpu")
    u = torch.rand(3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.kexue.sample, (x, T, k, p, E, u))
    torch.library.opcheck(torch.ops.kexue.sampling_probs, (x, T, k, p, E))


@pytest.mark.skipif(not torch.cuda.is_available() or "triton" not in api.BACKENDS.available_backends(
    torch.device("cuda")), reason="triton_op kernels are not traceable on CPU tensors under the interpreter")
def test_opcheck_triton():
    from kexue.triton_kernels import sampling as tk  # noqa: F401  (registers the ops)

    x = _logits(3, 70).cuda()
    T, k, p, E = row_params(3, 0.8, 5, 0.9, [[1], [2], [-1]], "cuda")
    u = torch.rand(3, dtype=torch.float64, device="cuda")
    torch.library.opcheck(torch.ops.kexue.sample_triton, (x, T, k, p, E, u))
    torch.library.opcheck(torch.ops.kexue.sampling_probs_triton, (x, T, k, p, E))


def test_torch_compile_fullgraph():
    x = _logits(4, 300)

    def f(logits):
        return kexue.sample(logits, temperature=0.8, top_k=20, top_p=0.9, keep=0, backend="cpu",
                            return_probs=True)

    torch.manual_seed(3)
    want_t, want_q = f(x)
    torch.manual_seed(3)
    got_t, got_q = torch.compile(f, fullgraph=True, backend="eager")(x)
    assert torch.equal(want_t, got_t)
    assert torch.equal(want_q, got_q)
