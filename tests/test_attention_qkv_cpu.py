"""The CPU attention kernel of the BERT integrand (``kexue::attention_qkv_fwd`` / ``_bwd``,
csrc/attribution/attention_cpu.cpp) against its float64 reference
(:func:`kexue.attribution.reference.attention_qkv_reference`).

Shapes include one token, one head, odd head dims and lengths that are not multiples of the
register tile (8 rows, 32 columns), and lengths past a tile of scratch columns; inputs of any
strides; the optional gradient of the probabilities; gradcheck / gradgradcheck in float64 through
the registered autograd; opcheck; torch.compile.  The hand-written integrand that calls the kernel
is checked against autograd and Captum in tests/test_attribution_fast.py.
"""

from __future__ import annotations

import math

import pytest
import torch

import kexue  # noqa: F401  (loads the ops)
from kexue.attribution import op as attn_op
from kexue.attribution.reference import attention_qkv_reference

pytestmark = pytest.mark.skipif(not attn_op.schemas_loaded(), reason="kexue._C built without the attention kernel")

K = torch.ops.kexue
F64 = torch.float64
SHAPES = [(1, 1, 1, 1), (2, 1, 3, 4), (3, 7, 2, 5), (4, 30, 12, 32), (2, 33, 3, 64), (1, 100, 2, 13), (1, 257, 1, 8)]


def ids(shape):
    return "R{}L{}H{}dh{}".format(*shape)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max().clamp_min(1e-300))


def tolerance(dtype: torch.dtype, L: int, dh: int) -> float:
    """float64: rounding only; float32: sums of L·dh products, ~sqrt(L·dh) ulps each, bounded generously."""
    eps = torch.finfo(dtype).eps
    return 64 * eps * math.sqrt(L * dh + 1) if dtype == torch.float32 else 1e3 * eps


