"""``linear_cross_entropy``: the lm_head matmul fused with the loss, chunked over rows.

The ops ``kexue::linear_cross_entropy_fwd`` / ``_bwd`` (schemas in csrc/registration.cpp) are
implemented here once for every device: per chunk of ``chunk_size`` rows they form the logits
``h W^T + b`` (chunk×C, the only large buffer), run the per-chunk cross-entropy kernel and drop
the logits.  The backward recomputes each chunk's logits (one more matmul instead of keeping
N×C), writes the chunk's gradient over that buffer in place and takes
``dh = G W``, ``dW += G^T h`` (float32 accumulator), ``db += Σ_rows G``.  On the CPU in float32
the logits and ``dh`` products run on oneDNN (:mod:`kexue.cpu_linear`), ``dW`` on torch's addmm.  Peak extra memory:
one chunk of logits + the float32 weight gradient.  Flooding and the reduction act on the
per-row losses (reference.reduce_rows), so no host synchronisation either.  A backward that must
itself be differentiable (``create_graph=True``) recomputes through the reference (the whole
N×C logits under autograd, :mod:`kexue._autograd`).
"""

from __future__ import annotations

import torch

from .. import (
    _ext,  # noqa: F401  (loads the schemas)
    cpu_linear,
)
from .._autograd import functional_vjp, needs_differentiable_backward, reference_vjp, register_functorch_reference
from .._validate import meta_check, meta_dtype, meta_float, meta_shape
from .reference import accumulation_dtype, row_losses


def _chunk_ops(kernel: str):
    if kernel == "triton":
        from ..triton_kernels import cross_entropy as tk

        return tk.fwd_rows, tk.bwd_rows_inplace
    if kernel != "native":
        raise ValueError(f"linear_cross_entropy: kernel must be 'native' or 'triton', got {kernel!r}")

    def fwd(logits, target, bias, weight, eps, z, ii):
        return torch.ops.kexue.cross_entropy_fwd(logits, target, bias, weight, eps, z, ii, False)

    return fwd, torch.ops.kexue.cross_entropy_bwd_inplace


def _logits(h, weight, bias):
    # no_grad: inside the op, whose gradient is registered separately; lets cpu_linear use oneDNN
    # for CPU float32 (torch's default BLAS is half as fast on AMD CPUs), F.linear otherwise
    with torch.no_grad():
        return cpu_linear.linear(h, weight, bias)


def _grad_rows(g, weight, out):
    """out = g W (dh of a chunk): x Mᵀ with M = Wᵀ, a view oneDNN reads in place; elsewhere
    torch.mm straight into ``out``."""
    with torch.no_grad():
        if cpu_linear.routes(g, weight.t()):
            out.copy_(cpu_linear.linear(g, weight.t()))
        else:
            torch.mm(g, weight, out=out)


def linear_ce_forward(hidden, weight, target, bias, logit_bias, class_weight, label_smoothing, z_loss, ignore_index,
                      chunk_size, kernel):
    check_meta("linear_cross_entropy_fwd", hidden, weight, target, bias, logit_bias, class_weight, chunk_size, kernel)
    fwd, _ = _chunk_ops(kernel)
    N = hidden.shape[0]
    acc = accumulation_dtype(hidden.dtype)
    loss = hidden.new_empty((N,), dtype=acc)
    lse = hidden.new_empty((N,), dtype=acc)
    for lo in range(0, N, chunk_size):
        hi = min(lo + chunk_size, N)
        lg = _logits(hidden[lo:hi], weight, bias)
        l_c, s_c = fwd(lg, target[lo:hi], logit_bias, class_weight, label_smoothing, z_loss, ignore_index)
        loss[lo:hi] = l_c
        lse[lo:hi] = s_c
    return loss, lse


def linear_ce_backward(grad_loss, hidden, weight, target, bias, logit_bias, class_weight, lse, label_smoothing,
                       z_loss, ignore_index, chunk_size, kernel):
    check_meta("linear_cross_entropy_bwd", hidden, weight, target, bias, logit_bias, class_weight, chunk_size, kernel,
               grad_loss, lse)
    _, bwd_inplace = _chunk_ops(kernel)
    N = hidden.shape[0]
    acc = accumulation_dtype(weight.dtype)
    grad_hidden = torch.empty_like(hidden, memory_format=torch.contiguous_format)
    grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
    grad_bias = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if bias is not None else None
    exact = hidden.dtype == acc  # float32/float64: accumulate with addmm directly
    for lo in range(0, N, chunk_size):
        hi = min(lo + chunk_size, N)
        h = hidden[lo:hi]
        lg = _logits(h, weight, bias)
        bwd_inplace(grad_loss[lo:hi], lg, target[lo:hi], logit_bias, class_weight, lse[lo:hi], label_smoothing,
                    z_loss, ignore_index)  # lg now holds the chunk's gradient G
        _grad_rows(lg, weight, grad_hidden[lo:hi])
        if exact:
            grad_weight.addmm_(lg.t(), h)
        else:  # chunk product in the matmul's accumulation, rounded once, summed in float32
            grad_weight += torch.mm(lg.t(), h).to(acc)
        if grad_bias is not None:
            grad_bias += lg.sum(0, dtype=acc)
    gb = grad_bias.to(weight.dtype) if grad_bias is not None else weight.new_empty((0,))
    return grad_hidden, grad_weight.to(weight.dtype), gb


