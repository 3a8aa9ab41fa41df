"""cross_entropy: every backend against the float64 composite (the "torch" backend's definition).

The oracle is cross_entropy_reference run in float64 with autograd; the "torch" backend in the
logits' dtype is the same-dtype baseline of the tolerance rule (tests/helpers.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import kexue
from helpers import DEVICES, assert_close_rule, backend_pairs, error, expected_backends, triton_runs_on
from kexue.cross_entropy import cross_entropy_reference
from kexue.cross_entropy.api import BACKENDS

# Backends that must run on each device: one that is expected and missing fails the suite.
EXPECTED = expected_backends()
# Backends not written yet are listed here and removed as they land.
NOT_YET = {"cpu": set(), "cuda": set()}
PAIRS = backend_pairs(EXPECTED)
# float32 floor: lse and the gradient's softmax are float32 sums over <= a few thousand O(1)
# terms; a few hundred ulps of O(1) values.
F32_FLOOR = 2e-5


def _available(backend, device):
    ok, why = BACKENDS.availability(backend, torch.device(device))
    if not ok and backend in NOT_YET[device]:
        pytest.skip(f"{backend} on {device}: not written yet")
    assert ok, f"{backend} must run on {device}: {why}"


def make_case(N, C, *, dtype=torch.float32, device="cpu", noncontig=False, ignore_frac=0.2, scale=3.0,
              ignore_index=-100):
    if noncontig:  # every other column of a wider buffer, transposed storage
        logits = (torch.randn(C * 2, N, device=device) * scale).to(dtype).t()[:, ::2]
    else:
        logits = (torch.randn(N, C, device=device) * scale).to(dtype)
    target = torch.randint(0, C, (N,), device=device)
    target[torch.rand(N, device=device) < ignore_frac] = ignore_index
    return logits, target


def make_prior(C, device="cpu"):
    return torch.rand(C, device=device).pow(3) * 100 + 0.01  # long-tailed counts


def loss_and_grad(fn, logits, target, go=None, **kw):
    x = logits.detach().clone().requires_grad_()
    out = fn(x, target, **kw)
    if go is None:
        go = torch.randn_like(out, dtype=torch.float64) if out.dim() else torch.tensor(1.0, dtype=torch.float64)
    (g,) = torch.autograd.grad(out, x, go.to(out.dtype))
    return out.detach(), g, go


def check_backend(backend, logits, target, *, floor=F32_FLOOR, grad=True, **kw):
    """Loss and gradient of ``backend`` against the float64 oracle, with the same-dtype torch baseline."""
    kw64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    fn = lambda x, t, **k: kexue.cross_entropy(x, t, backend=backend, **k)  # noqa: E731
    out, g, go = loss_and_grad(fn, logits, target, **kw)
    out64, g64, _ = loss_and_grad(cross_entropy_reference, logits.double(), target, go=go, **kw64)
    low, glow, _ = loss_and_grad(cross_entropy_reference, logits, target, go=go, **kw)
    assert out.dtype == logits.dtype and out.shape == out64.shape
    assert_close_rule(out, out64, low, floor=floor, name=f"{backend} loss")
    if grad:
        assert g.shape == logits.shape and g.dtype == logits.dtype
        assert_close_rule(g, g64, glow, floor=floor, name=f"{backend} grad")
    return out, g


def test_reference_is_torch_cross_entropy():
    """Without prior/flood/z-loss the composite is F.cross_entropy (weights, smoothing, ignore, reductions)."""
    logits, target = make_case(37, 11, dtype=torch.float64)
    w = torch.rand(11, dtype=torch.float64) + 0.1
    for weight in (None, w):
        for eps in (0.0, 0.3):
            for red in ("mean", "sum", "none"):
                kw = dict(weight=weight, label_smoothing=eps, reduction=red)
                a, ga, go = loss_and_grad(cross_entropy_reference, logits, target, **kw)
                b, gb, _ = loss_and_grad(F.cross_entropy, logits, target, go=go, **kw)
                assert error(a, b) < 1e-12 and error(ga, gb) < 1e-12, kw


SHAPES = [(1, 1), (3, 2), (67, 129), (40, 1000), (5, 4099)]
OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-3},
    {"prior": "prior", "tau": 1.0},
    {"prior": "prior", "tau": 0.5, "flood": 2.0},
    {"flood": 5.0, "flood_mode": "sample"},
    {"flood": 0.5, "flood_mode": "sample", "reduction": "none", "label_smoothing": 0.2},
    {"weight": "weight", "label_smoothing": 0.1, "z_loss": 1e-4, "flood": 10.0, "prior": "prior"},
]


def _options(opts, C, device):
    kw = dict(opts)
    if kw.get("prior") == "prior":
        kw["prior"] = make_prior(C, device)
    if kw.get("weight") == "weight":
        kw["weight"] = torch.rand(C, device=device) + 0.5
    return kw


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_forward_backward(backend, device, shape, opts):
    _available(backend, device)
    N, C = shape
    logits, target = make_case(N, C, device=device)
    check_backend(backend, logits, target, **_options(opts, C, device))


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_noncontiguous_and_ignore_index_in_range(backend, device, ignore_index):
    _available(backend, device)
    logits, target = make_case(50, 300, device=device, noncontig=True, ignore_index=ignore_index)
    assert not logits.is_contiguous()
    check_backend(backend, logits, target, ignore_index=ignore_index, label_smoothing=0.1,
                  weight=torch.rand(300, device=device), prior=make_prior(300, device))


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_flood_flips_the_gradient_below_the_level(backend, device, mode):
    _available(backend, device)
    logits, target = make_case(20, 7, device=device, ignore_frac=0.0)
    plain, g0 = check_backend(backend, logits, target)
    level = float(plain) * 10 if mode == "batch" else 1e3  # every row (and the mean) below the level
    flooded, g1 = check_backend(backend, logits, target, flood=level, flood_mode=mode)
    assert torch.allclose(flooded, 2 * level - plain, rtol=1e-6)
    assert torch.allclose(g1, -g0, atol=1e-7)
    above, g2 = check_backend(backend, logits, target, flood=float(plain) / 10, flood_mode="batch")
    assert torch.equal(above, plain) and torch.allclose(g2, g0, atol=1e-7)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_rows_ignored(backend, device, reduction):
    """A mean over no valid row is 0/0: NaN with zero gradients, as torch (issue 20: degenerate
    reductions follow torch); "sum" and "none" give 0."""
    _available(backend, device)
    logits, target = make_case(9, 13, device=device)
    target[:] = -100
    w = torch.rand(13, device=device)
    if reduction != "mean":
        flood = 0.3 if reduction != "none" else None
        out, g = check_backend(backend, logits, target, reduction=reduction, flood=flood, weight=w)
        expected = 2 * 0.3 if flood else 0.0  # |0 - b| + b
        assert torch.all(out == expected) and torch.all(g == 0)
        return
    for weight in (None, w):
        out, g, _ = loss_and_grad(lambda x, t, **k: kexue.cross_entropy(x, t, backend=backend, **k), logits, target,
                                  weight=weight)
        want, gwant, _ = loss_and_grad(F.cross_entropy, logits, target, weight=weight)
        assert torch.isnan(out) and torch.isnan(want) and torch.equal(g, gwant) and torch.all(g == 0)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_weights_summing_to_zero_follow_torch(backend, device):
    """Valid rows whose class weights are all 0: torch's mean is 0/0 = NaN with NaN gradients."""
    _available(backend, device)
    logits, target = make_case(9, 13, device=device, ignore_frac=0.0)
    target[:] = 3
    w = torch.ones(13, device=device)
    w[3] = 0
    out, g, _ = loss_and_grad(lambda x, t, **k: kexue.cross_entropy(x, t, backend=backend, **k), logits, target,
                              weight=w)
    want, gwant, _ = loss_and_grad(F.cross_entropy, logits, target, weight=w)
    assert torch.isnan(out) and torch.isnan(want)
    assert torch.equal(torch.isnan(g), torch.isnan(gwant))


