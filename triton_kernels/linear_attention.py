"""Triton backend of linear attention: chunked kernels on tensor cores, forward and backward.

Semantics: kexue/linear_attention/reference.py.  Notation for one (sequence, query head h, kv head
g = h // (H // Hkv)): a_i = φ(q_i), b_j = m_j φ(k_j) (m_j = 0 for padded keys), V' = [V, 1] (the
normaliser is one more value column), state S' = [S, z] (F × (Dv + 1)), chunks of C tokens.

Forward, per chunk t (rows i, j of the chunk; S', z before the chunk)::

    P     = tril(A Bᵀ)                      (C × C, masked to j <= i)
    num   = P V + A S            den = rowsum(P) + A z      (the normaliser needs no cumsum of K)
    out   = num / (den + eps)    S += Bᵀ V,   z += colsum(B)

Backward (w_i = 1 / (den_i + eps), δ_i = do_i · out_i, do' = [do, -δ]; w = 1, δ = 0 without
normalisation; X = tril(do' V'ᵀ) = tril(do Vᵀ - δ 1ᵀ); R' = [R, r] the reverse state, seeded with
(grad_S, grad_z))::

    dA = w ∘ (X B + do Sᵀ - δ zᵀ)                        (forward in time, carries S, z)
    dV = tril(Ã Bᵀ)ᵀ do + B R,   dB = Xᵀ Ã + V Rᵀ + 1 rᵀ  (backward in time, Ã = w ∘ A)
    R += Ãᵀ do,   r += -Ãᵀ δ,    dS0 = R, dz0 = r at the start
    dq = J_φ(q)ᵀ dA,   dk = m ∘ J_φ(k)ᵀ dB               (feature maps fused, both linear in dA)

"taylor" has F = Dk + 1 features whose first is the constant 1: the kernels keep that feature
apart (row 0 of S and z, a vector and a scalar) so the tensor-core tiles stay Dk wide.

Parallelism.  A program owns (sequence, segment, query head, block of BV value columns) and walks
the chunks of its segment carrying its F × BV slice of the state in registers (float32).  A
sequence is cut into ``P`` segments (P chosen from the grid size) so that short batches still fill
the GPU: a first kernel sums each segment's keys-values (``_la_segment_state_kernel``, every
segment in parallel), a prefix sum over the P partial states (torch, P × F × Dv per head) gives
each segment its starting state, and the segments then run in parallel.  Nothing of size
N × F × Dv is ever stored; the backward saves only q, k, v (mask, initial state) and recomputes
the chunk states the same way.  Non-causal attention is the same machinery with one total state.

Dtypes: dot operands are in the input dtype (float16/bfloat16 tensor cores; float32 uses
``FP32_DOT_PRECISION``; float64 "ieee"), accumulation and states in float32 (float64 for float64
inputs).  float16 tiles derived from the state (S, R, P, X, w ∘ A) are scaled by a power of two
before the cast so they never overflow float16's range (an exact rescale, undone after the dot).
"""

from __future__ import annotations

import inspect
import os

import torch
import triton
import triton.language as tl

from ..linear_attention.feature_maps import FEATURE_MAPS, NORMALIZE_EPS, feature_dim
from ..linear_attention.op import fake_backward, fake_forward, register_autograd
from ._compat import HAS_FP64_DOT, INTERPRET, apply_interpreter_shims, autotune, launch

if INTERPRET:
    apply_interpreter_shims()
# float32 inputs: "tf32x3" (three tf32 tensor-core products, about float32 accuracy) or "ieee".
FP32_DOT_PRECISION = os.environ.get("KEXUE_TRITON_FP32_DOT", "tf32x3")
FMAP_ID = {name: i for i, name in enumerate(FEATURE_MAPS)}  # none, elu, relu, softmax, taylor
TAYLOR = FMAP_ID["taylor"]
SOFTMAX = FMAP_ID["softmax"]
assert NORMALIZE_EPS == 1e-12, "the kernels hard-code the taylor map's clamp of ‖x‖ (1e-12)"
# Segments per sequence: None = chosen from the grid size; an int forces it (tests).
FORCE_SEGMENTS: int | None = None


SEG = 64  # segment boundaries fall on multiples of SEG tokens; every chunk size BT divides it


#: Autotune space on a GPU (``KEXUE_TRITON_AUTOTUNE``): "full" (default) tries chunk sizes ×
#: warps × pipeline depths, 8 configs per kernel and key; "small" 2 (both chunk sizes, 8 warps);
#: "off" one (the smaller chunk, 8 warps).  Every config compiles (seconds each) before the first
#: call of a new key, so correctness runs on a GPU use "off" and short benchmark sessions "small".
#: 8 warps because they spill least: compiled for sm_90 (bench/triton_aot_check.py --quick
#: --dtype bfloat16, triton 3.6) the causal D=128 backward dk/dv spills 24-28 B with BT=32 and 8
#: warps, 300-1000 B with 4; the forward and dq have spill-free 8-warp configs.
AUTOTUNE = os.environ.get("KEXUE_TRITON_AUTOTUNE", "full")
if AUTOTUNE not in ("full", "small", "off"):
    raise ValueError(f"KEXUE_TRITON_AUTOTUNE must be full, small or off, got {AUTOTUNE!r}")


def _configs(big: bool):
    """Autotune space: chunk size BT and launch shape.  ``big``: 256-wide feature tiles."""
    if INTERPRET:
        return [triton.Config({"BT": 32}, num_warps=4, num_stages=1)]
    bts = (16, 32) if big else (32, 64)
    if AUTOTUNE == "off":
        return [triton.Config({"BT": bts[0]}, num_warps=8, num_stages=2)]
    if AUTOTUNE == "small":
        return [triton.Config({"BT": bt}, num_warps=8, num_stages=2) for bt in bts]
    return [triton.Config({"BT": bt}, num_warps=w, num_stages=s) for bt in bts for w in (4, 8) for s in (1, 2)]


_AUTOTUNE_KEY = ["BK", "BV", "FMAP", "CAUSAL", "NORMALIZE", "IS_F16", "IS_F64"]


def _autotuned(fn):
    """(autotuned kernel for BK <= 128, for BK = 256): one JIT function, two config spaces."""
    return autotune(_configs(False), _AUTOTUNE_KEY)(fn), autotune(_configs(True), _AUTOTUNE_KEY)(fn)


# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _phi(x, cols, Dk, FMAP: tl.constexpr):
    """φ over the Dk raw features of a (rows, BK) float tile; padded columns give 0.
    "taylor" returns x / max(‖x‖, 1e-12) (its constant feature 1 is handled by the caller)."""
    valid = (cols < Dk)[None, :]
    if FMAP == 1:  # elu + 1
        y = tl.where(x > 0, x + 1.0, tl.exp(x))
    elif FMAP == 2:  # relu
        y = tl.maximum(x, 0.0)
    elif FMAP == 3:  # softmax over the features
        xm = tl.where(valid, x, float("-inf"))
        e = tl.exp(xm - tl.max(xm, 1)[:, None])
        y = e / tl.sum(e, 1)[:, None]
    elif FMAP == 4:  # taylor: normalised x
        n = tl.sqrt(tl.sum(x * x, 1))
        y = x / tl.maximum(n, 1e-12)[:, None]
    else:
        y = x
    return tl.where(valid, y, 0.0)