def check_meta(op, hidden, weight, target, bias, logit_bias, class_weight, chunk_size, kernel, grad_loss=None,
               lse=None):
    """What the eager path checks without reading data (the per-chunk kernels' checks, the matmul's)."""
    meta_check(hidden.dim() == 2, op, f"hidden must have shape (N, H), got {tuple(hidden.shape)}")
    meta_check(weight.dim() == 2, op, f"weight must have shape (C, H), got {tuple(weight.shape)}")
    meta_float(op, "hidden", hidden)
    meta_check(weight.dtype == hidden.dtype, op, f"weight has dtype {weight.dtype} but hidden has {hidden.dtype}")
    N, H = hidden.shape
    C = weight.shape[0]
    meta_check(weight.shape[1] == H, op, f"weight has {weight.shape[1]} columns but hidden has H = {H}")
    meta_check(C >= 1, op, "weight must have at least one class (C >= 1)")
    meta_shape(op, "target", target, (N,), f"(N,) = ({N},)")
    meta_dtype(op, "target", target, (torch.int64,), "int64")
    for name, t in (("bias", bias), ("logit_bias", logit_bias), ("class_weight", class_weight)):
        meta_shape(op, name, t, (C,), f"(C,) = ({C},)")
    meta_check(chunk_size >= 1, op, f"chunk_size must be >= 1, got {chunk_size}")
    meta_check(kernel in ("native", "triton"), op, f"kernel must be 'native' or 'triton', got {kernel!r}")
    meta_shape(op, "grad_loss", grad_loss, (N,), f"(N,) = ({N},)")
    meta_shape(op, "lse", lse, (N,), f"(N,) = ({N},)")


def fake_forward(hidden, weight, target, bias, logit_bias, class_weight, label_smoothing, z_loss, ignore_index,
                 chunk_size, kernel):
    check_meta("linear_cross_entropy_fwd", hidden, weight, target, bias, logit_bias, class_weight, chunk_size,
               kernel)
    acc = accumulation_dtype(hidden.dtype)
    N = hidden.shape[0]
    return hidden.new_empty((N,), dtype=acc), hidden.new_empty((N,), dtype=acc)


def fake_backward(grad_loss, hidden, weight, target, bias, logit_bias, class_weight, lse, label_smoothing, z_loss,
                  ignore_index, chunk_size, kernel):
    check_meta("linear_cross_entropy_bwd", hidden, weight, target, bias, logit_bias, class_weight, chunk_size,
               kernel, grad_loss, lse)
    gb = weight.new_empty((weight.shape[0],)) if bias is not None else weight.new_empty((0,))
    return hidden.new_empty(hidden.shape), weight.new_empty(weight.shape), gb


def _setup_context(ctx, inputs, output):
    hidden, weight, target, bias, logit_bias, class_weight, eps, z, ii, chunk, kernel = inputs
    ctx.save_for_backward(hidden, weight, target, bias, logit_bias, class_weight, output[1])
    ctx.options = (eps, z, ii, chunk, kernel)
    ctx.mark_non_differentiable(output[1])


def _differentiable_backward(ctx, grad_loss, hidden, weight, target, bias, logit_bias, class_weight):
    eps, z, ii = ctx.options[:3]

    def fn(h, w, b):
        return row_losses(torch.nn.functional.linear(h, w, b), target, logit_bias, class_weight, eps, z, ii)[:1]

    n = ctx.needs_input_grad
    return reference_vjp(fn, (hidden, weight, bias), (n[0], n[1], n[3]), (grad_loss,))


def _backward(ctx, grad_loss, grad_lse):
    hidden, weight, target, bias, logit_bias, class_weight, lse = ctx.saved_tensors
    if needs_differentiable_backward():
        gh, gw, gb = _differentiable_backward(ctx, grad_loss, hidden, weight, target, bias, logit_bias,
                                              class_weight)
        return gh, gw, None, gb, None, None, None, None, None, None, None
    if grad_loss is None:
        grad_loss = lse.new_zeros(lse.shape)
    gh, gw, gb = torch.ops.kexue.linear_cross_entropy_bwd(grad_loss, hidden, weight, target, bias, logit_bias,
                                                          class_weight, lse, *ctx.options)
    return gh, gw, None, gb if bias is not None else None, None, None, None, None, None, None, None


def functorch_forward(hidden, weight, target, bias, logit_bias, class_weight, label_smoothing, z_loss,
                      ignore_index, chunk_size, kernel):
    """The forward op under torch.func: the reference rows of the whole logits (no chunking)."""
    return row_losses(torch.nn.functional.linear(hidden, weight, bias), target, logit_bias, class_weight,
                      label_smoothing, z_loss, ignore_index)


def functorch_backward(grad_loss, hidden, weight, target, bias, logit_bias, class_weight, lse, label_smoothing,
                       z_loss, ignore_index, chunk_size, kernel):
    """The backward op under torch.func: the reference's vjp (grad_bias empty without bias)."""

    def fn(h, w, b):
        return functorch_forward(h, w, target, b, logit_bias, class_weight, label_smoothing, z_loss, ignore_index,
                                 chunk_size, kernel)[:1]

    gh, gw, gb = functional_vjp(fn, (hidden, weight, bias), (grad_loss,))
    gb = weight.new_empty((0,)) if gb is None else gb.to(weight.dtype)
    return gh.to(hidden.dtype), gw.to(weight.dtype), gb


torch.library.impl("kexue::linear_cross_entropy_fwd", "CompositeExplicitAutograd")(linear_ce_forward)
torch.library.impl("kexue::linear_cross_entropy_bwd", "CompositeExplicitAutograd")(linear_ce_backward)
torch.library.register_fake("kexue::linear_cross_entropy_fwd")(fake_forward)
torch.library.register_fake("kexue::linear_cross_entropy_bwd")(fake_backward)
torch.library.register_autograd("kexue::linear_cross_entropy_fwd", _backward, setup_context=_setup_context)
register_functorch_reference("kexue::linear_cross_entropy_fwd", functorch_forward)
register_functorch_reference("kexue::linear_cross_entropy_bwd", functorch_backward)
