"""pytest-benchmark: CPU linear attention, the "torch" reference vs the "cpu" C++ kernel (and
fast-transformers' causal_dot_product when it is installed).

    python -m pytest bench/test_bench_linear_attention.py --benchmark-enable [--benchmark-group-by=param:N]

Benchmarks are disabled by default (pyproject addopts): without --benchmark-enable every case
runs once, as a smoke test.  Float32, B=2, H=4, Dk=Dv=64, elu feature map, normalized.
"""

from __future__ import annotations

import pytest
import torch

import kexue

try:
    from fast_transformers.causal_product import causal_dot_product
except ImportError:  # optional comparison
    causal_dot_product = None

B, H, D = 2, 4, 64
EPS = 1e-6
PROVIDERS = ["torch", "cpu", "fast_transformers"]


def fast_transformers_causal(q, k, v):
    """fast-transformers' CausalLinearAttention (elu+1 feature map, normalized), (B, H, N, D) layout."""
    Q = torch.nn.functional.elu(q) + 1
    K = torch.nn.functional.elu(k) + 1
    Z = 1 / (torch.einsum("bhnd,bhnd->bhn", Q, K.cumsum(2)) + EPS)
    return causal_dot_product(Q, K, v) * Z[..., None]


def _fn(provider, causal):
    if provider == "fast_transformers":
        if causal_dot_product is None:
            pytest.skip("fast-transformers is not installed")
        if not causal:
            pytest.skip("fast-transformers has no non-causal kernel (its LinearAttention is plain torch)")
        return fast_transformers_causal
    return lambda q, k, v: kexue.linear_attention(q, k, v, causal=causal, eps=EPS, backend=provider)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
@pytest.mark.parametrize("N", [1024, 4096])
def test_forward(benchmark, provider, causal, N):
    fn = _fn(provider, causal)
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
    benchmark.group = f"fwd N={N} {'causal' if causal else 'noncausal'}"

    def run():
        with torch.no_grad():
            return fn(q, k, v)

    out = benchmark(run)
    assert out.shape == (B, H, N, D)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
@pytest.mark.parametrize("N", [1024, 4096])
def test_forward_backward(benchmark, provider, causal, N):
    fn = _fn(provider, causal)
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, N, D)
    benchmark.group = f"fwd+bwd N={N} {'causal' if causal else 'noncausal'}"

    def run():
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(grad)

    benchmark(run)
    assert q.grad is not None and torch.isfinite(q.grad).all()