@pytest.mark.parametrize("backend,device", PAIRS)
def test_empty_batch(backend, device):
    """No rows: "sum" is 0 and "mean" NaN, as torch's."""
    _available(backend, device)
    logits, target = make_case(0, 10, device=device)
    out, g = check_backend(backend, logits, target, reduction="sum")
    assert out == 0 and g.shape == (0, 10)
    mean = kexue.cross_entropy(logits, target, backend=backend)
    assert torch.isnan(mean) and torch.isnan(F.cross_entropy(logits, target))


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1, "z_loss": 1e-6}])
def test_huge_logits(backend, device, opts):
    _available(backend, device)
    logits, target = make_case(33, 257, device=device, scale=1.0)
    logits = logits.sign() * 1e4 + logits  # ±1e4 with O(1) differences
    out, g = check_backend(backend, logits, target, floor=1e-2 if opts else F32_FLOOR, **opts)
    assert torch.isfinite(out).all() and torch.isfinite(g).all()


@pytest.mark.parametrize("backend,device", PAIRS)
def test_minus_inf_logits(backend, device):
    _available(backend, device)
    logits, target = make_case(16, 50, device=device, ignore_frac=0.0)
    mask = torch.rand(16, 50, device=device) < 0.5
    mask[torch.arange(16), target] = False  # the target logit stays finite
    logits = logits.masked_fill(mask, float("-inf"))
    out, g = check_backend(backend, logits, target, prior=make_prior(50, device))
    assert torch.isfinite(out) and torch.all(g[mask] == 0)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("opts", OPTIONS[:1] + OPTIONS[-1:], ids=["default", "all"])
