"""torch.library glue of the CPU attention kernel of the BERT integrand (schemas in csrc/registration.cpp).

``kexue::attention_qkv_fwd(qkv, heads, scale) -> (out, probs)`` is unmasked multi-head softmax
attention read straight from a fused QKV projection (definition:
:func:`kexue.attribution.reference.attention_qkv_reference`; kernel:
csrc/attribution/attention_cpu.cpp); ``kexue::attention_qkv_bwd`` the gradient of
⟨out, grad_out⟩ + ⟨probs, grad_probs⟩ in qkv given the probabilities (``grad_probs`` optional).
Registered here: fake kernels (the eager checks, without data), autograd of the forward through
the backward kernel (a backward with ``create_graph=True`` runs the reference), and the
torch.func route to the reference.
"""

from __future__ import annotations

import functools

import torch

from .. import _ext  # noqa: F401  (loads the schemas)
from .._autograd import functional_vjp, needs_differentiable_backward, reference_vjp, register_functorch_reference
from .._validate import meta_check
from .reference import attention_qkv_reference, split_heads

FWD, BWD = "kexue::attention_qkv_fwd", "kexue::attention_qkv_bwd"
DTYPES = (torch.float32, torch.float64)


@functools.cache
def schemas_loaded() -> bool:
    """False with a kexue._C built before these ops existed (then the integrand runs the reference)."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(FWD, "CPU")
    except RuntimeError:
        return False


def _kernel_runs(qkv: torch.Tensor) -> bool:
    """The CPU kernel takes ``qkv`` (float32 / float64 on the CPU, in a build that has it)."""
    return qkv.device.type == "cpu" and qkv.dtype in DTYPES and schemas_loaded()


def check_meta(op: str, qkv: torch.Tensor, heads: int, scale: float) -> tuple[int, int, int, int]:
    """What the eager kernels check without reading data; returns (R, L, D, heads)."""
    meta_check(qkv.dim() == 3, op, f"qkv must have shape (R, L, 3D), got {tuple(qkv.shape)}")
    meta_check(qkv.dtype in DTYPES, op, f"qkv must be float32 or float64, got {qkv.dtype}")
    meta_check(heads >= 1, op, f"heads must be >= 1, got {heads}")
    meta_check(scale == scale and abs(scale) != float("inf"), op, f"scale must be finite, got {scale}")
    R, L, C = qkv.shape
    meta_check(C % (3 * heads) == 0, op,
               f"qkv's last dimension ({C}) must be 3 * heads * head_dim for heads = {heads}")
    return R, L, C // 3, heads


def _fake_fwd(qkv, heads, scale):
    R, L, D, H = check_meta("kexue::attention_qkv_fwd", qkv, heads, scale)
    return qkv.new_empty((R, L, D)), qkv.new_empty((R, H, L, L))


def _fake_bwd(grad_out, grad_probs, qkv, probs, heads, scale):
    op = "kexue::attention_qkv_bwd"
    R, L, D, H = check_meta(op, qkv, heads, scale)
    meta_check(tuple(grad_out.shape) == (R, L, D), op,
               f"grad_out must have shape ({R}, {L}, {D}), got {tuple(grad_out.shape)}")
    meta_check(tuple(probs.shape) == (R, H, L, L), op,
               f"probs must have shape ({R}, {H}, {L}, {L}), got {tuple(probs.shape)}")
    meta_check(grad_out.dtype == qkv.dtype and probs.dtype == qkv.dtype, op,
               f"grad_out, qkv and probs must share a dtype, got {grad_out.dtype}, {qkv.dtype}, {probs.dtype}")
    if grad_probs is not None:
        meta_check(grad_probs.shape == probs.shape, op,
                   f"grad_probs must have the shape of probs {tuple(probs.shape)}, got {tuple(grad_probs.shape)}")
        meta_check(grad_probs.dtype == qkv.dtype, op, f"grad_probs must have qkv's dtype {qkv.dtype}, got "
                   f"{grad_probs.dtype}")
    return qkv.new_empty((R, L, 3 * D))


def _bwd_functorch(grad_out, grad_probs, qkv, probs, heads, scale):
    """The backward op under torch.func: the reference's vjp in qkv (probs is recomputed)."""
    return functional_vjp(lambda x: attention_qkv_reference(x, heads, scale), (qkv,), (grad_out, grad_probs))[0]


