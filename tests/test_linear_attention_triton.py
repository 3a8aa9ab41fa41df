"""The Triton linear-attention ops themselves (CPU tensors under TRITON_INTERPRET=1, or CUDA).

test_linear_attention.py runs the "triton" backend through the public API against the float64
definition; here: torch.library.opcheck of both ops, the multi-segment scheme forced on
(several segments per sequence, empty segments, packed sequences), float64 gradcheck, and the
backward's optional inputs.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from helpers import TRITON_DEVICES, error, make_state

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.fixture
def tk():
    from kexue.triton_kernels import linear_attention as tk

    return tk


@pytest.fixture
def segments(tk):
    """Sets FORCE_SEGMENTS for one test."""
    old = tk.FORCE_SEGMENTS

    def force(p):
        tk.FORCE_SEGMENTS = p

    yield force
    tk.FORCE_SEGMENTS = old


def _inputs(B, H, Hkv, N, Dk, Dv, *, dtype=torch.float32, device="cpu", taylor=False):
    F = Dk + int(taylor)
    q = torch.randn(B, H, N, Dk, dtype=dtype, device=device)
    k = torch.randn(B, Hkv, N, Dk, dtype=dtype, device=device)
    v = torch.randn(B, Hkv, N, Dv, dtype=dtype, device=device)
    S0, z0 = make_state(B, H, F, Dv, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    return q, k, v, S0, z0


def _reference(q, k, v, mask, S0, z0, cu, fmap, causal, normalize, eps):
    from kexue.linear_attention import linear_attention_quadratic

    st = None if S0 is None else (S0.double(), z0.double())
    o, (S, z) = linear_attention_quadratic(q.double(), k.double(), v.double(), causal=causal, feature_map=fmap,
                                           normalize=normalize, eps=eps, key_padding_mask=mask, initial_state=st,
                                           cu_seqlens=cu)
    return o, S, z


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("causal", [False, True])
def test_opcheck_forward_and_backward(tk, device, causal):
    q, k, v, S0, z0 = _inputs(1, 2, 1, 37, 5, 6, device=device, taylor=True)
    mask = torch.zeros(1, 37, dtype=torch.bool, device=device)
    mask[0, 3] = True
    fwd = torch.ops.kexue.linear_attention_fwd_triton.default
    bwd = torch.ops.kexue.linear_attention_bwd_triton.default
    args = (q, k, v, mask, S0, z0, None, "taylor", causal, True, 1e-6)
    torch.library.opcheck(fwd, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
    leaves = [t.clone().requires_grad_() for t in (q, k, v, S0, z0)]
    torch.library.opcheck(fwd, (*leaves[:3], mask, *leaves[3:], None, "taylor", causal, True, 1e-6),
                          test_utils=("test_autograd_registration",))
    o, S, z = fwd(*args)
    bargs = (torch.randn_like(o), torch.randn_like(S), None, q, k, v, mask, S0, z0, None, "taylor", causal, True, 1e-6)
    torch.library.opcheck(bwd, bargs, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_segments_varlen_gradients(tk, segments, device, causal, normalize):
    """Three segments per packed sequence (some of them empty), GQA, a mask, state in and out:
    forward and every gradient against the float64 definition."""
    segments(3)
    lens = [130, 1, 0, 70]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int64, device=device)
    q, k, v, S0, z0 = _inputs(1, 4, 2, sum(lens), 7, 19, device=device)
    S0, z0 = S0.expand(len(lens), -1, -1, -1).clone(), z0.expand(len(lens), -1, -1).clone()
    mask = torch.rand(1, sum(lens), device=device) < 0.2
    leaves = [t.clone().requires_grad_() for t in (q, k, v, S0, z0)]
    opts = ("elu", causal, normalize, 1e-6)
    o, S, z = tk.linear_attention_fwd_triton(*leaves[:3], mask, *leaves[3:], cu, *opts)
    go, gS, gz = torch.randn_like(o), torch.randn_like(S), torch.randn_like(z)
    grads = torch.autograd.grad([o, S, z], leaves, [go, gS, gz])
    l64 = [t.detach().double().requires_grad_() for t in (q, k, v, S0, z0)]
    o64, S64, z64 = _reference(*l64[:3], mask, *l64[3:], cu, *opts)
    ref = torch.autograd.grad([o64, S64, z64], l64, [go.double(), gS.double(), gz.double()])
    for name, x, r in [("out", o, o64), ("S", S, S64), ("z", z, z64)]:
        x, r = x.detach(), r.detach()
        assert error(x, r) <= 1e-4 * max(1.0, float(r.abs().max())), f"{name}: {error(x, r):.3g}"
    for name, g, r in zip(["q", "k", "v", "S0", "z0"], grads, ref, strict=True):
        assert error(g, r) <= 1e-4 * max(1.0, float(r.abs().max())), f"d{name}: {error(g, r):.3g}"


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("causal,feature_map", [(True, "taylor"), (False, "softmax")])
def test_gradcheck_float64(tk, segments, causal, feature_map, device):
    if not tk.HAS_FP64_DOT:
        pytest.skip("float64 tl.dot needs triton >= 3.5")
    segments(2)
    q, k, v, S0, z0 = _inputs(1, 2, 1, 70, 3, 2, dtype=torch.float64, taylor=feature_map == "taylor", device=device)
    q, k, v = q[:, :, :7], k[:, :, :7], v[:, :, :7]  # 7 tokens: the second segment is empty
    mask = torch.tensor([[False, True, False, False, False, False, True]], device=device)

    def f(q, k, v, S0, z0):
        return tk.linear_attention_fwd_triton(q, k, v, mask, S0, z0, None, feature_map, causal, True, 1e-6)

    inputs = tuple(t.requires_grad_() for t in (q, k, v, S0, z0))
    assert torch.autograd.gradcheck(f, inputs, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_backward_optional_inputs_and_empty(tk, device):
    """grad_S / grad_z absent (zeros), no initial state (empty dS0 / dz0), N = 0."""
    bwd = torch.ops.kexue.linear_attention_bwd_triton
    q, k, v, S0, z0 = _inputs(2, 2, 2, 9, 4, 3, device=device)
    go = torch.randn(2, 2, 9, 3, device=device)
    dq, dk, dv, dS0, dz0 = bwd(go, None, None, q, k, v, None, None, None, None, "relu", True, True, 1e-6)
    assert dS0.numel() == 0 and dz0.numel() == 0
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o, _, _ = torch.ops.kexue.linear_attention_fwd_triton(*leaves, None, None, None, None, "relu", True, True, 1e-6)
    ref = torch.autograd.grad(o, leaves, go)
    for g, r in zip((dq, dk, dv), ref, strict=True):
        assert error(g, r) == 0.0
    # grad_z alone: the same as grad_S = 0
    gz = torch.randn(2, 2, 4, device=device)
    one = bwd(go, None, gz, q, k, v, None, S0, z0, None, "elu", False, True, 1e-6)
    two = bwd(go, torch.zeros_like(S0), gz, q, k, v, None, S0, z0, None, "elu", False, True, 1e-6)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)
    # N = 0: every output written, gradients of the state pass through
    q0, k0, v0 = q[:, :, :0], k[:, :, :0], v[:, :, :0]
    gS = torch.randn_like(S0)
    dq, dk, dv, dS0, dz0 = bwd(go[:, :, :0], gS, gz, q0, k0, v0, None, S0, z0, None, "elu", True, True, 1e-6)
    assert dq.shape == q0.shape and torch.equal(dS0, gS) and torch.equal(dz0, gz)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_explain_reports_triton(tk, device):
    import kexue

    q = torch.randn(1, 1, 4, 4, device=device)
    assert "triton" in kexue.linear_attention.explain(q, backend="triton")
