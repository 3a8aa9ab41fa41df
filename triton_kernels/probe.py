"""Triton kernels of the probe ops (the "triton" backend), registered as custom ops.

Ops: ``kexue::probe_masked_batch_triton`` and ``kexue::probe_segment_distance_triton``, with the
signatures of the native ops (csrc/registration.cpp); autograd of the latter is the shared one of
kexue.probe.kernels_op.  Semantics: pyext/probe/kernels_reference.py.

Kernels (64-bit offsets throughout):
  * masked batch, grid (K, cdiv(length, BLOCK_T)): program (k, b) reads row k's (s, i, j), the
    sentence's offsets and the two word spans (a handful of scalar loads), then writes BLOCK_T
    columns of input_ids and attention_mask with masked loads of the tokens.  K·length·16 bytes
    written, no arithmetic.  An invalid row is written as padding and sets a device flag.
  * segment distance, grid (cdiv(K, BLOCK_K),): program p takes BLOCK_K pairs, walks D in
    BLOCK_D-wide tiles of the gathered rows (masked loads, any strides, float32 accumulation of
    Σ(a−b)², or a·b, a·a, b·b), forms d_k, then adds d_k and 1 to its segment's sum and count
    with atomics (tl.atomic_add; the summation order, and so the last bits of the mean, may vary
    between runs on GPUs).  Out-of-range indices are skipped and set a device flag.  A final
    O(num_segments) division (tensor ops) gives the means.  2·K·D loads, ~3·K·D flops.
The flags raise a ValueError on CPU tensors (the interpreter) and become ``torch._assert_async``
on GPUs (no host synchronisation).
"""

from __future__ import annotations

import inspect

import torch
import triton
import triton.language as tl

from ..probe.kernels_op import fake_masked_batch, fake_segment_distance, register_segment_autograd
from ._compat import INTERPRET, apply_interpreter_shims
from ._compat import launch as _launch  # replaced by bench/triton_aot_check.py

if INTERPRET:
    apply_interpreter_shims()

# Tile sizes.  GPUs: up to 1024 columns of a masked row per program; 16 pairs × 128 columns per
# distance tile (2K values per operand: registers of 4 warps).  The interpreter uses small tiles
# so tests cover several tiles per row and several programs.
MAX_BLOCK_T = 16 if INTERPRET else 1024
BLOCK_K = 4 if INTERPRET else 16
BLOCK_D = 16 if INTERPRET else 128
COS_EPS = 1e-8


@triton.jit
def _masked_batch_kernel(tokens_ptr, num_tokens, tok_off_ptr, word_off_ptr, n_sent, ws_ptr, we_ptr, num_words,
                         seqs_ptr, ids_ptr, att_ptr, flag_ptr, mask_id, pad_id, length, BLOCK_T: tl.constexpr):
    k = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1)
    s = tl.load(seqs_ptr + 3 * k)
    wi = tl.load(seqs_ptr + 3 * k + 1)
    wj = tl.load(seqs_ptr + 3 * k + 2)
    ok = (s >= 0) & (s < n_sent)
    t0 = tl.load(tok_off_ptr + s, mask=ok, other=0)
    t1 = tl.load(tok_off_ptr + s + 1, mask=ok, other=0)
    w0 = tl.load(word_off_ptr + s, mask=ok, other=0)
    w1 = tl.load(word_off_ptr + s + 1, mask=ok, other=0)
    ok = ok & (t0 >= 0) & (t0 <= t1) & (t1 <= num_tokens) & (t1 - t0 <= length)
    ok = ok & (w0 >= 0) & (w0 <= w1) & (w1 <= num_words)
    n = t1 - t0
    nw = w1 - w0
    # word i's span [a0, b0), word j's [a1, b1) (empty for -1)
    ok = ok & (wi >= -1) & (wi < nw) & (wj >= -1) & (wj < nw)
    has_i = ok & (wi >= 0)
    has_j = ok & (wj >= 0)
    a0 = tl.load(ws_ptr + w0 + wi, mask=has_i, other=0)
    b0 = tl.load(we_ptr + w0 + wi, mask=has_i, other=0)
    a1 = tl.load(ws_ptr + w0 + wj, mask=has_j, other=0)
    b1 = tl.load(we_ptr + w0 + wj, mask=has_j, other=0)
    ok = ok & ((a0 >= 0) & (a0 <= b0) & (b0 <= n)) & ((a1 >= 0) & (a1 <= b1) & (b1 <= n))
    t = b * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
    cols = t < length
    inside = ok & (t < n)
    tok = tl.load(tokens_ptr + t0 + t, mask=cols & inside, other=0)
    masked = ((t >= a0) & (t < b0)) | ((t >= a1) & (t < b1))
    ids = tl.where(inside, tl.where(masked, mask_id, tok), pad_id)
    tl.store(ids_ptr + k * length + t, ids, mask=cols)
    tl.store(att_ptr + k * length + t, inside.to(tl.int64), mask=cols)
    tl.store(flag_ptr, 1, mask=(b == 0) & ~ok)  # benign race: every writer stores 1


