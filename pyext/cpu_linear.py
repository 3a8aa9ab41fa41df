"""Float32 linear layers on the CPU through oneDNN instead of torch's default BLAS.

``torch.nn.functional.linear`` on CPU float32 tensors calls the BLAS torch was built with
(MKL in the official builds).  On AMD CPUs MKL runs its AVX2 code: on this project's AVX-512
machine (AMD EPYC, CPU family 26) it reaches 114-118 GFLOP/s per thread at every size, while
oneDNN, which torch also ships and which picks its kernels by instruction set, reaches
250-270 GFLOP/s at the probe engine's shapes (M ≥ 256 rows, D = 384, 1536) and 150 GFLOP/s at
16 rows.  Both compute in IEEE float32 (oneDNN's default "strict" math mode: no bf16/tf32
down-conversion); only the order of the sums differs, i.e. results agree to float32 rounding
(relative difference ≈ 1e-6 on a 384-long dot product).

:func:`linear` is ``F.linear`` with that routing, and falls back to ``F.linear`` whenever oneDNN
is not the plain float32 product: another device or dtype, autocast on, gradients wanted (the
oneDNN op has no autograd formula), or the user asked oneDNN for reduced precision
(``torch.backends.mkldnn.matmul.fp32_precision``).  ``KEXUE_CPU_LINEAR=torch`` turns it off
(for A/B timings).  :func:`onednn_linears` routes a model's ``nn.Linear`` modules through it for
the duration of a ``with`` block.

Example::

    >>> import torch, kexue.cpu_linear as cl
    >>> x, w = torch.randn(64, 384), torch.randn(1536, 384)
    >>> torch.allclose(cl.linear(x, w), torch.nn.functional.linear(x, w), rtol=1e-4, atol=1e-4)
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def onednn_available() -> bool:
    """oneDNN's float32 linear can be used: torch built with it, the op present, not switched
    off by ``KEXUE_CPU_LINEAR=torch``, and no reduced-precision float32 mode requested."""
    if os.environ.get("KEXUE_CPU_LINEAR", "onednn").lower() == "torch":
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._linear_pointwise  # noqa: B018  (raises when this torch lacks the op)
    except (AttributeError, RuntimeError):
        return False
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    precision = getattr(matmul, "fp32_precision", "none")
    return precision in ("none", "ieee")


def _use_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32) and x.dim() >= 2 and x.shape[-1] > 0
            and x.numel() > 0 and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                                  or (bias is not None and bias.requires_grad))))


def routes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether :func:`linear` takes oneDNN for these arguments (else it is ``F.linear``)."""
    return _use_onednn(x, weight, bias) and onednn_available()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` = x Wᵀ + b, through oneDNN for CPU float32 tensors without
    autograd (see the module docstring); otherwise exactly ``F.linear``."""
    if routes(x, weight, bias):
        # a transposed weight view (x Wᵀ with W = Mᵀ, i.e. x M) is read in place, not copied
        w = weight if weight.is_contiguous() or (weight.dim() == 2 and weight.t().is_contiguous()) \
            else weight.contiguous()
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w, bias, "none", [], "")
    return F.linear(x, weight, bias)


@contextmanager
def replaced_forwards(forwards: Mapping[nn.Module, Callable]) -> Iterator[None]:
    """Within the block, ``module.forward`` is the given callable for each module; afterwards each
    module's own ``forward`` attribute (an instance override, or none) is back.  Nests: a
    replacement made inside may call the forward it replaces (read ``module.forward`` first)."""
    saved = {m: m.__dict__.get("forward") for m in forwards}
    for m, f in forwards.items():
        m.forward = f
    try:
        yield
    finally:
        for m, f in saved.items():
            if f is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = f


@contextmanager
def onednn_linears(model: nn.Module) -> Iterator[None]:
    """Route every ``nn.Linear`` of ``model`` through :func:`linear` for the duration (a no-op
    when oneDNN is not available)."""
    if not onednn_available():
        yield
        return

    def routed(lin: nn.Linear) -> Callable:
        return lambda x: linear(x, lin.weight, lin.bias)

    with replaced_forwards({m: routed(m) for m in model.modules() if type(m) is nn.Linear}):
        yield