def test_half_precision(backend, device, dtype, opts):
    _available(backend, device)
    logits, target = make_case(64, 515, dtype=dtype, device=device)
    # The same-dtype reference computes in float32 and rounds once (the loss and each gradient
    # element): the kernels do the same, so the bound is dominated by that rounding; the floor
    # covers float32 sums.
    check_backend(backend, logits, target, floor=1e-4, **_options(opts, 515, device))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_gradcheck_float64(backend, opts):
    _available(backend, "cpu")
    logits, target = make_case(6, 5, dtype=torch.float64, ignore_frac=0.0)
    target[2] = -100
    kw = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in _options(opts, 5, "cpu").items()}
    if "flood" in kw:  # keep the loss away from the level, where |.| has its kink
        kw["flood"] = 0.37 if kw.get("flood_mode") == "sample" else 100.0

    def f(x):
        return kexue.cross_entropy(x, target, backend=backend, **kw)

    assert torch.autograd.gradcheck(f, (logits.requires_grad_(),), atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradgradcheck(f, (logits,)) if backend == "torch" else True


OPT_STRATEGY = dict(
    N=st.integers(1, 40), C=st.integers(1, 300), reduction=st.sampled_from(["mean", "sum", "none"]),
    eps=st.sampled_from([0.0, 0.05, 0.5, 1.0]), z=st.sampled_from([0.0, 1e-4, 0.1]),
    use_prior=st.booleans(), tau=st.sampled_from([0.5, 1.0, 2.0]), use_weight=st.booleans(),
    flood=st.sampled_from([None, 0.0, 1.0, 4.0]), flood_mode=st.sampled_from(["batch", "sample"]),
    ignore_frac=st.sampled_from([0.0, 0.3, 1.0]), noncontig=st.booleans(), seed=st.integers(0, 2**16),
)


@settings(max_examples=40, deadline=None)
@given(**OPT_STRATEGY)
def test_property_all_backends_agree(N, C, reduction, eps, z, use_prior, tau, use_weight, flood, flood_mode,
                                     ignore_frac, noncontig, seed):
    torch.manual_seed(seed)
    if flood_mode == "batch" and reduction == "none":
        flood = None
    logits, target = make_case(N, C, noncontig=noncontig, ignore_frac=ignore_frac)
    kw = dict(reduction=reduction, label_smoothing=eps, z_loss=z, tau=tau, flood=flood, flood_mode=flood_mode,
              prior=make_prior(C) if use_prior else None, weight=torch.rand(C) + 0.1 if use_weight else None)
    no_valid_mean = reduction == "mean" and not bool((target != -100).any())
    for backend in EXPECTED["cpu"]:
        if not BACKENDS.availability(backend, torch.device("cpu"))[0] and backend in NOT_YET["cpu"]:
            continue
        if no_valid_mean:  # a mean over no row is 0/0 = NaN, as torch's (gradients: test_all_rows_ignored)
            assert torch.isnan(kexue.cross_entropy(logits, target, backend=backend, **kw))
            continue
        check_backend(backend, logits, target, floor=F32_FLOOR * 10, **kw)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_out_of_range_target_is_a_clear_error(backend, device, monkeypatch):
    _available(backend, device)
    logits, target = make_case(8, 5, device=device)
    if device != "cpu":
        # GPU kernels never wait for the device by default (no host synchronisation, CUDA-graph
        # safe), so they cannot raise at the call: the bad row's loss is NaN, the others unchanged.
        monkeypatch.delenv("KEXUE_SYNC_CHECKS", raising=False)
        good = kexue.cross_entropy(logits, target, backend=backend, reduction="none")
        others = torch.arange(8, device=device) != 3
        for bad in (5, -1, 1000):
            t = target.clone()
            t[3] = bad
            x = logits.clone().requires_grad_()
            out = kexue.cross_entropy(x, t, backend=backend, reduction="none")
            assert torch.isnan(out[3]) and torch.equal(out[others], good[others])
            if backend == "cuda":  # the gradient row of a bad target is NaN too
                (g,) = torch.autograd.grad(out[others].sum(), x)
                assert torch.isnan(g[3]).all() and torch.isfinite(g[others]).all()
        if backend != "cuda":
            return
        # the cuda binding's opt-in synchronous check raises the CPU kernel's error
        monkeypatch.setenv("KEXUE_SYNC_CHECKS", "1")
    for bad in (5, -1, 1000):
        target[3] = bad
        with pytest.raises((ValueError, RuntimeError, IndexError), match="out of range"):
            kexue.cross_entropy(logits, target, backend=backend)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"prior": torch.tensor([1.0, 0.0, 2.0, 1.0, 1.0])}, "prior must be positive"),
        ({"prior": torch.tensor([1.0, -1.0, 2.0, 1.0, 1.0])}, "prior must be positive"),
        ({"prior": torch.ones(4)}, "prior must have shape"),
        ({"weight": torch.ones(6)}, "weight must have shape"),
        ({"flood": 1.0, "reduction": "none"}, "flood_mode='batch'"),
        ({"flood_mode": "row"}, "flood_mode must be one of"),
        ({"reduction": "avg"}, "reduction must be one of"),
        ({"label_smoothing": 1.5}, "label_smoothing must be"),
        ({"z_loss": -1.0}, "z_loss must be"),
        ({"backend": "tpu"}, "backend must be one of"),
        ({"backend": "cuda"}, "backend='cuda' cannot run here"),
    ],
)
def test_bad_options_are_clear_errors(kw, match):
    logits, target = make_case(8, 5)
    with pytest.raises((ValueError, TypeError), match=match):
        kexue.cross_entropy(logits, target, **kw)


