// What the two chunked linear-attention kernels (chunk_fp32.cuh: float32 CUDA cores,
// chunk_tc.cuh: 16-bit tensor cores) share: the roles, the backward's workspace, and the
// per-(sequence, head) view that loads a chunk's operands, the initial state, and writes a
// chunk's output rows and the final state.
//
// Generic problem, per (sequence, head): rows X_t, K_t (width xdim) and W_t (width wdim) for
// tokens t; state S (xdim × wdim), initial S_init:
//     Y_t = Σ_{j ∈ A(t)} (X_t · K_j) W_j + X_t S_init,      S_final = S_init + Σ_j K_j W_jᵀ
// with A(t) = {j <= t} (causal, "forward"), {j >= t} (causal, "reverse") or all j (non-causal).
//
// Roles (g'_t = [do_t·r_t, -r_t (do_t·out_t)] with r_t = 1/(den_t + eps), or [do_t, 0] when not
// normalizing; v'_t = [v_t, 1]; a = φ(q), b = φ(k) with masked keys zeroed):
//   kFwd   X = a,   K = b,   W = v,  S_init = S0 (+ z0 as an extra "ones" column, kept apart as
//          zs: den_t = Σ P_tj + a_t·z).  Y → out = Y / (den + eps).  Forward direction.
//   kPrep  the same pass; writes r_t = 1/(den_t + eps) and per-slice partial do_t·out_t
//          (summed over slices, in a fixed order, by the next passes).
//   kDq    X = g',  K = v',  W = b,  S_init = [S0, z0]ᵀ.        Y = dA = ∂/∂φ(q).   Forward.
//   kDk    X = v',  K = g',  W = a,  S_init = [dS, dz]ᵀ.        Y = dB = ∂/∂φ(k).   Reverse.
//          Its final state is [dS0, dz0]ᵀ.
//   kDv    X = b,   K = a,   W = g,  S_init = dS.               Y = dv.             Reverse.
// kDk / kDv run per kv head and loop over the query heads of the group inside the CTA,
// accumulating the group sum of dB / dv in place (no atomics, deterministic order).
// Grid: (sequence, head or kv head, slice of W's columns of width WB); 256 threads.
#pragma once

#include "linear_attention/kernel_common.cuh"

namespace kexue {
namespace la {
namespace detail {

constexpr int kThreads = 256;  // 8 warps
constexpr int kWarps = kThreads / 32;

enum Role : int { kFwd = 0, kPrep = 1, kDq = 2, kDk = 3, kDv = 4 };

// Float32 scratch of the backward (see linear_attention_bwd_workspace_bytes).
struct Workspace {
  float* rden = nullptr;  // (B·H·N)        1/(den + eps)
  float* part = nullptr;  // (nparts, B·H·N) partial do·out per Dv slice of the kPrep pass
  int nparts = 0;
  float* dA = nullptr;  // (B·H·N, F)     ∂/∂φ(q)
  float* dB = nullptr;  // (B·Hkv·N, F)   ∂/∂φ(k), summed over the group's query heads
  float* dV = nullptr;  // (B·Hkv·N, Dv)  dv, summed over the group's query heads
};

struct CoreArgs {
  LinearAttentionParams p;
  Workspace ws;
  int xdim = 0;  // width of X and K rows
  int wdim = 0;  // width of W rows (sliced by WB)
};

template <int ROLE>
struct RoleTraits {
  static constexpr bool kReverse = ROLE == kDk || ROLE == kDv;  // anti-causal (j >= t)
  static constexpr bool kPerKv = ROLE == kDk || ROLE == kDv;    // grid over kv heads
  static constexpr bool kAug = ROLE == kFwd || ROLE == kPrep;   // normaliser column z
  // the operand built from dout (g' or g, scaled by 1/(den + eps)): X, K or W, or none
  static constexpr int kGOperand = ROLE == kDq ? 'X' : ROLE == kDk ? 'K' : ROLE == kDv ? 'W' : 0;
};

// A φ operand's source: rows base + t·sn of q or k (Dk elements sd apart), mapped by fm, the
// columns [col0, col0 + ncols) of φ a pass reads, and the key padding mask (k only; null for q).
template <typename T>
struct PhiSource {
  const T* base;
  int64_t sn, sd;
  int Dk;
  FeatureMap fm;
  int col0, ncols;
  const uint8_t* mask;
  int64_t msn;

