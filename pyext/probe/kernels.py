r"""The probe engine's two fused device ops: masked batch construction and segment distances.

* :func:`masked_batch` builds, in one kernel, the K masked copies of packed sentences that the
  encoder reads (input_ids and attention_mask), with no Python loop over pairs.
* :func:`segment_distance` gathers row pairs of hidden states, measures their distance
  (Euclidean or 1 − cosine) and averages it per segment (e.g. per (i, j) over the subwords of
  word i), in one pass over the K·D values.

Exact semantics: :mod:`kexue.probe.kernels_reference` (the "torch" backend).  Backends: "cpu"
(C++), "cuda" (CUDA C++), "triton" and "torch"; "auto" picks CUDA, then Triton, on GPUs and the
C++ kernel on CPUs.

Input validation.  Shapes, dtypes and devices are checked on every call.  Index *values* (which
sentence, word, row or segment) are checked without a host synchronisation: on CPU tensors
eagerly, with the offending index in a ValueError (or the C++ kernel's error for
``backend="cpu"``, also naming the argument); on GPU tensors on the device (the kernels never read
out of bounds; they set a flag that becomes a device-side assertion, ``torch._assert_async``,
reported at the next synchronising call).  Under ``torch.compile`` the kernels' own checks apply.
"""

from __future__ import annotations

import torch

from .._dispatch import OpBackends, eager_cpu, native_first, triton_kernel_ready
from .._validate import as_int, check_float_matrix
from .kernels_op import native_masked_batch, native_segment_distance
from .kernels_reference import (
    METRICS,
    masked_batch_problems,
    masked_batch_reference,
    segment_distance_reference,
)


def _triton_masked_batch(*args):
    from ..triton_kernels import probe as tk

    return tk.masked_batch_triton(*args)


def _triton_segment_distance(*args):
    from ..triton_kernels import probe as tk

    return tk.segment_distance_triton(*args)


_triton_ready = triton_kernel_ready("probe", "segment_distance_triton")
MASKED_BATCH = OpBackends(
    name="masked_batch",
    impls={"torch": masked_batch_reference, "cpu": native_masked_batch, "cuda": native_masked_batch,
           "triton": _triton_masked_batch},
    native_op="probe_masked_batch",
    triton_ready=_triton_ready,
    auto=native_first,
)
SEGMENT_DISTANCE = OpBackends(
    name="segment_distance",
    impls={"torch": segment_distance_reference, "cpu": native_segment_distance, "cuda": native_segment_distance,
           "triton": _triton_segment_distance},
    native_op="probe_segment_distance",
    triton_ready=_triton_ready,
    auto=native_first,
)


@torch.compiler.assume_constant_result
def _resolve_masked_batch(backend: str, device: str) -> str:
    return MASKED_BATCH.resolve(backend, torch.device(device))[0]


@torch.compiler.assume_constant_result
def _resolve_segment_distance(backend: str, device: str) -> str:
    return SEGMENT_DISTANCE.resolve(backend, torch.device(device))[0]



def _check_int(name: str, v, minimum: int | None = None) -> int:
    return as_int(name, v, minimum=minimum)


def _check_index_tensor(name: str, t, device: torch.device, ndim: int = 1) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but seqs/h is on {device}")


# ---------------------------------------------------------------------------------------------
# masked_batch
# ---------------------------------------------------------------------------------------------

_MB_MESSAGES = {
    "s": "seqs[{k}, 0] = {s} is not a sentence index in [0, {n_sent})",
    "tok_offsets": "tok_offsets[{s}:{s2}] of sentence {s} is not an increasing range inside tokens",
    "length": "length = {length} is shorter than sentence {s} ({n} tokens, referenced by seqs[{k}]); length must "
              "be >= the longest sentence referenced",
    "word_offsets": "word_offsets[{s}:{s2}] of sentence {s} is not an increasing range inside word_start",
    "i": "seqs[{k}, 1] = {i} is not a word of sentence {s} ({nw} words; -1 means no word)",
    "j": "seqs[{k}, 2] = {j} is not a word of sentence {s} ({nw} words; -1 means no word)",
    "span_i": "word {i} of sentence {s} has a span (word_start/word_end) outside the sentence's {n} tokens",
    "span_j": "word {j} of sentence {s} has a span (word_start/word_end) outside the sentence's {n} tokens",
}


