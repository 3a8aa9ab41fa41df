"""torch.func over the RAW ops (``torch.ops.kexue.*``), every op in the registry.

Each differentiable op runs its reference composite inside a transform (kexue._autograd,
register_functorch_reference); the results are compared with the kernels' own eager results:

* grad / jacrev / jacfwd / jvp against the eager Jacobian (torch.autograd through the kernel's
  registered first-order backward);
* hessian and vmap(grad) against eager double backward (create_graph=True) and a loop;
* vmap against a loop of eager kernel calls;
* the backward ops: their torch.func derivative against eager double backward of the forward op.

Ops with no functional form (in-place backward ops) must raise an error naming the op; the
integer ops (eisner, masked batch, sample, cpu_isa) must run under vmap (a loop of the kernel)
and inside grad.  ``test_every_registered_op_has_a_case`` fails when an op joins the registry
without a row here.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vmap

import kexue
import kexue.attribution.op  # noqa: F401  (the attention_qkv ops' fake kernels and autograd)
import kexue.probe  # noqa: F401  (registers the probe ops' fake kernels and autograd)
from helpers import error, triton_runs_on
from kexue._autograd import FUNCTORCH_ROUTED

F64 = torch.float64
TRITON = triton_runs_on("cpu")
if TRITON:
    import kexue.triton_kernels.cross_entropy
    import kexue.triton_kernels.linear_attention
    import kexue.triton_kernels.probe
    import kexue.triton_kernels.sampling  # noqa: F401

K = torch.ops.kexue


def registry() -> list[str]:
    return sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("kexue::"))


def tol(dtype: torch.dtype, scale: float) -> float:
    """float64: two exact formulations agree to 1e-9 of the largest entry; float32 (the Triton
    kernels, tiny shapes, sums of < 100 terms): 1e-4 of it, ~800 float32 ulps."""
    return (1e-9 if dtype == F64 else 1e-4) * max(1.0, scale)


def close(got, ref, name):
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    scale = float(ref.detach().abs().max()) if ref.numel() else 1.0
    err = error(got, ref)
    assert err <= tol(ref.dtype if ref.dtype == F64 else got.dtype, scale), f"{name}: error {err:.3g}"


# ---------------------------------------------------------------------------------------------
# Differentiable cases: (op name, dtype, f(x) -> tensor with every other argument fixed, x).

def _la_case(op: str, dtype):
    g = torch.Generator().manual_seed(1)

    def r(*s):
        return torch.randn(*s, dtype=dtype, generator=g)

    k, v = r(1, 2, 5, 3), r(1, 2, 5, 2)
    S0, z0 = r(1, 2, 3, 2).abs(), r(1, 2, 3).abs() + 1
    fwd = getattr(K, op)

    def f(q):
        out, S, z = fwd(q, k, v, None, S0, z0, None, "elu", True, True, 1e-6)
        return torch.cat([out.reshape(-1), S.reshape(-1).to(out.dtype), z.reshape(-1).to(out.dtype)])

    return f, r(1, 2, 5, 3)


def _ce_case(op: str, dtype):
    g = torch.Generator().manual_seed(2)
    target = torch.tensor([0, 5, -100, 2])
    bias = torch.randn(6, dtype=torch.float32 if dtype != F64 else F64, generator=g)
    weight = torch.rand(6, dtype=bias.dtype, generator=g) + 0.5
    fwd = getattr(K, op)

    def f(x):
        return fwd(x, target, bias, weight, 0.1, 1e-3, -100, False)[0]

    return f, torch.randn(4, 6, dtype=dtype, generator=g)


def _lce_case(op: str, dtype):
    g = torch.Generator().manual_seed(3)
    W = torch.randn(6, 3, dtype=dtype, generator=g)
    b = torch.randn(6, dtype=dtype, generator=g)
    target = torch.tensor([0, 5, -100, 2])

    def f(h):
        return K.linear_cross_entropy_fwd(h, W, target, b, None, None, 0.1, 1e-3, -100, 2, "native")[0]

    return f, torch.randn(4, 3, dtype=dtype, generator=g)


def _seg_case(op: str, dtype):
    g = torch.Generator().manual_seed(4)
    ref = torch.randn(3, 4, dtype=dtype, generator=g)
    rows, ref_rows, seg = torch.tensor([0, 1, 2, 2]), torch.tensor([1, 1, 0, 2]), torch.tensor([0, 0, 1, 2])
    fwd = getattr(K, op)

    def f(h):
        return torch.cat([fwd(h, rows, ref, ref_rows, seg, 3, "dist"), fwd(h, rows, ref, ref_rows, seg, 3, "cos")])

    return f, torch.randn(3, 4, dtype=dtype, generator=g)


def _probs_case(op: str, dtype):
    g = torch.Generator().manual_seed(5)
    T = torch.tensor([1.0, 0.7, 2.0, 1.0], dtype=F64)
    k = torch.tensor([0, 3, 2, 0])
    p = torch.tensor([1.0, 0.9, 1.0, 0.6], dtype=F64)
    keep = torch.tensor([[-1], [4], [-1], [1]])
    fwd = getattr(K, op)

    def f(x):
        return fwd(x, T, k, p, keep)

    x = torch.randn(4, 6, dtype=dtype, generator=g)
    x[0, 3] = float("-inf")  # a masked token
    return f, x


def _attn_case(op: str, dtype):
    def f(qkv):
        out, probs = K.attention_qkv_fwd(qkv, 2, 0.4)
        return torch.cat([out.reshape(-1), probs.reshape(-1)])

    return f, torch.randn(2, 3, 3 * 2 * 2, dtype=dtype, generator=torch.Generator().manual_seed(6))


DIFF_CASES = {
    "attention_qkv_fwd": (_attn_case, F64),
    "linear_attention_fwd": (_la_case, F64),
    "linear_attention_fwd_triton": (_la_case, torch.float32),
    "cross_entropy_fwd": (_ce_case, F64),
    "ce_fwd_triton": (_ce_case, torch.float32),
    "linear_cross_entropy_fwd": (_lce_case, F64),
    "probe_segment_distance": (_seg_case, F64),
    "probe_segment_distance_triton": (_seg_case, torch.float32),
    "sampling_probs": (_probs_case, F64),
    "sampling_probs_triton": (_probs_case, torch.float32),
}
# backward ops: (forward op's case): derivative of ⟨bwd(1, x), t⟩ against eager double backward
BWD_CASES = {
    "attention_qkv_bwd": "attention_qkv_fwd",
    "linear_attention_bwd": "linear_attention_fwd",
    "linear_attention_bwd_triton": "linear_attention_fwd_triton",
    "cross_entropy_bwd": "cross_entropy_fwd",
    "ce_bwd_triton": "ce_fwd_triton",
    "linear_cross_entropy_bwd": "linear_cross_entropy_fwd",
}
REFUSED = {"cross_entropy_bwd_inplace": "kexue.cross_entropy", "ce_bwd_inplace_triton": "kexue.cross_entropy"}
INTEGER_OPS = ("eisner", "probe_masked_batch", "probe_masked_batch_triton", "sample", "sample_triton", "cpu_isa",
               "cpu_cache_bytes", "cpu_cache_release")


def _skip_triton(op: str) -> None:
    if "triton" in op and not TRITON:
        pytest.skip("the Triton ops run on CPU tensors only under TRITON_INTERPRET=1")


def test_every_registered_op_has_a_case():
    ops = registry()
    if not TRITON:
        ops = [o for o in ops if "triton" not in o]
    covered = set(DIFF_CASES) | set(BWD_CASES) | set(REFUSED) | set(INTEGER_OPS)
    missing = [o for o in ops if o not in covered]
    assert not missing, f"raw ops without a torch.func case: {missing}"
    for o in list(DIFF_CASES) + list(BWD_CASES):
        if o in ops:
            assert FUNCTORCH_ROUTED.get(o) == "reference", f"{o} has no torch.func route"
    for o in REFUSED:
        if o in ops:
            assert FUNCTORCH_ROUTED.get(o) == "refused"


def _eager_jacobian(f, x):
    return torch.autograd.functional.jacobian(f, x)


@pytest.mark.parametrize("op", list(DIFF_CASES))
def test_raw_op_first_order_transforms_match_the_kernels(op):
    _skip_triton(op)
    make, dtype = DIFF_CASES[op]
    f, x = make(op, dtype)
    J = _eager_jacobian(f, x)  # the kernel forward + its registered backward
    out = f(x)
    t = torch.randn_like(x)
    close(jacrev(f)(x), J, f"{op} jacrev")
    close(jacfwd(f)(x), J, f"{op} jacfwd")
    primal, tangent = jvp(f, (x,), (t,))
    close(primal, out, f"{op} jvp primal")
    close(tangent, (J.reshape(out.numel(), -1) @ t.reshape(-1)).reshape(out.shape), f"{op} jvp")
    w = torch.randn_like(out)
    close(grad(lambda y: (f(y) * w).sum())(x), (w.reshape(1, -1) @ J.reshape(out.numel(), -1)).reshape(x.shape),
          f"{op} grad")


@pytest.mark.parametrize("op", list(DIFF_CASES))
def test_raw_op_vmap_and_second_order_match_the_kernels(op):
    _skip_triton(op)
    make, dtype = DIFF_CASES[op]
    f, x = make(op, dtype)
    xs = torch.stack([x, x * 0.5 + 0.1, x * 1.5])
    close(vmap(f)(xs), torch.stack([f(xi) for xi in xs]), f"{op} vmap")
    w = torch.randn_like(f(x))

    def loss(y):
        return (f(y) * w).sum()

    def eager_grad(y):
        y = y.clone().requires_grad_()
        return torch.autograd.grad(loss(y), y)[0]

    close(vmap(grad(loss))(xs), torch.stack([eager_grad(xi) for xi in xs]), f"{op} vmap(grad)")
    if dtype != F64:
        return  # (second derivatives against eager double backward: float64 cases)
    H = torch.autograd.functional.hessian(loss, x)  # eager double backward (create_graph=True)
    close(hessian(loss)(x), H, f"{op} hessian")


@pytest.mark.parametrize("op", list(BWD_CASES))
def test_raw_backward_op_under_torch_func(op):
    _skip_triton(op)
    fwd = BWD_CASES[op]
    make, dtype = DIFF_CASES[fwd]
    f, x = make(fwd, dtype)
    bwd = getattr(K, op)
    # rebuild the backward op's arguments from the forward case's closure
    cells = {n: c.cell_contents for n, c in zip(f.__code__.co_freevars, f.__closure__ or (), strict=True)}
    if op == "attention_qkv_bwd":
        def call_fwd(qkv):
            return K.attention_qkv_fwd(qkv, 2, 0.4)[0]

        def call_bwd(qkv, go):
            return bwd(go, None, qkv, K.attention_qkv_fwd(qkv, 2, 0.4)[1], 2, 0.4)
    elif op.startswith("linear_attention"):
        k, v, S0, z0 = cells["k"], cells["v"], cells["S0"], cells["z0"]

        def call_bwd(q, go):
            return bwd(go, None, None, q, k, v, None, S0, z0, None, "elu", True, True, 1e-6)[0]

        def call_fwd(q):
            return getattr(K, fwd)(q, k, v, None, S0, z0, None, "elu", True, True, 1e-6)[0]
    elif op == "linear_cross_entropy_bwd":
        W, b, target = cells["W"], cells["b"], cells["target"]

        def call_fwd(h):
            return K.linear_cross_entropy_fwd(h, W, target, b, None, None, 0.1, 1e-3, -100, 2, "native")[0]

        def call_bwd(h, go):
            lse = K.linear_cross_entropy_fwd(h, W, target, b, None, None, 0.1, 1e-3, -100, 2, "native")[1]
            return bwd(go, h, W, target, b, None, None, lse, 0.1, 1e-3, -100, 2, "native")[0]
    else:
        target, bias, weight = cells["target"], cells["bias"], cells["weight"]
        fwd_op = getattr(K, fwd)

        def call_fwd(z):
            return fwd_op(z, target, bias, weight, 0.1, 1e-3, -100, False)[0]

        def call_bwd(z, go):
            lse = fwd_op(z, target, bias, weight, 0.1, 1e-3, -100, False)[1]
            return bwd(go, z, target, bias, weight, lse, 0.1, 1e-3, -100)

    go = torch.randn_like(call_fwd(x))
    t = torch.randn_like(x)
    # eager: d/dx ⟨∂⟨fwd(x), go⟩/∂x, t⟩ by double backward through the forward op
    xe = x.clone().requires_grad_()
    g1 = torch.autograd.grad((call_fwd(xe) * go).sum(), xe, create_graph=True)[0]
    close(call_bwd(x, go), g1.detach(), f"{op} value")
    hvp = torch.autograd.grad((g1 * t).sum(), xe)[0]
    close(grad(lambda y: (call_bwd(y, go) * t).sum())(x), hvp, f"{op} grad")
    close(jvp(lambda y: call_bwd(y, go), (x,), (t,))[1], torch.autograd.grad((g1 * t).sum(), xe)[0]
          if False else _hvp_fwd(call_fwd, x, go, t), f"{op} jvp")
    xs = torch.stack([x, 0.5 * x])
    close(vmap(lambda y: call_bwd(y, go))(xs), torch.stack([call_bwd(xi, go) for xi in xs]), f"{op} vmap")


def _hvp_fwd(call_fwd, x, go, t):
    """H t for H the Hessian of ⟨fwd(x), go⟩ (symmetric, so the jvp of the gradient is H t)."""
    xe = x.clone().requires_grad_()
    g1 = torch.autograd.grad((call_fwd(xe) * go).sum(), xe, create_graph=True)[0]
    return torch.autograd.grad((g1 * t).sum(), xe)[0]


@pytest.mark.parametrize("op", list(REFUSED))
def test_inplace_backward_ops_refuse_torch_func_by_name(op):
    _skip_triton(op)
    logits = torch.randn(3, 4)
    target = torch.tensor([0, 1, 2])
    lse = torch.logsumexp(logits, 1)
    fn = getattr(K, op)

    def call(x):
        fn(torch.ones(3), x.clone(), target, None, None, lse, 0.0, 0.0, -100)
        return x.sum()

    for transform in (grad, vmap, lambda h: (lambda y: jvp(h, (y,), (y,))[1])):
        with pytest.raises(RuntimeError, match=f"kexue::{op} cannot run inside a torch.func transform.*"
                                               "kexue.cross_entropy"):
            transform(call)(logits)


def _eisner_scores():
    g = torch.Generator().manual_seed(6)
    return torch.randn(2, 5, 5, dtype=F64, generator=g), torch.tensor([4, 3])


@pytest.mark.parametrize("op", INTEGER_OPS)
def test_integer_ops_under_vmap_and_grad(op):
    _skip_triton(op)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch's "no batching rule: performance drop" warning)
        if op == "cpu_isa":
            assert K.cpu_isa() in ("avx512", "avx2", "base")
            assert grad(lambda x: (x * len(K.cpu_isa())).sum())(torch.ones(2)).tolist() == [len(K.cpu_isa())] * 2
            return
        if op in ("cpu_cache_bytes", "cpu_cache_release"):  # no tensor arguments: constants to a transform
            n = getattr(K, op)()
            assert isinstance(n, int) and n >= 0
            assert grad(lambda x: (x * float(getattr(K, op)() >= 0)).sum())(torch.ones(2)).tolist() == [1.0, 1.0]
            return
        if op == "eisner":
            scores, lengths = _eisner_scores()
            heads = K.eisner(scores, lengths, True)
            got = vmap(lambda s: K.eisner(s[None], lengths[:1], True)[0])(scores[:1].expand(3, 5, 5))
            assert torch.equal(got, heads[:1].expand(3, -1))

            def picked(s):  # the score of the decoded tree, differentiable in the scores
                h = K.eisner(s, lengths, True)
                return s.gather(1, h.clamp(min=0)[:, None, :])[:, 0, 1:].sum()

            gs = grad(picked)(scores)
            se = scores.clone().requires_grad_()
            close(gs, torch.autograd.grad(picked(se), se)[0], "eisner grad")
            return
        if op.startswith("probe_masked_batch"):
            tokens = torch.tensor([5, 6, 7, 8, 9])
            args = (tokens, torch.tensor([0, 5]), torch.tensor([0, 1, 3]), torch.tensor([1, 3, 5]),
                    torch.tensor([0, 3]))
            seqs = torch.tensor([[0, 0, 1], [0, 2, -1]])
            ids, mask = getattr(K, op)(*args, seqs, 103, 0, 6)
            got = vmap(lambda s: getattr(K, op)(*args, s, 103, 0, 6)[0], in_dims=0)(seqs[:, None, :])
            assert torch.equal(got[:, 0], ids)
            return
        # sample / sample_triton
        g = torch.Generator().manual_seed(7)
        dtype = F64 if op == "sample" else torch.float32
        logits = torch.randn(3, 6, dtype=dtype, generator=g)
        T, k, p = torch.ones(3, dtype=F64), torch.tensor([0, 2, 0]), torch.tensor([1.0, 1.0, 0.8], dtype=F64)
        keep = torch.full((3, 1), -1)
        u = torch.rand(3, dtype=F64, generator=g)
        fn = getattr(K, op)
        tok = fn(logits, T, k, p, keep, u)
        got = vmap(lambda x: fn(x, T, k, p, keep, u))(logits[None].expand(2, 3, 6))
        assert torch.equal(got, tok[None].expand(2, 3))
        gl = grad(lambda x: x.gather(1, fn(x, T, k, p, keep, u)[:, None]).sum())(logits)
        assert torch.equal(gl, torch.zeros_like(logits).scatter_(1, tok[:, None], 1.0))


def test_public_function_and_raw_op_agree_under_grad():
    """The public function (which routes to the reference in transforms) and the raw op give one
    gradient."""
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(1, 2, 4, 3, dtype=F64, generator=g) for _ in range(3))
    pub = grad(lambda x: kexue.linear_attention(x, k, v, causal=True).sum())(q)
    raw = grad(lambda x: K.linear_attention_fwd(x, k, v, None, None, None, None, "elu", True, True, 1e-6)[0].sum())(q)
    close(raw, pub, "public vs raw")


# ---------------------------------------------------------------------------------------------
# Forward-mode AD with dual tensors outside torch.func: the raw ops refuse, naming the argument
# (kexue._autograd.refuse_forward_ad and csrc/registration.cpp), instead of dropping the tangent.


def test_every_differentiable_raw_op_has_the_dual_tensor_check():
    ops = registry()
    for o in list(DIFF_CASES) + list(BWD_CASES):
        if o in ops:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"kexue::{o}", "ADInplaceOrView"), o


@pytest.mark.parametrize("op", list(DIFF_CASES))
def test_raw_op_refuses_dual_tensors_by_name(op):
    import torch.autograd.forward_ad as fwAD

    _skip_triton(op)
    make, dtype = DIFF_CASES[op]
    f, x = make(op, dtype)
    with fwAD.dual_level(), pytest.raises(RuntimeError, match=rf"kexue::{op}: argument '\w+' is a dual tensor"):
        f(fwAD.make_dual(x, torch.randn_like(x)))
    f(x)  # outside a dual level the kernel runs


def test_raw_backward_op_refuses_dual_tensors():
    import torch.autograd.forward_ad as fwAD

    x, t = torch.randn(3, 5, dtype=F64), torch.tensor([0, 4, 1])
    loss, lse = K.cross_entropy_fwd(x, t, None, None, 0.0, 0.0, -100, False)
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="argument 'logits' is a dual tensor"):
        K.cross_entropy_bwd(torch.ones_like(loss), fwAD.make_dual(x, torch.randn_like(x)), t, None, None, lse, 0.0,
                            0.0, -100)
