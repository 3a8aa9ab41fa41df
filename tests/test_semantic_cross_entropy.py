"""Valid inputs, right answers: kexue.cross_entropy / linear_cross_entropy / nn.CrossEntropyLoss
(every backend here) against torch.nn.functional.cross_entropy in float64 plus the papers' terms
written here: logit adjustment a = logits + τ·log π (Menon et al. 2021, eq. 10), flooding
|L − b| + b of the reduced loss (Ishida et al. 2020, eq. 3) or of each row ("sample", iFlood),
z-loss z·lse² (PaLM).  Values and gradients on the corners: ignore_index (every row ignored: NaN,
as torch), label smoothing (with class weights: torch's normalisation), every reduction, -inf
logits (masked classes; the target masked: inf, as torch), C = 1, N = 0 and 1, non-contiguous
logits, 16-bit logits (error within the dtype's unit roundoff), linear_cross_entropy chunk sizes
that do not divide N.

Found clean (2026-12-06, about 2 000 random cases, see bench/RESULTS.md); kept as a compact
regression check.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

import kexue
from helpers import triton_runs_on

BACKENDS = ["torch", "cpu"] + (["triton"] if triton_runs_on("cpu") else [])
UNIT = {torch.float64: 1e-12, torch.float32: 3e-6, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


def oracle(a, t, *, prior=None, tau=1.0, flood=None, flood_mode="batch", label_smoothing=0.0, weight=None,
           ignore_index=-100, reduction="mean", z_loss=0.0):
    """The loss from F.cross_entropy on the adjusted logits, with z-loss and flooding added here."""
    if prior is not None:
        a = a + tau * torch.log(prior / prior.sum())
    rows = F.cross_entropy(a, t, weight=weight, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)
    valid = t != ignore_index
    if z_loss:
        rows = rows + torch.where(valid, z_loss * torch.logsumexp(a, 1) ** 2, torch.zeros_like(rows))
    if flood is not None and flood_mode == "sample":
        rows = torch.where(valid, (rows - flood).abs() + flood, torch.zeros_like(rows))
    if reduction == "none":
        return rows
    if reduction == "sum":
        loss = rows.sum()
    else:
        tt = torch.where(valid, t, torch.zeros_like(t))
        denom = valid.sum() if weight is None else torch.where(valid, weight[tt], torch.zeros_like(rows)).sum()
        loss = rows.sum() / denom
    if not z_loss and flood is None:  # the plain path must be torch's own reduction too
        torch.testing.assert_close(loss, F.cross_entropy(a, t, weight=weight, ignore_index=ignore_index,
                                                         reduction=reduction, label_smoothing=label_smoothing),
                                   equal_nan=True)
    return loss if flood is None or flood_mode == "sample" else (loss - flood).abs() + flood


def _err(x: torch.Tensor, r: torch.Tensor) -> float:
    """Max error relative to 1 + max |r| over finite entries; inf where NaN/inf patterns differ."""
    x, r = x.detach().double(), r.detach().double()
    if not torch.equal(torch.isnan(x), torch.isnan(r)):
        return float("inf")
    fin = torch.isfinite(r)
    if not torch.equal(x[~fin].nan_to_num(0.0), r[~fin].nan_to_num(0.0)):
        return float("inf")
    if not fin.any():
        return 0.0
    return float((x - r)[fin].abs().max() / (1 + r[fin].abs().max()))


def _case(rng: random.Random):
    N, C = rng.choice([0, 1, 2, 7, 33]), rng.choice([1, 2, 3, 17, 130])
    x = torch.randn(N, C, dtype=torch.float64) * rng.choice([1, 5])
    if rng.random() < 0.3:
        x = torch.randn(C, N, dtype=torch.float64).t()  # non-contiguous
    t = torch.randint(0, C, (N,))
    o = dict(ignore_index=rng.choice([-100, 0, 1]), label_smoothing=rng.choice([0.0, 0.0, 0.1, 1.0]),
             tau=rng.choice([1.0, 0.5, -1.0]), reduction=rng.choice(["mean", "sum", "none"]),
             flood_mode=rng.choice(["batch", "sample"]), z_loss=rng.choice([0.0, 1e-3]))
    if N and rng.random() < 0.3:
        t[rng.randrange(N)] = o["ignore_index"]
    if N and rng.random() < 0.1:
        t[:] = o["ignore_index"]  # every row ignored
    if C > 1 and rng.random() < 0.2 and not o["label_smoothing"]:  # masked classes (never the target)
        m = torch.rand(N, C) < 0.3
        m[torch.arange(N), t.clamp(0, C - 1)] = False
        x = x.masked_fill(m, float("-inf"))
    o["weight"] = torch.rand(C, dtype=torch.float64) + 0.1 if rng.random() < 0.3 else None
    o["prior"] = torch.rand(C, dtype=torch.float64) * 10 + 0.01 if rng.random() < 0.4 else None
    o["flood"] = None if o["flood_mode"] == "batch" and o["reduction"] == "none" else rng.choice([None, 0.5, 3.0])
    return x, t, o


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_values_and_grads_match_torch_and_the_papers(backend, dtype):
    if backend == "triton" and dtype in (torch.float64, torch.bfloat16):
        pytest.skip("interpreted Triton: float32/float16 (no bf16 arithmetic in the interpreter)")
    rng = random.Random(21)
    for _ in range(60 if backend != "triton" else 25):
        x, t, o = _case(rng)
        if backend == "triton" and x.shape[0] == 0:
            continue
        x64 = x.to(dtype).double().requires_grad_()  # the oracle sees the logits the kernel sees
        ref = oracle(x64, t, **o)
        go = torch.randn_like(ref)
        g_ref = torch.autograd.grad((ref * go).sum() + 0 * x64.sum(), x64)[0]
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        ko = {k: (v.to(acc) if isinstance(v, torch.Tensor) else v) for k, v in o.items()}
        xk = x.to(dtype).requires_grad_()
        out = kexue.cross_entropy(xk, t, backend=backend, **ko)
        g = torch.autograd.grad((out * go.to(dtype)).sum() + 0 * xk.sum(), xk)[0]
        where = f"{backend} {dtype} N={x.shape[0]} C={x.shape[1]} t={t.tolist()[:6]} {o}"
        assert out.dtype == dtype and out.shape == ref.shape, where
        assert _err(out, ref) <= 2 * UNIT[dtype], f"value: {where}"
        assert _err(g, g_ref) <= 2 * UNIT[dtype], f"grad: {where}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_target_and_smoothing_over_masked_classes_as_torch(backend):
    """A -inf target logit gives loss inf; label smoothing puts mass on -inf classes: inf, as torch."""
    inf = float("inf")
    x = torch.tensor([[0.0, -inf, 1.0], [2.0, -inf, -inf]], requires_grad=True)
    for t in (torch.tensor([1, 0]), torch.tensor([0, 0])):
        for ls in (0.0, 0.1):
            for reduction in ("none", "mean"):
                out = kexue.cross_entropy(x, t, label_smoothing=ls, reduction=reduction, backend=backend)
                ref = F.cross_entropy(x, t, label_smoothing=ls, reduction=reduction)
                assert _err(out, ref) <= 1e-6
                g, g_ref = (torch.autograd.grad(y.sum(), x)[0] for y in (out, ref))
                assert _err(g, g_ref) <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_cross_entropy_equals_logits_then_cross_entropy(backend):
    rng = random.Random(22)
    dtype = torch.float64 if backend != "triton" else torch.float32
    for _ in range(40 if backend != "triton" else 15):
        N, C, H = rng.choice([1, 2, 7, 33]), rng.choice([1, 3, 17, 70]), rng.choice([1, 5, 16])
        h, W = torch.randn(N, H, dtype=dtype), torch.randn(C, H, dtype=dtype)
        if rng.random() < 0.3:
            W = torch.randn(H, C, dtype=dtype).t()
        b = torch.randn(C, dtype=dtype) if rng.random() < 0.5 else None
        t = torch.randint(0, C, (N,))
        ii = rng.choice([-100, 0])
        if rng.random() < 0.3:
            t[rng.randrange(N)] = ii
        reduction = rng.choice(["mean", "sum", "none"])
        o = dict(ignore_index=ii, reduction=reduction, label_smoothing=rng.choice([0.0, 0.2]), tau=0.7,
                 z_loss=rng.choice([0.0, 1e-3]), flood=None if reduction == "none" else rng.choice([None, 2.0]),
                 prior=torch.rand(C, dtype=torch.float64) + 0.05 if rng.random() < 0.3 else None)
        cw = torch.rand(C, dtype=torch.float64) + 0.1 if rng.random() < 0.3 else None
        leaves = [t_.double().requires_grad_() for t_ in (h, W, *(() if b is None else (b,)))]
        logits = leaves[0] @ leaves[1].T + (leaves[2] if b is not None else 0)
        ref = oracle(logits, t, weight=cw, **o)
        go = torch.randn_like(ref)
        g_ref = torch.autograd.grad((ref * go).sum(), leaves)
        lv = [t_.detach().to(dtype).requires_grad_() for t_ in leaves]
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        ko = {k: (v.to(acc) if isinstance(v, torch.Tensor) else v) for k, v in o.items()}
        chunk = rng.choice([None, 1, 2, 5, 64])  # chunks that do not divide N
        out = kexue.linear_cross_entropy(lv[0], lv[1], t, lv[2] if b is not None else None, backend=backend,
                                         class_weight=None if cw is None else cw.to(acc), chunk_size=chunk, **ko)
        g = torch.autograd.grad((out * go.to(dtype)).sum(), lv)
        where = f"{backend} N={N} C={C} H={H} bias={b is not None} chunk={chunk} cw={cw is not None} {o}"
        tol = 1e-10 if dtype == torch.float64 else 2e-5
        assert _err(out, ref) <= tol, f"value: {where}"
        for a, r in zip(g, g_ref, strict=True):
            assert _err(a, r) <= tol, f"grad: {where}"


@pytest.mark.parametrize("shape", [(5,), (3, 5), (3, 5, 4), (2, 5, 3, 2)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_module_matches_torch_module(shape, reduction):
    w = torch.rand(5, dtype=torch.float64) + 0.1
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 5, (shape[0], *shape[2:]) if len(shape) > 1 else ())
    if t.dim():
        t.view(-1)[0] = -100
    for ls in (0.0, 0.1):
        a = kexue.nn.CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=ls)(x, t)
        b = torch.nn.CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=ls)(x, t)
        assert a.shape == b.shape and _err(a, b) <= 1e-12
        assert _err(*(torch.autograd.grad(y.sum(), x)[0] for y in (a, b))) <= 1e-12


def test_adjust_logits_and_class_prior_follow_menon():
    """Post-hoc: argmax(logits − τ log π) (Menon et al. eq. 5); π from targets or counts."""
    logits = torch.randn(6, 4, dtype=torch.float64)
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3])
    pi = kexue.class_prior(targets, 4)
    assert torch.allclose(pi.double(), torch.tensor([4, 2, 1, 1], dtype=torch.float64) / 8)
    assert torch.allclose(kexue.class_prior(torch.tensor([4.0, 2, 1, 1]), 4), pi)
    got = kexue.adjust_logits(logits, pi.double(), tau=1.5)
    assert torch.allclose(got, logits - 1.5 * torch.log(pi.double()), atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_class_weights_as_torch(backend):
    """Class weights with zeros; the valid rows' weights summing to 0 (D = 0) with label smoothing
    too: torch's mean is then NaN (its NLL part is 0/0), as the docstring promises, not +inf."""
    rng = random.Random(23)
    dtype = torch.float64 if backend != "triton" else torch.float32
    for _ in range(60):
        N, C = rng.choice([1, 3, 8]), rng.choice([2, 3, 6])
        x = torch.randn(N, C, dtype=torch.float64)
        t = torch.randint(0, C, (N,))
        if rng.random() < 0.3:
            t[0] = -100
        w = torch.rand(C, dtype=torch.float64)
        w[torch.rand(C) < 0.5] = 0.0
        if rng.random() < 0.3:
            w[:] = 0.0
        o = dict(weight=w, label_smoothing=rng.choice([0.0, 0.2]), reduction=rng.choice(["mean", "sum", "none"]))
        xr = x.clone().requires_grad_()
        ref = F.cross_entropy(xr, t, **o)
        g_ref = torch.autograd.grad(ref.sum(), xr)[0]
        xk = x.to(dtype).requires_grad_()
        out = kexue.cross_entropy(xk, t, backend=backend, **{**o, "weight": w.to(dtype)})
        g = torch.autograd.grad(out.sum(), xk)[0]
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        where = f"{backend} t={t.tolist()} w={w.tolist()} {o['label_smoothing']} {o['reduction']}"
        assert _err(out, ref) <= tol, f"value {out} vs torch {ref}: {where}"
        assert _err(g, g_ref) <= tol, f"grad: {where}"
