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
from .._validate import meta_check, meta_dtype, meta_float, meta_shape
from .feature_maps import feature_dim
from .reference import accumulation_dtype, linear_attention_chunked

FEATURE_MAPS = ("none", "elu", "relu", "softmax", "taylor")


def check_meta(op, q, k, v, mask, S0, z0, cu, feature_map, eps):
    """What the eager kernels check without reading data (csrc/linear_attention, check_inputs);
    returns (B, H, N, Dk, Dv, F, nseq)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        meta_check(t.dim() == 4, op, f"{name} must have 4 dims (B, H, N, D), got shape {tuple(t.shape)}")
    meta_float(op, "q", q)
    meta_check(k.dtype == q.dtype, op, f"k has dtype {k.dtype} but q has {q.dtype}")
    meta_check(v.dtype == q.dtype, op, f"v has dtype {v.dtype} but q has {q.dtype}")
    B, H, N, Dk = q.shape
    Hkv, Dv = k.shape[1], v.shape[3]
    meta_check(k.shape[0] == B and v.shape[0] == B, op, f"batch sizes differ: q {B}, k {k.shape[0]}, v {v.shape[0]}")
    meta_check(k.shape[2] == N and v.shape[2] == N, op,
               f"sequence lengths differ: q {N}, k {k.shape[2]}, v {v.shape[2]}")
    meta_check(k.shape[3] == Dk, op, f"k's head dim {k.shape[3]} differs from q's {Dk}")
    meta_check(v.shape[1] == Hkv, op, f"v has {v.shape[1]} heads but k has {Hkv}")
    meta_check(Hkv > 0 and H % Hkv == 0, op, f"q's heads ({H}) must be a multiple of k's and v's heads ({Hkv})")
    meta_check(Dk >= 1 and Dv >= 1, op, f"head dims must be >= 1, got Dk={Dk}, Dv={Dv}")
    meta_check(eps >= 0, op, f"eps must be >= 0, got {eps}")
    meta_check(feature_map in FEATURE_MAPS, op, f"feature_map must be one of {FEATURE_MAPS}; got {feature_map!r}")
    if mask is not None:
        meta_dtype(op, "key_padding_mask", mask, (torch.bool,), "bool (True = ignore)")
        meta_shape(op, "key_padding_mask", mask, (B, N), f"(B, N) = ({B}, {N})")
    nseq = B
    if cu is not None:
        meta_dtype(op, "cu_seqlens", cu, (torch.int32, torch.int64), "int32 or int64")
        meta_check(cu.dim() == 1 and cu.shape[0] >= 2, op,
                   f"cu_seqlens must be 1-D with at least 2 offsets, got shape {tuple(cu.shape)}")
        meta_check(B == 1, op, f"with cu_seqlens the sequences are packed along N: batch must be 1, got {B}")
        nseq = cu.shape[0] - 1
    F = feature_dim(feature_map, Dk)
    acc = accumulation_dtype(q.dtype)
    for name, t, shape in (("initial_S", S0, (nseq, H, F, Dv)), ("initial_z", z0, (nseq, H, F))):
        if t is not None:
            meta_check(t.dtype == acc, op, f"{name} must have the accumulation dtype {acc}, got {t.dtype}")
            meta_shape(op, name, t, shape)
    return B, H, N, Dk, Dv, F, nseq


def fake_forward(q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, causal, normalize, eps):
    B, H, N, Dk, Dv, F, nseq = check_meta("linear_attention_fwd", q, k, v, key_padding_mask, initial_S, initial_z,
                                          cu_seqlens, feature_map, eps)
    acc = accumulation_dtype(q.dtype)
    out = q.new_empty((B, H, N, Dv))
    S = q.new_empty((nseq, H, F, Dv), dtype=acc)
    z = q.new_empty((nseq, H, F), dtype=acc)
    return out, S, z


def fake_backward(grad_out, grad_S, grad_z, q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens,
                  feature_map, causal, normalize, eps):
    op = "linear_attention_bwd"
    B, H, N, Dk, Dv, F, nseq = check_meta(op, q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens,
                                          feature_map, eps)
    meta_check(grad_out.dtype == q.dtype, op, f"grad_out has dtype {grad_out.dtype} but q has {q.dtype}")
    meta_shape(op, "grad_out", grad_out, (B, H, N, Dv))
    acc = accumulation_dtype(q.dtype)
    for name, t, shape in (("grad_S", grad_S, (nseq, H, F, Dv)), ("grad_z", grad_z, (nseq, H, F))):
        if t is not None:
            meta_check(t.dtype == acc, op, f"{name} must have the accumulation dtype {acc}, got {t.dtype}")
            meta_shape(op, name, t, shape)
    dS0 = torch.empty_like(initial_S) if initial_S is not None else q.new_empty((0,), dtype=acc)
    dz0 = torch.empty_like(initial_z) if initial_z is not None else q.new_empty((0,), dtype=acc)
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
