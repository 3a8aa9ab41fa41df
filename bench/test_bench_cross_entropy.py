"""pytest-benchmark of cross_entropy forward+backward: the torch composite against the kexue backends.

Run: ``python -m pytest bench/test_bench_cross_entropy.py --benchmark-enable --benchmark-min-rounds=7``
(CPU: float32 N=4096, C in {1000, 32000}; the full side-by-side table with peak memory is
``python -m kexue bench --op cross_entropy``).
"""

from __future__ import annotations

import pytest
import torch

from kexue.cross_entropy import cross_entropy, cross_entropy_reference
from kexue.cross_entropy.api import BACKENDS

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPES = [(8192, 128256)] if DEVICE.type == "cuda" else [(4096, 1000), (4096, 32000)]
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
PROVIDERS = ["torch"] + [b for b in ("cpu", "cuda", "triton") if BACKENDS.availability(b, DEVICE)[0]]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-C{s[1]}")
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("flood", [None, 0.5])
def test_fwd_bwd(benchmark, shape, provider, flood):
    N, C = shape
    x = torch.randn(N, C, dtype=DTYPE, device=DEVICE, requires_grad=True)
    t = torch.randint(0, C, (N,), device=DEVICE)
    prior = torch.rand(C, device=DEVICE) + 0.01
    kw = dict(prior=prior, flood=flood, label_smoothing=0.1) if flood is not None else {}

    def run():
        loss = cross_entropy_reference(x, t, **kw) if provider == "torch" else cross_entropy(x, t, backend=provider,
                                                                                           **kw)
        (g,) = torch.autograd.grad(loss, x)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return g

    benchmark.group = f"cross_entropy N{N} C{C} flood={flood}"
    benchmark(run)