@triton.jit
def _phi_bwd(x, y, dy, cols, Dk, FMAP: tl.constexpr):
    """dx from dy = dL/dφ(x) (y = _phi(x)); linear in dy, so partial dy give partial dx."""
    if FMAP == 1:
        dx = tl.where(x > 0, dy, dy * y)
    elif FMAP == 2:
        dx = tl.where(x > 0, dy, 0.0)
    elif FMAP == 3:
        dx = y * (dy - tl.sum(y * dy, 1)[:, None])
    elif FMAP == 4:  # d(x / max(n, eps)): torch's clamp_min passes the gradient where n >= eps
        n = tl.sqrt(tl.sum(x * x, 1))
        c = tl.maximum(n, 1e-12)
        proj = tl.where(n >= 1e-12, tl.sum(y * dy, 1), 0.0)
        dx = (dy - y * proj[:, None]) / c[:, None]
    else:
        dx = dy
    return tl.where((cols < Dk)[None, :], dx, 0.0)


@triton.jit
def _pow2_scale(x, SCALE: tl.constexpr):
    """(x / s, s) with s a power of two putting max|x| in [2^13, 2^14): float16 dot operands
    derived from states never overflow (65504) and keep full relative precision.  s = 1 when
    SCALE is off (bfloat16, float32, float64)."""
    if SCALE:
        m = tl.maximum(tl.max(tl.max(tl.abs(x.to(tl.float32)), 1), 0), 1e-30)
        p = (m.to(tl.int32, bitcast=True) & 0x7F800000).to(tl.float32, bitcast=True)
        s = p * (1.0 / 8192.0)
        return x * (1.0 / s), s
    else:
        return x, 1.0


@triton.jit
def _fzeros2(M: tl.constexpr, N: tl.constexpr, IS_F64: tl.constexpr):
    if IS_F64:
        return tl.zeros([M, N], dtype=tl.float64)
    else:
        return tl.zeros([M, N], dtype=tl.float32)


@triton.jit
def _fzeros1(M: tl.constexpr, IS_F64: tl.constexpr):
    if IS_F64:
        return tl.zeros([M], dtype=tl.float64)
    else:
        return tl.zeros([M], dtype=tl.float32)


@triton.jit
def _acc(x, IS_F64: tl.constexpr):
    if IS_F64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def _program(NV, H, P, cu_ptr, N, IS_VARLEN: tl.constexpr):
    """Decodes the flat program id: (V block, query head, sequence, segment) and the sequence's
    token range [bos, bos + L) (batch index b: B rows, or 0 with cu_seqlens)."""
    pid = tl.program_id(0)
    i_v = pid % NV
    t = pid // NV
    i_h = t % H
    t = t // H
    i_p = t % P
    i_s = t // P
    if IS_VARLEN:
        bos = tl.load(cu_ptr + i_s).to(tl.int64)
        L = (tl.load(cu_ptr + i_s + 1).to(tl.int64) - bos).to(tl.int32)
        i_b = i_s * 0
    else:
        bos = (i_s * 0).to(tl.int64)
        L = N
        i_b = i_s
    return i_v, i_h, i_s, i_p, i_b, bos, L


@triton.jit
def _segment_chunks(L, i_p, P, BT: tl.constexpr, SEG: tl.constexpr):
    """Chunks [c_lo, c_hi) of BT tokens of segment i_p (of P) of a sequence of L tokens.  Segment
    boundaries are multiples of SEG tokens whatever BT, so kernels tuned to different chunk sizes
    agree on them.  A segment may be empty."""
    per = tl.cdiv(tl.cdiv(L, SEG), P) * SEG
    t_lo = tl.minimum(i_p * per, L)
    t_hi = tl.minimum(t_lo + per, L)
    return tl.cdiv(t_lo, BT), tl.cdiv(t_hi, BT)  # t_lo: a multiple of SEG, or L (empty segment)


@triton.jit
def _tile_offsets(base, tok, s_n, cols, s_d):
    """Element offsets base + tok·s_n + cols·s_d of a (rows, cols) tile, in int64.  tok is int64;
    cols (an int32 arange) is widened before its product: on a GPU an int32 argument times an
    int32 index wraps at 2^31, and (D − 1)·s_d passes it for a permuted input whose last dim has
    a large stride (e.g. s_d = B·H·N of a (Dk, B, H, N) buffer seen as (B, H, N, Dk))."""
    return base + tok[:, None] * s_n + cols[None, :].to(tl.int64) * s_d


@triton.jit
def _load_raw(ptr, base, tok, rvalid, s_n, cols, D, s_d):
    """(BT, BD) tile in the tensor's dtype, rows tok (int64 token indices), columns cols < D."""
    return tl.load(ptr + _tile_offsets(base, tok, s_n, cols, s_d),
                   mask=rvalid[:, None] & (cols < D)[None, :], other=0.0)


@triton.jit
def _load_phi(ptr, base, tok, rvalid, s_n, cols, D, s_d, FMAP: tl.constexpr, IS_F64: tl.constexpr):
    """(raw tile in the accumulation dtype, φ of it with padded rows zeroed)."""
    x = _acc(_load_raw(ptr, base, tok, rvalid, s_n, cols, D, s_d), IS_F64)
    return x, tl.where(rvalid[:, None], _phi(x, cols, D, FMAP), 0.0)


@triton.jit
def _key_valid(mask_ptr, i_b, tok, rvalid, s_mb, s_mn, HAS_MASK: tl.constexpr):
    if HAS_MASK:
        pad = tl.load(mask_ptr + i_b.to(tl.int64) * s_mb + tok * s_mn, mask=rvalid, other=1).to(tl.int32)
        return rvalid & (pad == 0)
    else:
        return rvalid


@triton.jit
def _load_vec(ptr, off, rvalid, IS_F64: tl.constexpr):
    return _acc(tl.load(ptr + off, mask=rvalid, other=0.0), IS_F64)


@triton.jit
def _load_state(S_ptr, z_ptr, sS_s, sS_h, sS_f, sS_d, sz_s, sz_h, sz_f, i_s, i_h, rk, cv, Dk, Dv,
                HAS_ONE: tl.constexpr, IS_F64: tl.constexpr):
    """(S hat rows (BK, BV), z hat (BK), S row 0 (BV), z[0]) of a (.., F, Dv) / (.., F) state;
    the hat rows start at HAS_ONE."""
    baseS = S_ptr + i_s.to(tl.int64) * sS_s + i_h.to(tl.int64) * sS_h
    baseZ = z_ptr + i_s.to(tl.int64) * sz_s + i_h.to(tl.int64) * sz_h
    kmask = rk < Dk
    vmask = cv < Dv
    rk1 = (rk + HAS_ONE).to(tl.int64)  # (int64 offsets: a state of any strides, see _tile_offsets)
    S = _acc(tl.load(_tile_offsets(baseS, rk1, sS_f, cv, sS_d),
                     mask=kmask[:, None] & vmask[None, :], other=0.0), IS_F64)
    z = _acc(tl.load(baseZ + rk1 * sz_f, mask=kmask, other=0.0), IS_F64)
    if HAS_ONE:
        s1 = _acc(tl.load(baseS + cv.to(tl.int64) * sS_d, mask=vmask, other=0.0), IS_F64)
        z1 = _acc(tl.load(baseZ), IS_F64)
    else:
        s1 = tl.sum(S, 0) * 0.0
        z1 = tl.sum(s1, 0)
    return S, z, s1, z1


