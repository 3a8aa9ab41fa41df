"""kexue.cpu_linear: float32 linear layers routed through oneDNN on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kexue import cpu_linear as cl

needs_onednn = pytest.mark.skipif(not cl.onednn_available(), reason="this torch has no oneDNN linear")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 7), (5, 384), (3, 17, 33), (2, 4, 5, 64)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_float64(shape, with_bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    w = torch.randn(29, shape[-1], generator=g)
    b = torch.randn(29, generator=g) if with_bias else None
    assert cl.routes(x, w, b)  # the oneDNN route is the one under test
    out = cl.linear(x, w, b)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert _rel(out, ref) < 2e-6  # float32 rounding of dot products <= 384 long


@needs_onednn
def test_linear_non_contiguous_and_empty():
    x = torch.randn(64, 40).t()  # (40, 64), strides (1, 40)
    w = torch.randn(96, 64)
    assert _rel(cl.linear(x, w), F.linear(x.double(), w.double())) < 2e-6
    wt = torch.randn(64, 96).t()  # a transposed view, read in place: x @ m for m (64, 96)
    assert _rel(cl.linear(x, wt), F.linear(x.double(), wt.double())) < 2e-6
    ws = torch.randn(96, 128)[:, ::2]  # other strides: copied first
    assert _rel(cl.linear(x, ws), F.linear(x.double(), ws.double())) < 2e-6
    assert cl.linear(torch.randn(0, 64), w).shape == (0, 96)


def test_fallbacks_are_torch():
    """Where oneDNN would not be the plain float32 product, the result is F.linear's."""
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    assert not cl.routes(x.double(), w.double(), None)
    assert cl.linear(x.double(), w.double()).dtype == torch.float64
    xg = x.clone().requires_grad_()
    out = cl.linear(xg, w)  # autograd wanted: torch's op, differentiable
    assert out.grad_fn is not None
    out.sum().backward()
    assert torch.allclose(xg.grad, w.sum(0).expand(4, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cl.linear(x, w).dtype == torch.bfloat16


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("KEXUE_CPU_LINEAR", "torch")
    assert not cl.onednn_available()


def test_replaced_forwards_nest_and_restore():
    lin = torch.nn.Linear(3, 2)
    other = torch.nn.Linear(3, 2)
    other.forward = lambda x: x * 0  # an instance override of the caller's: must survive
    calls = []

    def outer(inner):
        return lambda x: (calls.append("outer"), inner(x))[1]

    def inner_(inner):
        return lambda x: (calls.append("inner"), inner(x))[1]

    x = torch.randn(1, 3)
    with cl.replaced_forwards({lin: outer(lin.forward), other: outer(other.forward)}):
        with cl.replaced_forwards({lin: inner_(lin.forward)}):
            lin(x)
        assert calls == ["inner", "outer"]
        lin(x)
        assert calls == ["inner", "outer", "outer"]
    assert "forward" not in lin.__dict__
    assert torch.equal(other.forward(x), x * 0)


@needs_onednn
def test_onednn_linears_routes_a_model(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    x = torch.randn(5, 16)
    seen = []
    real = cl.linear
    monkeypatch.setattr(cl, "linear", lambda x, w, b=None: (seen.append(w.shape), real(x, w, b))[1])
    with torch.inference_mode():
        plain = model(x)
        with cl.onednn_linears(model):
            routed = model(x)
        again = model(x)
    assert seen == [torch.Size([32, 16]), torch.Size([8, 32])]
    assert _rel(routed, plain) < 1e-5 and torch.equal(again, plain)
    assert all("forward" not in m.__dict__ for m in model.modules())
