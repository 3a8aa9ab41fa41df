"""Public sampling functions: :func:`sample` and :func:`sampling_probs` (argument checks, backend choice).

Semantics (written once): :mod:`kexue.decoding.reference`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._dispatch import OpBackends, eager_cpu, native_first, triton_kernel_ready
from .._validate import check_float_matrix, is_int, is_real, unwrap_functorch
from .op import native_probs, native_sample, schemas_loaded
from .reference import row_params, sample_reference, sampling_probs_reference

Scalar = int | float
PerRow = Scalar | torch.Tensor | None


def _torch_sample(logits, temperature, top_k, top_p, keep, uniform):
    check_finite_rows(logits)
    return sample_reference(logits, temperature, top_k, top_p, keep, uniform)


def _torch_probs(logits, temperature, top_k, top_p, keep):
    check_finite_rows(logits)
    return sampling_probs_reference(logits, temperature, top_k, top_p, keep).to(
        torch.float64 if logits.dtype == torch.float64 else torch.float32)


def _triton_sample(*args):
    from ..triton_kernels import sampling as tk

    return tk.sample_triton_checked(*args)


def _triton_probs(*args):
    from ..triton_kernels import sampling as tk

    return tk.sampling_probs_triton_checked(*args)


BACKENDS = OpBackends(
    name="sample",
    impls={"torch": _torch_sample, "cpu": native_sample, "cuda": native_sample, "triton": _triton_sample},
    native_op="sample" if schemas_loaded() else None,  # (None: a kexue._C built before this op)
    triton_ready=triton_kernel_ready("sampling", "sample_triton_checked"),
    auto=native_first,
)
PROBS_IMPLS = {"torch": _torch_probs, "cpu": native_probs, "cuda": native_probs, "triton": _triton_probs}


@torch.compiler.assume_constant_result
def _resolve(backend: str, device: str) -> str:
    return BACKENDS.resolve(backend, torch.device(device))[0]


def check_finite_rows(logits: torch.Tensor) -> None:
    """A NaN or +inf logit, or an all −inf row, is an error (eagerly on CPU, inside torch.func
    transforms too; device assert elsewhere)."""
    if logits.device.type == "cpu" and not torch.compiler.is_compiling():
        logits = unwrap_functorch(logits).detach()
        logits = logits.reshape(-1, logits.shape[-1])  # (vmap: the batch's rows in turn)
    bad = torch.isnan(logits) | torch.isposinf(logits)
    masked = torch.isneginf(logits).all(dim=1)
    if eager_cpu(logits):
        if bool(bad.any()):
            r = int(bad.any(dim=1).nonzero()[0, 0])
            raise ValueError(f"logits row {r} contains NaN or +inf (only -inf, a masked token, is allowed)")
        if bool(masked.any()):
            r = int(masked.nonzero()[0, 0])
            raise ValueError(f"logits row {r} is all -inf: every token is masked, none can be sampled")
    elif not torch.compiler.is_compiling():
        torch._assert_async(~(bad.any() | masked.any()), "kexue.sample: logits has NaN/+inf or an all -inf row")


def _per_row_check(name: str, v, B: int, device, *, integer: bool, ok, what: str) -> None:
    if v is None:
        return
    if isinstance(v, bool):
        raise TypeError(f"{name} must be {'an int' if integer else 'a float'} or a (B,) tensor, got a bool")
    if isinstance(v, torch.Tensor):
        if v.dim() not in (0, 1) or (v.dim() == 1 and v.shape[0] != B):
            raise ValueError(f"{name} must be a scalar or have shape (B,) = ({B},), got {tuple(v.shape)}")
        if integer and (v.is_floating_point() or v.is_complex() or v.dtype == torch.bool):
            raise TypeError(f"{name} must be an integer tensor, got {v.dtype}")
        if not integer and not v.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {v.dtype}")
        if v.device != device:
            raise ValueError(f"{name} is on {v.device} but logits is on {device}")
        if eager_cpu(v):
            bad = ~ok(v)
            if bool(bad.any()):
                i = int(bad.reshape(-1).nonzero()[0, 0])
                raise ValueError(f"{name} must be {what}, got {v.reshape(-1)[i].item()!r} (row {i})")
        return
    if integer and not is_int(v):
        raise TypeError(f"{name} must be an int or a (B,) tensor, got {v!r}")
    if not integer and not is_real(v):
        raise TypeError(f"{name} must be a float or a (B,) tensor, got {v!r}")
    if not bool(ok(torch.tensor(v, dtype=torch.float64))):
        raise ValueError(f"{name} must be {what}, got {v!r}")


def _check_keep(keep, B: int, V: int, device) -> None:
    if keep is None:
        return
    if isinstance(keep, bool):
        raise TypeError("keep must be a token id, a sequence of ids or an int64 tensor, got a bool")
    if isinstance(keep, torch.Tensor):
        if keep.is_floating_point() or keep.dtype == torch.bool or keep.is_complex():
            raise TypeError(f"keep must be an integer tensor of token ids, got {keep.dtype}")
        if keep.dim() > 2 or (keep.dim() == 2 and keep.shape[0] != B):
            raise ValueError(f"keep must be an id, (K,) ids or (B, K) ids with -1 = none (B = {B}), "
                             f"got shape {tuple(keep.shape)}")
        if keep.device != device:
            raise ValueError(f"keep is on {keep.device} but logits is on {device}")
        ids, lowest = keep, (-1 if keep.dim() == 2 else 0)
    else:
        items = [int(keep)] if is_int(keep) else list(keep) if isinstance(keep, Sequence) else None
        if items is None or not all(is_int(i) for i in items):
            raise TypeError(f"keep must be a token id, a sequence of ids or an int64 tensor, got {keep!r}")
        ids, lowest = torch.tensor(items, dtype=torch.int64), 0
    if eager_cpu(ids) and ids.numel():
        bad = (ids < lowest) | (ids >= V)
        if bool(bad.any()):
            i = int(ids.reshape(-1)[bad.reshape(-1)][0])
            raise ValueError(f"keep id {i} is out of range: token ids must be in [0, {V})")


def check_sampling_args(logits, temperature, top_k, top_p, keep) -> None:
    check_float_matrix(logits, "logits", "(B, V)")
    B, V = logits.shape
    if V == 0:
        raise ValueError("logits must have at least one token (V >= 1)")
    dev = logits.device
    _per_row_check("temperature", temperature, B, dev, integer=False,
                   ok=lambda t: (t > 0) & torch.isfinite(t), what="> 0 and finite")
    _per_row_check("top_k", top_k, B, dev, integer=True, ok=lambda t: t >= 1, what=">= 1 (or None)")
    _per_row_check("top_p", top_p, B, dev, integer=False, ok=lambda t: (t > 0) & (t <= 1), what="in (0, 1]")
    _check_keep(keep, B, V, dev)


def _prepare(logits, temperature, top_k, top_p, keep, backend):
    check_sampling_args(logits, temperature, top_k, top_p, keep)
    if backend == "auto" and logits.dtype == torch.float64 and logits.device.type != "cpu":
        name = "torch"  # (the GPU kernels take 16- and 32-bit logits; float64 is the reference's)
    else:
        name = _resolve(backend, str(logits.device))
    return name, row_params(logits.shape[0], temperature, top_k, top_p, keep, logits.device)


def sampling_probs(
    logits: torch.Tensor,
    *,
    temperature: PerRow = 1.0,
    top_k: PerRow = None,
    top_p: PerRow = None,
    keep: int | Sequence[int] | torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """The distribution :func:`sample` draws from, (B, V) in float32 (float64 for float64 logits).

    Temperature, then top-k (ties with the k-th value kept), then top-p (the smallest prefix by
    descending probability whose mass reaches p, crossing token kept), then the ``keep`` ids added
    back with their own probability, renormalised: see :mod:`kexue.decoding.reference`.

    Example::

        >>> import torch, kexue
        >>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
        >>> kexue.decoding.sampling_probs(logits, top_k=1, keep=3).round(decimals=4)
        tensor([[0.9526, 0.0000, 0.0000, 0.0474]])
    """
    name, (T, k, p, E) = _prepare(logits, temperature, top_k, top_p, keep, backend)
    return PROBS_IMPLS[name](logits, T, k, p, E)


def sample(
    logits: torch.Tensor,
    *,
    temperature: PerRow = 1.0,
    top_k: PerRow = None,
    top_p: PerRow = None,
    keep: int | Sequence[int] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    return_probs: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Consistent top-k / nucleus sampling in one fused op: (B,) int64 token ids.

    ``logits`` (B, V) fp32/fp16/bf16/fp64, any strides; ``temperature``, ``top_k`` (None = off),
    ``top_p`` (None = off) each a scalar or a (B,) tensor; ``keep`` an id, ids (K,) or per-row ids
    (B, K) with −1 = none (the eos ids: with them sampling is *consistent*, Welleck et al. 2020).
    One uniform u per row comes from ``generator``; the token is the inverse CDF at u of
    :func:`sampling_probs` in token order (the same u gives the same token on every backend).
    ``return_probs=True`` also returns that distribution. No backend sorts the vocabulary.

    Example::

        >>> import torch, kexue
        >>> g = torch.Generator().manual_seed(0)
        >>> logits = torch.randn(4, 32000)
        >>> kexue.sample(logits, top_k=50, top_p=0.9, keep=2, generator=g).shape
        torch.Size([4])
    """
    name, (T, k, p, E) = _prepare(logits, temperature, top_k, top_p, keep, backend)
    u = torch.rand(logits.shape[0], dtype=torch.float64, device=logits.device, generator=generator)
    tokens = BACKENDS.impls[name](logits, T, k, p, E, u)
    if return_probs:
        return tokens, PROBS_IMPLS[name](logits, T, k, p, E)
    return tokens