@triton.jit
def _store_state(S_ptr, z_ptr, sS_s, sS_h, sS_f, sS_d, sz_s, sz_h, sz_f, i_s, i_h, rk, cv, Dk, Dv,
                 S, z, s1, z1, store_z, HAS_ONE: tl.constexpr):
    baseS = S_ptr + i_s.to(tl.int64) * sS_s + i_h.to(tl.int64) * sS_h
    baseZ = z_ptr + i_s.to(tl.int64) * sz_s + i_h.to(tl.int64) * sz_h
    kmask = rk < Dk
    vmask = cv < Dv
    rk1 = (rk + HAS_ONE).to(tl.int64)
    tl.store(_tile_offsets(baseS, rk1, sS_f, cv, sS_d),
             S.to(S_ptr.dtype.element_ty), mask=kmask[:, None] & vmask[None, :])
    tl.store(baseZ + rk1 * sz_f, z.to(z_ptr.dtype.element_ty), mask=kmask & store_z)
    if HAS_ONE:
        tl.store(baseS + cv.to(tl.int64) * sS_d, s1.to(S_ptr.dtype.element_ty), mask=vmask)
        tl.store(baseZ + rk * 0, (z1 + 0.0 * rk).to(z_ptr.dtype.element_ty), mask=(rk == 0) & store_z)


# ----------------------------------------------------------------------------------------------
# Kernel 1: per-segment state sums (both directions)
# ----------------------------------------------------------------------------------------------
# Forward mode (BWD=False), one program per (V block, kv head, sequence, segment):
#     ΔS' = Σ_{chunks of the segment} [m, B]ᵀ [V, 1]       (F × (Dv + 1): ΔS and Δz)
# Backward mode (BWD=True), one program per (V block, query head, sequence, segment):
#     ΔR' = Σ_{chunks} [w, Ã]ᵀ [do, -δ]                     (Ã = w ∘ φ(q))
# Segment s then starts from S0 + Σ_{s' < s} ΔS (prefix sum in torch, P × F × Dv per head).
# Cost per chunk: one (F × C) · (C × BV) product (2·C·F·BV FLOP), loads of a C × Dk and a C × BV
# tile; writes P·F·Dv floats per head.  Grid: NV · Hx · nseq · P programs.
@triton.jit
def _la_segment_state_kernel(
    x_ptr, s_xb, s_xh, s_xn, s_xd,      # k (forward) or q (backward)
    y_ptr, s_yb, s_yh, s_yn, s_yd,      # v (forward) or do (backward)
    mask_ptr, s_mb, s_mn,
    w_ptr, dl_ptr,                      # backward: w, δ (B, H, N) contiguous
    ws_ptr, wz_ptr,                     # out: (nseq, P, Hx, F, Dv), (nseq, P, Hx, F) contiguous
    cu_ptr,
    N, Hx, Dk, Dv, F, P, NV,
    FMAP: tl.constexpr, HAS_ONE: tl.constexpr, BWD: tl.constexpr, HAS_MASK: tl.constexpr,
    IS_VARLEN: tl.constexpr, CAUSAL: tl.constexpr, NORMALIZE: tl.constexpr,
    IS_F16: tl.constexpr, IS_F64: tl.constexpr, DOT_PREC: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SEG: tl.constexpr,
):
    i_v, i_h, i_s, i_p, i_b, bos, L = _program(NV, Hx, P, cu_ptr, N, IS_VARLEN)
    c_lo, c_hi = _segment_chunks(L, i_p, P, BT, SEG)
    rk = tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    ar = tl.arange(0, BT)
    DT = y_ptr.dtype.element_ty
    x_base = i_b.to(tl.int64) * s_xb + i_h.to(tl.int64) * s_xh
    y_base = i_b.to(tl.int64) * s_yb + i_h.to(tl.int64) * s_yh
    st_base = (i_b.to(tl.int64) * Hx + i_h) * N
    S = _fzeros2(BK, BV, IS_F64)
    z = _fzeros1(BK, IS_F64)
    s1 = _fzeros1(BV, IS_F64)
    z1 = tl.sum(s1, 0)
    for c in range(c_lo, c_hi):
        pos = c * BT + ar
        rvalid = pos < L
        tok = bos + pos
        xr, ph = _load_phi(x_ptr, x_base, tok, rvalid, s_xn, rk, Dk, s_xd, FMAP, IS_F64)
        Yd = _load_raw(y_ptr, y_base, tok, rvalid, s_yn, cv, Dv, s_yd)
        if BWD:
            if NORMALIZE:
                x0 = _load_vec(w_ptr, st_base + tok, rvalid, IS_F64)
                ye = -_load_vec(dl_ptr, st_base + tok, rvalid, IS_F64)
            else:
                x0 = tl.where(rvalid, 1.0, 0.0)
                ye = x0 * 0.0
            X = ph * x0[:, None]
        else:
            kv = _key_valid(mask_ptr, i_b, tok, rvalid, s_mb, s_mn, HAS_MASK)
            x0 = tl.where(kv, 1.0, 0.0)
            ye = x0
            X = tl.where(kv[:, None], ph, 0.0)
        z += tl.sum(X * ye[:, None], 0)
        Xs, sx = _pow2_scale(X, IS_F16)
        S += tl.dot(tl.trans(Xs.to(DT)), Yd, input_precision=DOT_PREC) * sx
        if HAS_ONE:
            s1 += tl.sum(x0[:, None] * _acc(Yd, IS_F64), 0)
            z1 += tl.sum(x0 * ye, 0)
    hx = (i_s * 0).to(tl.int64) + Hx  # the strides of ws (nseq·P, Hx, F, Dv) in int64: Hx·F·Dv may pass 2^31
    _store_state(ws_ptr, wz_ptr, hx * F * Dv, F * Dv, Dv, 1, hx * F, F, 1,
                 i_s * P + i_p, i_h, rk, cv, Dk, Dv, S, z, s1, z1, i_v == 0, HAS_ONE)