  __device__ __forceinline__ bool masked(int64_t t) const { return mask != nullptr && mask[t * msn] != 0; }
};

// Rows t0 .. t0 + C - 1 of src's φ columns, times mult, into dst (C × padcols, zero padded, in the
// tile's element type D): one warp per row.  Rows >= nvalid and masked rows are zero.
// mult: the float16 tensor-core kernel's power-of-two range scale (small features stay normal
// float16 numbers); 1 elsewhere.
template <typename T, typename D>
__device__ __forceinline__ void load_phi_rows(D* dst, int ld, int padcols, int C, int64_t t0, int nvalid,
                                              const PhiSource<T>& src, float mult = 1.f) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < C; r += kWarps) {
    D* drow = dst + r * ld;
    if (r >= nvalid || src.masked(t0 + r)) {
      for (int c = lane; c < padcols; c += 32) drow[c] = from_float<D>(0.f);
      continue;
    }
    const T* row = src.base + (t0 + r) * src.sn;
    const PhiStats st = phi_stats(row, src.sd, src.Dk, src.fm, lane);
    for (int c = lane; c < padcols; c += 32)
      drow[c] = from_float<D>(c < src.ncols ? phi_value(row, src.sd, src.col0 + c, src.fm, st) * mult : 0.f);
  }
}

// max |φ| (φ >= 0 for every map but "none") over the entries load_phi_rows would load from src,
// this warp's rows: every lane of the warp gets it.
template <typename T>
__device__ __forceinline__ float phi_rows_absmax(int64_t t0, int nvalid, const PhiSource<T>& src) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float m = 0.f;
  for (int r = warp; r < nvalid; r += kWarps) {
    if (src.masked(t0 + r)) continue;
    const T* row = src.base + (t0 + r) * src.sn;
    const PhiStats st = phi_stats(row, src.sd, src.Dk, src.fm, lane);
    for (int c = lane; c < src.ncols; c += 32)
      m = fmaxf(m, fabsf(phi_value(row, src.sd, src.col0 + c, src.fm, st)));
  }
  return warp_max(m);
}

// Row t of a linear operand:  [x_t · s_t (Dsrc values), e_t, 0 ...]  with s_t = rden[t] (or 1)
// and e_t = -rden[t] · Σ_s part[s][t] (or extra_const when rden is null).
// v' = [v, 1]: rden null, extra_const 1.   g' = [do·r, -r·(do·out)]: rden, part given.
template <typename T>
struct LinRow {
  const T* row;
  int64_t sd;
  int Dsrc;
  float scale, extra;
  __device__ __forceinline__ float operator()(int col) const {
    return col < Dsrc ? to_float(row[col * sd]) * scale : (col == Dsrc ? extra : 0.f);
  }
};

// A linear operand's source (rows base + t·sn, elements sd apart) and the columns
// [col0, col0 + ncols) a pass reads of it.
template <typename T>
struct LinSource {
  const T* base;
  int64_t sn, sd;
  int Dsrc, col0, ncols;
  const float* rden;
  const float* part;
  int64_t part_stride;
  int nparts;
  float extra_const;

  __device__ __forceinline__ LinRow<T> row(int64_t t) const {
    float scale = 1.f, extra = extra_const;
    if (rden != nullptr) {
      scale = rden[t];
      float dot = 0.f;
      for (int s = 0; s < nparts; ++s) dot += part[s * part_stride + t];
      extra = -scale * dot;
    }
    return LinRow<T>{base + t * sn, sd, Dsrc, scale, extra};
  }
};

// Rows t0 .. t0 + C - 1 of a linear operand, times mult, into dst (C × padcols, zero padded,
// element type D): one warp per row; rows >= nvalid are zero.
template <typename T, typename D>
__device__ __forceinline__ void load_lin_rows(D* dst, int ld, int padcols, int C, int64_t t0, int nvalid,
                                              const LinSource<T>& src, float mult = 1.f) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < C; r += kWarps) {
    D* drow = dst + r * ld;
    if (r >= nvalid) {
      for (int c = lane; c < padcols; c += 32) drow[c] = from_float<D>(0.f);
      continue;
    }
    const LinRow<T> x = src.row(t0 + r);
    for (int c = lane; c < padcols; c += 32) drow[c] = from_float<D>(c < src.ncols ? x(src.col0 + c) * mult : 0.f);
  }
}

