"""Triton kernels of kexue.cross_entropy (the "triton" backend), registered as custom ops.

Ops (``torch.library.triton_op``, so torch.compile sees the kernels): ``kexue::ce_fwd_triton``
(per-row loss, lse and an error flag), ``kexue::ce_bwd_triton`` and
``kexue::ce_bwd_inplace_triton`` (the gradient into a new buffer or over the logits); autograd is
the shared formula of kexue.cross_entropy.op.  Semantics: pyext/cross_entropy/reference.py.

Kernels (all math in float32, 64-bit row offsets, any logits strides):
  * forward, grid (N, S): program (i, s) streams its 1/S of row i in BLOCK-wide tiles with an
    online softmax (running max m, Σ exp(a − m), and Σ w (a − m) for label smoothing, rescaled
    when m grows) and writes the three partials; S > 1 splits C when N alone cannot fill the GPU.
    A combine kernel, grid (N,), merges the S partials and computes ℓ_i and lse_i.  Reads the
    logits once: N·C loads, ~N·C·(exp + 5) flops, O(N·S) extra memory.
  * backward, grid (N, cdiv(C, BLOCK)): one tile per program, p = exp(a − lse), the gradient
    formula with the per-row upstream gradient g_i, the target column fixed in float32 before
    its single store.  N·C loads + N·C stores, no second N×C buffer (in place: none at all).
An out-of-range target is not a crash: its row's loss is NaN and a device flag is set (the op's
third output); the wrapper raises on CPU tensors (the interpreter) and leaves the NaN and the
flag on GPUs (no host synchronisation).  Nothing here calls ``.item()``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..cross_entropy.op import register_autograd
from ._compat import INTERPRET, apply_interpreter_shims
from ._compat import launch as _launch  # replaced by bench/triton_aot_check.py

if INTERPRET:
    apply_interpreter_shims()
# Tile widths: 4096 float32 per tile keeps a tile in registers with 8 warps on GPUs; the
# interpreter uses small tiles so tests cover several tiles and splits per row.
FWD_BLOCK = 128 if INTERPRET else 4096
BWD_BLOCK = 128 if INTERPRET else 4096
TILE_WARPS = 8  # warps of the 4096-wide kernels: 16 float32 of a tile per thread
MAX_SPLITS = 64  # the combine kernel reads all splits of a row in one tile
TARGET_PROGRAMS = 1024 if not INTERPRET else 1  # enough row×split programs to fill a GPU


@triton.jit
def _ce_fwd_partial(logits_ptr, s0, s1, bias_ptr, w_ptr, part_ptr, C, cols_per_split: tl.constexpr,
                    HAS_BIAS: tl.constexpr, HAS_W: tl.constexpr, SMOOTH: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    S = tl.num_programs(1)
    lo = s * cols_per_split
    hi = tl.minimum(lo + cols_per_split, C)
    row = logits_ptr + i * s0
    m = -float("inf")
    acc = 0.0
    sw = 0.0  # Σ w (a − m) over the columns seen
    wseen = 0.0  # Σ w over the columns seen
    # cols_per_split is a compile-time constant: one compile per (C, S) of a model, and loops
    # with runtime bounds do not run under the interpreter with numpy >= 2.4 (triton 3.5)
    for c0 in range(0, cols_per_split, BLOCK):
        cols = lo + c0 + tl.arange(0, BLOCK)
        mask = cols < hi
        a = tl.load(row + cols.to(tl.int64) * s1, mask=mask, other=-float("inf")).to(tl.float32)
        if HAS_BIAS:
            a += tl.load(bias_ptr + cols, mask=mask, other=0.0)
        m_new = tl.maximum(m, tl.max(a, 0))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # all −inf so far: nothing to rescale
        acc = acc * tl.exp(m - m_safe) + tl.sum(tl.exp(a - m_safe), 0)
        if SMOOTH:
            if HAS_W:
                w = tl.load(w_ptr + cols, mask=mask, other=0.0)
            else:
                w = tl.where(mask, 1.0, 0.0)
            sw += tl.where(m == -float("inf"), 0.0, wseen * (m - m_safe))  # re-shift to the new max
            sw += tl.sum(tl.where(mask, w * (a - m_safe), 0.0), 0)
            wseen += tl.sum(w, 0)
        m = m_new
    base = part_ptr + (i * S + s) * 4
    tl.store(base + 0, m)
    tl.store(base + 1, acc)
    tl.store(base + 2, sw)
    tl.store(base + 3, wseen)


@triton.jit
def _ce_fwd_combine(logits_ptr, s0, s1, target_ptr, t_s, bias_ptr, w_ptr, part_ptr, loss_ptr, lse_ptr, flag_ptr,
                    C, S, eps, z, ignore_index, wsum_ptr,
                    HAS_BIAS: tl.constexpr, HAS_W: tl.constexpr, SMOOTH: tl.constexpr, SB: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, SB)
    km = k < S
    base = part_ptr + (i * S + k) * 4
    m = tl.load(base + 0, mask=km, other=-float("inf"))
    acc = tl.load(base + 1, mask=km, other=0.0)
    M = tl.max(m, 0)
    M_safe = tl.where(M == -float("inf"), 0.0, M)
    total = tl.sum(tl.where(km, acc * tl.exp(m - M_safe), 0.0), 0)
    lse = tl.where(M == -float("inf"), M, M_safe + tl.log(total))
    lse = tl.where(M == float("inf"), M, lse)
    tl.store(lse_ptr + i, lse)
    y = tl.load(target_ptr + i * t_s)
    valid = y != ignore_index
    bad = valid & ((y < 0) | (y >= C))
    ys = tl.where(valid & (y >= 0) & (y < C), y, 0)
    a_y = tl.load(logits_ptr + i * s0 + ys * s1).to(tl.float32)
    if HAS_BIAS:
        a_y += tl.load(bias_ptr + ys)
    w_y = 1.0
    if HAS_W:
        w_y = tl.load(w_ptr + ys)
    loss = (1.0 - eps) * w_y * (lse - a_y)
    if SMOOTH:
        sw = tl.load(base + 2, mask=km, other=0.0)
        ws = tl.load(base + 3, mask=km, other=0.0)
        # Σ_c w_c (a_c − M) from the splits' Σ w (a − m_k), then Σ_c w_c (lse − a_c)
        wsum = tl.load(wsum_ptr)
        swM = tl.sum(tl.where(km & (ws > 0), sw + ws * (m - M_safe), 0.0), 0)
        loss += eps / C * (wsum * (lse - M_safe) - swM)
    loss += z * lse * lse
    loss = tl.where(valid, loss, 0.0)
    loss = tl.where(bad, float("nan"), loss)
    tl.store(loss_ptr + i, loss)
    tl.store(flag_ptr, 1, mask=bad)  # benign race: every writer stores 1


@triton.jit
def _ce_bwd(grad_ptr, g_s, logits_ptr, s0, s1, target_ptr, t_s, bias_ptr, w_ptr, lse_ptr, l_s, out_ptr, o0, o1,
            C, eps, z, ignore_index, wsum_ptr, HAS_BIAS: tl.constexpr, HAS_W: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < C
    y = tl.load(target_ptr + i * t_s)
    valid = (y != ignore_index) & (y >= 0) & (y < C)
    ys = tl.where(valid, y, 0)
    g = tl.load(grad_ptr + i * g_s)
    lse = tl.load(lse_ptr + i * l_s)
    a = tl.load(logits_ptr + i * s0 + cols.to(tl.int64) * s1, mask=mask, other=-float("inf")).to(tl.float32)
    if HAS_BIAS:
        a += tl.load(bias_ptr + cols, mask=mask, other=0.0)
    if HAS_W:
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        w_y = tl.load(w_ptr + ys)
    else:
        w = 1.0
        w_y = 1.0
    wsum = tl.load(wsum_ptr)
    coef = g * ((1.0 - eps) * w_y + eps * wsum / C + 2.0 * z * lse)
    grad = coef * tl.exp(a - lse) - g * eps / C * w
    grad = tl.where(cols == ys, grad - g * (1.0 - eps) * w_y, grad)  # target column, float32, stored once
    grad = tl.where(valid, grad, 0.0)
    tl.store(out_ptr + i * o0 + cols.to(tl.int64) * o1, grad.to(out_ptr.dtype.element_ty), mask=mask)


def _dummy(x: torch.Tensor) -> torch.Tensor:
    return torch.empty((1,), dtype=torch.float32, device=x.device)


def _wsum(weight: torch.Tensor | None, C: int, like: torch.Tensor) -> torch.Tensor:
    """Σ_c w_c as a 1-element device tensor (read by the kernels: no host synchronisation)."""
    if weight is None:
        return torch.full((1,), float(C), dtype=torch.float32, device=like.device)
    return weight.sum().reshape(1).to(torch.float32)


def _check_dtype(logits: torch.Tensor) -> None:
    if logits.dtype == torch.float64:
        raise TypeError("the Triton cross-entropy kernels take float16/bfloat16/float32 logits, not float64 "
                        "(use backend='cpu' or 'torch')")


@triton_op("kexue::ce_fwd_triton", mutates_args=())
def ce_fwd_triton(logits: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None, weight: torch.Tensor | None,
                  label_smoothing: float, z_loss: float, ignore_index: int, inplace_backward: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    N, C = logits.shape
    loss = torch.empty((N,), dtype=torch.float32, device=logits.device)
    lse = torch.empty((N,), dtype=torch.float32, device=logits.device)
    flag = torch.zeros((1,), dtype=torch.int32, device=logits.device)
    if N == 0:
        return loss, lse, flag
    nblocks = triton.cdiv(C, FWD_BLOCK)
    S = max(1, min(MAX_SPLITS, nblocks, triton.cdiv(TARGET_PROGRAMS, N)))
    if INTERPRET:
        S = min(nblocks, 3)  # exercise the split path in tests
    cols_per_split = triton.cdiv(nblocks, S) * FWD_BLOCK
    S = triton.cdiv(C, cols_per_split)
    part = torch.empty((N, S, 4), dtype=torch.float32, device=logits.device)
    b = bias if bias is not None else _dummy(logits)
    w = weight if weight is not None else _dummy(logits)
    smooth = label_smoothing != 0.0
    wsum = _wsum(weight, C, logits)
    _launch(_ce_fwd_partial, (N, S), logits, logits.stride(0), logits.stride(1), b, w, part, C, cols_per_split,
            HAS_BIAS=bias is not None, HAS_W=weight is not None, SMOOTH=smooth, BLOCK=FWD_BLOCK,
            num_warps=TILE_WARPS)
    _launch(_ce_fwd_combine, (N,), logits, logits.stride(0), logits.stride(1), target, target.stride(0), b, w,
            part, loss, lse, flag, C, S, label_smoothing, z_loss, ignore_index, wsum,
            HAS_BIAS=bias is not None, HAS_W=weight is not None, SMOOTH=smooth, SB=triton.next_power_of_2(S))
    return loss, lse, flag


def _launch_bwd(grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss, ignore_index, out):
    N, C = logits.shape
    if N == 0:
        return
    b = bias if bias is not None else _dummy(logits)
    w = weight if weight is not None else _dummy(logits)
    g = grad_loss.to(torch.float32)
    _launch(
        _ce_bwd, (N, triton.cdiv(C, BWD_BLOCK)),
        g, g.stride(0), logits, logits.stride(0), logits.stride(1), target, target.stride(0), b, w, lse,
        lse.stride(0), out, out.stride(0), out.stride(1), C, label_smoothing, z_loss, ignore_index,
        _wsum(weight, C, logits), HAS_BIAS=bias is not None, HAS_W=weight is not None, BLOCK=BWD_BLOCK,
        num_warps=TILE_WARPS)


@triton_op("kexue::ce_bwd_triton", mutates_args=())
def ce_bwd_triton(grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None,
                  weight: torch.Tensor | None, lse: torch.Tensor, label_smoothing: float, z_loss: float,
                  ignore_index: int) -> torch.Tensor:
    out = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    _launch_bwd(grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss, ignore_index, out)
    return out


@triton_op("kexue::ce_bwd_inplace_triton", mutates_args={"logits"})
def ce_bwd_inplace_triton(grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                          bias: torch.Tensor | None, weight: torch.Tensor | None, lse: torch.Tensor,
                          label_smoothing: float, z_loss: float, ignore_index: int) -> None:
    # safe in place: each program reads only its own tile of the row before writing it
    _launch_bwd(grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss, ignore_index, logits)


register_autograd("kexue::ce_fwd_triton", torch.ops.kexue.ce_bwd_triton.default,
                  torch.ops.kexue.ce_bwd_inplace_triton.default)


def fwd_rows(logits, target, bias, weight, label_smoothing, z_loss, ignore_index):
    """(ℓ, lse) of a chunk for linear_cross_entropy (raises on a bad target for CPU tensors)."""
    loss, lse, flag = torch.ops.kexue.ce_fwd_triton(logits, target, bias, weight, label_smoothing, z_loss,
                                                     ignore_index, False)
    _raise_on_flag(flag, logits)
    return loss, lse


def bwd_rows_inplace(grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss, ignore_index):
    torch.ops.kexue.ce_bwd_inplace_triton(grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss,
                                          ignore_index)


def _raise_on_flag(flag: torch.Tensor, logits: torch.Tensor) -> None:
    # CPU tensors (the interpreter): read the flag, a plain memory read.  GPUs: never read it
    # here (that would synchronise); the bad rows' losses are NaN and cross_entropy_rows_triton
    # keeps the flag in LAST_ERROR_FLAG for who wants to check.
    if logits.device.type == "cpu" and not torch.compiler.is_compiling() and bool(flag[0] != 0):
        raise ValueError("kexue.cross_entropy (triton): a target is out of range: class indices must be in "
                         f"[0, {logits.shape[1]}) or equal ignore_index")


LAST_ERROR_FLAG: dict[str, torch.Tensor] = {}


def cross_entropy_rows_triton(logits, target, bias, weight, label_smoothing, z_loss, ignore_index, inplace_backward):
    """The "triton" backend of kexue.cross_entropy: (ℓ, lse) in float32."""
    _check_dtype(logits)
    b = None if bias is None else bias.to(torch.float32).contiguous()
    w = None if weight is None else weight.to(torch.float32).contiguous()
    loss, lse, flag = torch.ops.kexue.ce_fwd_triton(logits, target, b, w, label_smoothing, z_loss, ignore_index,
                                                     inplace_backward)
    if not torch.compiler.is_compiling():
        LAST_ERROR_FLAG[str(logits.device)] = flag
    _raise_on_flag(flag, logits)
    return loss, lse
