"""The plain definition of integrated gradients, one example at a time, in float64.

IG_i(x) = (x_i − x'_i) ∫₀¹ ∂F(x' + α(x − x'))/∂x_i dα, by the composite trapezoid rule on
``n_points`` equally spaced points (error O(1/n²) for smooth integrands: with the default 2 000
points it is ~1e-7 of the integrand's second derivative).  No batching, no tricks: this defines
what :func:`kexue.attribution.integrated_gradients` approximates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._validate import as_int


def integrated_gradients_reference(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                                   baseline: torch.Tensor, *, n_points: int = 2000,
                                   chunk: int = 500) -> torch.Tensor:
    """IG at ``x`` (one example, no batch dimension) from ``baseline``, in float64 by the true
    trapezoid rule (weights 1/(n−1), ends halved; they sum to 1).  ``forward`` maps a stack of
    points (n, *x.shape) to their n scalar outputs (rows are independent)."""
    n_points = as_int("n_points", n_points, minimum=2)
    chunk = as_int("chunk", chunk, minimum=1)
    x64, b64 = x.detach().double(), baseline.detach().double().expand_as(x)
    alphas = torch.linspace(0, 1, n_points, dtype=torch.float64)
    w = torch.full((n_points,), 1.0 / (n_points - 1), dtype=torch.float64)
    w[0] /= 2
    w[-1] /= 2
    total = torch.zeros_like(x64)
    for s in range(0, n_points, chunk):
        a = alphas[s:s + chunk].view(-1, *([1] * x.dim()))
        z = (b64 + a * (x64 - b64)).requires_grad_()
        out = forward(z)
        (g,) = torch.autograd.grad(out.sum(), z)
        total += (g * w[s:s + chunk].view(-1, *([1] * x.dim()))).sum(0)
    return total * (x64 - b64)
