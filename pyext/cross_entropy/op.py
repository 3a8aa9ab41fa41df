"""torch.library glue of the cross-entropy kernels: fake kernels and autograd.

The schemas are in csrc/registration.cpp.  ``kexue::cross_entropy_fwd`` returns the per-row
loss ℓ and lse (float32; float64 for float64 logits); its autograd calls
``kexue::cross_entropy_bwd`` (a fresh gradient buffer) or ``kexue::cross_entropy_bwd_inplace``
(the gradient written over the logits, whose version counter is bumped so that any other user
of the overwritten logits fails loudly in backward).  Both take the per-row gradient of ℓ, so
flooding and the reduction (O(N) tensor ops in reference.reduce_rows) need no N×C buffer and
no host synchronisation.  The "triton" backend registers ops with the same signatures in
kexue/triton_kernels/cross_entropy.py and calls :func:`register_autograd` below.

A backward that must itself be differentiable (``create_graph=True``) recomputes the rows
through the reference instead (:mod:`kexue._autograd`), on every backend; it never writes in
place, so ``inplace_backward=True`` applies to first-order backward only and double backward
through it is exact too.
"""

from __future__ import annotations

import torch

from .. import _ext  # noqa: F401  (loads the schemas)
from .._autograd import (
    functional_vjp,
    needs_differentiable_backward,
    reference_vjp,
    refuse_functorch,
    register_functorch_reference,
)
from .._validate import meta_check, meta_dtype, meta_float, meta_shape
from .reference import accumulation_dtype, row_losses


def check_meta(op, logits, target, bias, weight, grad_loss=None, lse=None):
    """What the eager kernels check without reading data (csrc/cross_entropy, check_inputs)."""
    meta_check(logits.dim() == 2, op, f"logits must have shape (N, C), got {tuple(logits.shape)}")
    meta_float(op, "logits", logits)
    N, C = logits.shape
    meta_check(C >= 1, op, "logits must have at least one class")
    meta_shape(op, "target", target, (N,), f"(N,) = ({N},)")
    meta_dtype(op, "target", target, (torch.int64,), "int64")
    meta_shape(op, "bias", bias, (C,), f"(C,) = ({C},)")
    meta_shape(op, "weight", weight, (C,), f"(C,) = ({C},)")
    meta_shape(op, "grad_loss", grad_loss, (N,), f"(N,) = ({N},)")
    meta_shape(op, "lse", lse, (N,), f"(N,) = ({N},)")


def fake_forward(logits, target, bias, weight, label_smoothing, z_loss, ignore_index, inplace_backward):
    check_meta("cross_entropy_fwd", logits, target, bias, weight)
    acc = accumulation_dtype(logits.dtype)
    N = logits.shape[0]
    return logits.new_empty((N,), dtype=acc), logits.new_empty((N,), dtype=acc)


def fake_backward(grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss, ignore_index):
    check_meta("cross_entropy_bwd", logits, target, bias, weight, grad_loss, lse)
    return logits.new_empty(logits.shape)


def fake_backward_inplace(grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss, ignore_index):
    check_meta("cross_entropy_bwd_inplace", logits, target, bias, weight, grad_loss, lse)
    return None


def functorch_forward(logits, target, bias, weight, label_smoothing, z_loss, ignore_index, inplace_backward):
    """The forward op under torch.func: the reference rows (ℓ, lse) in the accumulation dtype."""
    return row_losses(logits, target, bias, weight, label_smoothing, z_loss, ignore_index)


def functorch_backward(grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss, ignore_index):
    """The backward op under torch.func: the reference's vjp in the logits, in their dtype."""

    def fn(x):
        return row_losses(x, target, bias, weight, label_smoothing, z_loss, ignore_index)[:1]

    return functional_vjp(fn, (logits,), (grad_loss,))[0].to(logits.dtype).contiguous()


def differentiable_backward(grad_loss, logits, target, bias, weight, options):
    """d(Σ grad_loss·ℓ)/d logits with a graph (double backward), through the reference rows."""

    def fn(x):
        return row_losses(x, target, bias, weight, *options)[:1]

    return reference_vjp(fn, (logits,), (True,), (grad_loss,))[0]


def register_autograd(fwd_name: str, bwd_op, bwd_inplace_op) -> None:
    """Registers the shared backward for a forward op with the cross_entropy_fwd signature."""

    def setup_context(ctx, inputs, output):
        logits, target, bias, weight, label_smoothing, z_loss, ignore_index, inplace_backward = inputs
        lse = output[1]  # (a backend may return more outputs after lse, e.g. an error flag)
        ctx.save_for_backward(logits, target, bias, weight, lse)
        ctx.options = (label_smoothing, z_loss, ignore_index)
        ctx.inplace = inplace_backward
        ctx.mark_non_differentiable(*output[1:])

    def backward(ctx, grad_loss, *unused_grads):
        logits, target, bias, weight, lse = ctx.saved_tensors
        if needs_differentiable_backward():
            return (differentiable_backward(grad_loss, logits, target, bias, weight, ctx.options),
                    None, None, None, None, None, None, None)
        if grad_loss is None:
            grad_loss = lse.new_zeros(lse.shape)
        if ctx.inplace:
            bwd_inplace_op(grad_loss, logits, target, bias, weight, lse, *ctx.options)
            if not torch.compiler.is_compiling():  # (traced graphs track the mutation themselves)
                torch.autograd.graph.increment_version(logits)
            grad = logits
        else:
            grad = bwd_op(grad_loss, logits, target, bias, weight, lse, *ctx.options)
        return grad, None, None, None, None, None, None, None

    torch.library.register_autograd(fwd_name, backward, setup_context=setup_context)
    n_out = len(getattr(torch.ops.kexue, fwd_name.split("::")[-1]).default._schema.returns)
    register_functorch_reference(fwd_name, functorch_forward if n_out == 2 else _with_flag(functorch_forward))
    register_functorch_reference(bwd_op.name(), functorch_backward)
    refuse_functorch(bwd_inplace_op.name(), "it writes the gradient over the logits; call kexue.cross_entropy "
                     "(or the non-in-place backward op) inside the transform")


def _with_flag(forward):
    """A forward that also returns the Triton ops' error flag (int32 (1,), 0 = no error)."""

    def wrapped(logits, *args):
        return (*forward(logits, *args), torch.zeros((1,), dtype=torch.int32, device=logits.device))

    return wrapped


torch.library.register_fake("kexue::cross_entropy_fwd")(fake_forward)
torch.library.register_fake("kexue::cross_entropy_bwd")(fake_backward)
torch.library.register_fake("kexue::cross_entropy_bwd_inplace")(fake_backward_inplace)
register_autograd("kexue::cross_entropy_fwd", torch.ops.kexue.cross_entropy_bwd.default,
                  torch.ops.kexue.cross_entropy_bwd_inplace.default)


def native_rows(logits, target, bias, weight, label_smoothing, z_loss, ignore_index, inplace_backward):
    """The "cpu" / "cuda" backends: (ℓ, lse) from the registered kernels of logits' device."""
    return torch.ops.kexue.cross_entropy_fwd(logits, target, bias, weight, label_smoothing, z_loss, ignore_index,
                                             inplace_backward)