# ----------------------------------------------------------------------------------------------
# Kernel 2: forward (and the backward's statistics pass)
# ----------------------------------------------------------------------------------------------
# One program per (V block, query head, sequence, segment); walks its chunks in order carrying
# S (F × BV), z (F) in registers (float32), starting from S0[h] + (prefix of the segment states
# of kv head g), or from the total state when non-causal.  Per chunk of C tokens (causal):
#     P = tril(A Bᵀ)  2·C²·F     num = P V + A S  2·C²·BV + 2·C·F·BV     S += Bᵀ V  2·C·F·BV
# (non-causal: only A S).  The normaliser den = rowsum(P) + A·z costs O(C·F) on top: no key
# cumsum in memory.  φ is applied to the q/k tiles in registers.  Memory: reads q, k once per V
# block, v and writes out once; the last segment writes the final state.
# STATS=True (backward): writes w = 1 / (den + eps) and the V block's part of δ = do · out
# instead of out (one more read of do).
@triton.jit
def _la_fwd_kernel(
    q_ptr, s_qb, s_qh, s_qn, s_qd,
    k_ptr, s_kb, s_kh, s_kn, s_kd,
    v_ptr, s_vb, s_vh, s_vn, s_vd,
    o_ptr, s_ob, s_oh, s_on, s_od,      # out, or do when STATS
    mask_ptr, s_mb, s_mn,
    S0_ptr, sS0_s, sS0_h, sS0_f, sS0_d,
    z0_ptr, sz0_s, sz0_h, sz0_f,
    ws_ptr, sws_s, sws_p, sws_h, sws_f, sws_d,   # segment start states (without S0), kv heads
    wz_ptr, swz_s, swz_p, swz_h, swz_f,
    S_ptr, sS_s, sS_h, sS_f, sS_d,      # out: final state (nseq, H, F, Dv), (nseq, H, F)
    z_ptr, sz_s, sz_h, sz_f,
    w_ptr, dl_ptr, s_dl,                # STATS out: w (B, H, N), δ parts (NV, B, H, N), s_dl between parts
    cu_ptr,
    N, H, G, Dk, Dv, F, P, NV, eps,
    FMAP: tl.constexpr, HAS_ONE: tl.constexpr, CAUSAL: tl.constexpr, NORMALIZE: tl.constexpr,
    STATS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_S0: tl.constexpr, HAS_WS: tl.constexpr,
    IS_VARLEN: tl.constexpr, IS_F16: tl.constexpr, IS_F64: tl.constexpr, DOT_PREC: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SEG: tl.constexpr,
):
    i_v, i_h, i_s, i_p, i_b, bos, L = _program(NV, H, P, cu_ptr, N, IS_VARLEN)
    c_lo, c_hi = _segment_chunks(L, i_p, P, BT, SEG)
    i_g = i_h // G
    rk = tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    ar = tl.arange(0, BT)
    DT = q_ptr.dtype.element_ty
    q_base = i_b.to(tl.int64) * s_qb + i_h.to(tl.int64) * s_qh
    k_base = i_b.to(tl.int64) * s_kb + i_g.to(tl.int64) * s_kh
    v_base = i_b.to(tl.int64) * s_vb + i_g.to(tl.int64) * s_vh
    o_base = i_b.to(tl.int64) * s_ob + i_h.to(tl.int64) * s_oh
    st_base = (i_b.to(tl.int64) * H + i_h) * N
    if HAS_S0:
        S, z, s1, z1 = _load_state(S0_ptr, z0_ptr, sS0_s, sS0_h, sS0_f, sS0_d, sz0_s, sz0_h, sz0_f,
                                   i_s, i_h, rk, cv, Dk, Dv, HAS_ONE, IS_F64)
    else:
        S = _fzeros2(BK, BV, IS_F64)
        z = _fzeros1(BK, IS_F64)
        s1 = _fzeros1(BV, IS_F64)
        z1 = tl.sum(s1, 0)
    if HAS_WS:
        dS, dz, ds1, dz1 = _load_state(ws_ptr + i_p.to(tl.int64) * sws_p, wz_ptr + i_p.to(tl.int64) * swz_p,
                                       sws_s, sws_h, sws_f, sws_d, swz_s, swz_h, swz_f,
                                       i_s, i_g, rk, cv, Dk, Dv, HAS_ONE, IS_F64)
        S += dS
        z += dz
        s1 += ds1
        z1 += dz1
    for c in range(c_lo, c_hi):
        pos = c * BT + ar
        rvalid = pos < L
        tok = bos + pos
        # the normaliser uses the dot operands as rounded (A as cast, P as cast for P V): out
        # stays a weighted mean of the values under 16-bit rounding (out_0 = v_0 exactly)
        xq, A = _load_phi(q_ptr, q_base, tok, rvalid, s_qn, rk, Dk, s_qd, FMAP, IS_F64)
        As, sA = _pow2_scale(A, IS_F16)  # float16: small features stay normal numbers
        Ad = As.to(DT)
        den = tl.sum(_acc(Ad, IS_F64) * z[None, :], 1) * sA
        Ss, sS = _pow2_scale(S, IS_F16)
        num = tl.dot(Ad, Ss.to(DT), input_precision=DOT_PREC) * (sS * sA)
        if HAS_ONE:
            num += s1[None, :]
            den += z1
        if CAUSAL:
            m = tl.where(_key_valid(mask_ptr, i_b, tok, rvalid, s_mb, s_mn, HAS_MASK), 1.0, 0.0)
            xk, Bphi = _load_phi(k_ptr, k_base, tok, rvalid, s_kn, rk, Dk, s_kd, FMAP, IS_F64)
            Bk = Bphi * m[:, None]
            z += tl.sum(Bk, 0)
            Bs, sB = _pow2_scale(Bk, IS_F16)
            Bd = Bs.to(DT)
            Vd = _load_raw(v_ptr, v_base, tok, rvalid, s_vn, cv, Dv, s_vd)
            Pm = tl.dot(Ad, tl.trans(Bd), input_precision=DOT_PREC) * (sA * sB)
            if HAS_ONE:
                Pm += m[None, :]
            Pm = tl.where(ar[:, None] >= ar[None, :], Pm, 0.0)
            Ps, sP = _pow2_scale(Pm, IS_F16)
            Pd = Ps.to(DT)
            den += tl.sum(_acc(Pd, IS_F64), 1) * sP
            num += tl.dot(Pd, Vd, input_precision=DOT_PREC) * sP
            S += tl.dot(tl.trans(Bd), Vd, input_precision=DOT_PREC) * sB
            if HAS_ONE:
                s1 += tl.sum(m[:, None] * _acc(Vd, IS_F64), 0)
                z1 += tl.sum(m, 0)
        if NORMALIZE:
            w = 1.0 / (den + eps)
            o = num * w[:, None]
        else:
            w = den * 0.0 + 1.0
            o = num
        tile = _tile_offsets(o_base, tok, s_on, cv, s_od)
        tmask = rvalid[:, None] & (cv < Dv)[None, :]
        if STATS:
            do = _acc(tl.load(o_ptr + tile, mask=tmask, other=0.0), IS_F64)
            tl.store(dl_ptr + i_v.to(tl.int64) * s_dl + st_base + tok,
                     tl.sum(o * do, 1).to(dl_ptr.dtype.element_ty), mask=rvalid)
            tl.store(w_ptr + st_base + tok, w.to(w_ptr.dtype.element_ty), mask=rvalid & (i_v == 0))
        else:
            tl.store(o_ptr + tile, o.to(o_ptr.dtype.element_ty), mask=tmask)
    if not STATS:
        if CAUSAL:
            last = i_p == P - 1
        else:
            last = i_p == 0
        if last:
            _store_state(S_ptr, z_ptr, sS_s, sS_h, sS_f, sS_d, sz_s, sz_h, sz_f, i_s, i_h, rk, cv, Dk, Dv,
                         S, z, s1, z1, i_v == 0, HAS_ONE)