def test_bad_tensors_are_clear_errors():
    logits, target = make_case(8, 5)
    with pytest.raises(ValueError, match="logits must have shape"):
        kexue.cross_entropy(logits[0], target)
    with pytest.raises(TypeError, match="logits must be float"):
        kexue.cross_entropy(logits.int(), target)
    with pytest.raises(TypeError, match="target must be int64"):
        kexue.cross_entropy(logits, target.int())
    with pytest.raises(ValueError, match="target must have shape"):
        kexue.cross_entropy(logits, target[:3])


def test_module_mirrors_torch():
    logits, target = make_case(30, 7)
    target[target == -100] = 2  # ignored under ignore_index=2 below, a class otherwise
    w = torch.rand(7) + 0.5
    for kw in ({}, {"weight": w, "label_smoothing": 0.2, "ignore_index": 2, "reduction": "sum"},
               {"size_average": False}, {"reduce": False}):
        ours, theirs = kexue.nn.CrossEntropyLoss(**kw), torch.nn.CrossEntropyLoss(**kw)
        assert ours.reduction == theirs.reduction
        assert error(ours(logits, target), theirs(logits, target)) < 1e-5, kw
    # (N, C, d1, d2) images of logits, as torch reads them
    x, t = torch.randn(2, 5, 3, 4), torch.randint(0, 5, (2, 3, 4))
    for red in ("mean", "none"):
        a, b = kexue.nn.CrossEntropyLoss(reduction=red)(x, t), F.cross_entropy(x, t, reduction=red)
        assert a.shape == b.shape and error(a, b) < 1e-5
    prior = make_prior(7)
    m = kexue.nn.CrossEntropyLoss(prior=prior, tau=0.7, flood=3.0, flood_mode="sample", z_loss=1e-3)
    assert "prior" in dict(m.named_buffers()) and "flood=3.0" in repr(m)
    ref = cross_entropy_reference(logits, target, prior=prior, tau=0.7, flood=3.0, flood_mode="sample", z_loss=1e-3)
    assert error(m(logits, target), ref) < 1e-5


