"""The plain definition of integrated gradients, one example at a time, in float64.

IG_i(x) = (x_i − x'_i) ∫₀¹ ∂F(x' + α(x − x'))/∂x_i dα, by the composite trapezoid rule on
``n_points`` equally spaced points (error O(1/n²) for smooth integrands: with the default 2 000
points it is ~1e-7 of the integrand's second derivative).  No batching, no tricks: this defines
what :func:`kexue.attribution.integrated_gradients` approximates.

Also :func:`attention_qkv_reference`, the definition of the CPU attention kernel that the
hand-written BERT integrand (:mod:`kexue.attribution.bert_fast`) runs.
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


def attention_qkv_reference(qkv: torch.Tensor, heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unmasked multi-head softmax attention from a fused QKV projection (``kexue::attention_qkv_fwd``).

    ``qkv`` (R, L, 3D): each row's q, k, v side by side, head h in columns [h·dh, (h+1)·dh) of
    each (D = heads·dh).  Returns out (R, L, D), out[r, :, h] = P_h v_h with
    P_h = softmax(q_h k_hᵀ · scale), and P (R, heads, L, L).  Differentiable (torch operators)."""
    R, L, C = qkv.shape
    q, k, v = split_heads(qkv, heads)
    p = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)
    return (p @ v).transpose(1, 2).reshape(R, L, C // 3), p


def split_heads(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """q, k, v of fused QKV rows (R, L, 3D) as one (3, R, heads, L, dh) view (no copy)."""
    R, L, C = qkv.shape
    return qkv.reshape(R, L, 3, heads, C // 3 // heads).permute(2, 0, 3, 1, 4)