// max |entry| of the rows load_lin_rows would load (before mult), over this warp's rows: every
// lane of the warp gets it.
template <typename T>
__device__ __forceinline__ float lin_rows_absmax(int64_t t0, int nvalid, const LinSource<T>& src) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float m = 0.f;
  for (int r = warp; r < nvalid; r += kWarps) {
    const LinRow<T> x = src.row(t0 + r);
    for (int c = lane; c < src.ncols; c += 32) m = fmaxf(m, fabsf(x(src.col0 + c)));
  }
  return warp_max(m);
}

// The tokens of one sequence: batch row b and [start, end) along N.
struct SeqSpan {
  int b = 0;
  int64_t start = 0, end = 0;
};

__device__ __forceinline__ SeqSpan seq_span(const LinearAttentionParams& p, int seq) {
  SeqSpan s;
  if (p.cu_seqlens != nullptr) {
    if (p.cu_seqlens_int64) {
      s.start = static_cast<const int64_t*>(p.cu_seqlens)[seq];
      s.end = static_cast<const int64_t*>(p.cu_seqlens)[seq + 1];
    } else {
      s.start = static_cast<const int*>(p.cu_seqlens)[seq];
      s.end = static_cast<const int*>(p.cu_seqlens)[seq + 1];
    }
    if (s.end < s.start) s.end = s.start;
  } else {
    s.b = seq;
    s.end = p.N;
  }
  return s;
}

// The normaliser of a chunk's rows, one warp per row r < C:
//   dens[r] = pmult · Σ_{c < C} P[r·ldp + c] (causal; P == nullptr: non-causal, no such term)
//           + Σ_{f < XP} X[r·ldx + f] · z[f]
// P and X in float32 or the 16-bit operand type of the tensor-core kernel; pmult undoes a
// power-of-two scale of P (float16 tensor cores).
// xmult likewise undoes X's scale.
template <typename TP, typename TX>
__device__ __forceinline__ void chunk_normaliser(float* dens, const TP* P, int ldp, const TX* X, int ldx,
                                                 const float* z, int C, int XP, float pmult = 1.f,
                                                 float xmult = 1.f) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < C; r += kWarps) {
    float s = 0.f;
    if (P != nullptr) {
      for (int c = lane; c < C; c += 32) s += to_float(P[r * ldp + c]);
      s *= pmult;  // exact (a power of two)
    }
    for (int f = lane; f < XP; f += 32) s = fmaf(to_float(X[r * ldx + f]) * xmult, z[f], s);
    s = warp_sum(s);
    if (lane == 0) dens[r] = s;
  }
}

// z[f] += Σ_{j < nvalid} K[j·ld + f] · kmult for f < XP: the normaliser column's state (Σ of the
// keys; kmult undoes a power-of-two scale of K, exactly).
template <typename TK>
__device__ __forceinline__ void add_key_sums(float* z, const TK* K, int ld, int XP, int nvalid, float kmult = 1.f) {
  for (int f = threadIdx.x; f < XP; f += kThreads) {
    float s = z[f];
    for (int j = 0; j < nvalid; ++j) s += to_float(K[j * ld + f]) * kmult;
    z[f] = s;
  }
}

// body(t0, nvalid) for each chunk of C tokens of the sequence, first to last (reverse: last to
// first); nvalid < C only for the last chunk.
template <int C, typename Body>
__device__ __forceinline__ void for_each_chunk(const SeqSpan& s, bool reverse, Body&& body) {
  const int64_t n = (s.end - s.start + C - 1) / C;
  for (int64_t it = 0; it < n; ++it) {
    const int64_t t0 = s.start + (reverse ? n - 1 - it : it) * C;
    body(t0, static_cast<int>(min(static_cast<int64_t>(C), s.end - t0)));
  }
}

