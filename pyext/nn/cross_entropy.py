"""``kexue.nn.CrossEntropyLoss``: torch.nn.CrossEntropyLoss plus logit adjustment, flooding and z-loss."""

from __future__ import annotations

import torch
from torch.nn import _reduction

from ..cross_entropy.api import check_options, cross_entropy


def check_shapes(input, target) -> None:
    """torch.nn.CrossEntropyLoss's contract for class-index targets: input (C,) with a 0-d
    target, (N, C) with (N,), (N, C, d1, ..., dk) with (N, d1, ..., dk)."""
    for name, t in (("input", input), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if input.dim() == 0:
        raise ValueError("input must have shape (C,), (N, C) or (N, C, d1, ...), got a 0-d tensor")
    if target.is_floating_point():
        raise TypeError(f"target must hold int64 class indices: probability targets ({target.dtype}) are not "
                        "supported")
    want = () if input.dim() == 1 else (input.shape[0], *input.shape[2:])
    if tuple(target.shape) != want:
        raise ValueError(f"target must have shape {want} for input of shape {tuple(input.shape)} "
                         f"(input (N, C, d1, ...) takes target (N, d1, ...)), got {tuple(target.shape)}")


class CrossEntropyLoss(torch.nn.Module):
    r"""Mirrors ``torch.nn.CrossEntropyLoss`` (same argument names and defaults) with
    ``prior``/``tau`` (logit adjustment), ``flood``/``flood_mode`` (flooding) and ``z_loss``;
    see :func:`kexue.cross_entropy` for the math.  ``weight`` and ``prior`` are buffers (they
    follow ``.to()``, are saved in the state dict and get no gradient).

    Inputs are (N, C) logits and (N,) targets; (N, C, d1, ...) logits with (N, d1, ...)
    targets are flattened to rows as torch does.  Probability targets are not supported.

    Example:
        >>> import torch, kexue
        >>> loss_fn = kexue.nn.CrossEntropyLoss(prior=torch.tensor([90.0, 9.0, 1.0]), flood=0.1)
        >>> loss = loss_fn(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        prior: torch.Tensor | None = None,
        tau: float = 1.0,
        flood: float | None = None,
        flood_mode: str = "batch",
        z_loss: float = 0.0,
        inplace_backward: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = _reduction.legacy_get_string(size_average, reduce)
        o = check_options(tau=tau, flood=flood, flood_mode=flood_mode, label_smoothing=label_smoothing,
                          ignore_index=ignore_index, reduction=reduction, z_loss=z_loss)
        tau, flood, label_smoothing, ignore_index, z_loss = (o["tau"], o["flood"], o["label_smoothing"],
                                                             o["ignore_index"], o["z_loss"])
        for name, t in (("weight", weight), ("prior", prior)):
            if t is not None and not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        self.register_buffer("weight", weight)
        self.register_buffer("prior", prior)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.tau = tau
        self.flood = flood
        self.flood_mode = flood_mode
        self.z_loss = z_loss
        self.inplace_backward = inplace_backward
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_shapes(input, target)
        lead = None
        if input.dim() > 2:  # (N, C, d1, ...) -> rows (N·d1·..., C), as torch reads them
            lead = target.shape
            input = input.movedim(1, -1).reshape(-1, input.shape[1])
            target = target.reshape(-1)
        elif input.dim() == 1:  # a single sample (C,)
            lead = ()
            input, target = input[None], target.reshape(1)
        out = cross_entropy(input, target, prior=self.prior, tau=self.tau, flood=self.flood,
                            flood_mode=self.flood_mode, label_smoothing=self.label_smoothing, weight=self.weight,
                            ignore_index=self.ignore_index, reduction=self.reduction, z_loss=self.z_loss,
                            inplace_backward=self.inplace_backward, backend=self.backend)
        if self.reduction == "none" and lead is not None:
            out = out.reshape(lead)
        return out

    def extra_repr(self) -> str:
        s = f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"
        if self.label_smoothing:
            s += f", label_smoothing={self.label_smoothing}"
        if self.prior is not None:
            s += f", tau={self.tau}"
        if self.flood is not None:
            s += f", flood={self.flood}, flood_mode={self.flood_mode!r}"
        if self.z_loss:
            s += f", z_loss={self.z_loss}"
        return s