@triton.jit
def _segment_distance_kernel(h_ptr, h0, h1, R, ref_ptr, r0, r1, R2, rows_ptr, ref_rows_ptr, seg_ptr, sums_ptr,
                             cnt_ptr, flag_ptr, K, D, S, COS: tl.constexpr, BLOCK_K: tl.constexpr,
                             BLOCK_D: tl.constexpr):
    ks = tl.program_id(0).to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < K
    r = tl.load(rows_ptr + ks, mask=kmask, other=0)
    q = tl.load(ref_rows_ptr + ks, mask=kmask, other=0)
    s = tl.load(seg_ptr + ks, mask=kmask, other=0)
    ok = kmask & (r >= 0) & (r < R) & (q >= 0) & (q < R2) & (s >= 0) & (s < S)
    a_rows = h_ptr + tl.where(ok, r, 0) * h0
    b_rows = ref_ptr + tl.where(ok, q, 0) * r0
    s0 = tl.zeros([BLOCK_K], dtype=tl.float32)
    s1 = tl.zeros([BLOCK_K], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_K], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
        m = ok[:, None] & (cols < D)[None, :]
        a = tl.load(a_rows[:, None] + cols[None, :] * h1, mask=m, other=0.0).to(tl.float32)
        bb = tl.load(b_rows[:, None] + cols[None, :] * r1, mask=m, other=0.0).to(tl.float32)
        if COS:
            s0 += tl.sum(a * bb, 1)
            s1 += tl.sum(a * a, 1)
            s2 += tl.sum(bb * bb, 1)
        else:
            e = a - bb
            s0 += tl.sum(e * e, 1)
    if COS:
        d = 1.0 - s0 / tl.maximum(tl.sqrt(s1) * tl.sqrt(s2), 1e-8)
    else:
        d = tl.sqrt(s0)
    tl.atomic_add(sums_ptr + s, d, mask=ok)
    tl.atomic_add(cnt_ptr + s, tl.full([BLOCK_K], 1, tl.int32), mask=ok)
    tl.store(flag_ptr + ks * 0, tl.full([BLOCK_K], 1, tl.int32), mask=kmask & ~ok)  # benign race


def _nonempty(t: torch.Tensor) -> torch.Tensor:
    """An empty index tensor is passed as a one-element dummy (never read: every load is masked)."""
    return t if t.numel() else torch.zeros((1,), dtype=t.dtype, device=t.device)


def _raise_or_assert(flag: torch.Tensor, message: str) -> None:
    # CPU tensors (the interpreter): read the flag, a plain memory read.  GPUs: an asynchronous
    # device assertion, never a host synchronisation.
    if flag.device.type == "cpu":
        if not torch.compiler.is_compiling() and bool(flag[0] != 0):
            raise ValueError(message)
    else:
        torch._assert_async(flag[0] == 0, message)