// One (sequence, head, column slice) of a role: operand loads, the initial and final state,
// and the epilogue that writes a chunk's rows.  Threads of the CTA call every method together.
template <typename T, int ROLE>
struct HeadView {
  using R = RoleTraits<ROLE>;
  const CoreArgs& a;
  const LinearAttentionParams& p;
  int b, h, hk, hh, slice, col0, wcols;
  int64_t sh, bh, bhk, rows_h;
  const T *qrow0, *krow0, *vrow0, *dorow0;
  const uint8_t* maskb;
  const float *rden_h, *part_h;
  // multiplier of the rows built from dout (g', g) as they are loaded: the float16 tensor-core
  // kernel's power-of-two range scale (chunk_tc.cuh); 1 elsewhere
  float g_mult = 1.f;
  // multipliers of the φ rows (X, K or W, whichever are built from q or k), likewise
  float phi_mult_x = 1.f, phi_mult_k = 1.f, phi_mult_w = 1.f;

  // hh: index of the query head inside a kv group (kDk / kDv), else 0; WB: the slice width
  __device__ HeadView(const CoreArgs& args, const SeqSpan& s, int seq, int hy, int hh_, int slice_, int WB)
      : a(args), p(args.p), b(s.b), hh(hh_), slice(slice_) {
    const int G = p.H / p.Hkv;
    h = R::kPerKv ? hy * G + hh : hy;
    hk = h / G;
    col0 = slice * WB;
    wcols = min(WB, a.wdim - col0);
    sh = static_cast<int64_t>(seq) * p.H + h;  // state row (nseq, H)
    bh = static_cast<int64_t>(b) * p.H + h;    // workspace row block (B·H)
    bhk = static_cast<int64_t>(b) * p.Hkv + hk;
    rows_h = static_cast<int64_t>(p.B) * p.H * p.N;  // stride of part[]
    qrow0 = static_cast<const T*>(p.q) + b * p.q_stride.b + h * p.q_stride.h;
    krow0 = static_cast<const T*>(p.k) + b * p.k_stride.b + hk * p.k_stride.h;
    vrow0 = static_cast<const T*>(p.v) + b * p.v_stride.b + hk * p.v_stride.h;
    dorow0 = p.dout != nullptr ? static_cast<const T*>(p.dout) + b * p.dout_stride.b + h * p.dout_stride.h : nullptr;
    maskb = p.mask != nullptr ? p.mask + b * p.mask_stride_b : nullptr;
    rden_h = (p.normalize && a.ws.rden != nullptr) ? a.ws.rden + bh * p.N : nullptr;
    part_h = a.ws.part != nullptr ? a.ws.part + bh * p.N : nullptr;
  }

  // X, K rows: xdim columns padded to `pad`; W rows: this slice's columns padded to `pad`.
  template <typename D>
  __device__ void load_x(D* dst, int ld, int pad, int C, int64_t t0, int nvalid) const {
    if constexpr (kPhiX) {
      load_phi_rows(dst, ld, pad, C, t0, nvalid, phi_x(), phi_mult_x);
    } else if constexpr (ROLE == kDq) {
      load_lin_rows(dst, ld, pad, C, t0, nvalid, g_rows(), g_mult);
    } else {  // kDk
      load_lin_rows(dst, ld, pad, C, t0, nvalid, v_rows());
    }
  }
  template <typename D>
  __device__ void load_k(D* dst, int ld, int pad, int C, int64_t t0, int nvalid) const {
    if constexpr (kPhiK) {
      load_phi_rows(dst, ld, pad, C, t0, nvalid, phi_k(), phi_mult_k);
    } else if constexpr (ROLE == kDq) {
      load_lin_rows(dst, ld, pad, C, t0, nvalid, v_rows());
    } else {  // kDk
      load_lin_rows(dst, ld, pad, C, t0, nvalid, g_rows(), g_mult);
    }
  }
  template <typename D>
  __device__ void load_w(D* dst, int ld, int pad, int C, int64_t t0, int nvalid) const {
    if constexpr (kPhiW) {
      load_phi_rows(dst, ld, pad, C, t0, nvalid, phi_w(), phi_mult_w);
    } else if constexpr (ROLE == kFwd || ROLE == kPrep) {
      load_lin_rows(dst, ld, pad, C, t0, nvalid, v_rows());
    } else {  // kDv
      load_lin_rows(dst, ld, pad, C, t0, nvalid, g_rows(), g_mult);
    }
  }

