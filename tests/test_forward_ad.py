"""Forward-mode AD with dual tensors (``torch.autograd.forward_ad``), outside torch.func.

A custom op drops the tangent of a dual input without a word (torch's custom-op autograd has no
forward-mode formula and is not even entered when nothing requires grad), so inside a dual level
every public function runs as its reference (kexue._dispatch.OpBackends.resolve).  Each tangent
must equal torch.func.jvp's, and the primal the kernel's own result.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import kexue
from kexue import decoding

F64 = torch.float64


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _la(backend):
    g = _g(0)
    k, v = torch.randn(1, 2, 5, 3, dtype=F64, generator=g), torch.randn(1, 2, 5, 4, dtype=F64, generator=g)
    return (lambda q: kexue.linear_attention(q, k, v, causal=True, backend=backend),
            torch.randn(1, 2, 5, 3, dtype=F64, generator=g))


def _ce(backend):
    g = _g(1)
    t = torch.tensor([0, 4, -100, 2])
    prior = torch.rand(6, dtype=F64, generator=g) + 0.1
    return (lambda x: kexue.cross_entropy(x, t, prior=prior, label_smoothing=0.1, flood=0.2, flood_mode="sample",
                                          reduction="none", backend=backend),
            torch.randn(4, 6, dtype=F64, generator=g))


def _lce(backend):
    g = _g(2)
    W, t = torch.randn(6, 3, dtype=F64, generator=g), torch.tensor([0, 5, 1, 2])
    return (lambda h: kexue.linear_cross_entropy(h, W, t, z_loss=1e-3, backend=backend),
            torch.randn(4, 3, dtype=F64, generator=g))


def _probs(backend):
    g = _g(3)
    return (lambda x: decoding.sampling_probs(x, temperature=0.7, top_k=3, top_p=0.9, backend=backend),
            torch.randn(3, 7, dtype=F64, generator=g))


CASES = {"linear_attention": _la, "cross_entropy": _ce, "linear_cross_entropy": _lce, "sampling_probs": _probs}


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("name", list(CASES))
def test_dual_tensors_carry_the_jvp(name, backend):
    f, x = CASES[name](backend)
    t = torch.randn_like(x)
    with fwAD.dual_level():
        primal, tangent = fwAD.unpack_dual(f(fwAD.make_dual(x, t)))
    assert tangent is not None, f"{name}: the tangent was dropped"
    ref_primal, ref_tangent = torch.func.jvp(f, (x,), (t,))
    torch.testing.assert_close(primal, f(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tangent, ref_tangent, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ref_primal, primal, rtol=1e-10, atol=1e-12)


def test_outside_a_dual_level_the_kernels_run():
    from kexue._autograd import forward_ad_active

    assert not forward_ad_active()
    with fwAD.dual_level():
        assert forward_ad_active()
    assert not forward_ad_active()
