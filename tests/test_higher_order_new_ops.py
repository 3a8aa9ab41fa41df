"""Higher order and torch.func for the ops the later issues added (issue 20, item 3).

* ``kexue.decoding.sampling_probs``: differentiable in the logits on every backend (the kernels'
  registered backward q ⊙ (g − ⟨q, g⟩)/T; double backward through the reference); gradcheck and
  gradgradcheck in float64, Hessian-vector products and torch.func against the float64 reference.
* ``kexue.nn.SelfTerminatingHead`` (ST and NMST): gradgradcheck in float64 and torch.func against
  a plain probability-space definition written here (products, not log sums).
* ``kexue.attribution``: not differentiable (documented); inside a torch.func transform it raises
  an error that names the function.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

import kexue
from helpers import backend_pairs, error, expected_backends
from kexue.decoding import sampling_probs_reference
from kexue.decoding.reference import row_params
from kexue.nn import SelfTerminatingHead

F64 = torch.float64
CPU_BACKENDS = [b for b, d in backend_pairs(expected_backends()) if d == "cpu"]
FP64_BACKENDS = [b for b in CPU_BACKENDS if b != "triton"]  # Triton's sampling kernel is float32


def close(got, ref, name, rel=1e-9):
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
    assert error(got, ref) <= rel * scale, f"{name}: error {error(got, ref):.3g}"


# ---------------------------------------------------------------------------------------------
# sampling_probs

SAMPLING_GROUPS = {
    "plain": dict(),
    "temperature": dict(temperature=0.7),
    "top-k": dict(top_k=3),
    "top-p": dict(top_p=0.8),
    "all-keep": dict(temperature=torch.tensor([0.5, 1.0, 2.0], dtype=F64), top_k=torch.tensor([2, 4, 1]),
                     top_p=torch.tensor([0.9, 0.5, 1.0], dtype=F64), keep=5),
}


def _logits(dtype=F64, masked=True):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 7, dtype=dtype, generator=g) * 2
    if masked:
        x[1, 2] = float("-inf")  # a masked token (what HF processors emit)
    return x


def _reference(x, kw):
    T, k, p, E = row_params(x.shape[0], kw.get("temperature"), kw.get("top_k"), kw.get("top_p"), kw.get("keep"),
                            x.device)
    return sampling_probs_reference(x, T, k, p, E, dtype=F64)


@pytest.mark.parametrize("backend", FP64_BACKENDS)
@pytest.mark.parametrize("group", list(SAMPLING_GROUPS))
def test_sampling_probs_gradcheck_gradgradcheck(backend, group):
    kw = SAMPLING_GROUPS[group]
    # gradcheck's finite differences need finite entries; the kept set does not move under a 1e-6 step
    x = _logits(masked=False).requires_grad_()

    def f(y):
        return kexue.decoding.sampling_probs(y, backend=backend, **kw)

    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("group", list(SAMPLING_GROUPS))
def test_sampling_probs_grad_and_hvp_match_reference(backend, group):
    kw = SAMPLING_GROUPS[group]
    dtype = torch.float32 if backend == "triton" else F64
    x = _logits(dtype)
    w = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(12))
    t = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(13))
    t[1, 2] = 0.0  # (no tangent on the masked token)

    def grads(fn, y):
        y = y.clone().requires_grad_()
        g1 = torch.autograd.grad((fn(y).double() * w).sum(), y, create_graph=True)[0]
        g2 = torch.autograd.grad((g1.double() * t.to(g1.dtype)).sum(), y)[0]
        return g1.detach(), g2

    g1, g2 = grads(lambda y: kexue.decoding.sampling_probs(y, backend=backend, **kw), x)
    r1, r2 = grads(lambda y: _reference(y, kw), x.double())
    assert not torch.isnan(g1).any() and not torch.isnan(g2).any()
    rel = 1e-9 if dtype == F64 else 2e-5  # float32: probabilities rounded to 2^-24 relative, ×~100 terms
    close(g1, r1, f"{backend} grad", rel)
    close(g2, r2, f"{backend} hvp", rel)
    assert float(g1.abs().sum()) > 0 and float(g2.abs().sum()) > 0  # (a test that cannot pass on zeros)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sampling_probs_torch_func(backend):
    kw = SAMPLING_GROUPS["all-keep"]
    dtype = torch.float32 if backend == "triton" else F64
    x = _logits(dtype)
    rel = 1e-9 if dtype == F64 else 2e-5

    def f(y):
        return kexue.decoding.sampling_probs(y, backend=backend, **kw)

    def fr(y):
        return _reference(y.double(), kw)

    w = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(14))
    t = torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(15))
    t[1, 2] = 0.0
    close(grad(lambda y: (f(y).double() * w).sum())(x), grad(lambda y: (fr(y) * w).sum())(x.double()), "grad", rel)
    close(jacrev(f)(x), jacrev(fr)(x.double()), "jacrev", rel)
    close(jacfwd(f)(x), jacfwd(fr)(x.double()), "jacfwd", rel)
    close(jvp(f, (x,), (t,))[1], jvp(fr, (x.double(),), (t.double(),))[1], "jvp", rel)
    close(hessian(lambda y: (f(y).double() * w).sum())(x), hessian(lambda y: (fr(y) * w).sum())(x.double()),
          "hessian", rel)
    xs = torch.stack([x, 1.5 * x])
    close(vmap(grad(lambda y: (f(y).double() * w).sum()))(xs),
          torch.stack([grad(lambda y: (fr(y) * w).sum())(xi.double()) for xi in xs]), "vmap(grad)", rel)


def test_sampling_probs_backward_is_zero_off_the_kept_set():
    x = _logits()
    x.requires_grad_()
    q = kexue.decoding.sampling_probs(x, top_k=2, backend="cpu")
    (g,) = torch.autograd.grad((q * torch.arange(7.0, dtype=F64)).sum(), x)
    assert torch.equal(g[q == 0], torch.zeros_like(g[q == 0]))
    assert bool((g.sum(dim=1).abs() < 1e-12).all())  # softmax gradients sum to zero per row


# ---------------------------------------------------------------------------------------------
# the self-terminating head, against the probability-space definition


def _head(mode, context_len=0):
    torch.manual_seed(21)
    return SelfTerminatingHead(torch.nn.Linear(4, 6).double(), eos_token_id=2, eps=0.05, mode=mode,
                               context_len=context_len)


def _definition(head, h, lm=None):
    """log p (B, T, V) from the head's formulas in probability space, float64 (ST: a running
    product of β; NMST: (1 − λ)(1 − (1 − ε)^n) + λ)."""
    z = (lm or head.lm_head)(h)
    B, T, V = z.shape
    eos, eps, ctx = head.eos_token_id, head.eps, head.context_len
    u = z[..., eos]
    keep = []
    run = torch.ones(B, dtype=z.dtype)
    for t in range(T):
        if head.mode == "st":
            beta = torch.ones_like(u[:, t]) if t < ctx else (1 - eps) * torch.sigmoid(u[:, t])
            run = run * beta
            keep.append(run)
        else:
            n = max(0, t - ctx + 1)
            lam = torch.sigmoid(u[:, t])
            p_eos = (1 - lam) * (1 - (1 - eps) ** n) + lam if t >= ctx else torch.zeros_like(lam)
            keep.append(1 - p_eos)
    keep = torch.stack(keep, dim=1)  # (B, T) 1 − p_eos
    others = torch.ones(V, dtype=torch.bool)
    others[eos] = False
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values) * others
    logp = torch.log(torch.where(others, keep[..., None] * e / e.sum(-1, keepdim=True), 1.0))
    sure = keep == 1  # inside the context: p_eos = 0, log p_eos = −inf (a double where: no NaN gradient)
    log_eos = torch.where(sure, float("-inf"), torch.log(1 - torch.where(sure, 0.5, keep)))
    return torch.where(others, logp, log_eos[..., None])


def finite(f):
    """f with its −inf entries (log p_eos = log 0 inside the context) set to 0: comparable values."""
    def g(*a):
        o = f(*a)
        return torch.where(torch.isinf(o), 0.0, o)
    return g


@pytest.mark.parametrize("mode,ctx", [("st", 0), ("st", 2), ("nmst", 0), ("nmst", 2)])
def test_self_terminating_head_gradgradcheck(mode, ctx):
    head = _head(mode, ctx)
    h = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    assert gradcheck(finite(head), (h,))
    assert gradgradcheck(finite(head), (h,), fast_mode=True)  # (fast mode: random projections, seconds)
    params = dict(head.named_parameters())

    def of_weight(W):
        return finite(functional_call)(head, {**params, "lm_head.weight": W}, (h.detach(),))

    W = params["lm_head.weight"].detach().clone().requires_grad_()
    assert gradgradcheck(of_weight, (W,), fast_mode=True)


@pytest.mark.parametrize("mode,ctx", [("st", 0), ("st", 2), ("nmst", 1)])
def test_self_terminating_head_torch_func_matches_definition(mode, ctx):
    head = _head(mode, ctx)
    h = torch.randn(2, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(22))
    out, ref = head(h), _definition(head, h)
    assert torch.equal(torch.isinf(out), torch.isinf(ref))
    w = torch.randn(2, 4, 6, dtype=F64, generator=torch.Generator().manual_seed(23))

    def loss(f, w=w):
        return lambda y: (f(y) * w).sum()

    defn = finite(lambda y: _definition(head, y))
    head_f = finite(head)
    close(head_f(h), defn(h), "forward")
    assert float(grad(loss(head_f))(h).abs().sum()) > 0
    close(grad(loss(head_f))(h), grad(loss(defn))(h), "grad")
    close(jacrev(head_f)(h), jacrev(defn)(h), "jacrev")
    close(jacfwd(head_f)(h), jacfwd(defn)(h), "jacfwd")
    t = torch.randn_like(h)
    close(jvp(head_f, (h,), (t,))[1], jvp(defn, (h,), (t,))[1], "jvp")
    w1 = w[:1, :3]
    close(hessian(loss(head_f, w1))(h[:1, :3]), hessian(loss(defn, w1))(h[:1, :3]), "hessian")
    hs = torch.stack([h, 0.5 * h])
    close(vmap(head_f)(hs), torch.stack([defn(x) for x in hs]), "vmap")
    close(vmap(grad(loss(head_f)))(hs), torch.stack([grad(loss(defn))(x) for x in hs]), "vmap(grad)")
    # the parameters too: a per-example gradient in the lm_head weight
    params = {k: v.detach() for k, v in head.named_parameters()}

    def by_params(p, x):
        return (finite(functional_call)(head, p, (x,)) * w).sum()

    def by_params_def(p, x):  # the definition on the same logits
        def lm(y):
            return torch.nn.functional.linear(y, p["lm_head.weight"], p["lm_head.bias"])

        return (finite(_definition)(head, x, lm) * w).sum()

    got, want = grad(by_params)(params, h), grad(by_params_def)(params, h)
    for k in got:
        close(got[k], want[k], f"param grad {k}")


def test_self_terminating_step_double_backward_matches_forward():
    head = _head("st", 1)
    h = torch.randn(1, 3, 4, dtype=F64, requires_grad=True)
    full = finite(head)(h)
    state = None
    outs = []
    for t in range(3):
        o, state = head.step(h[:, t], state)
        outs.append(o)
    stepped = torch.stack(outs, dim=1)
    stepped = torch.where(torch.isinf(stepped), 0.0, stepped)
    w = torch.randn_like(full)
    g_full = torch.autograd.grad((full * w).sum(), h, create_graph=True)[0]
    g_step = torch.autograd.grad((stepped * w).sum(), h, create_graph=True)[0]
    close(g_step, g_full, "step grad")
    v = torch.randn_like(h)
    close(torch.autograd.grad((g_step * v).sum(), h)[0], torch.autograd.grad((g_full * v).sum(), h)[0], "step hvp")
    assert math.isfinite(float(g_full.abs().sum()))


# ---------------------------------------------------------------------------------------------
# attribution: not differentiable, and says so


def test_attribution_refuses_torch_func_by_name():
    from kexue.attribution import integrated_gradients

    model = torch.nn.Linear(3, 1).double()
    x = torch.randn(2, 3, dtype=F64)
    with pytest.raises(RuntimeError, match="integrated_gradients.*torch.func"):
        grad(lambda y: integrated_gradients(lambda z: model(z)[:, 0], y, n_steps=4).attributions.sum())(x)
    doc = integrated_gradients.__doc__
    assert "not differentiable" in doc.lower()