  // Which of X, K, W are φ rows in this role, and their sources: φ(q) (X of kFwd / kPrep, K of
  // kDv, this slice as W of kDk) and φ(k) with padded keys zero (K of kFwd / kPrep, X of kDv,
  // this slice as W of kDq).
  static constexpr bool kPhiX = ROLE == kFwd || ROLE == kPrep || ROLE == kDv;
  static constexpr bool kPhiK = kPhiX;
  static constexpr bool kPhiW = ROLE == kDq || ROLE == kDk;
  __device__ PhiSource<T> phi_of_q(int c0, int n) const {
    return {qrow0, p.q_stride.n, p.q_stride.d, p.Dk, p.feature_map, c0, n, nullptr, 0};
  }
  __device__ PhiSource<T> phi_of_k(int c0, int n) const {
    return {krow0, p.k_stride.n, p.k_stride.d, p.Dk, p.feature_map, c0, n, maskb, p.mask_stride_n};
  }
  __device__ PhiSource<T> phi_x() const { return ROLE == kDv ? phi_of_k(0, a.xdim) : phi_of_q(0, a.xdim); }
  __device__ PhiSource<T> phi_k() const { return ROLE == kDv ? phi_of_q(0, a.xdim) : phi_of_k(0, a.xdim); }
  __device__ PhiSource<T> phi_w() const { return ROLE == kDq ? phi_of_k(col0, wcols) : phi_of_q(col0, wcols); }

  // The rows built from v: v (the forward's W: this slice, no extra column) or v' = [v, 1] (X of
  // kDk, K of kDq: xdim columns).
  __device__ LinSource<T> v_rows() const {
    if constexpr (ROLE == kFwd || ROLE == kPrep)
      return {vrow0, p.v_stride.n, p.v_stride.d, p.Dv, col0, wcols, nullptr, nullptr, 0, 0, 0.f};
    else
      return {vrow0, p.v_stride.n, p.v_stride.d, p.Dv, 0, a.xdim, nullptr, nullptr, 0, 0, 1.f};
  }
  // The rows built from dout (R::kGOperand): g = do·r (W of kDv: this slice, no extra column:
  // wcols <= Dv - col0) or g' = [do·r, -r·(do·out)] (X of kDq, K of kDk: xdim columns).
  __device__ LinSource<T> g_rows() const {
    if constexpr (ROLE == kDv)
      return {dorow0, p.dout_stride.n, p.dout_stride.d, p.Dv, col0, wcols, rden_h, nullptr, 0, 0, 0.f};
    else
      return {dorow0, p.dout_stride.n, p.dout_stride.d, p.Dv, 0, a.xdim, rden_h, part_h, rows_h, a.ws.nparts, 0.f};
  }

  // max |entry| of the rows built from dout in chunk t0, over the warp's rows
  __device__ float g_rows_absmax(int64_t t0, int nvalid) const {
    static_assert(R::kGOperand != 0, "a role with an operand built from dout");
    return lin_rows_absmax(t0, nvalid, g_rows());
  }

  // max |φ| of the X, K, W rows over chunk t0 (this warp's rows; 0 for a slot that is not φ)
  __device__ float phi_absmax_x(int64_t t0, int nvalid) const {
    return kPhiX ? phi_rows_absmax(t0, nvalid, phi_x()) : 0.f;
  }
  __device__ float phi_absmax_k(int64_t t0, int nvalid) const {
    return kPhiK ? phi_rows_absmax(t0, nvalid, phi_k()) : 0.f;
  }
  __device__ float phi_absmax_w(int64_t t0, int nvalid) const {
    return kPhiW ? phi_rows_absmax(t0, nvalid, phi_w()) : 0.f;
  }

  // Ss (XP × WB, float32, leading dim ld) = this slice of S_init, zero outside xdim × wcols;
  // zs (XP) = z0 for the roles with a normaliser column.
  __device__ void load_state(float* Ss, int ld, int XP, int WB, float* zs) const {
    const int xdim = a.xdim;
    for (int e = threadIdx.x; e < XP * WB; e += kThreads) {
      const int r = e / WB, c = e % WB;
      float s = 0.f;
      if (r < xdim && c < wcols) {
        const int col = col0 + c;
        if constexpr (ROLE == kFwd || ROLE == kPrep) {
          if (p.S0 != nullptr) s = p.S0[(sh * p.F + r) * p.Dv + col];
        } else if constexpr (ROLE == kDq) {  // [S0, z0]ᵀ: row r = value index, col = feature
          if (r < p.Dv) {
            if (p.S0 != nullptr) s = p.S0[(sh * p.F + col) * p.Dv + r];
          } else if (p.z0 != nullptr) {
            s = p.z0[sh * p.F + col];
          }
        } else if constexpr (ROLE == kDk) {  // [dS, dz]ᵀ
          if (r < p.Dv) {
            if (p.dS != nullptr) s = p.dS[(sh * p.F + col) * p.Dv + r];
          } else if (p.dz != nullptr) {
            s = p.dz[sh * p.F + col];
          }
        } else {  // kDv: dS
          if (p.dS != nullptr) s = p.dS[(sh * p.F + r) * p.Dv + col];
        }
      }
      Ss[r * ld + c] = s;
    }
    if constexpr (R::kAug) {
      for (int f = threadIdx.x; f < XP; f += kThreads) zs[f] = (f < xdim && p.z0 != nullptr) ? p.z0[sh * p.F + f] : 0.f;
    }
  }