def _check_masked_batch_values(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, length) -> None:
    problems = masked_batch_problems(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, length)
    bad = torch.stack(list(problems.values())).any(0)
    if not eager_cpu(seqs):  # CUDA tensors and compiled graphs: a device-side assert, as eager raises
        torch._assert_async(~bad.any(), "kexue.probe.masked_batch: a row of seqs is invalid (index out of "
                                        "range, a span outside its sentence, or a sentence longer than length)")
        return
    if not bool(bad.any()):
        return
    k = int(bad.nonzero()[0, 0])
    s, i, j = (int(x) for x in seqs[k])
    info = {"k": k, "s": s, "s2": s + 2, "i": i, "j": j, "length": length, "n_sent": tok_offsets.shape[0] - 1}
    if 0 <= s < info["n_sent"]:
        info["n"] = int(tok_offsets[s + 1] - tok_offsets[s])
        info["nw"] = int(word_offsets[s + 1] - word_offsets[s])
    for key, flags in problems.items():
        if bool(flags[k]):
            raise ValueError("kexue.probe.masked_batch: " + _MB_MESSAGES[key].format(**info))


def masked_batch(
    tokens: torch.Tensor,
    tok_offsets: torch.Tensor,
    word_start: torch.Tensor,
    word_end: torch.Tensor,
    word_offsets: torch.Tensor,
    seqs: torch.Tensor,
    mask_id: int,
    pad_id: int,
    length: int,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Masked copies of packed sentences, as one padded encoder batch.

    Row k of the output is sentence s = seqs[k, 0] with every token of word i = seqs[k, 1] and
    of word j = seqs[k, 2] replaced by ``mask_id`` (−1: no word), then ``pad_id`` up to
    ``length``::

        input_ids[k, t] = mask_id if t ∈ span(i) ∪ span(j);  tokens[tok_offsets[s] + t] if t < n_s;
                          pad_id otherwise
        attention_mask[k, t] = [t < n_s]

    Args:
        tokens: (L_total,) int64, the token ids of all sentences end to end (each sentence's full
            list, [CLS] and [SEP] included).
        tok_offsets: (n_sent + 1,) int64; sentence s is ``tokens[tok_offsets[s]:tok_offsets[s+1]]``.
        word_start, word_end: (W_total,) int64, token span [start, end) of each word relative to
            its sentence's start; the words of s are at ``word_offsets[s]:word_offsets[s+1]``.
        word_offsets: (n_sent + 1,) int64.
        seqs: (K, 3) int64 rows (s, i, j).
        mask_id, pad_id: token ids.  length: columns, >= the longest sentence referenced.
        backend: "auto", "torch" (reference), "cpu", "cuda" or "triton".

    Returns:
        (input_ids, attention_mask), both (K, length) int64 on seqs' device.

    Example:
        >>> import torch
        >>> from kexue.probe.kernels import masked_batch
        >>> tokens = torch.tensor([101, 7, 8, 9, 102, 101, 5, 102])    # two sentences
        >>> tok_offsets = torch.tensor([0, 5, 8])
        >>> word_start, word_end = torch.tensor([1, 2, 1]), torch.tensor([2, 4, 2])  # words [7], [8, 9] | [5]
        >>> word_offsets = torch.tensor([0, 2, 3])
        >>> seqs = torch.tensor([[0, 1, -1], [0, 0, 1], [1, -1, -1]])
        >>> ids, att = masked_batch(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, 103, 0, 6)
        >>> ids
        tensor([[101,   7, 103, 103, 102,   0],
                [101, 103, 103, 103, 102,   0],
                [101,   5, 102,   0,   0,   0]])
        >>> att[2]
        tensor([1, 1, 1, 0, 0, 0])
    """
    if not isinstance(seqs, torch.Tensor):
        raise TypeError(f"seqs must be a torch.Tensor, got {type(seqs).__name__}")
    device = seqs.device
    _check_index_tensor("seqs", seqs, device, ndim=2)
    if seqs.shape[1] != 3:
        raise ValueError(f"seqs must have shape (K, 3) (rows s, i, j), got {tuple(seqs.shape)}")
    for name, t in (("tokens", tokens), ("tok_offsets", tok_offsets), ("word_start", word_start),
                    ("word_end", word_end), ("word_offsets", word_offsets)):
        _check_index_tensor(name, t, device)
    if tok_offsets.shape[0] < 1:
        raise ValueError("tok_offsets must have n_sentences + 1 >= 1 entries")
    if word_offsets.shape[0] != tok_offsets.shape[0]:
        raise ValueError(f"word_offsets has {word_offsets.shape[0]} entries but tok_offsets has "
                         f"{tok_offsets.shape[0]} (both must be n_sentences + 1)")
    if word_start.shape != word_end.shape:
        raise ValueError(f"word_start has {word_start.shape[0]} entries but word_end has {word_end.shape[0]}")
    _check_int("mask_id", mask_id)
    _check_int("pad_id", pad_id)
    _check_int("length", length, minimum=0)
    name = _resolve_masked_batch(backend, str(device))
    if name == "torch" or (name == "triton" and device.type == "cpu"):
        # (the C++ kernel checks itself; the CUDA and Triton kernels on GPUs check on the device)
        _check_masked_batch_values(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, length)
    return MASKED_BATCH.impls[name](tokens, tok_offsets, word_start, word_end, word_offsets, seqs, int(mask_id),
                                    int(pad_id), int(length))


# ---------------------------------------------------------------------------------------------
# segment_distance
# ---------------------------------------------------------------------------------------------

def _check_range(name: str, idx: torch.Tensor, n: int, what: str) -> None:
    if idx.numel() == 0:
        return
    bad = (idx < 0) | (idx >= n)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(f"kexue.probe.segment_distance: {name}[{k}] = {int(idx[k])} is out of range: {what} "
                         f"indices must be in [0, {n})")


def segment_distance(
    h: torch.Tensor,
    rows: torch.Tensor,
    ref: torch.Tensor,
    ref_rows: torch.Tensor,
    seg: torch.Tensor,
    num_segments: int,
    metric: str = "dist",
    backend: str = "auto",
) -> torch.Tensor:
    r"""Per-segment mean distance between gathered row pairs.

    .. math::
        \text{out}_s = \frac{1}{|\{k: \text{seg}_k = s\}|}\sum_{k:\,\text{seg}_k = s}
                       d\big(h_{\text{rows}_k},\ \text{ref}_{\text{ref\_rows}_k}\big)

    with d(a, b) = ‖a − b‖₂ (``metric="dist"``) or 1 − a·b / max(‖a‖‖b‖, 1e−8) (``"cos"``);
    a segment with no member gives 0.  Computed in float32 (float64 for float64 inputs) and
    differentiable with respect to h and ref.

    Args:
        h: (R, D) float16/bfloat16/float32 (float64 on CPU), any strides.
        rows: (K,) int64 rows of h.
        ref: (R2, D), h's dtype and device (may be h itself).
        ref_rows: (K,) int64 rows of ref.
        seg: (K,) int64 segment of each pair, in [0, num_segments).
        num_segments: number of outputs (>= 0).
        metric: "dist" or "cos".
        backend: "auto", "torch" (reference), "cpu", "cuda" or "triton".

    Returns:
        (num_segments,) float32 (float64 for float64 inputs).

    Example:
        >>> import torch
        >>> from kexue.probe.kernels import segment_distance
        >>> h = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
        >>> rows, ref_rows = torch.tensor([1, 2, 0]), torch.tensor([0, 0, 0])
        >>> segment_distance(h, rows, h, ref_rows, torch.tensor([0, 0, 2]), 3)
        tensor([7.5000, 0.0000, 0.0000])
    """
    check_float_matrix(h, "h", "(rows, D)")
    check_float_matrix(ref, "ref", "(rows, D)")
    if ref.dtype != h.dtype or ref.device != h.device:
        raise TypeError(f"ref ({ref.dtype}, {ref.device}) must match h ({h.dtype}, {h.device})")
    if ref.shape[1] != h.shape[1]:
        raise ValueError(f"ref has D = {ref.shape[1]} columns but h has {h.shape[1]}")
    for name, t in (("rows", rows), ("ref_rows", ref_rows), ("seg", seg)):
        _check_index_tensor(name, t, h.device)
    K = rows.shape[0]
    if ref_rows.shape[0] != K or seg.shape[0] != K:
        raise ValueError(f"rows, ref_rows and seg must have the same length K, got {K}, {ref_rows.shape[0]}, "
                         f"{seg.shape[0]}")
    _check_int("num_segments", num_segments, minimum=0)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    name = _resolve_segment_distance(backend, str(h.device))
    if name != "cpu" and eager_cpu(h):  # (the C++ kernel checks itself; GPUs check on the device)
        _check_range("rows", rows, h.shape[0], "h row")
        _check_range("ref_rows", ref_rows, ref.shape[0], "ref row")
        _check_range("seg", seg, num_segments, "segment")
    return SEGMENT_DISTANCE.impls[name](h, rows, ref, ref_rows, seg, int(num_segments), metric)


def explain(t: torch.Tensor, backend: str = "auto") -> str:
    """Which backend the probe ops would run for tensors like ``t``, and why."""
    return SEGMENT_DISTANCE.resolve(backend, t.device)[1]


__all__ = ["MASKED_BATCH", "SEGMENT_DISTANCE", "explain", "masked_batch", "segment_distance"]