def qkv_of(R, L, H, dh, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(R, L, 3 * H * dh, generator=g, dtype=F64)).to(dtype)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_forward_and_backward_match_the_reference(shape, dtype):
    R, L, H, dh = shape
    scale = 1 / math.sqrt(dh)
    x = qkv_of(R, L, H, dh, dtype, scale=2.0)
    out, probs = K.attention_qkv_fwd(x, H, scale)
    x64 = x.double().requires_grad_()
    ro, rp = attention_qkv_reference(x64, H, scale)
    tol = tolerance(dtype, L, dh)
    assert rel(out.double(), ro) <= tol and rel(probs.double(), rp) <= tol
    g = torch.randn(ro.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    gp = torch.randn(rp.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    (ref_g,) = torch.autograd.grad(ro, x64, g, retain_graph=True)
    got = K.attention_qkv_bwd(g.to(dtype), None, x, probs, H, scale)
    assert rel(got.double(), ref_g) <= tol
    (ref_gp,) = torch.autograd.grad((ro, rp), x64, (g, gp))
    got_gp = K.attention_qkv_bwd(g.to(dtype), gp.to(dtype), x, probs, H, scale)
    assert rel(got_gp.double(), ref_gp) <= tol


def test_any_strides():
    """Non-contiguous qkv, grad_out, probs and grad_probs give what their contiguous copies give."""
    R, L, H, dh = 3, 9, 2, 6
    x = qkv_of(L, R, H, dh, F64).transpose(0, 1)  # (R, L, 3D), rows not contiguous
    xs = qkv_of(R, L, 2 * H, dh, F64)[..., ::2]  # a stride-2 last dimension
    for q in (x, xs):
        out, probs = K.attention_qkv_fwd(q, H, 0.4)
        ro, rp = K.attention_qkv_fwd(q.contiguous(), H, 0.4)
        assert torch.equal(out, ro) and torch.equal(probs, rp)
        g = torch.randn(L, R, H * dh, dtype=F64).transpose(0, 1)
        gp = torch.randn(R, H, L, L, dtype=F64).transpose(2, 3)
        pt = probs.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
        assert torch.equal(K.attention_qkv_bwd(g, gp, q, pt, H, 0.4),
                           K.attention_qkv_bwd(g.contiguous(), gp.contiguous(), q.contiguous(), probs, H, 0.4))


def test_extreme_scores_stay_finite():
    """Scores of ±1e4 (softmax saturates to one-hot) and all equal (uniform): no overflow, rows sum to 1."""
    R, L, H, dh = 2, 5, 1, 4
    x = qkv_of(R, L, H, dh, torch.float32, scale=100.0)
    out, probs = K.attention_qkv_fwd(x, H, 1.0)
    assert torch.isfinite(out).all() and torch.allclose(probs.sum(-1), torch.ones(R, H, L))
    zero = torch.zeros(R, L, 3 * H * dh)
    zero[..., 2 * H * dh:] = 1.0
    out, probs = K.attention_qkv_fwd(zero, H, 1.0)
    assert torch.allclose(probs, torch.full_like(probs, 1 / L)) and torch.allclose(out, torch.ones_like(out))


def test_empty_inputs():
    for shape in [(0, 4, 12), (2, 0, 12)]:
        x = torch.zeros(shape)
        out, probs = K.attention_qkv_fwd(x, 2, 0.5)
        assert out.shape == (shape[0], shape[1], 4) and probs.shape == (shape[0], 2, shape[1], shape[1])
        assert K.attention_qkv_bwd(out, None, x, probs, 2, 0.5).shape == x.shape


def test_gradcheck_and_gradgradcheck():
    x = qkv_of(2, 4, 2, 3, F64).requires_grad_()

    def f(q):
        out, probs = K.attention_qkv_fwd(q, 2, 0.7)
        return out, probs

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_func_grad_and_vmap_match_autograd():
    x = qkv_of(2, 4, 2, 3, F64)
    w = torch.randn(2, 4, 6, dtype=F64)

    def loss(q):
        return (K.attention_qkv_fwd(q, 2, 0.7)[0] * w).sum()

    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(loss(xr), xr)
    assert torch.allclose(torch.func.grad(loss)(x), expected, rtol=1e-12, atol=1e-12)
    xs = torch.stack([x, 2 * x])
    batched = torch.func.vmap(lambda q: K.attention_qkv_fwd(q, 2, 0.7)[0])(xs)
    assert torch.allclose(batched[1], K.attention_qkv_fwd(2 * x, 2, 0.7)[0], rtol=1e-12, atol=1e-12)


def test_opcheck():
    x = qkv_of(2, 5, 2, 3, torch.float32)
    out, probs = K.attention_qkv_fwd(x, 2, 0.5)
    torch.library.opcheck(K.attention_qkv_fwd.default, (x, 2, 0.5))
    torch.library.opcheck(K.attention_qkv_bwd.default, (torch.randn_like(out), None, x, probs, 2, 0.5))
    torch.library.opcheck(K.attention_qkv_bwd.default, (torch.randn_like(out), torch.randn_like(probs), x, probs, 2,
                                                        0.5))


def test_torch_compile_fullgraph():
    x = qkv_of(2, 5, 2, 3, torch.float32)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(q):
        out, probs = K.attention_qkv_fwd(q, 2, 0.5)
        return out.sum() + probs.sum()

    assert torch.allclose(f(x), K.attention_qkv_fwd(x, 2, 0.5)[0].sum() + 2 * 5 * 2)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_composite_backward_equals_the_kernel(dtype):
    """The torch-operator fallback of attention_qkv_backward (other devices, builds without the
    kernel) computes the kernel's numbers."""
    R, L, H, dh = 3, 11, 3, 5
    x = qkv_of(R, L, H, dh, dtype)
    out, probs = attn_op.attention_qkv(x, H, 0.3)
    g = torch.randn(out.shape, dtype=dtype)
    got = attn_op.attention_qkv_backward_composite(g, x, probs, H, 0.3)
    assert rel(got.double(), attn_op.attention_qkv_backward(g, x, probs, H, 0.3).double()) <= tolerance(dtype, L, dh)