# ----------------------------------------------------------------------------------------------
# Kernel 3: dq (forward in time)
# ----------------------------------------------------------------------------------------------
# One program per (V block, query head, sequence, segment), carrying S (F × BV) and z (F) from
# the same starting states as the forward.  Per chunk (causal), with X = tril(do Vᵀ - δ 1ᵀ)
# (the δ terms only in the V block 0 program, so that the V-block parts add up):
#     do Vᵀ  2·C²·BV     X B  2·C²·F     do Sᵀ  2·C·BV·F     S += Bᵀ V  2·C·F·BV
#     dA = w ∘ (X B + do Sᵀ - δ zᵀ),   dq = J_φ(q)ᵀ dA   (q re-read for J_φ: short live ranges)
# dq is written per V block (float32 parts summed on the host when NV > 1).
@triton.jit
def _la_bwd_dq_kernel(
    q_ptr, s_qb, s_qh, s_qn, s_qd,
    k_ptr, s_kb, s_kh, s_kn, s_kd,
    v_ptr, s_vb, s_vh, s_vn, s_vd,
    do_ptr, s_ob, s_oh, s_on, s_od,
    mask_ptr, s_mb, s_mn,
    w_ptr, dl_ptr,                      # (B, H, N) contiguous
    S0_ptr, sS0_s, sS0_h, sS0_f, sS0_d,
    z0_ptr, sz0_s, sz0_h, sz0_f,
    ws_ptr, sws_s, sws_p, sws_h, sws_f, sws_d,
    wz_ptr, swz_s, swz_p, swz_h, swz_f,
    dq_ptr, s_dv, s_db, s_dh, s_dn, s_dd,   # dq (or its V-block parts: s_dv between parts)
    cu_ptr,
    N, H, G, Dk, Dv, F, P, NV,
    FMAP: tl.constexpr, HAS_ONE: tl.constexpr, CAUSAL: tl.constexpr, NORMALIZE: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_S0: tl.constexpr, HAS_WS: tl.constexpr,
    IS_VARLEN: tl.constexpr, IS_F16: tl.constexpr, IS_F64: tl.constexpr, DOT_PREC: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SEG: tl.constexpr,
):
    i_v, i_h, i_s, i_p, i_b, bos, L = _program(NV, H, P, cu_ptr, N, IS_VARLEN)
    c_lo, c_hi = _segment_chunks(L, i_p, P, BT, SEG)
    i_g = i_h // G
    rk = tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    ar = tl.arange(0, BT)
    DT = q_ptr.dtype.element_ty
    q_base = i_b.to(tl.int64) * s_qb + i_h.to(tl.int64) * s_qh
    k_base = i_b.to(tl.int64) * s_kb + i_g.to(tl.int64) * s_kh
    v_base = i_b.to(tl.int64) * s_vb + i_g.to(tl.int64) * s_vh
    o_base = i_b.to(tl.int64) * s_ob + i_h.to(tl.int64) * s_oh
    d_base = i_v.to(tl.int64) * s_dv + i_b.to(tl.int64) * s_db + i_h.to(tl.int64) * s_dh
    st_base = (i_b.to(tl.int64) * H + i_h) * N
    if HAS_S0:
        S, z, s1, z1 = _load_state(S0_ptr, z0_ptr, sS0_s, sS0_h, sS0_f, sS0_d, sz0_s, sz0_h, sz0_f,
                                   i_s, i_h, rk, cv, Dk, Dv, HAS_ONE, IS_F64)
    else:
        S = _fzeros2(BK, BV, IS_F64)
        z = _fzeros1(BK, IS_F64)
    if HAS_WS:
        dS, dz, ds1, dz1 = _load_state(ws_ptr + i_p.to(tl.int64) * sws_p, wz_ptr + i_p.to(tl.int64) * swz_p,
                                       sws_s, sws_h, sws_f, sws_d, swz_s, swz_h, swz_f,
                                       i_s, i_g, rk, cv, Dk, Dv, HAS_ONE, IS_F64)
        S += dS
        z += dz
    first = i_v == 0
    for c in range(c_lo, c_hi):
        pos = c * BT + ar
        rvalid = pos < L
        tok = bos + pos
        dod = _load_raw(do_ptr, o_base, tok, rvalid, s_on, cv, Dv, s_od)
        Ss, sS = _pow2_scale(S, IS_F16)
        dA = tl.dot(dod, tl.trans(Ss.to(DT)), input_precision=DOT_PREC) * sS
        if NORMALIZE:
            dl = tl.where(first, _load_vec(dl_ptr, st_base + tok, rvalid, IS_F64), 0.0)
            dA -= dl[:, None] * z[None, :]
        if CAUSAL:
            m = tl.where(_key_valid(mask_ptr, i_b, tok, rvalid, s_mb, s_mn, HAS_MASK), 1.0, 0.0)
            xk, Bphi = _load_phi(k_ptr, k_base, tok, rvalid, s_kn, rk, Dk, s_kd, FMAP, IS_F64)
            Bk = Bphi * m[:, None]
            z += tl.sum(Bk, 0)
            Bs, sB = _pow2_scale(Bk, IS_F16)
            Bd = Bs.to(DT)
            Vd = _load_raw(v_ptr, v_base, tok, rvalid, s_vn, cv, Dv, s_vd)
            X = tl.dot(dod, tl.trans(Vd), input_precision=DOT_PREC)
            if NORMALIZE:
                X -= dl[:, None]
            X = tl.where(ar[:, None] >= ar[None, :], X, 0.0)
            Xs, sX = _pow2_scale(X, IS_F16)
            dA += tl.dot(Xs.to(DT), Bd, input_precision=DOT_PREC) * (sX * sB)
            S += tl.dot(tl.trans(Bd), Vd, input_precision=DOT_PREC) * sB
        if NORMALIZE:
            dA = dA * _load_vec(w_ptr, st_base + tok, rvalid, IS_F64)[:, None]
        xq, A = _load_phi(q_ptr, q_base, tok, rvalid, s_qn, rk, Dk, s_qd, FMAP, IS_F64)
        dq = _phi_bwd(xq, A, dA, rk, Dk, FMAP)
        tl.store(dq_ptr + _tile_offsets(d_base, tok, s_dn, rk, s_dd), dq.to(dq_ptr.dtype.element_ty),
                 mask=rvalid[:, None] & (rk < Dk)[None, :])