def _masked_batch_impl(tokens: torch.Tensor, tok_offsets: torch.Tensor, word_start: torch.Tensor,
                       word_end: torch.Tensor, word_offsets: torch.Tensor, seqs: torch.Tensor, mask_id: int,
                       pad_id: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    K = seqs.shape[0]
    dev = seqs.device
    ids = torch.empty((K, length), dtype=torch.int64, device=dev)
    att = torch.empty((K, length), dtype=torch.int64, device=dev)
    flag = torch.zeros((1,), dtype=torch.int32, device=dev)
    if K == 0:
        return ids, att
    block_t = min(MAX_BLOCK_T, triton.next_power_of_2(max(length, 1)))
    grid = (K, max(1, triton.cdiv(length, block_t)))  # length 0: one program per row still checks it
    _launch(
        _masked_batch_kernel, grid,
        _nonempty(tokens.contiguous()), tokens.shape[0], tok_offsets.contiguous(), word_offsets.contiguous(),
        tok_offsets.shape[0] - 1, _nonempty(word_start.contiguous()), _nonempty(word_end.contiguous()),
        word_start.shape[0], seqs.contiguous(), ids, att, flag, mask_id, pad_id, length, BLOCK_T=block_t)
    _raise_or_assert(flag, "kexue.probe.masked_batch (triton): a row of seqs is invalid (sentence or word index out "
                           "of range, a word span outside its sentence, or a sentence longer than length)")
    return ids, att


def _segment_distance_impl(h: torch.Tensor, rows: torch.Tensor, ref: torch.Tensor, ref_rows: torch.Tensor,
                           seg: torch.Tensor, num_segments: int, metric: str) -> torch.Tensor:
    if h.dtype == torch.float64:
        raise TypeError("the Triton probe kernels take float16/bfloat16/float32 h, not float64 "
                        "(use backend='cpu' or 'torch')")
    if metric not in ("dist", "cos"):
        raise ValueError(f"metric must be 'dist' or 'cos', got {metric!r}")
    K, D = rows.shape[0], h.shape[1]
    dev = h.device
    sums = torch.zeros((num_segments,), dtype=torch.float32, device=dev)
    counts = torch.zeros((num_segments,), dtype=torch.int32, device=dev)
    flag = torch.zeros((1,), dtype=torch.int32, device=dev)
    if K > 0:
        hh = h if h.numel() else torch.zeros((1, max(D, 1)), dtype=h.dtype, device=dev)
        rr = ref if ref.numel() else torch.zeros((1, max(D, 1)), dtype=ref.dtype, device=dev)
        _launch(
            _segment_distance_kernel, (triton.cdiv(K, BLOCK_K),),
            hh, hh.stride(0), hh.stride(1), h.shape[0], rr, rr.stride(0), rr.stride(1), ref.shape[0],
            rows.contiguous(), ref_rows.contiguous(), seg.contiguous(), _nonempty(sums), _nonempty(counts), flag,
            K, D, num_segments, COS=metric == "cos", BLOCK_K=BLOCK_K, BLOCK_D=BLOCK_D)
        _raise_or_assert(flag, "kexue.probe.segment_distance (triton): an index is out of range (rows must be in "
                               "[0, R), ref_rows in [0, R2), seg in [0, num_segments))")
    return sums / counts.clamp_min(1).to(torch.float32)


MASKED_BATCH_SCHEMA = (
    "(Tensor tokens, Tensor tok_offsets, Tensor word_start, Tensor word_end, Tensor word_offsets, Tensor seqs, "
    "int mask_id, int pad_id, int length) -> (Tensor input_ids, Tensor attention_mask)"
)
SEGMENT_DISTANCE_SCHEMA = (
    "(Tensor h, Tensor rows, Tensor ref, Tensor ref_rows, Tensor seg, int num_segments, str metric) -> Tensor"
)


def _register(name: str, impl, schema: str, fake):
    """torch.library.triton_op (torch.compile traces into the kernels) on GPUs.  Under
    TRITON_INTERPRET=1 the kernels are Python functions that wrap_triton cannot trace, so there
    the op is an opaque custom_op with a fake kernel."""
    if INTERPRET:
        op = torch.library.custom_op(name, impl, mutates_args=(), schema=schema)
        op.register_fake(fake)
        return op
    kwargs = {"schema": schema} if "schema" in inspect.signature(torch.library.triton_op).parameters else {}
    return torch.library.triton_op(name, impl, mutates_args=(), **kwargs)


masked_batch_op = _register("kexue::probe_masked_batch_triton", _masked_batch_impl, MASKED_BATCH_SCHEMA,
                            fake_masked_batch)
segment_distance_op = _register("kexue::probe_segment_distance_triton", _segment_distance_impl,
                                SEGMENT_DISTANCE_SCHEMA, fake_segment_distance)
register_segment_autograd("kexue::probe_segment_distance_triton")


def masked_batch_triton(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, mask_id, pad_id, length):
    """The "triton" backend of kexue.probe.kernels.masked_batch."""
    return torch.ops.kexue.probe_masked_batch_triton(tokens, tok_offsets, word_start, word_end, word_offsets, seqs,
                                                     int(mask_id), int(pad_id), int(length))


def segment_distance_triton(h, rows, ref, ref_rows, seg, num_segments, metric):
    """The "triton" backend of kexue.probe.kernels.segment_distance (float32 output)."""
    return torch.ops.kexue.probe_segment_distance_triton(h, rows, ref, ref_rows, seg, int(num_segments), metric)