def test_adjust_logits_and_class_prior():
    counts = torch.tensor([60.0, 30.0, 10.0])
    prior = kexue.class_prior(counts, 3)
    assert torch.allclose(prior, torch.tensor([0.6, 0.3, 0.1]))
    targets = torch.tensor([0, 0, 0, 1, 1, 0, 2, 0, 1, 0])
    assert torch.allclose(kexue.class_prior(targets, 4), torch.tensor([0.6, 0.3, 0.1, 0.0]))
    logits = torch.randn(5, 3)
    adj = kexue.adjust_logits(logits, counts, tau=2.0)
    assert torch.allclose(adj, logits - 2.0 * prior.log())
    # training with the logit-adjusted loss is plain CE on logits + tau·log(prior)
    target = torch.randint(0, 3, (5,))
    a = kexue.cross_entropy(logits, target, prior=counts, tau=2.0)
    assert torch.allclose(a, F.cross_entropy(logits + 2.0 * prior.log(), target))
    with pytest.raises(ValueError, match="targets must be in"):
        kexue.class_prior(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="prior must be positive"):
        kexue.adjust_logits(logits, torch.tensor([1.0, 0.0, 1.0]))


# ---- in-place backward, registration (opcheck), torch.compile ----

INPLACE_PAIRS = [("cpu", "cpu")] + [("triton", "cpu")] * triton_runs_on("cpu") + [
    (b, d) for d in DEVICES if d != "cpu" for b in ("cuda", "triton")]


@pytest.mark.parametrize("backend,device", INPLACE_PAIRS)
@pytest.mark.parametrize("noncontig", [False, True])
def test_inplace_backward(backend, device, noncontig):
    _available(backend, device)
    logits, target = make_case(40, 300, noncontig=noncontig, device=device)
    kw = dict(label_smoothing=0.1, prior=make_prior(300, device), flood=3.0, flood_mode="sample")
    _, g_ref, _ = loss_and_grad(lambda x, t, **k: kexue.cross_entropy(x, t, backend=backend, **k), logits, target,
                                **kw)
    leaf = logits.detach().clone().requires_grad_()
    x = leaf * 1.0  # a non-leaf buffer, as an lm_head output would be
    ptr, version = x.data_ptr(), x._version
    loss = kexue.cross_entropy(x, target, inplace_backward=True, backend=backend, **kw)
    loss.backward()
    assert x._version > version, "the in-place gradient must bump the logits' version counter"
    assert x.data_ptr() == ptr and torch.equal(x.detach(), leaf.grad)  # the gradient lives in the logits buffer
    assert error(leaf.grad, g_ref) == 0.0
    # misuse: an op recorded before the loss saved the logits; its backward runs after ours
    # (autograd runs later nodes first) and would read the gradient: autograd must refuse
    y = logits.detach().clone().requires_grad_() * 1.0
    other = (y * y).sum()
    loss = kexue.cross_entropy(y, target, inplace_backward=True, backend=backend) + other
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


OPCHECK_CASES = [("cpu", dt) for dt in (torch.float32, torch.float64, torch.bfloat16)] + [
    (d, dt) for d in DEVICES if d != "cpu" for dt in (torch.float32, torch.bfloat16)]


