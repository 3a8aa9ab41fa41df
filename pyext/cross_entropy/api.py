"""Public cross-entropy functions: argument checks, backend choice, logit adjustment helpers."""

from __future__ import annotations

import torch

from .._dispatch import OpBackends, eager_cpu, native_first, triton_kernel_ready
from .._validate import (
    FLOAT_DTYPES,
    as_bool,
    as_float,
    as_int,
    check_float_matrix,
    check_values,
    nonnegative_finite,
    positive_finite,
)
from . import linear as _linear  # noqa: F401  (registers the linear_cross_entropy ops)
from .op import native_rows
from .reference import accumulation_dtype, log_prior_bias, reduce_rows, row_losses

REDUCTIONS = ("mean", "sum", "none")
FLOOD_MODES = ("batch", "sample")


def _torch_rows(logits, target, bias, weight, label_smoothing, z_loss, ignore_index, inplace_backward):
    return row_losses(logits, target, bias, weight, label_smoothing, z_loss, ignore_index)


def _triton_rows(*args):
    from ..triton_kernels import cross_entropy as tk

    return tk.cross_entropy_rows_triton(*args)


BACKENDS = OpBackends(
    name="cross_entropy",
    impls={"torch": _torch_rows, "cpu": native_rows, "cuda": native_rows, "triton": _triton_rows},
    native_op="cross_entropy_fwd",
    triton_ready=triton_kernel_ready("cross_entropy", "cross_entropy_rows_triton"),
    auto=native_first,
)


@torch.compiler.assume_constant_result
def _resolve(backend: str, device: str) -> str:
    """The backend name (the dispatcher is asked once per trace: a constant under torch.compile)."""
    return BACKENDS.resolve(backend, torch.device(device))[0]



