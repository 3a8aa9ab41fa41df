"""CPU float32 linear layers through oneDNN inside integrated gradients' forward and backward.

:mod:`kexue.cpu_linear` routes ``F.linear`` to oneDNN (2.1-2.3× MKL's float32 rate on this
project's AMD EPYC) only without autograd.  IG needs the input gradient, which for y = x Wᵀ + b
is ∂L/∂x = (∂L/∂y) W: another linear layer, with the transposed weight (oneDNN reads the
transposed view in place).  :class:`OneDNNLinear` is that pair; weight and bias gradients, when
asked for, are plain matmuls.  Both products are IEEE float32 (only the order of the sums differs
from MKL's).  Internal to kexue.attribution: the public entry is :func:`onednn_linears_with_grad`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..cpu_linear import linear, onednn_available, replaced_forwards


class OneDNNLinear(torch.autograd.Function):
    """y = x Wᵀ + b forward and ∂x = g W backward, both by oneDNN (FLOPs: 2·M·N·K each)."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # noqa: D102
        want_w = ctx.needs_input_grad[1]
        ctx.save_for_backward(weight, x if want_w else None)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        weight, x = ctx.saved_tensors
        gx = linear(g, weight.t()) if ctx.needs_input_grad[0] else None
        gw = g.reshape(-1, g.shape[-1]).t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        gb = g.reshape(-1, g.shape[-1]).sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _routable(lin: nn.Linear) -> bool:
    return lin.weight.device.type == "cpu" and lin.weight.dtype == torch.float32


@contextmanager
def onednn_linears_with_grad(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every CPU float32 ``nn.Linear`` of ``model`` runs forward and input
    gradient through oneDNN (a no-op when oneDNN is unavailable, ``KEXUE_CPU_LINEAR=torch``, or
    ``enabled`` is False)."""
    if not enabled or not onednn_available():
        yield
        return

    def routed(lin: nn.Linear):
        def fwd(x: torch.Tensor) -> torch.Tensor:
            if x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
                return nn.functional.linear(x, lin.weight, lin.bias)
            # detached parameters: attribution needs ∂/∂x only.  A custom Function's backward sees
            # needs_input_grad = requires_grad, not what autograd.grad asked for, so with the live
            # parameters it would compute (and save x for) weight gradients nobody reads.
            b = None if lin.bias is None else lin.bias.detach()
            return OneDNNLinear.apply(x, lin.weight.detach(), b)

        return fwd

    with replaced_forwards({m: routed(m) for m in model.modules() if type(m) is nn.Linear and _routable(m)}):
        yield
