"""torch.library glue of the probe kernels: fake kernels and autograd.

The schemas are in csrc/registration.cpp (``kexue::probe_masked_batch``,
``kexue::probe_segment_distance``); the CPU kernels are in csrc/probe/probe_cpu.cpp, the CUDA ones
in csrc/probe/probe_cuda.cpp + probe_kernels.cu.  The "triton" backend registers ops with the same
signatures in kexue/triton_kernels/probe.py and calls :func:`register_segment_autograd` below, so
every backend shares one backward: plain tensor ops (kernels_reference.segment_distance_backward,
O(K·D)), which torch.compile traces like any other.
"""

from __future__ import annotations

import torch

from .. import _ext  # noqa: F401  (loads the schemas)
from .._autograd import register_functorch_reference
from .kernels_reference import accumulation_dtype, segment_distance_backward, segment_distance_reference


def fake_masked_batch(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, mask_id, pad_id, length):
    K = seqs.shape[0]
    return seqs.new_empty((K, length), dtype=torch.int64), seqs.new_empty((K, length), dtype=torch.int64)


def fake_segment_distance(h, rows, ref, ref_rows, seg, num_segments, metric):
    return h.new_empty((num_segments,), dtype=accumulation_dtype(h.dtype))


def register_segment_autograd(name: str) -> None:
    """Autograd of an op with the probe_segment_distance signature (gradients for h and ref)."""

    def setup_context(ctx, inputs, output):
        h, rows, ref, ref_rows, seg, num_segments, metric = inputs
        ctx.save_for_backward(h, rows, ref, ref_rows, seg)
        ctx.num_segments = num_segments
        ctx.metric = metric

    def backward(ctx, grad_out):
        h, rows, ref, ref_rows, seg = ctx.saved_tensors
        grad_h, grad_ref = segment_distance_backward(grad_out, h, rows, ref, ref_rows, seg, ctx.num_segments,
                                                     ctx.metric, ctx.needs_input_grad[0], ctx.needs_input_grad[2])
        return grad_h, None, grad_ref, None, None, None, None

    torch.library.register_autograd(name, backward, setup_context=setup_context)
    register_functorch_reference(name, segment_distance_reference)  # (under torch.func: the composite)


torch.library.register_fake("kexue::probe_masked_batch")(fake_masked_batch)
torch.library.register_fake("kexue::probe_segment_distance")(fake_segment_distance)
register_segment_autograd("kexue::probe_segment_distance")


def native_masked_batch(*args):
    """The "cpu" / "cuda" backends of masked_batch: the registered kernels of the inputs' device."""
    return torch.ops.kexue.probe_masked_batch(*args)


def native_segment_distance(*args):
    """The "cpu" / "cuda" backends of segment_distance."""
    return torch.ops.kexue.probe_segment_distance(*args)
