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
from .._validate import meta_check, meta_dtype, meta_float
from .kernels_reference import accumulation_dtype, segment_distance_backward, segment_distance_reference


def _index_vector(op, name, t):
    meta_check(t.dim() == 1, op, f"{name} must be 1-D, got shape {tuple(t.shape)}")
    meta_dtype(op, name, t, (torch.int64,), "int64")


def fake_masked_batch(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, mask_id, pad_id, length):
    op = "probe_masked_batch"
    for name, t in (("tokens", tokens), ("tok_offsets", tok_offsets), ("word_start", word_start),
                    ("word_end", word_end), ("word_offsets", word_offsets)):
        _index_vector(op, name, t)
    meta_check(seqs.dim() == 2 and seqs.shape[-1] == 3, op, f"seqs must have shape (K, 3) (rows s, i, j), got "
               f"{tuple(seqs.shape)}")
    meta_dtype(op, "seqs", seqs, (torch.int64,), "int64")
    meta_check(tok_offsets.shape[0] >= 1, op, "tok_offsets must have n_sentences + 1 >= 1 entries")
    meta_check(word_offsets.shape[0] == tok_offsets.shape[0], op, f"word_offsets has {word_offsets.shape[0]} "
               f"entries but tok_offsets has {tok_offsets.shape[0]}")
    meta_check(word_start.shape[0] == word_end.shape[0], op, f"word_start has {word_start.shape[0]} entries but "
               f"word_end has {word_end.shape[0]}")
    meta_check(length >= 0, op, f"length must be >= 0, got {length}")
    K = seqs.shape[0]
    return seqs.new_empty((K, length), dtype=torch.int64), seqs.new_empty((K, length), dtype=torch.int64)


def fake_segment_distance(h, rows, ref, ref_rows, seg, num_segments, metric):
    op = "probe_segment_distance"
    meta_check(h.dim() == 2, op, f"h must have shape (R, D), got {tuple(h.shape)}")
    meta_check(ref.dim() == 2, op, f"ref must have shape (R2, D), got {tuple(ref.shape)}")
    meta_float(op, "h", h)
    meta_check(ref.dtype == h.dtype, op, f"ref has dtype {ref.dtype} but h has {h.dtype}")
    meta_check(ref.shape[1] == h.shape[1], op, f"ref has D = {ref.shape[1]} columns but h has {h.shape[1]}")
    for name, t in (("rows", rows), ("ref_rows", ref_rows), ("seg", seg)):
        _index_vector(op, name, t)
    K = rows.shape[0]
    meta_check(ref_rows.shape[0] == K, op, f"ref_rows has {ref_rows.shape[0]} entries but rows has {K}")
    meta_check(seg.shape[0] == K, op, f"seg has {seg.shape[0]} entries but rows has {K}")
    meta_check(num_segments >= 0, op, f"num_segments must be >= 0, got {num_segments}")
    meta_check(metric in ("dist", "cos"), op, f"metric must be 'dist' or 'cos', got {metric!r}")
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
