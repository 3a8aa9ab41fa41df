"""Higher-order autograd and torch.func through every backend of linear attention,
cross_entropy and linear_cross_entropy, against their float64 references.

* gradgradcheck (float64) per op and option group, on every backend that runs float64 here;
* double backward (Hessian-vector products, gradient penalties) compared with the reference's
  second derivatives, in float64 and for the float32-only Triton cross-entropy;
* torch.func: grad, jacrev, hessian, vmap, vmap(grad), jvp, jacfwd against the reference;
* a first-order backward with create_graph=True gives the kernels' first-order gradient.

Tiny shapes: the Triton backends run under the interpreter here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as tnf
from torch.autograd import gradcheck, gradgradcheck

import kexue
from helpers import backend_pairs, error, expected_backends, make_state
from kexue.cross_entropy import cross_entropy_reference
from kexue.linear_attention import feature_dim, linear_attention_quadratic

CPU_BACKENDS = [b for b, d in backend_pairs(expected_backends()) if d == "cpu"]
FP64_CE_BACKENDS = [b for b in CPU_BACKENDS if b != "triton"]  # Triton's CE kernels take no float64
F64 = torch.float64
TOL64 = 1e-9  # float64 agreement of two exact formulations (relative to the largest entry)


def close64(got, ref, name="") -> None:
    assert got is not None, f"{name}: no gradient"
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    scale = max(1.0, float(ref.detach().abs().max())) if ref.numel() else 1.0
    assert error(got, ref) <= TOL64 * scale, f"{name}: error {error(got, ref):.3g} (scale {scale:.3g})"


# ---------------------------------------------------------------------------------------------
# linear attention: option groups.  Each builds float64 leaves and a call taking them.

def _la_group(name: str):
    """(inputs, kwargs, uses_state): one option group of linear_attention on tiny shapes."""
    B, H, Hkv, N, Dk, Dv = 1, 2, 2, 5, 3, 2
    kw: dict = dict(causal=True, feature_map="elu")
    state = False
    if name == "noncausal-elu":
        kw = dict(causal=False, feature_map="elu")
    elif name == "causal-softmax":
        kw = dict(causal=True, feature_map="softmax")
    elif name == "causal-taylor":
        kw = dict(causal=True, feature_map="taylor")
    elif name == "relu-unnormalized":
        kw = dict(causal=False, feature_map="relu", normalize=False)
    elif name == "gqa-mask":
        H, Hkv = 4, 2
        kw = dict(causal=True, feature_map="elu", key_padding_mask=torch.tensor([[False, True, False, False, True]]))
    elif name == "state":
        state = True
        kw = dict(causal=True, feature_map="elu")
    elif name == "state-noncausal-taylor":
        state = True
        kw = dict(causal=False, feature_map="taylor")
    elif name == "packed":
        state = True
        kw = dict(causal=True, feature_map="elu", cu_seqlens=torch.tensor([0, 1, 3, 5]))
    elif name == "premapped":
        kw = dict(causal=True, feature_map=None)
    q = torch.randn(B, H, N, Dk, dtype=F64)
    k = torch.randn(B, Hkv, N, Dk, dtype=F64)
    v = torch.randn(B, Hkv, N, Dv, dtype=F64)
    if kw.get("feature_map", "elu") is None:
        q, k = q.abs() + 0.1, k.abs() + 0.1
    ins = [q, k, v]
    if state:
        nseq = 3 if "cu_seqlens" in kw else B
        ins += list(make_state(nseq, H, feature_dim(kw["feature_map"], Dk), Dv, dtype=F64))
    return [t.requires_grad_() for t in ins], kw, state


LA_GROUPS = ["noncausal-elu", "causal-softmax", "causal-taylor", "relu-unnormalized", "gqa-mask", "state",
             "state-noncausal-taylor", "packed", "premapped"]


def _la_fn(kw, state, backend):
    def f(q, k, v, *st):
        o, (S, z) = kexue.linear_attention(q, k, v, initial_state=tuple(st) if state else None, return_state=True,
                                           backend=backend, **kw)
        return (o, S, z) if state else o

    return f


def _la_ref(kw, state):
    def f(q, k, v, *st):
        o, (S, z) = linear_attention_quadratic(q, k, v, initial_state=tuple(st) if state else None, **kw)
        return (o, S, z) if state else o

    return f


def _outs(x):
    return x if isinstance(x, tuple) else (x,)


def hvp(fn, ins, cot, dirs):
    """d/dx <grad_x <fn(x), cot>, dirs>: second derivatives, through create_graph=True."""
    outs = _outs(fn(*ins))
    g = torch.autograd.grad(outs, ins, cot, create_graph=True, allow_unused=True)
    s = sum((gi * d).sum() for gi, d in zip(g, dirs, strict=True) if gi is not None)
    return g, torch.autograd.grad(s, ins, allow_unused=True)


#: Triton runs under the interpreter here (slow): gradgradcheck on three groups that cover the
#: options together; the second-derivative comparison below runs every group on every backend.
TRITON_GGC_GROUPS = ("gqa-mask", "state-noncausal-taylor", "packed")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("group", LA_GROUPS)
def test_la_gradgradcheck(backend, group):
    if backend == "triton" and group not in TRITON_GGC_GROUPS:
        pytest.skip("interpreter cost: see TRITON_GGC_GROUPS")
    ins, kw, state = _la_group(group)
    # random projections instead of full Jacobians: under the interpreter, and for the groups
    # with a state (five inputs, three outputs: the full check costs ~10x the others)
    fast = backend == "triton" or state
    assert gradgradcheck(_la_fn(kw, state, backend), tuple(ins), atol=1e-6, rtol=1e-5, fast_mode=fast)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("group", LA_GROUPS)
def test_la_second_derivatives_match_reference(backend, group):
    ins, kw, state = _la_group(group)
    ref_ins = [t.detach().clone().requires_grad_() for t in ins]
    outs = _outs(_la_ref(kw, state)(*ref_ins))
    cot = [torch.randn_like(o) for o in outs]
    dirs = [torch.randn_like(t) for t in ins]
    g, h = hvp(_la_fn(kw, state, backend), ins, cot, dirs)
    g_ref, h_ref = hvp(_la_ref(kw, state), ref_ins, cot, dirs)
    names = ["q", "k", "v", "S0", "z0"]
    for n, a, r in zip(names, g, g_ref, strict=False):
        close64(a, r, f"d{n}")
    for n, a, r in zip(names, h, h_ref, strict=False):
        close64(a, r, f"second derivative in {n}")
    assert any(float(r.abs().max()) > 1e-3 for r in h_ref)  # the check is not vacuous


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_la_create_graph_first_order_matches_kernel(backend):
    ins, kw, state = _la_group("state")
    f = _la_fn(kw, state, backend)
    outs = f(*ins)
    cot = [torch.randn_like(o) for o in outs]
    plain = torch.autograd.grad(f(*ins), ins, cot)
    graph = torch.autograd.grad(f(*ins), ins, cot, create_graph=True)
    for a, b in zip(graph, plain, strict=True):
        assert a.requires_grad
        close64(a.detach(), b)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_la_step_gradgradcheck(backend):
    B, H, F, Dk, Dv = 2, 2, 3, 3, 2
    q, k, v = (torch.randn(B, H, d, dtype=F64) for d in (Dk, Dk, Dv))
    S0, z0 = make_state(B, H, F, Dv, dtype=F64)

    def f(q, k, v, S0, z0):
        o, (S, z) = kexue.linear_attention_step(q, k, v, (S0, z0), backend=backend)
        return o, S, z

    ins = tuple(t.requires_grad_() for t in (q, k, v, S0, z0))
    assert gradgradcheck(f, ins, atol=1e-6, rtol=1e-5, fast_mode=backend == "triton")


def test_la_gradient_penalty_float32_is_not_zero():
    """The reported defect: a gradient penalty through the cpu backend was all zeros."""
    q, k, v = (torch.randn(1, 2, 6, 4, requires_grad=True) for _ in range(3))
    pen = {}
    for backend in CPU_BACKENDS:
        out = kexue.linear_attention(q, k, v, causal=True, backend=backend)
        (gq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
        pen[backend] = torch.autograd.grad(gq.square().sum(), (q, k, v))
    for backend, grads in pen.items():
        for a, r in zip(grads, pen["torch"], strict=True):
            assert float(r.abs().max()) > 1e-3
            assert error(a, r) <= 1e-4 * float(r.abs().max()), backend


# ---- torch.func ----

LA_FUNC_GROUPS = ["causal-taylor", "gqa-mask", "state", "packed"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("group", LA_FUNC_GROUPS)
def test_la_torch_func(backend, group):
    ins, kw, state = _la_group(group)
    ins = [t.detach() for t in ins]
    outs = _outs(_la_ref(kw, state)(*ins))
    ws = [torch.randn_like(o) for o in outs]

    def scalar(fn):
        def s(q, k):
            rest = ins[2:]
            return sum((o * w).sum() for o, w in zip(_outs(fn(q, k, *rest)), ws, strict=True))
        return s

    def first_out(fn):
        return lambda q: _outs(fn(q, *ins[1:]))[0]

    kern, ref = _la_fn(kw, state, backend), _la_ref(kw, state)
    q, k = ins[0], ins[1]
    for a, r, n in zip(torch.func.grad(scalar(kern), argnums=(0, 1))(q, k),
                       torch.func.grad(scalar(ref), argnums=(0, 1))(q, k), "qk", strict=True):
        close64(a, r, f"grad d{n}")
    close64(torch.func.jacrev(first_out(kern))(q), torch.func.jacrev(first_out(ref))(q), "jacrev")
    close64(torch.func.hessian(scalar(kern))(q, k), torch.func.hessian(scalar(ref))(q, k), "hessian")
    close64(torch.func.jacfwd(first_out(kern))(q), torch.func.jacfwd(first_out(ref))(q), "jacfwd")
    t = torch.randn_like(q)
    (o1, j1), (o2, j2) = torch.func.jvp(first_out(kern), (q,), (t,)), torch.func.jvp(first_out(ref), (q,), (t,))
    close64(o1, o2, "jvp primal")
    close64(j1, j2, "jvp tangent")
    qs = torch.stack([q, 2 * q, q.flip(-1)])  # vmap over a batch of queries, and per-sample gradients
    close64(torch.func.vmap(first_out(kern))(qs), torch.stack([first_out(ref)(x) for x in qs]), "vmap")
    per = torch.func.vmap(torch.func.grad(scalar(kern)), in_dims=(0, None))(qs, k)
    close64(per, torch.stack([torch.func.grad(scalar(ref))(x, k) for x in qs]), "vmap(grad)")


# ---------------------------------------------------------------------------------------------
# cross_entropy: option groups

CE_GROUPS = {
    "plain": dict(),
    "prior-tau": dict(prior=torch.tensor([5.0, 1.0, 0.5, 3.0, 2.0]), tau=1.3),
    "flood-batch": dict(flood=5.0, flood_mode="batch"),
    "flood-sample": dict(flood=1.5, flood_mode="sample", reduction="sum"),
    "smoothing-weight": dict(label_smoothing=0.2, weight=torch.tensor([1.0, 0.5, 2.0, 1.5, 0.7])),
    "ignore-zloss-none": dict(ignore_index=-100, z_loss=0.05, reduction="none"),
    "inplace": dict(inplace_backward=True, label_smoothing=0.1),
}


def _ce_inputs(dtype=F64):
    x = (torch.randn(6, 5, dtype=F64) * 2).to(dtype)
    target = torch.tensor([0, 3, -100, 4, 1, 2])
    return x, target


def _ce(kw, target, backend):
    def f(x):
        return kexue.cross_entropy(x * 1 if kw.get("inplace_backward") else x, target, backend=backend, **kw)

    return f


def _ce_ref(kw, target):
    kw = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kw.items() if k != "inplace_backward"}
    return lambda x: cross_entropy_reference(x, target, **kw)


@pytest.mark.parametrize("backend", FP64_CE_BACKENDS)
@pytest.mark.parametrize("group", list(CE_GROUPS))
def test_ce_gradgradcheck(backend, group):
    if backend == "torch" and CE_GROUPS[group].get("inplace_backward"):
        pytest.skip("inplace_backward is a kernel option")
    x, target = _ce_inputs()
    assert gradgradcheck(_ce(CE_GROUPS[group], target, backend), (x.requires_grad_(),), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("group", list(CE_GROUPS))
def test_ce_second_derivatives_match_reference(backend, group):
    """Hessian-vector products; float32 for Triton (its kernels take no float64), against float64."""
    if backend == "torch" and CE_GROUPS[group].get("inplace_backward"):
        pytest.skip("inplace_backward is a kernel option")
    dtype = torch.float32 if backend == "triton" else F64
    x, target = _ce_inputs()
    kw = CE_GROUPS[group]
    xb = x.to(dtype).requires_grad_()
    x64 = x.detach().clone().requires_grad_()
    out64 = _ce_ref(kw, target)(x64)
    cot, d = torch.randn_like(out64), torch.randn_like(x64)
    g, h = hvp(_ce(kw, target, backend), [xb], [cot.to(dtype)], [d.to(dtype)])
    g_ref, h_ref = hvp(_ce_ref(kw, target), [x64], [cot], [d])
    if dtype == F64:
        close64(g[0], g_ref[0], "grad")
        close64(h[0], h_ref[0], "hvp")
    else:  # the float32 reference's own error, doubled, plus a float32 floor
        x32 = x.float().requires_grad_()
        g32, h32 = hvp(_ce_ref(kw, target), [x32], [cot.float()], [d.float()])
        for a, r, lo in ((g[0], g_ref[0], g32[0]), (h[0], h_ref[0], h32[0])):
            assert error(a, r) <= 2 * error(lo, r) + 1e-5 * max(1.0, float(r.abs().max()))
    assert float(h_ref[0].abs().max()) > 1e-3


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ce_inplace_backward_double_backward(backend):
    """inplace_backward=True: first-order backward writes over the logits; a backward with
    create_graph=True computes out of place (differentiably) and leaves the logits intact."""
    if backend == "torch":
        pytest.skip("inplace_backward is a kernel option")
    x, target = _ce_inputs(torch.float32)
    x.requires_grad_()
    logits = x * 1
    saved = logits.detach().clone()
    loss = kexue.cross_entropy(logits, target, inplace_backward=True, backend=backend)
    (g,) = torch.autograd.grad(loss, logits, create_graph=True)
    assert torch.equal(logits.detach(), saved)
    (h,) = torch.autograd.grad(g.square().sum(), x)
    x64 = x.detach().double().requires_grad_()
    (g64,) = torch.autograd.grad(cross_entropy_reference(x64, target), x64, create_graph=True)
    (h64,) = torch.autograd.grad(g64.square().sum(), x64)
    assert error(h, h64) <= 1e-5 * max(1.0, float(h64.abs().max()))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("group", ["plain", "prior-tau", "smoothing-weight", "ignore-zloss-none"])
def test_ce_torch_func(backend, group):
    dtype = torch.float32 if backend == "triton" else F64
    x, target = _ce_inputs()
    kw = CE_GROUPS[group]
    kern, ref = _ce(kw, target, backend), _ce_ref(kw, target)
    xk = x.to(dtype)
    tol = 1e-5 if dtype == torch.float32 else TOL64

    def close(a, r, name):
        assert error(a, r) <= tol * max(1.0, float(r.abs().max())), name

    def scalar(fn):
        return lambda x: fn(x).sum()

    close(torch.func.grad(scalar(kern))(xk), torch.func.grad(scalar(ref))(x), "grad")
    close(torch.func.jacrev(kern)(xk), torch.func.jacrev(ref)(x), "jacrev")
    close(torch.func.hessian(scalar(kern))(xk), torch.func.hessian(scalar(ref))(x), "hessian")
    close(torch.func.jacfwd(kern)(xk), torch.func.jacfwd(ref)(x), "jacfwd")
    xs = torch.stack([x, -x, 2 * x])
    close(torch.func.vmap(kern)(xs.to(dtype)), torch.stack([ref(a) for a in xs]), "vmap")
    close(torch.func.vmap(torch.func.grad(scalar(kern)))(xs.to(dtype)),
          torch.stack([torch.func.grad(scalar(ref))(a) for a in xs]), "vmap(grad)")


def test_ce_vmap_over_targets():
    """vmap over a batch of targets (their values cannot be checked in Python under vmap)."""
    x, _ = _ce_inputs()
    ts = torch.tensor([[0, 1, 2, 3, 4, 0], [4, 3, -100, 1, 0, 2]])
    got = torch.func.vmap(lambda t: kexue.cross_entropy(x, t, backend="cpu"))(ts)
    close64(got, torch.stack([cross_entropy_reference(x, t) for t in ts]), "vmap over targets")


# ---------------------------------------------------------------------------------------------
# linear_cross_entropy

LCE_GROUPS = {
    "plain-bias": dict(),
    "prior-smoothing-zloss": dict(prior=torch.tensor([5.0, 1.0, 0.5, 3.0, 2.0]), label_smoothing=0.1, z_loss=0.02),
    "class-weight-flood-sum": dict(class_weight=torch.tensor([1.0, 0.5, 2.0, 1.5, 0.7]), flood=4.0,
                                   reduction="sum"),
}


def _lce_inputs(dtype=F64):
    h, w, b = torch.randn(6, 4, dtype=F64), torch.randn(5, 4, dtype=F64) * 0.7, torch.randn(5, dtype=F64)
    target = torch.tensor([0, 3, -100, 4, 1, 2])
    return [t.to(dtype).requires_grad_() for t in (h, w, b)], target


def _lce(kw, target, backend):
    return lambda h, w, b: kexue.linear_cross_entropy(h, w, target, bias=b, chunk_size=4, backend=backend, **kw)


def _lce_ref(kw, target):
    kw = {("weight" if k == "class_weight" else k): (v.double() if isinstance(v, torch.Tensor) else v)
          for k, v in kw.items()}
    return lambda h, w, b: cross_entropy_reference(tnf.linear(h, w, b), target, **kw)


@pytest.mark.parametrize("backend", FP64_CE_BACKENDS)
@pytest.mark.parametrize("group", list(LCE_GROUPS))
def test_lce_gradgradcheck(backend, group):
    ins, target = _lce_inputs()
    assert gradgradcheck(_lce(LCE_GROUPS[group], target, backend), tuple(ins), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("group", list(LCE_GROUPS))
def test_lce_second_derivatives_match_reference(backend, group):
    dtype = torch.float32 if backend == "triton" else F64
    ins64, target = _lce_inputs()
    ins = [t.detach().to(dtype).requires_grad_() for t in ins64]
    kw = LCE_GROUPS[group]
    out = _lce_ref(kw, target)(*ins64)
    cot = torch.randn_like(out)
    dirs = [torch.randn_like(t) for t in ins64]
    g, h = hvp(_lce(kw, target, backend), ins, [cot.to(dtype)], [d.to(dtype) for d in dirs])
    g_ref, h_ref = hvp(_lce_ref(kw, target), ins64, [cot], dirs)
    tol = 1e-5 if dtype == torch.float32 else TOL64
    for name, a, r in zip(["hidden", "weight", "bias", "hvp hidden", "hvp weight", "hvp bias"],
                          (*g, *h), (*g_ref, *h_ref), strict=True):
        assert error(a, r) <= tol * max(1.0, float(r.abs().max())), name
    assert float(h_ref[0].abs().max()) > 1e-3


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_lce_torch_func(backend):
    dtype = torch.float32 if backend == "triton" else F64
    ins64, target = _lce_inputs()
    h, w, b = (t.detach() for t in ins64)
    kw = LCE_GROUPS["prior-smoothing-zloss"]
    kern, ref = _lce(kw, target, backend), _lce_ref(kw, target)
    tol = 1e-5 if dtype == torch.float32 else TOL64

    def close(a, r, name):
        assert error(a, r) <= tol * max(1.0, float(r.abs().max())), name

    c = (h.to(dtype), w.to(dtype), b.to(dtype))
    for a, r in zip(torch.func.grad(kern, argnums=(0, 1, 2))(*c), torch.func.grad(ref, argnums=(0, 1, 2))(h, w, b),
                    strict=True):
        close(a, r, "grad")
    close(torch.func.hessian(kern)(*c), torch.func.hessian(ref)(h, w, b), "hessian")
    close(torch.func.jacfwd(kern, argnums=1)(*c), torch.func.jacfwd(ref, argnums=1)(h, w, b), "jacfwd")
    hs = torch.stack([h, -h])
    close(torch.func.vmap(torch.func.grad(kern, argnums=1), in_dims=(0, None, None))(hs.to(dtype), *c[1:]),
          torch.stack([torch.func.grad(ref, argnums=1)(x, w, b) for x in hs]), "vmap(grad)")


# ---------------------------------------------------------------------------------------------
# the first-order path is the kernels' own (no reference on plain backward)


def test_first_order_backward_still_uses_the_kernels(monkeypatch):
    import sys

    import kexue._autograd as ag

    calls = []
    real = ag.reference_vjp

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    for mod in ("kexue.linear_attention.op", "kexue.cross_entropy.op", "kexue.cross_entropy.linear"):
        monkeypatch.setattr(sys.modules[mod], "reference_vjp", spy)
    q, k, v = (torch.randn(1, 2, 5, 3, requires_grad=True) for _ in range(3))
    kexue.linear_attention(q, k, v, backend="cpu").sum().backward()
    x = torch.randn(4, 5, requires_grad=True)
    kexue.cross_entropy(x, torch.tensor([0, 1, 2, 3]), backend="cpu").backward()
    hh, ww = torch.randn(4, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    kexue.linear_cross_entropy(hh, ww, torch.tensor([0, 1, 2, 3]), backend="cpu").backward()
    assert calls == []
    out = kexue.linear_attention(q, k, v, backend="cpu")
    torch.autograd.grad(out.sum(), q, create_graph=True)
    assert calls == [1]


def test_gradcheck_still_holds_for_kernel_first_order():
    """gradcheck (first order, no create_graph) exercises the kernels' backward."""
    ins, kw, state = _la_group("gqa-mask")
    assert gradcheck(_la_fn(kw, state, "cpu"), tuple(ins), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# the reference's definition of ignored rows (bench/fuzz_ops.py's corner): 0 loss, 0 gradient


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ce_ignored_rows_all_neg_inf(backend):
    """An ignored row whose logits are all -inf contributes no loss and a zero gradient, on
    every backend and in the reference (whose logsumexp backward would give 0·NaN there)."""
    x = torch.randn(4, 6)
    x[1] = float("-inf")
    x[3, :2] = float("-inf")
    target = torch.tensor([2, -100, 0, 5])
    for kw in (dict(), dict(z_loss=0.01, weight=torch.rand(6) + 0.5),
               dict(reduction="none", flood=0.3, flood_mode="sample")):
        got_x, ref_x = x.clone().requires_grad_(), x.double().requires_grad_()
        got = kexue.cross_entropy(got_x, target, backend=backend, **kw)
        kw64 = {k: v.double() if torch.is_tensor(v) else v for k, v in kw.items()}
        ref = cross_entropy_reference(ref_x, target, **kw64)
        assert error(got, ref) <= 1e-5 * max(1.0, float(ref.detach().abs().max()))
        got.sum().backward()
        ref.sum().backward()
        assert torch.equal(got_x.grad[1], torch.zeros(6)) and torch.equal(ref_x.grad[1], torch.zeros(6, dtype=F64))
        assert error(got_x.grad, ref_x.grad) <= 1e-5