  // A chunk's rows of Y (C × WB float32, leading dim ld) and dens → global: one warp per row.
  __device__ void epilogue(const float* Ys, int ld, const float* dens, int64_t t0, int nvalid) const {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int r = warp; r < nvalid; r += kWarps) {
      const int64_t t = t0 + r;
      const float* yrow = Ys + r * ld;
      if constexpr (ROLE == kFwd) {
        const float scale = p.normalize ? 1.f / (dens[r] + p.eps) : 1.f;
        T* orow = static_cast<T*>(p.out) + b * p.out_stride.b + h * p.out_stride.h + t * p.out_stride.n;
        for (int c = lane; c < wcols; c += 32) orow[(col0 + c) * p.out_stride.d] = from_float<T>(yrow[c] * scale);
      } else if constexpr (ROLE == kPrep) {
        const float rd = 1.f / (dens[r] + p.eps);
        const T* drow = dorow0 + t * p.dout_stride.n;
        float dot = 0.f;
        for (int c = lane; c < wcols; c += 32) dot = fmaf(to_float(drow[(col0 + c) * p.dout_stride.d]), yrow[c], dot);
        dot = warp_sum(dot) * rd;
        if (lane == 0) {
          if (slice == 0) a.ws.rden[bh * p.N + t] = rd;
          a.ws.part[slice * rows_h + bh * p.N + t] = dot;
        }
      } else if constexpr (ROLE == kDq) {
        float* dst = a.ws.dA + (bh * p.N + t) * p.F + col0;
        for (int c = lane; c < wcols; c += 32) dst[c] = yrow[c];
      } else {
        const int width = ROLE == kDk ? p.F : p.Dv;
        float* dst = (ROLE == kDk ? a.ws.dB : a.ws.dV) + (bhk * p.N + t) * width + col0;
        if (hh == 0) {
          for (int c = lane; c < wcols; c += 32) dst[c] = yrow[c];
        } else {
          for (int c = lane; c < wcols; c += 32) dst[c] += yrow[c];  // same thread wrote it for hh - 1
        }
      }
    }
  }

  // The final state (kFwd: S, z; kDk: dS0, dz0) from Ss (leading dim ld) and zs.
  __device__ void store_state(const float* Ss, int ld, const float* zs) const {
    const int xdim = a.xdim;
    if constexpr (ROLE == kFwd) {
      if (p.S != nullptr) {
        for (int e = threadIdx.x; e < xdim * wcols; e += kThreads) {
          const int r = e / wcols, c = e % wcols;
          p.S[(sh * p.F + r) * p.Dv + col0 + c] = Ss[r * ld + c];
        }
      }
      if (p.z != nullptr && slice == 0) {
        for (int f = threadIdx.x; f < xdim; f += kThreads) p.z[sh * p.F + f] = zs[f];
      }
    } else if constexpr (ROLE == kDk) {
      if (p.dS0 != nullptr) {  // state row r = value index (r == Dv: the z column), col = feature
        for (int e = threadIdx.x; e < xdim * wcols; e += kThreads) {
          const int c = e / xdim, r = e % xdim;
          const int f = col0 + c;
          if (r < p.Dv) {
            p.dS0[(sh * p.F + f) * p.Dv + r] = Ss[r * ld + c];
          } else if (p.dz0 != nullptr) {
            p.dz0[sh * p.F + f] = Ss[r * ld + c];
          }
        }
      }
    }
  }
};

}  // namespace detail
}  // namespace la
}  // namespace kexue