def _setup_context(ctx, inputs, output):
    qkv, heads, scale = inputs
    ctx.heads, ctx.scale = heads, scale
    ctx.save_for_backward(qkv, output[1])


def _backward(ctx, grad_out, grad_probs):
    qkv, probs = ctx.saved_tensors
    if needs_differentiable_backward():
        return reference_vjp(lambda x: attention_qkv_reference(x, ctx.heads, ctx.scale), (qkv,), (True,),
                             (grad_out, grad_probs))[0], None, None
    if grad_out is None:
        grad_out = torch.zeros(qkv.shape[:2] + (qkv.shape[2] // 3,), dtype=qkv.dtype)
    gp = None if grad_probs is None else grad_probs.to(qkv.dtype)
    return torch.ops.kexue.attention_qkv_bwd(grad_out.to(qkv.dtype), gp, qkv, probs, ctx.heads, ctx.scale), None, None


if schemas_loaded():
    torch.library.register_fake(FWD)(_fake_fwd)
    torch.library.register_fake(BWD)(_fake_bwd)
    torch.library.register_autograd(FWD, _backward, setup_context=_setup_context)
    register_functorch_reference(FWD, attention_qkv_reference)
    register_functorch_reference(BWD, _bwd_functorch)


def attention_qkv(qkv: torch.Tensor, heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, probs) of unmasked multi-head attention from fused QKV rows: the CPU kernel for
    float32 / float64 CPU tensors (when built), the reference otherwise."""
    if _kernel_runs(qkv):
        return torch.ops.kexue.attention_qkv_fwd(qkv, heads, scale)
    return attention_qkv_reference(qkv, heads, scale)


def attention_qkv_backward(grad_out: torch.Tensor, qkv: torch.Tensor, probs: torch.Tensor, heads: int,
                           scale: float) -> torch.Tensor:
    """d qkv (R, L, 3D) of ⟨out, grad_out⟩ given the forward's probs: the CPU kernel where
    :func:`attention_qkv` ran it, else the same formulas in torch operators (dP = dout vᵀ,
    dS = P ⊙ (dP − rowsum(dP ⊙ P))·scale, dq = dS k, dk = dSᵀ q, dv = Pᵀ dout)."""
    if _kernel_runs(qkv):
        return torch.ops.kexue.attention_qkv_bwd(grad_out, None, qkv, probs, heads, scale)
    return attention_qkv_backward_composite(grad_out, qkv, probs, heads, scale)


def attention_qkv_backward_composite(grad_out: torch.Tensor, qkv: torch.Tensor, probs: torch.Tensor, heads: int,
                                     scale: float) -> torch.Tensor:
    """:func:`attention_qkv_backward` in torch operators (other devices, or a build without the kernel)."""
    R, L, C = qkv.shape
    D = C // 3
    q, k, v = split_heads(qkv, heads)
    dout = grad_out.reshape(R, L, heads, D // heads).transpose(1, 2)
    dp = dout @ v.transpose(-1, -2)
    ds = probs * (dp - (dp * probs).sum(-1, keepdim=True)) * scale
    out = torch.empty((R, L, 3, heads, D // heads), dtype=qkv.dtype, device=qkv.device)
    out[:, :, 0] = (ds @ k).transpose(1, 2)
    out[:, :, 1] = (ds.transpose(-1, -2) @ q).transpose(1, 2)
    out[:, :, 2] = (probs.transpose(-1, -2) @ dout).transpose(1, 2)
    return out.view(R, L, C)