# ----------------------------------------------------------------------------------------------
# Kernel 4: dk, dv, dS0, dz0 (backward in time)
# ----------------------------------------------------------------------------------------------
# One program per (V block, query head, sequence, segment), walking its chunks in reverse and
# carrying R (F × BV), r (F) = gradient of the state after the chunk (seeded with grad_S, grad_z
# and the later segments' ΔR).  Per chunk (causal), Ã = w ∘ A, Pᵀ = tril(Ã Bᵀ)ᵀ, Xᵀ as in dq:
#     B Ãᵀ  2·C²·F    Pᵀ do  2·C²·BV    B R  2·C·F·BV    V doᵀ  2·C²·BV    Xᵀ Ã  2·C²·F
#     V Rᵀ  2·C·BV·F  R += Ãᵀ do  2·C·F·BV
#     dV = Pᵀ do + B R,   dB = Xᵀ Ã + V Rᵀ + 1 rᵀ,   dk = m ∘ J_φ(k)ᵀ dB   (k re-read for J_φ)
# (non-causal: dV = B R, dB = V Rᵀ + 1 rᵀ with the total R).  dk is written per V block and dk,
# dv per query head (float32 parts summed on the host over V blocks and over the query heads of
# a kv group, only where there are several); the segment-0 program writes dS0 = R, dz0 = r.
@triton.jit
def _la_bwd_dkv_kernel(
    q_ptr, s_qb, s_qh, s_qn, s_qd,
    k_ptr, s_kb, s_kh, s_kn, s_kd,
    v_ptr, s_vb, s_vh, s_vn, s_vd,
    do_ptr, s_ob, s_oh, s_on, s_od,
    mask_ptr, s_mb, s_mn,
    w_ptr, dl_ptr,
    gS_ptr, sgS_s, sgS_h, sgS_f, sgS_d,      # grad_S, grad_z (seeds)
    gz_ptr, sgz_s, sgz_h, sgz_f,
    ws_ptr, sws_s, sws_p, sws_h, sws_f, sws_d,   # later segments' ΔR (query heads)
    wz_ptr, swz_s, swz_p, swz_h, swz_f,
    dk_ptr, s_ekv, s_ekb, s_ekh, s_ekn, s_ekd,   # dk parts (V block, b, query head, n, d)
    dv_ptr, s_evb, s_evh, s_evn, s_evd,          # dv parts (b, query head, n, d)
    dS0_ptr, sdS_s, sdS_h, sdS_f, sdS_d,         # out: dS0 (nseq, H, F, Dv), dz0 (nseq, H, F)
    dz0_ptr, sdz_s, sdz_h, sdz_f,
    cu_ptr,
    N, H, G, Dk, Dv, F, P, NV,
    FMAP: tl.constexpr, HAS_ONE: tl.constexpr, CAUSAL: tl.constexpr, NORMALIZE: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_GS: tl.constexpr, HAS_WS: tl.constexpr, HAS_S0: tl.constexpr,
    IS_VARLEN: tl.constexpr, IS_F16: tl.constexpr, IS_F64: tl.constexpr, DOT_PREC: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SEG: tl.constexpr,
):
    i_v, i_h, i_s, i_p, i_b, bos, L = _program(NV, H, P, cu_ptr, N, IS_VARLEN)
    c_lo, c_hi = _segment_chunks(L, i_p, P, BT, SEG)
    i_g = i_h // G
    rk = tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    ar = tl.arange(0, BT)
    DT = q_ptr.dtype.element_ty
    q_base = i_b.to(tl.int64) * s_qb + i_h.to(tl.int64) * s_qh
    k_base = i_b.to(tl.int64) * s_kb + i_g.to(tl.int64) * s_kh
    v_base = i_b.to(tl.int64) * s_vb + i_g.to(tl.int64) * s_vh
    o_base = i_b.to(tl.int64) * s_ob + i_h.to(tl.int64) * s_oh
    ek_base = i_v.to(tl.int64) * s_ekv + i_b.to(tl.int64) * s_ekb + i_h.to(tl.int64) * s_ekh
    ev_base = i_b.to(tl.int64) * s_evb + i_h.to(tl.int64) * s_evh
    st_base = (i_b.to(tl.int64) * H + i_h) * N
    if HAS_GS:
        R, r, rho, r0 = _load_state(gS_ptr, gz_ptr, sgS_s, sgS_h, sgS_f, sgS_d, sgz_s, sgz_h, sgz_f,
                                    i_s, i_h, rk, cv, Dk, Dv, HAS_ONE, IS_F64)
    else:
        R = _fzeros2(BK, BV, IS_F64)
        r = _fzeros1(BK, IS_F64)
        rho = _fzeros1(BV, IS_F64)
        r0 = tl.sum(rho, 0)
    if HAS_WS:
        dR, dr, drho, dr0 = _load_state(ws_ptr + i_p.to(tl.int64) * sws_p, wz_ptr + i_p.to(tl.int64) * swz_p,
                                        sws_s, sws_h, sws_f, sws_d, swz_s, swz_h, swz_f,
                                        i_s, i_h, rk, cv, Dk, Dv, HAS_ONE, IS_F64)
        R += dR
        r += dr
        rho += drho
        r0 += dr0
    first = i_v == 0
    for ci in range(c_lo, c_hi):
        c = c_hi - 1 - (ci - c_lo)
        pos = c * BT + ar
        rvalid = pos < L
        tok = bos + pos
        xq, A = _load_phi(q_ptr, q_base, tok, rvalid, s_qn, rk, Dk, s_qd, FMAP, IS_F64)
        if NORMALIZE:
            w = _load_vec(w_ptr, st_base + tok, rvalid, IS_F64)
            dl = _load_vec(dl_ptr, st_base + tok, rvalid, IS_F64)
            At = A * w[:, None]
            r_new = tl.sum(At * dl[:, None], 0)
        else:
            w = tl.where(rvalid, 1.0, 0.0)
            At = A
        Ats, sA = _pow2_scale(At, IS_F16)
        Atd = Ats.to(DT)
        m = tl.where(_key_valid(mask_ptr, i_b, tok, rvalid, s_mb, s_mn, HAS_MASK), 1.0, 0.0)
        xk, Bphi = _load_phi(k_ptr, k_base, tok, rvalid, s_kn, rk, Dk, s_kd, FMAP, IS_F64)
        Bs, sB = _pow2_scale(Bphi * m[:, None], IS_F16)
        Bd = Bs.to(DT)
        Vd = _load_raw(v_ptr, v_base, tok, rvalid, s_vn, cv, Dv, s_vd)
        dod = _load_raw(do_ptr, o_base, tok, rvalid, s_on, cv, Dv, s_od)
        Rs, sR = _pow2_scale(R, IS_F16)
        Rd = Rs.to(DT)
        # dV first, stored, then dB and dk, then the state update: few tiles live at a time
        dV = tl.dot(Bd, Rd, input_precision=DOT_PREC) * (sR * sB)
        if HAS_ONE:
            dV += m[:, None] * rho[None, :]
        if CAUSAL:
            causal = ar[None, :] >= ar[:, None]      # [j, i]: i >= j
            Pt = tl.dot(Bd, tl.trans(Atd), input_precision=DOT_PREC) * (sA * sB)
            if HAS_ONE:
                Pt += m[:, None] * w[None, :]
            Pt = tl.where(causal, Pt, 0.0)
            Ps, sP = _pow2_scale(Pt, IS_F16)
            dV += tl.dot(Ps.to(DT), dod, input_precision=DOT_PREC) * sP
        tl.store(dv_ptr + _tile_offsets(ev_base, tok, s_evn, cv, s_evd), dV.to(dv_ptr.dtype.element_ty),
                 mask=rvalid[:, None] & (cv < Dv)[None, :])
        dB = tl.dot(Vd, tl.trans(Rd), input_precision=DOT_PREC) * sR
        dB += tl.where(first, 1.0, 0.0) * r[None, :]
        if CAUSAL:
            Xt = tl.dot(Vd, tl.trans(dod), input_precision=DOT_PREC)
            if NORMALIZE:
                Xt -= tl.where(first, dl, 0.0)[None, :]
            Xt = tl.where(causal, Xt, 0.0)
            Xs, sX = _pow2_scale(Xt, IS_F16)
            dB += tl.dot(Xs.to(DT), Atd, input_precision=DOT_PREC) * (sX * sA)
        xk, Bphi = _load_phi(k_ptr, k_base, tok, rvalid, s_kn, rk, Dk, s_kd, FMAP, IS_F64)
        dk = _phi_bwd(xk, Bphi, dB, rk, Dk, FMAP) * m[:, None]
        tl.store(dk_ptr + _tile_offsets(ek_base, tok, s_ekn, rk, s_ekd), dk.to(dk_ptr.dtype.element_ty),
                 mask=rvalid[:, None] & (rk < Dk)[None, :])
        if CAUSAL:
            R += tl.dot(tl.trans(Atd), dod, input_precision=DOT_PREC) * sA
            if NORMALIZE:
                r -= r_new
                if HAS_ONE:
                    r0 -= tl.sum(w * dl, 0)
            if HAS_ONE:
                rho += tl.sum(w[:, None] * _acc(dod, IS_F64), 0)
    if HAS_S0:
        if i_p == 0:
            _store_state(dS0_ptr, dz0_ptr, sdS_s, sdS_h, sdS_f, sdS_d, sdz_s, sdz_h, sdz_f, i_s, i_h, rk, cv,
                         Dk, Dv, R, r, rho, r0, first, HAS_ONE)


SEGMENT_STATE = _autotuned(_la_segment_state_kernel)
FORWARD = _autotuned(_la_fwd_kernel)
BACKWARD_DQ = _autotuned(_la_bwd_dq_kernel)
BACKWARD_DKV = _autotuned(_la_bwd_dkv_kernel)


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------

_SM_COUNT: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def _next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def _blocks(Dk: int, Dv: int, dtype: torch.dtype) -> tuple[int, int]:
    """(BK feature block, BV value block).  Tiles are at least 16 wide (tensor-core dot minimum);
    the state slice BK × BV stays <= 128 × 64 float32 (or 256 × 32; half that for 32/64-bit
    inputs, whose dot operands take twice the registers)."""
    BK = max(16, _next_pow2(Dk))
    BV = max(16, _next_pow2(Dv))
    if INTERPRET:  # small value blocks so the CPU tests also cover several V blocks
        return BK, min(BV, 32)
    cap = 64 if BK <= 128 else 32
    if dtype in (torch.float32, torch.float64):
        cap //= 2
    return BK, min(BV, cap)


