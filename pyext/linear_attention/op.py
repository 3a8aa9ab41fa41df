"""torch.library glue of the linear-attention kernels: fake kernels and autograd.

The schemas are in csrc/registration.cpp.  The "cpu" and "cuda" backends are the
``kexue::linear_attention_fwd`` / ``_bwd`` ops (C++ / CUDA kernels registered per device);
the "triton" backend registers its own pair of ops with the same signature in
kexue/triton_kernels/linear_attention.py and calls :func:`register_autograd` below, so every
backend shares one autograd formula: the backward op recomputes chunk states from q, k, v and
the initial state, nothing of size N×F×Dv is saved.  A backward that must itself be
differentiable (``create_graph=True``) recomputes through the reference instead
(:mod:`kexue._autograd`): double backward is exact on every backend.
"""

from __future__ import annotations

import torch

from .. import _ext  # noqa: F401  (loads the schemas)
from .._autograd import functional_vjp, needs_differentiable_backward, reference_vjp, register_functorch_reference
from .feature_maps import feature_dim
from .reference import accumulation_dtype, linear_attention_chunked


def fake_forward(q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, causal, normalize, eps):
    B, H, N, Dk = q.shape
    Dv = v.shape[-1]
    F = feature_dim(feature_map, Dk)
    nseq = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    acc = accumulation_dtype(q.dtype)
    out = q.new_empty((B, H, N, Dv))
    S = q.new_empty((nseq, H, F, Dv), dtype=acc)
    z = q.new_empty((nseq, H, F), dtype=acc)
    return out, S, z


def fake_backward(grad_out, grad_S, grad_z, q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens,
                  feature_map, causal, normalize, eps):
    dS0 = torch.empty_like(initial_S) if initial_S is not None else q.new_empty((0,), dtype=accumulation_dtype(q.dtype))
    dz0 = torch.empty_like(initial_z) if initial_z is not None else q.new_empty((0,), dtype=accumulation_dtype(q.dtype))
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dS0, dz0


def reference_outputs(q, k, v, mask, S0, z0, cu, feature_map, causal, normalize, eps):
    """(out, S, z) of the reference: the differentiable formulation of every backend's forward."""
    out, (S, z) = linear_attention_chunked(
        q, k, v, causal=causal, feature_map=feature_map, normalize=normalize, eps=eps, key_padding_mask=mask,
        initial_state=None if S0 is None else (S0, z0), cu_seqlens=cu,
    )
    return out, S, z


def functorch_forward(q, k, v, mask, S0, z0, cu, feature_map, causal, normalize, eps):
    """The forward op under torch.func: the reference, in the op's output dtypes."""
    out, S, z = reference_outputs(q, k, v, mask, S0, z0, cu, feature_map, causal, normalize, eps)
    acc = accumulation_dtype(q.dtype)
    return out.to(q.dtype), S.to(acc), z.to(acc)


def functorch_backward(grad_out, grad_S, grad_z, q, k, v, mask, S0, z0, cu, feature_map, causal, normalize, eps):
    """The backward op under torch.func: the reference's vjp (dS0/dz0 empty where S0/z0 are None)."""

    def fn(q_, k_, v_, S0_, z0_):
        return functorch_forward(q_, k_, v_, mask, S0_, z0_, cu, feature_map, causal, normalize, eps)

    dq, dk, dv, dS0, dz0 = functional_vjp(fn, (q, k, v, S0, z0), (grad_out, grad_S, grad_z))
    empty = q.new_empty((0,), dtype=accumulation_dtype(q.dtype))
    return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), empty if dS0 is None else dS0,
            empty if dz0 is None else dz0)


def differentiable_backward(grads, q, k, v, mask, S0, z0, cu, options, needs):
    """(dq, dk, dv, dS0, dz0) with a graph (double backward), through the reference."""

    def fn(q_, k_, v_, S0_, z0_):
        return reference_outputs(q_, k_, v_, mask, S0_, z0_, cu, *options)

    return reference_vjp(fn, (q, k, v, S0, z0), needs, grads)


def register_autograd(fwd_name: str, bwd_op) -> None:
    """Registers the shared backward for a forward op with the linear_attention_fwd signature."""

    def setup_context(ctx, inputs, output):
        q, k, v, mask, S0, z0, cu, feature_map, causal, normalize, eps = inputs
        ctx.save_for_backward(q, k, v, mask, S0, z0, cu)
        ctx.options = (feature_map, causal, normalize, eps)

    def backward(ctx, grad_out, grad_S, grad_z):
        q, k, v, mask, S0, z0, cu = ctx.saved_tensors
        if needs_differentiable_backward():
            n = ctx.needs_input_grad
            dq, dk, dv, dS0, dz0 = differentiable_backward(
                (grad_out, grad_S, grad_z), q, k, v, mask, S0, z0, cu, ctx.options, (n[0], n[1], n[2], n[4], n[5]))
            return dq, dk, dv, None, dS0, dz0, None, None, None, None, None
        if grad_out is None:
            grad_out = q.new_zeros((*q.shape[:-1], v.shape[-1]))
        dq, dk, dv, dS0, dz0 = bwd_op(grad_out, grad_S, grad_z, q, k, v, mask, S0, z0, cu, *ctx.options)
        return (dq, dk, dv, None, dS0 if S0 is not None else None, dz0 if z0 is not None else None,
                None, None, None, None, None)

    torch.library.register_autograd(fwd_name, backward, setup_context=setup_context)
    register_functorch_reference(fwd_name, functorch_forward)
    register_functorch_reference(bwd_op.name(), functorch_backward)


torch.library.register_fake("kexue::linear_attention_fwd")(fake_forward)
torch.library.register_fake("kexue::linear_attention_bwd")(fake_backward)
register_autograd("kexue::linear_attention_fwd", torch.ops.kexue.linear_attention_bwd.default)


def native_forward(q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, causal, normalize, eps):
    """The "cpu" / "cuda" backends (the device of q picks the kernel)."""
    return torch.ops.kexue.linear_attention_fwd(
        q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, causal, normalize, eps
    )