@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.2, "weight": "weight", "prior": "prior", "z_loss": 0.01}])
@pytest.mark.parametrize("device,dtype", OPCHECK_CASES)
def test_opcheck(opts, device, dtype):
    _available("cpu" if device == "cpu" else "cuda", device)
    logits, target = make_case(13, 37, dtype=dtype, device=device)
    kw = _options(opts, 37, device)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    bias = None if "prior" not in kw else kw["prior"].log().to(acc)
    weight = None if "weight" not in kw else kw["weight"].to(acc)
    eps, z = kw.get("label_smoothing", 0.0), kw.get("z_loss", 0.0)
    x = logits.requires_grad_()
    torch.library.opcheck(torch.ops.kexue.cross_entropy_fwd, (x, target, bias, weight, eps, z, -100, False))
    loss, lse = torch.ops.kexue.cross_entropy_fwd(x.detach(), target, bias, weight, eps, z, -100, False)
    g = torch.randn_like(loss)
    args = (g, logits.detach(), target, bias, weight, lse, eps, z, -100)
    torch.library.opcheck(torch.ops.kexue.cross_entropy_bwd, args)
    args = (g, logits.detach().clone(), target, bias, weight, lse, eps, z, -100)
    torch.library.opcheck(torch.ops.kexue.cross_entropy_bwd_inplace, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


@pytest.mark.parametrize("backend,device", INPLACE_PAIRS)
@pytest.mark.parametrize("inplace", [False, True])
def test_torch_compile_fullgraph(backend, device, inplace):
    _available(backend, device)
    if backend == "triton" and device == "cpu":
        pytest.skip("triton_op kernels are not traceable on CPU tensors under the interpreter (CUDA only)")
    torch._dynamo.reset()
    logits, target = make_case(32, 100, device=device)
    prior, w = make_prior(100, device), torch.rand(100, device=device) + 0.5

    def f(x, t):
        h = x * 1.0
        return kexue.cross_entropy(h, t, prior=prior, weight=w, label_smoothing=0.1, flood=4.0, z_loss=1e-3,
                                   inplace_backward=inplace, backend=backend)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a, ga, _ = loss_and_grad(compiled, logits, target)
    b, gb, _ = loss_and_grad(f, logits, target)
    assert error(a, b) < 1e-6 and error(ga, gb) < 1e-6


# ---- linear_cross_entropy ----

LINEAR_OPTIONS = [
    {},
    {"reduction": "none", "label_smoothing": 0.1},
    {"prior": "prior", "flood": 5.0, "z_loss": 1e-3, "weight": "weight"},
    {"flood": 0.5, "flood_mode": "sample", "reduction": "sum"},
]


def _linear_case(N, H, C, dtype=torch.float32, device="cpu"):
    h = torch.randn(N, H, device=device).to(dtype)
    W = (torch.randn(C, H, device=device) / H**0.5).to(dtype)
    b = torch.randn(C, device=device).to(dtype)
    t = torch.randint(0, C, (N,), device=device)
    t[::7] = -100
    return h, W, b, t


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("opts", LINEAR_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk", [7, None])
def test_linear_cross_entropy(backend, device, opts, with_bias, chunk):
    _available(backend, device)
    N, H, C = 45, 24, 130
    h, W, b, t = _linear_case(N, H, C, device=device)
    kw = _options(opts, C, device)
    if "weight" in kw:
        kw["class_weight"] = kw.pop("weight")
    bias = b if with_bias else None

    def run(h, W, bias, dtype, be, chunk_size):
        leaves = [x.detach().to(dtype).requires_grad_() for x in (h, W) + ((bias,) if bias is not None else ())]
        kw_ = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        out = kexue.linear_cross_entropy(leaves[0], leaves[1], t, leaves[2] if bias is not None else None,
                                         backend=be, chunk_size=chunk_size, **kw_)
        go = torch.linspace(-1, 2, out.numel(), device=out.device).reshape(out.shape).to(out.dtype)
        return (out, *torch.autograd.grad(out, leaves, go))

    got = run(h, W, bias, torch.float32, backend, chunk)
    ref64 = run(h, W, bias, torch.float64, "torch", None)
    low = run(h, W, bias, torch.float32, "torch", None)
    for name, a, r, lo in zip(["loss", "dh", "dW", "db"], got, ref64, low, strict=False):
        assert a.shape == r.shape and a.dtype == torch.float32
        assert_close_rule(a, r, lo, floor=1e-4, name=name)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_linear_cross_entropy_opcheck_and_compile(backend):
    if backend == "triton":
        pytest.skip("triton_op kernels are not traceable on CPU tensors under the interpreter (CUDA only)")
    _available(backend, "cpu")
    h, W, b, t = _linear_case(20, 8, 33)
    kernel = "triton" if backend == "triton" else "native"
    args = (h.requires_grad_(), W.requires_grad_(), t, b.requires_grad_(), None, None, 0.1, 0.0, -100, 6, kernel)
    torch.library.opcheck(torch.ops.kexue.linear_cross_entropy_fwd, args)
    torch._dynamo.reset()

    def f(h, W, b):
        return kexue.linear_cross_entropy(h, W, t, b, flood=3.0, label_smoothing=0.1, chunk_size=6, backend=backend)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a = compiled(h, W, b)
    ga = torch.autograd.grad(a, (h, W, b))
    r = f(h, W, b)
    gr = torch.autograd.grad(r, (h, W, b))
    assert error(a, r) < 1e-6 and all(error(x, y) < 1e-6 for x, y in zip(ga, gr, strict=True))


def test_linear_cross_entropy_errors():
    h, W, b, t = _linear_case(10, 8, 20)
    with pytest.raises(ValueError, match="weight must have shape"):
        kexue.linear_cross_entropy(h, W[:, :4], t)
    with pytest.raises(ValueError, match="chunk_size"):
        kexue.linear_cross_entropy(h, W, t, chunk_size=0, backend="cpu")
    t[1] = 20
    with pytest.raises((ValueError, RuntimeError), match="out of range"):
        kexue.linear_cross_entropy(h, W, t, backend="cpu")