def _check_vector(name: str, t, C: int, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1 or t.shape[0] != C:
        raise ValueError(f"{name} must have shape (C,) = ({C},), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but logits is on {device}")


def check_options(
    *, tau, flood, flood_mode, label_smoothing, ignore_index, reduction, z_loss
) -> dict:
    """Checks of the scalar options (shared by cross_entropy, linear_cross_entropy and the module).

    Number-like values (numpy numbers, 0-d tensors) are accepted; NaN/±inf are rejected.  Returns
    the options as Python numbers."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not isinstance(flood_mode, str) or flood_mode not in FLOOD_MODES:
        raise ValueError(f"flood_mode must be one of {FLOOD_MODES}, got {flood_mode!r}")
    if flood is not None:
        flood = as_float("flood", flood)
        if flood_mode == "batch" and reduction == "none":
            raise ValueError("flood_mode='batch' floods the reduced loss: it needs reduction='mean' or 'sum', "
                             "not 'none' (use flood_mode='sample' for per-row flooding)")
    return {
        "tau": as_float("tau", tau),
        "flood": flood,
        "flood_mode": flood_mode,
        "label_smoothing": as_float("label_smoothing", label_smoothing, minimum=0.0, maximum=1.0),
        "ignore_index": as_int("ignore_index", ignore_index),
        "reduction": reduction,
        "z_loss": as_float("z_loss", z_loss, minimum=0.0),
    }


def check_prior(prior, C: int, device: torch.device) -> None:
    """prior (C,) class frequencies or counts: every entry must be finite and > 0 (a zero would
    give log 0 = -inf).  Checked eagerly on CPU tensors; on CUDA tensors and under torch.compile
    with a device-side assert (a RuntimeError naming prior, never a silent inf)."""
    _check_vector("prior", prior, C, device)
    check_values("prior", prior.detach(), positive_finite, "positive and finite (class frequencies or counts)")


def check_weight(name: str, weight, C: int, device: torch.device) -> None:
    """Class weights (C,): finite and >= 0 (torch leaves negative weights undefined: its loss is -inf)."""
    _check_vector(name, weight, C, device)
    check_values(name, weight.detach(), nonnegative_finite, "finite and >= 0")


def check_target(target, N: int, C: int, device: torch.device, ignore_index: int, eager_range: bool) -> None:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dim() != 1 or target.shape[0] != N:
        raise ValueError(f"target must have shape (N,) = ({N},), got {tuple(target.shape)}")
    if target.dtype != torch.int64:
        raise TypeError(f"target must be int64 class indices, got {target.dtype}")
    if target.device != device:
        raise ValueError(f"target is on {target.device} but logits is on {device}")
    if eager_range and eager_cpu(target):
        bad = (target != ignore_index) & ((target < 0) | (target >= C))
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"target[{i}] = {int(target[i])} is out of range: class indices must be in "
                             f"[0, {C}) or equal ignore_index={ignore_index}")


def check_logits(logits) -> None:
    check_float_matrix(logits, "logits", "(N, C)")
    if logits.shape[1] == 0:
        raise ValueError("logits must have at least one class (C >= 1)")


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    prior: torch.Tensor | None = None,
    tau: float = 1.0,
    flood: float | None = None,
    flood_mode: str = "batch",
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss: float = 0.0,
    inplace_backward: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    r"""Cross-entropy with logit adjustment (Menon et al. 2020) and flooding (Ishida et al. 2020).

    .. math::
        a = \text{logits} + \tau\log\pi,\qquad
        \ell_i = (1-\varepsilon)\,w_{y_i}(\mathrm{lse}(a_i) - a_{i,y_i})
                 + \tfrac{\varepsilon}{C}\textstyle\sum_c w_c(\mathrm{lse}(a_i) - a_{i,c})
                 + z\,\mathrm{lse}(a_i)^2

    π = prior / Σ prior, ε = label_smoothing, w = weight (all 1 when None), z = z_loss.
    Rows with ``target == ignore_index`` give 0 and leave the mean; the mean divides by
    Σ w_{y_i} over valid rows (torch's rule: NaN when that sum is 0, as torch).  A -inf logit is a
    masked class; a row whose target is masked has loss +inf, and with ``label_smoothing > 0`` so
    has any row with a masked class (the smoothing term puts mass on every class), as in torch.
    Flooding at level
    b = ``flood``: ``flood_mode="batch"`` returns |L − b| + b of the reduced loss L,
    ``"sample"`` floods each ℓ_i before the reduction (iFlood, Xie et al. 2022; with class weights
    it floods the weighted ℓ_i, so a valid row whose class weight is 0 adds 2b to the sum, without
    gradient, and nothing to the mean's divisor).  Values and gradients are those of
    :func:`kexue.cross_entropy.reference.cross_entropy_reference` (the "torch" backend).

    Args:
        logits: (N, C) float16/bfloat16/float32 (float64 on CPU), any strides.
        target: (N,) int64 class indices in [0, C) or ``ignore_index``.  An out-of-range target
            raises on CPU tensors; on CUDA tensors the kernels never wait for the device, so its
            row's loss is NaN instead (the "cuda" backend raises when ``KEXUE_SYNC_CHECKS=1``).
        prior: (C,) positive class frequencies or counts (normalised here); a constant.
        tau: logit-adjustment temperature.
        flood / flood_mode: flood level (None: no flooding) and "batch" or "sample".
        label_smoothing, weight, ignore_index, reduction: as in ``torch.nn.functional.cross_entropy``.
        z_loss: coefficient of lse² (PaLM's z-loss).
        inplace_backward: the kernels write the gradient over ``logits`` (saves an N×C buffer;
            the logits' version counter is bumped, so autograd rejects any other use of them).
        backend: "auto", "torch" (reference), "cpu", "cuda" or "triton".

    Returns:
        The loss in the logits' dtype: a scalar, or (N,) for ``reduction="none"``.

    Example:
        >>> import torch, kexue
        >>> logits, target = torch.randn(8, 5, requires_grad=True), torch.randint(0, 5, (8,))
        >>> prior = torch.tensor([50.0, 20.0, 10.0, 5.0, 1.0])
        >>> loss = kexue.cross_entropy(logits, target, prior=prior, flood=0.5)
        >>> loss.backward()
        >>> logits.grad.shape
        torch.Size([8, 5])
    """
    check_logits(logits)
    N, C = logits.shape
    o = check_options(tau=tau, flood=flood, flood_mode=flood_mode, label_smoothing=label_smoothing,
                      ignore_index=ignore_index, reduction=reduction, z_loss=z_loss)
    tau, flood, label_smoothing, ignore_index, z_loss = (o["tau"], o["flood"], o["label_smoothing"],
                                                         o["ignore_index"], o["z_loss"])
    inplace_backward = as_bool("inplace_backward", inplace_backward)
    name = _resolve(backend, str(logits.device))
    # the "cpu" kernel checks target ranges itself (while reading the rows); other backends here
    check_target(target, N, C, logits.device, ignore_index, eager_range=name != "cpu")
    acc = accumulation_dtype(logits.dtype)
    bias = None
    if prior is not None:
        check_prior(prior, C, logits.device)
        bias = log_prior_bias(prior.detach(), float(tau), acc)
    if weight is not None:
        check_weight("weight", weight, C, logits.device)
        weight = weight.detach().to(acc)
    loss, _ = BACKENDS.impls[name](logits, target, bias, weight, float(label_smoothing), float(z_loss),
                                   int(ignore_index), bool(inplace_backward))
    return reduce_rows(loss, target, weight, flood_level=None if flood is None else float(flood),
                       flood_mode=flood_mode, ignore_index=ignore_index, reduction=reduction,
                       out_dtype=logits.dtype)


def explain(logits: torch.Tensor, backend: str = "auto", **_: object) -> str:
    """Which backend ``cross_entropy`` would run for these logits, and why."""
    return BACKENDS.resolve(backend, logits.device)[1]


cross_entropy.explain = explain  # type: ignore[attr-defined]


def adjust_logits(logits: torch.Tensor, prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    r"""Post-hoc logit adjustment for prediction: ``logits − tau·log(π)``, π = prior / Σ prior.

    A model trained with plain cross-entropy on long-tailed data predicts with
    ``argmax(adjust_logits(logits, prior))`` (Menon et al. 2020, eq. 5).  The result has the
    logits' dtype (computed in float32, float64 for float64 logits).

    Example:
        >>> import torch, kexue
        >>> logits = torch.tensor([[2.0, 1.9]])
        >>> kexue.adjust_logits(logits, torch.tensor([0.9, 0.1])).argmax(-1)
        tensor([1])
    """
    check_logits(logits)
    check_prior(prior, logits.shape[1], logits.device)
    tau = as_float("tau", tau)
    acc = accumulation_dtype(logits.dtype)
    return (logits.to(acc) - log_prior_bias(prior.detach(), tau, acc)).to(logits.dtype)


def class_prior(targets_or_counts: torch.Tensor, num_classes: int) -> torch.Tensor:
    r"""Class frequencies π (float32, sums to 1) from training targets or per-class counts.

    An integer tensor is read as the training targets (any shape; each in [0, num_classes));
    a float tensor of shape (num_classes,) as counts (or unnormalised frequencies).

    Example:
        >>> import torch, kexue
        >>> kexue.class_prior(torch.tensor([0, 0, 0, 1]), 3)
        tensor([0.7500, 0.2500, 0.0000])
    """
    if not isinstance(targets_or_counts, torch.Tensor):
        raise TypeError(f"targets_or_counts must be a torch.Tensor, got {type(targets_or_counts).__name__}")
    num_classes = as_int("num_classes", num_classes, minimum=1)
    x = targets_or_counts
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"targets_or_counts must be integer targets or float counts, got {x.dtype}")
    if x.is_floating_point():
        if x.dim() != 1 or x.shape[0] != num_classes:
            raise ValueError(f"counts must have shape (num_classes,) = ({num_classes},), got {tuple(x.shape)}")
        check_values("counts", x.detach(), nonnegative_finite, "finite and >= 0")
        counts = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        # normalised by the largest count first: huge counts (1e38 in float32) do not overflow the sum
        top = counts.max() if counts.numel() else counts.new_zeros(())
        counts = counts / torch.where(top > 0, top, torch.ones_like(top))
    else:
        x = x.reshape(-1)
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_classes):
            raise ValueError(f"targets must be in [0, {num_classes}), got values in [{int(x.min())}, {int(x.max())}]")
        counts = torch.bincount(x, minlength=num_classes).float()
    total = counts.sum()
    if not bool(total > 0):
        raise ValueError("class_prior needs at least one target (or a positive count)")
    return (counts / total).float()


DEFAULT_CHUNK_ELEMENTS = 1 << 24  # logits per chunk of linear_cross_entropy (64 MiB of float32)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    prior: torch.Tensor | None = None,
    tau: float = 1.0,
    flood: float | None = None,
    flood_mode: str = "batch",
    label_smoothing: float = 0.0,
    class_weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss: float = 0.0,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    r"""``cross_entropy(hidden @ weight.T + bias, target, ...)`` without the N×C logits.

    The logits are formed ``chunk_size`` rows at a time, reduced to per-row losses by the
    cross-entropy kernels and dropped; the backward recomputes them chunk by chunk and returns
    gradients for ``hidden``, ``weight`` and ``bias`` (the weight and bias gradients accumulate in
    float32).  The loss options are those of :func:`cross_entropy`; the class weights are called
    ``class_weight`` here because ``weight`` is the lm_head's.

    Args:
        hidden: (N, H) float16/bfloat16/float32 (float64 on CPU).
        weight: (C, H) lm_head weight, hidden's dtype.  bias: optional (C,).
        target: (N,) int64.
        chunk_size: rows per chunk (default: about 2^24 logits per chunk).
        backend: "auto", "torch" (the unchunked reference), "cpu", "cuda" or "triton".

    Example:
        >>> import torch, kexue
        >>> h, W = torch.randn(16, 32, requires_grad=True), torch.randn(100, 32, requires_grad=True)
        >>> loss = kexue.linear_cross_entropy(h, W, torch.randint(0, 100, (16,)), chunk_size=5)
        >>> loss.backward()
        >>> W.grad.shape
        torch.Size([100, 32])
    """
    for name, t in (("hidden", hidden), ("weight", weight)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor, got {getattr(t, 'shape', type(t).__name__)}")
    if hidden.dtype not in FLOAT_DTYPES:
        raise TypeError(f"hidden must be float16, bfloat16, float32 or float64, got {hidden.dtype}")
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise TypeError(f"weight ({weight.dtype}, {weight.device}) must match hidden ({hidden.dtype}, {hidden.device})")
    N, H = hidden.shape
    C = weight.shape[0]
    if weight.shape[1] != H:
        raise ValueError(f"weight must have shape (C, H) with H = {H}, got {tuple(weight.shape)}")
    if C == 0:
        raise ValueError("weight must have at least one class (C >= 1)")
    if bias is not None:
        _check_vector("bias", bias, C, hidden.device)
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias has dtype {bias.dtype} but hidden has {hidden.dtype}")
    o = check_options(tau=tau, flood=flood, flood_mode=flood_mode, label_smoothing=label_smoothing,
                      ignore_index=ignore_index, reduction=reduction, z_loss=z_loss)
    tau, flood, label_smoothing, ignore_index, z_loss = (o["tau"], o["flood"], o["label_smoothing"],
                                                         o["ignore_index"], o["z_loss"])
    name = _resolve(backend, str(hidden.device))
    check_target(target, N, C, hidden.device, ignore_index, eager_range=name not in ("cpu", "torch"))
    if name == "torch":
        logits = torch.nn.functional.linear(hidden, weight, bias)
        check_target(target, N, C, hidden.device, ignore_index, eager_range=True)
        return cross_entropy(logits, target, prior=prior, tau=tau, flood=flood, flood_mode=flood_mode,
                             label_smoothing=label_smoothing, weight=class_weight, ignore_index=ignore_index,
                             reduction=reduction, z_loss=z_loss, backend="torch")
    if chunk_size is None:
        chunk_size = max(1, min(max(N, 1), DEFAULT_CHUNK_ELEMENTS // C))
    chunk_size = as_int("chunk_size", chunk_size, minimum=1)
    acc = accumulation_dtype(hidden.dtype)
    logit_bias = None
    if prior is not None:
        check_prior(prior, C, hidden.device)
        logit_bias = log_prior_bias(prior.detach(), float(tau), acc)
    if class_weight is not None:
        check_weight("class_weight", class_weight, C, hidden.device)
        class_weight = class_weight.detach().to(acc)
    kernel = "triton" if name == "triton" else "native"
    loss, _ = torch.ops.kexue.linear_cross_entropy_fwd(hidden, weight, target, bias, logit_bias, class_weight,
                                                       float(label_smoothing), float(z_loss), int(ignore_index),
                                                       int(chunk_size), kernel)
    return reduce_rows(loss, target, class_weight, flood_level=None if flood is None else float(flood),
                       flood_mode=flood_mode, ignore_index=ignore_index, reduction=reduction,
                       out_dtype=hidden.dtype)