def _num_segments(nseq: int, H: int, NV: int, N: int, varlen: bool, device: torch.device) -> int:
    """Segments per sequence: enough programs to fill the GPU (~2 per SM), each segment keeping
    >= 4 × SEG tokens so the per-segment state sums stay a small overhead."""
    blocks = -(-(N // max(nseq, 1) if varlen else N) // SEG)
    if FORCE_SEGMENTS is not None:
        return max(1, int(FORCE_SEGMENTS))
    if INTERPRET or device.type != "cuda":
        return max(1, min(2, blocks))
    programs = max(1, nseq * H * NV)
    target = 2 * _sm_count(device)
    if programs >= target:
        return 1
    return max(1, min(-(-target // programs), blocks // 4))


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return FP32_DOT_PRECISION
    if dtype == torch.float64:
        return "ieee"
    return "tf32"  # ignored for 16-bit operands


def _launch(kernel, n_programs: int, *args, **kwargs) -> None:
    if n_programs <= 0:
        return
    launch(kernel, (n_programs,), *args, **kwargs)


def _strides(t: torch.Tensor | None, n: int) -> list[int]:
    return list(t.stride()) if t is not None else [0] * n


def _exclusive_prefix(ws: torch.Tensor) -> torch.Tensor:
    """ws (nseq, P, ...) -> out[:, p] = Σ_{p' < p} ws[:, p']."""
    return torch.cat([torch.zeros_like(ws[:, :1]), torch.cumsum(ws[:, :-1], dim=1)], dim=1)


def _exclusive_suffix(ws: torch.Tensor) -> torch.Tensor:
    """ws (nseq, P, ...) -> out[:, p] = Σ_{p' > p} ws[:, p']."""
    rest = torch.flip(torch.cumsum(torch.flip(ws[:, 1:], dims=[1]), dim=1), dims=[1])
    return torch.cat([rest, torch.zeros_like(ws[:, :1])], dim=1)


class _Problem:
    """Shapes, block sizes and kernel flags shared by the forward and backward launches."""

    def __init__(self, q, k, v, mask, S0, cu, feature_map, causal, normalize):
        if feature_map not in FMAP_ID:
            raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
        if q.dtype == torch.float64 and not HAS_FP64_DOT:
            raise TypeError("float64 inputs of the Triton linear-attention kernels need triton >= 3.5 (the tl.dot "
                            "of triton 3.2-3.4 has no float64); use backend='cpu' or 'torch'")
        self.B, self.H, self.N, self.Dk = q.shape
        self.Hkv, self.Dv = k.shape[1], v.shape[-1]
        self.G = self.H // self.Hkv
        self.F = feature_dim(feature_map, self.Dk)
        self.nseq = self.B if cu is None else cu.shape[0] - 1
        self.acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        self.BK, self.BV = _blocks(self.Dk, self.Dv, q.dtype)
        self.NV = -(-self.Dv // self.BV)
        self.P = _num_segments(self.nseq, self.H, self.NV, self.N, cu is not None, q.device)
        self.big = self.BK > 128
        self.causal = causal
        self.dummy = q
        # bool mask read as uint8 without a copy; float64 kernels get an int32 copy (triton 3.5
        # fails to compile an 8-bit load next to float64 dots on sm_90: MMAv2 operand assertion)
        if mask is not None:
            mask = mask.to(torch.int32) if q.dtype == torch.float64 else mask.view(torch.uint8)
        self.mask = mask
        self.cu = cu
        self.flags = dict(
            FMAP=FMAP_ID[feature_map], HAS_ONE=feature_map == "taylor", CAUSAL=causal, NORMALIZE=normalize,
            HAS_MASK=mask is not None, IS_VARLEN=cu is not None, IS_F16=q.dtype == torch.float16,
            IS_F64=q.dtype == torch.float64, DOT_PREC=_dot_precision(q.dtype), BK=self.BK, BV=self.BV, SEG=SEG,
        )
        assert S0 is None or S0.shape == (self.nseq, self.H, self.F, self.Dv)

    def kernel(self, pair):
        return pair[1] if self.big else pair[0]

    def grid(self, heads: int) -> int:
        return self.NV * heads * self.nseq * self.P

    def tensor(self, t):
        return t if t is not None else self.dummy

    def mask_args(self):
        return [self.tensor(self.mask), *_strides(self.mask, 2)]

    def needs_segment_states(self) -> bool:
        return (not self.causal) or self.P > 1

    def segment_states(self, x, y, w, dl, heads: int, bwd: bool):
        """Per-segment sums (forward: keys-values of each kv head; backward: queries-grads of each
        query head) as (nseq, P, heads, F, Dv), (nseq, P, heads, F)."""
        ws = torch.empty((self.nseq, self.P, heads, self.F, self.Dv), device=x.device, dtype=self.acc)
        wz = torch.empty((self.nseq, self.P, heads, self.F), device=x.device, dtype=self.acc)
        flags = {key: val for key, val in self.flags.items() if key != "HAS_MASK"}
        _launch(
            self.kernel(SEGMENT_STATE), self.grid(heads),
            x, *x.stride(), y, *y.stride(), *self.mask_args(), self.tensor(w), self.tensor(dl), ws, wz,
            self.tensor(self.cu), self.N, heads, self.Dk, self.Dv, self.F, self.P, self.NV,
            BWD=bwd, HAS_MASK=self.mask is not None and not bwd, **flags,
        )
        return ws, wz

    def start_states(self, ws, wz, reverse: bool = False):
        """Starting state of each segment from the per-segment sums: the prefix (or suffix, for the
        reverse pass) when causal, the total when not."""
        if not self.causal:
            return ws.sum(1, keepdim=True).expand_as(ws), wz.sum(1, keepdim=True).expand_as(wz)
        if reverse:
            return _exclusive_suffix(ws), _exclusive_suffix(wz)
        return _exclusive_prefix(ws), _exclusive_prefix(wz)


def _forward_impl(q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, causal, normalize, eps):
    pb = _Problem(q, k, v, key_padding_mask, initial_S, cu_seqlens, feature_map, causal, normalize)
    out = q.new_empty((pb.B, pb.H, pb.N, pb.Dv))
    S = q.new_empty((pb.nseq, pb.H, pb.F, pb.Dv), dtype=pb.acc)
    z = q.new_empty((pb.nseq, pb.H, pb.F), dtype=pb.acc)
    if pb.nseq * pb.H == 0:
        return out, S, z
    ws = wz = None
    if pb.needs_segment_states():
        ws, wz = pb.segment_states(k, v, None, None, pb.Hkv, bwd=False)
        ws, wz = pb.start_states(ws, wz)
    _launch(
        pb.kernel(FORWARD), pb.grid(pb.H),
        q, *q.stride(), k, *k.stride(), v, *v.stride(), out, *out.stride(), *pb.mask_args(),
        pb.tensor(initial_S), *_strides(initial_S, 4), pb.tensor(initial_z), *_strides(initial_z, 3),
        pb.tensor(ws), *_strides(ws, 5), pb.tensor(wz), *_strides(wz, 4),
        S, *S.stride(), z, *z.stride(), q, q, 0, pb.tensor(cu_seqlens),
        pb.N, pb.H, pb.G, pb.Dk, pb.Dv, pb.F, pb.P, pb.NV, float(eps),
        STATS=False, HAS_S0=initial_S is not None, HAS_WS=ws is not None, **pb.flags,
    )
    return out, S, z


def _backward_impl(grad_out, grad_S, grad_z, q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens,
                   feature_map, causal, normalize, eps):
    pb = _Problem(q, k, v, key_padding_mask, initial_S, cu_seqlens, feature_map, causal, normalize)
    B, H, N, Dk, Dv, NV, G = pb.B, pb.H, pb.N, pb.Dk, pb.Dv, pb.NV, pb.G
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if initial_S is not None:
        dS0, dz0 = torch.empty_like(initial_S), torch.empty_like(initial_z)
    else:
        dS0, dz0 = q.new_empty((0,), dtype=pb.acc), q.new_empty((0,), dtype=pb.acc)
    if pb.nseq * H == 0:
        return dq, dk, dv, dS0, dz0
    if grad_S is None and grad_z is not None:
        grad_S = q.new_zeros((pb.nseq, H, pb.F, Dv), dtype=pb.acc)
    if grad_z is None and grad_S is not None:
        grad_z = q.new_zeros((pb.nseq, H, pb.F), dtype=pb.acc)
    state_args = [pb.tensor(initial_S), *_strides(initial_S, 4), pb.tensor(initial_z), *_strides(initial_z, 3)]
    # forward states at each segment's start
    ws = wz = None
    if pb.needs_segment_states():
        ws, wz = pb.segment_states(k, v, None, None, pb.Hkv, bwd=False)
        ws, wz = pb.start_states(ws, wz)
    ws_args = [pb.tensor(ws), *_strides(ws, 5), pb.tensor(wz), *_strides(wz, 4)]
    common = dict(HAS_S0=initial_S is not None, **pb.flags)
    # statistics: w = 1 / (den + eps) and δ = do · out
    w = dl = None
    if normalize:
        w = q.new_empty((B, H, N), dtype=pb.acc)
        dl_parts = q.new_empty((NV, B, H, N), dtype=pb.acc)
        _launch(
            pb.kernel(FORWARD), pb.grid(H),
            q, *q.stride(), k, *k.stride(), v, *v.stride(), grad_out, *grad_out.stride(), *pb.mask_args(),
            *state_args, *ws_args, q, 0, 0, 0, 0, q, 0, 0, 0, w, dl_parts, dl_parts.stride(0),
            pb.tensor(cu_seqlens), N, H, G, Dk, Dv, pb.F, pb.P, NV, float(eps),
            STATS=True, HAS_WS=ws is not None, **common,
        )
        dl = dl_parts.sum(0) if NV > 1 else dl_parts[0]
    # dq
    dq_out = dq if NV == 1 else q.new_empty((NV, B, H, N, Dk), dtype=pb.acc)
    dq_strides = [0, *dq.stride()] if NV == 1 else list(dq_out.stride())
    _launch(
        pb.kernel(BACKWARD_DQ), pb.grid(H),
        q, *q.stride(), k, *k.stride(), v, *v.stride(), grad_out, *grad_out.stride(), *pb.mask_args(),
        pb.tensor(w), pb.tensor(dl), *state_args, *ws_args, dq_out, *dq_strides, pb.tensor(cu_seqlens),
        N, H, G, Dk, Dv, pb.F, pb.P, NV, HAS_WS=ws is not None, **common,
    )
    if NV > 1:
        dq.copy_(dq_out.sum(0))
    # reverse states at each segment's end
    wr = wrz = None
    if pb.needs_segment_states():
        wr, wrz = pb.segment_states(q, grad_out, w, dl, H, bwd=True)
        wr, wrz = pb.start_states(wr, wrz, reverse=True)
    # dk, dv, dS0, dz0
    dk_out = dk if (NV == 1 and G == 1) else q.new_empty((NV, B, H, N, Dk), dtype=pb.acc)
    dk_strides = [0, *dk.stride()] if dk_out is dk else list(dk_out.stride())
    dv_out = dv if G == 1 else q.new_empty((B, H, N, Dv), dtype=pb.acc)
    _launch(
        pb.kernel(BACKWARD_DKV), pb.grid(H),
        q, *q.stride(), k, *k.stride(), v, *v.stride(), grad_out, *grad_out.stride(), *pb.mask_args(),
        pb.tensor(w), pb.tensor(dl), pb.tensor(grad_S), *_strides(grad_S, 4), pb.tensor(grad_z), *_strides(grad_z, 3),
        pb.tensor(wr), *_strides(wr, 5), pb.tensor(wrz), *_strides(wrz, 4),
        dk_out, *dk_strides, dv_out, *dv_out.stride(),
        dS0 if initial_S is not None else q, *_strides(dS0 if initial_S is not None else None, 4),
        dz0 if initial_S is not None else q, *_strides(dz0 if initial_S is not None else None, 3),
        pb.tensor(cu_seqlens), N, H, G, Dk, Dv, pb.F, pb.P, NV,
        HAS_GS=grad_S is not None, HAS_WS=wr is not None, **common,
    )
    if dk_out is not dk:
        dk.copy_(dk_out.view(NV, B, pb.Hkv, G, N, Dk).sum((0, 3)))
    if dv_out is not dv:
        dv.copy_(dv_out.view(B, pb.Hkv, G, N, Dv).sum(2))
    return dq, dk, dv, dS0, dz0


# ----------------------------------------------------------------------------------------------
# Registration: kexue::linear_attention_fwd_triton / _bwd_triton, same schemas as the native ops
# ----------------------------------------------------------------------------------------------

FWD_SCHEMA = (
    "(Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, Tensor? initial_S, Tensor? initial_z, "
    "Tensor? cu_seqlens, str feature_map, bool causal, bool normalize, float eps) -> (Tensor out, Tensor S, Tensor z)"
)
BWD_SCHEMA = (
    "(Tensor grad_out, Tensor? grad_S, Tensor? grad_z, Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, "
    "Tensor? initial_S, Tensor? initial_z, Tensor? cu_seqlens, str feature_map, bool causal, bool normalize, "
    "float eps) -> (Tensor dq, Tensor dk, Tensor dv, Tensor dS0, Tensor dz0)"
)


def _register(name: str, impl, schema: str, fake):
    """torch.library.triton_op (torch.compile traces into the kernels) on GPUs.  Under
    TRITON_INTERPRET=1 the kernels are Python functions that wrap_triton cannot trace and that
    would run on FakeTensors, so there the op is an opaque custom_op with a fake kernel."""
    if INTERPRET:
        op = torch.library.custom_op(name, impl, mutates_args=(), schema=schema)
        op.register_fake(fake)
        return op
    kwargs = {"schema": schema} if "schema" in inspect.signature(torch.library.triton_op).parameters else {}
    return torch.library.triton_op(name, impl, mutates_args=(), **kwargs)


def _fwd_entry(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
               initial_S: torch.Tensor | None, initial_z: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
               feature_map: str, causal: bool, normalize: bool, eps: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward_impl(q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, causal,
                         normalize, eps)


def _bwd_entry(grad_out: torch.Tensor, grad_S: torch.Tensor | None, grad_z: torch.Tensor | None, q: torch.Tensor,
               k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
               initial_S: torch.Tensor | None, initial_z: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
               feature_map: str, causal: bool, normalize: bool, eps: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward_impl(grad_out, grad_S, grad_z, q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens,
                          feature_map, causal, normalize, eps)


linear_attention_fwd_op = _register("kexue::linear_attention_fwd_triton", _fwd_entry, FWD_SCHEMA, fake_forward)
linear_attention_bwd_op = _register("kexue::linear_attention_bwd_triton", _bwd_entry, BWD_SCHEMA, fake_backward)
register_autograd("kexue::linear_attention_fwd_triton", torch.ops.kexue.linear_attention_bwd_triton.default)


def linear_attention_fwd_triton(q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, causal,
                                normalize, eps):
    """The "triton" backend of kexue.linear_attention: returns (out, S, z)."""
    return torch.ops.kexue.linear_attention_fwd_triton(
        q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, bool(causal), bool(normalize),
        float(eps),
    )
