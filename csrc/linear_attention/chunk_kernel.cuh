// The chunked linear-attention kernel: one template serves the forward and the three passes of
// the backward, because each of them is linear attention with other operands.
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
//
// Grid: (sequence, head or kv head, slice of W's columns of width WB); 256 threads.
// Per chunk of C tokens (all in shared memory, fp32):
//   P  = mask(X Kᵀ)          C×C,   K-dim xdim      (P·W and X·S below are one output tile)
//   Y  = P W + X S           C×WB,  K-dims C, xdim
//   S += Kᵀ W                xdim×WB, K-dim C      (state held in shared memory all along)
// FLOPs per token and slice: 2·(C·xdim + C·WB + 2·xdim·WB); global traffic: each input row is
// read once per slice, each output row written once.  Non-causal runs two passes (state, then
// Y = X S).  The GEMMs are fp32 on CUDA cores (register tiles of up to 4×4, 16-byte shared
// loads): exact to fp32 rounding for every dtype.
#pragma once

#include "linear_attention/kernel_common.cuh"

namespace kexue {
namespace la {
namespace detail {

constexpr int kThreads = 256;  // 8 warps; the 16×16 thread grid of the C×C and C×WB tiles
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
};

// Smem footprint in floats of one configuration (tiles padded by 4 floats per row: 16-byte
// aligned rows that do not all start in the same bank).
template <int C, int XPMAX, int WB>
struct ChunkSmem {
  static constexpr int XLD = XPMAX + 4;
  static constexpr int WLD = WB + 4;
  static constexpr int PLD = (C > WB ? C : WB) + 4;
  static constexpr int kX = 0;
  static constexpr int kK = kX + C * XLD;
  static constexpr int kW = kK + C * XLD;
  static constexpr int kP = kW + C * WLD;  // P, then Y (aliased)
  static constexpr int kS = kP + C * PLD;
  static constexpr int kZ = kS + XPMAX * WLD;
  static constexpr int kDen = kZ + XPMAX;
  static constexpr int kFloats = kDen + C;
  static constexpr size_t kBytes = sizeof(float) * kFloats;
};

// Rows t0 .. t0 + C - 1 of φ(x)[col0, col0 + ncols) into dst (C × padcols, zero padded): one warp
// per row.  Rows >= nvalid and masked rows are zero.
template <typename T>
__device__ __forceinline__ void load_phi_rows(float* dst, int ld, int padcols, int C, const T* base, int64_t sn,
                                              int64_t sd, int64_t t0, int nvalid, int Dk, FeatureMap fm, int col0,
                                              int ncols, const uint8_t* mask, int64_t msn) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < C; r += kWarps) {
    float* drow = dst + r * ld;
    const bool live = r < nvalid && !(mask != nullptr && mask[(t0 + r) * msn] != 0);
    if (!live) {
      for (int c = lane; c < padcols; c += 32) drow[c] = 0.f;
      continue;
    }
    const T* row = base + (t0 + r) * sn;
    const PhiStats st = phi_stats(row, sd, Dk, fm, lane);
    for (int c = lane; c < padcols; c += 32) drow[c] = c < ncols ? phi_value(row, sd, col0 + c, fm, st) : 0.f;
  }
}

// Rows of a linear operand, columns [col0, col0 + ncols) of
//   [x_t · s_t (Dsrc values), e_t, 0 ...]
// with s_t = rden[t] (or 1) and e_t = -rden[t] · Σ_s part[s][t] (or extra_const when rden is null).
// v' = [v, 1]: rden null, extra_const 1.   g' = [do·r, -r·(do·out)]: rden, part given.
template <typename T>
__device__ __forceinline__ void load_lin_rows(float* dst, int ld, int padcols, int C, const T* base, int64_t sn,
                                              int64_t sd, int64_t t0, int nvalid, int Dsrc, int col0, int ncols,
                                              const float* rden, const float* part, int64_t part_stride, int nparts,
                                              float extra_const) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < C; r += kWarps) {
    float* drow = dst + r * ld;
    if (r >= nvalid) {
      for (int c = lane; c < padcols; c += 32) drow[c] = 0.f;
      continue;
    }
    const int64_t t = t0 + r;
    float scale = 1.f, extra = extra_const;
    if (rden != nullptr) {
      scale = rden[t];
      float dot = 0.f;
      for (int s = 0; s < nparts; ++s) dot += part[s * part_stride + t];
      extra = -scale * dot;
    }
    const T* row = base + t * sn;
    for (int c = lane; c < padcols; c += 32) {
      const int col = col0 + c;
      float x = 0.f;
      if (c < ncols) x = col < Dsrc ? to_float(row[col * sd]) * scale : (col == Dsrc ? extra : 0.f);
      drow[c] = x;
    }
  }
}

template <typename T, int ROLE, int C, int XPMAX, int WB>
__global__ void __launch_bounds__(kThreads, 1) la_chunk_kernel(const CoreArgs args) {
  using R = RoleTraits<ROLE>;
  using L = ChunkSmem<C, XPMAX, WB>;
  static_assert(C % 16 == 0 && WB % 16 == 0 && XPMAX % 4 == 0, "tile sizes");
  constexpr int XLD = L::XLD, WLD = L::WLD, PLD = L::PLD;
  constexpr int TP = C / 16;   // P tile per thread: TP × TP (rows/cols strided by 16)
  constexpr int TYM = C / 16;  // Y tile per thread: TYM rows (strided by 16) × TYN columns
  constexpr int TYN = WB / 16;

  KEXUE_DYNAMIC_SMEM(float4, smem_f4);
  float* smem = reinterpret_cast<float*>(smem_f4);
  float* Xs = smem + L::kX;
  float* Ks = smem + L::kK;
  float* Ws = smem + L::kW;
  float* Ps = smem + L::kP;
  float* Ys = Ps;
  float* Ss = smem + L::kS;
  float* zs = smem + L::kZ;
  float* dens = smem + L::kDen;

  const LinearAttentionParams& p = args.p;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int rg = tid / 16, cg = tid % 16;
  const int seq = blockIdx.x, hy = blockIdx.y, slice = blockIdx.z;
  const int col0 = slice * WB;
  const int wcols = min(WB, args.wdim - col0);
  const int xdim = args.xdim;
  const int XP = round_up4(xdim);
  const int G = p.H / p.Hkv;

  int b;
  int64_t start, end;
  if (p.cu_seqlens != nullptr) {
    b = 0;
    if (p.cu_seqlens_int64) {
      start = static_cast<const int64_t*>(p.cu_seqlens)[seq];
      end = static_cast<const int64_t*>(p.cu_seqlens)[seq + 1];
    } else {
      start = static_cast<const int*>(p.cu_seqlens)[seq];
      end = static_cast<const int*>(p.cu_seqlens)[seq + 1];
    }
  } else {
    b = seq;
    start = 0;
    end = p.N;
  }
  const int64_t len = end > start ? end - start : 0;
  const int64_t nchunks = (len + C - 1) / C;

  const T* qg = static_cast<const T*>(p.q);
  const T* kg = static_cast<const T*>(p.k);
  const T* vg = static_cast<const T*>(p.v);
  const T* dog = static_cast<const T*>(p.dout);
  const uint8_t* maskb = p.mask != nullptr ? p.mask + b * p.mask_stride_b : nullptr;
  const int64_t rows_h = static_cast<int64_t>(p.B) * p.H * p.N;  // stride of part[]

  const int nheads = R::kPerKv ? G : 1;
  for (int hh = 0; hh < nheads; ++hh) {
    const int h = R::kPerKv ? hy * G + hh : hy;
    const int hk = h / G;
    const int64_t sh = static_cast<int64_t>(seq) * p.H + h;  // state row (nseq, H)
    const int64_t bh = static_cast<int64_t>(b) * p.H + h;    // workspace row block (B·H)
    const int64_t bhk = static_cast<int64_t>(b) * p.Hkv + hk;
    const T* qrow0 = qg + b * p.q_stride.b + h * p.q_stride.h;
    const T* krow0 = kg + b * p.k_stride.b + hk * p.k_stride.h;
    const T* vrow0 = vg + b * p.v_stride.b + hk * p.v_stride.h;
    const T* dorow0 = dog != nullptr ? dog + b * p.dout_stride.b + h * p.dout_stride.h : nullptr;
    const float* rden_h = (p.normalize && args.ws.rden != nullptr) ? args.ws.rden + bh * p.N : nullptr;
    const float* part_h = args.ws.part != nullptr ? args.ws.part + bh * p.N : nullptr;

    __syncthreads();  // the previous head is done with Ss / Ys
    // ---- initial state --------------------------------------------------------------------
    for (int e = tid; e < XP * WB; e += kThreads) {
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
      Ss[r * WLD + c] = s;
    }
    if constexpr (R::kAug) {
      for (int f = tid; f < XP; f += kThreads) zs[f] = (f < xdim && p.z0 != nullptr) ? p.z0[sh * p.F + f] : 0.f;
    }

    // ---- operand loads of one chunk --------------------------------------------------------
    auto load_x = [&](int64_t t0, int nvalid) {
      if constexpr (ROLE == kFwd || ROLE == kPrep) {
        load_phi_rows(Xs, XLD, XP, C, qrow0, p.q_stride.n, p.q_stride.d, t0, nvalid, p.Dk, p.feature_map, 0, xdim,
                      nullptr, 0);
      } else if constexpr (ROLE == kDq) {
        load_lin_rows(Xs, XLD, XP, C, dorow0, p.dout_stride.n, p.dout_stride.d, t0, nvalid, p.Dv, 0, xdim, rden_h,
                      part_h, rows_h, args.ws.nparts, 0.f);
      } else if constexpr (ROLE == kDk) {
        load_lin_rows(Xs, XLD, XP, C, vrow0, p.v_stride.n, p.v_stride.d, t0, nvalid, p.Dv, 0, xdim, nullptr, nullptr,
                      0, 0, 1.f);
      } else {
        load_phi_rows(Xs, XLD, XP, C, krow0, p.k_stride.n, p.k_stride.d, t0, nvalid, p.Dk, p.feature_map, 0, xdim,
                      maskb, p.mask_stride_n);
      }
    };
    auto load_k = [&](int64_t t0, int nvalid) {
      if constexpr (ROLE == kFwd || ROLE == kPrep) {
        load_phi_rows(Ks, XLD, XP, C, krow0, p.k_stride.n, p.k_stride.d, t0, nvalid, p.Dk, p.feature_map, 0, xdim,
                      maskb, p.mask_stride_n);
      } else if constexpr (ROLE == kDq) {
        load_lin_rows(Ks, XLD, XP, C, vrow0, p.v_stride.n, p.v_stride.d, t0, nvalid, p.Dv, 0, xdim, nullptr, nullptr,
                      0, 0, 1.f);
      } else if constexpr (ROLE == kDk) {
        load_lin_rows(Ks, XLD, XP, C, dorow0, p.dout_stride.n, p.dout_stride.d, t0, nvalid, p.Dv, 0, xdim, rden_h,
                      part_h, rows_h, args.ws.nparts, 0.f);
      } else {
        load_phi_rows(Ks, XLD, XP, C, qrow0, p.q_stride.n, p.q_stride.d, t0, nvalid, p.Dk, p.feature_map, 0, xdim,
                      nullptr, 0);
      }
    };
    auto load_w = [&](int64_t t0, int nvalid) {
      if constexpr (ROLE == kFwd || ROLE == kPrep) {
        load_lin_rows(Ws, WLD, WB, C, vrow0, p.v_stride.n, p.v_stride.d, t0, nvalid, p.Dv, col0, wcols, nullptr,
                      nullptr, 0, 0, 0.f);
      } else if constexpr (ROLE == kDq) {
        load_phi_rows(Ws, WLD, WB, C, krow0, p.k_stride.n, p.k_stride.d, t0, nvalid, p.Dk, p.feature_map, col0, wcols,
                      maskb, p.mask_stride_n);
      } else if constexpr (ROLE == kDk) {
        load_phi_rows(Ws, WLD, WB, C, qrow0, p.q_stride.n, p.q_stride.d, t0, nvalid, p.Dk, p.feature_map, col0, wcols,
                      nullptr, 0);
      } else {  // g = do · r (no extra column: wcols <= Dv - col0)
        load_lin_rows(Ws, WLD, WB, C, dorow0, p.dout_stride.n, p.dout_stride.d, t0, nvalid, p.Dv, col0, wcols,
                      rden_h, nullptr, 0, 0, 0.f);
      }
    };

    // ---- S += Kᵀ W, z += Σ K (4×4 register tiles over the xdim × WB state) -----------------
    auto update_state = [&](int nvalid) {
      const int kend = round_up4(nvalid);
      constexpr int ntn = WB / 4;
      const int nmt = (XP / 4) * ntn;
      for (int mt = tid; mt < nmt; mt += kThreads) {
        const int m0 = (mt / ntn) * 4, n0 = (mt % ntn) * 4;
        float acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i) ld_vec<4>(acc[i], Ss + (m0 + i) * WLD + n0);
        mt_gemm<4, 4, false, false>(acc, Ks, XLD, m0, 1, Ws, WLD, n0, 1, 0, kend);
#pragma unroll
        for (int i = 0; i < 4; ++i)
          *reinterpret_cast<float4*>(Ss + (m0 + i) * WLD + n0) = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
      }
      if constexpr (R::kAug) {
        for (int f = tid; f < XP; f += kThreads) {
          float s = zs[f];
          for (int j = 0; j < nvalid; ++j) s += Ks[j * XLD + f];
          zs[f] = s;
        }
      }
    };

    // ---- per-chunk epilogue: Ys (C × WB) and dens → global ------------------------------------
    auto epilogue = [&](int64_t t0, int nvalid) {
      for (int r = warp; r < nvalid; r += kWarps) {
        const int64_t t = t0 + r;
        const float* yrow = Ys + r * PLD;
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
            if (slice == 0) args.ws.rden[bh * p.N + t] = rd;
            args.ws.part[slice * rows_h + bh * p.N + t] = dot;
          }
        } else if constexpr (ROLE == kDq) {
          float* dst = args.ws.dA + (bh * p.N + t) * p.F + col0;
          for (int c = lane; c < wcols; c += 32) dst[c] = yrow[c];
        } else {
          const int width = ROLE == kDk ? p.F : p.Dv;
          float* dst = (ROLE == kDk ? args.ws.dB : args.ws.dV) + (bhk * p.N + t) * width + col0;
          if (hh == 0) {
            for (int c = lane; c < wcols; c += 32) dst[c] = yrow[c];
          } else {
            for (int c = lane; c < wcols; c += 32) dst[c] += yrow[c];  // same thread wrote it for hh - 1
          }
        }
      }
    };

    if (p.causal) {
      for (int64_t it = 0; it < nchunks; ++it) {
        const int64_t ci = R::kReverse ? nchunks - 1 - it : it;
        const int64_t t0 = start + ci * C;
        const int nvalid = static_cast<int>(min(static_cast<int64_t>(C), end - t0));
        __syncthreads();  // previous chunk's readers of Xs/Ks/Ws/Ys/dens are done
        load_x(t0, nvalid);
        load_k(t0, nvalid);
        load_w(t0, nvalid);
        __syncthreads();
        {  // P = mask(X Kᵀ): thread owns rows rg + 16i, cols cg + 16j
          float acc[TP][TP] = {};
          mt_gemm<TP, TP, true, true>(acc, Xs, XLD, rg, 16, Ks, XLD, cg, 16, 0, XP);
#pragma unroll
          for (int i = 0; i < TP; ++i)
#pragma unroll
            for (int j = 0; j < TP; ++j) {
              const int r = rg + 16 * i, c = cg + 16 * j;
              const bool keep = R::kReverse ? c >= r : c <= r;
              Ps[r * PLD + c] = keep ? acc[i][j] : 0.f;
            }
        }
        __syncthreads();
        if constexpr (R::kAug) {  // den_t = Σ_j P_tj + X_t · z
          for (int r = warp; r < C; r += kWarps) {
            float s = 0.f;
            for (int c = lane; c < C; c += 32) s += Ps[r * PLD + c];
            for (int f = lane; f < XP; f += 32) s = fmaf(Xs[r * XLD + f], zs[f], s);
            s = warp_sum(s);
            if (lane == 0) dens[r] = s;
          }
        }
        float acc[TYM][TYN] = {};
        {  // Y = P W + X S: rows rg + 16i, cols cg·TYN + j
          const int kend = round_up4(nvalid);
          mt_gemm<TYM, TYN, true, false>(acc, Ps, PLD, rg, 16, Ws, WLD, cg * TYN, 1, 0, kend);
          mt_gemm<TYM, TYN, true, false>(acc, Xs, XLD, rg, 16, Ss, WLD, cg * TYN, 1, 0, XP);
        }
        __syncthreads();  // all reads of Ps, Ss (old state) and zs done
#pragma unroll
        for (int i = 0; i < TYM; ++i)
#pragma unroll
          for (int j = 0; j < TYN; ++j) Ys[(rg + 16 * i) * PLD + cg * TYN + j] = acc[i][j];
        update_state(nvalid);
        __syncthreads();
        epilogue(t0, nvalid);
      }
    } else {
      // pass 1: S = S_init + Σ_j K_j W_jᵀ over the whole sequence
      for (int64_t ci = 0; ci < nchunks; ++ci) {
        const int64_t t0 = start + ci * C;
        const int nvalid = static_cast<int>(min(static_cast<int64_t>(C), end - t0));
        __syncthreads();
        load_k(t0, nvalid);
        load_w(t0, nvalid);
        __syncthreads();
        update_state(nvalid);
      }
      // pass 2: Y = X S
      for (int64_t ci = 0; ci < nchunks; ++ci) {
        const int64_t t0 = start + ci * C;
        const int nvalid = static_cast<int>(min(static_cast<int64_t>(C), end - t0));
        __syncthreads();
        load_x(t0, nvalid);
        __syncthreads();
        if constexpr (R::kAug) {
          for (int r = warp; r < C; r += kWarps) {
            float s = 0.f;
            for (int f = lane; f < XP; f += 32) s = fmaf(Xs[r * XLD + f], zs[f], s);
            s = warp_sum(s);
            if (lane == 0) dens[r] = s;
          }
        }
        float acc[TYM][TYN] = {};
        mt_gemm<TYM, TYN, true, false>(acc, Xs, XLD, rg, 16, Ss, WLD, cg * TYN, 1, 0, XP);
#pragma unroll
        for (int i = 0; i < TYM; ++i)
#pragma unroll
          for (int j = 0; j < TYN; ++j) Ys[(rg + 16 * i) * PLD + cg * TYN + j] = acc[i][j];
        __syncthreads();
        epilogue(t0, nvalid);
      }
    }

    // ---- final state -----------------------------------------------------------------------
    __syncthreads();
    if constexpr (ROLE == kFwd) {
      if (p.S != nullptr) {
        for (int e = tid; e < xdim * wcols; e += kThreads) {
          const int r = e / wcols, c = e % wcols;
          p.S[(sh * p.F + r) * p.Dv + col0 + c] = Ss[r * WLD + c];
        }
      }
      if (p.z != nullptr && slice == 0) {
        for (int f = tid; f < xdim; f += kThreads) p.z[sh * p.F + f] = zs[f];
      }
    } else if constexpr (ROLE == kDk) {
      if (p.dS0 != nullptr) {  // state row r = value index (r == Dv: the z column), col = feature
        for (int e = tid; e < xdim * wcols; e += kThreads) {
          const int c = e / xdim, r = e % xdim;
          const int f = col0 + c;
          if (r < p.Dv) {
            p.dS0[(sh * p.F + f) * p.Dv + r] = Ss[r * WLD + c];
          } else if (p.dz0 != nullptr) {
            p.dz0[sh * p.F + f] = Ss[r * WLD + c];
          }
        }
      }
    }
  }
}

// Launch of one configuration: dynamic smem above 48 KiB must be opted into per kernel.
template <typename T, int ROLE, int C, int XPMAX, int WB>
cudaError_t launch_chunk_cfg(const CoreArgs& a, cudaStream_t stream) {
  using L = ChunkSmem<C, XPMAX, WB>;
  auto kernel = la_chunk_kernel<T, ROLE, C, XPMAX, WB>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(L::kBytes));
  if (err != cudaSuccess) return err;
  const int heads = RoleTraits<ROLE>::kPerKv ? a.p.Hkv : a.p.H;
  const dim3 grid(a.p.nseq, heads, (a.wdim + WB - 1) / WB);
  KEXUE_LAUNCH(grid, kThreads, L::kBytes, stream, kernel)(a);
  return cudaGetLastError();
}

// Configurations by the padded X width (the state's rows): smem ≈ 89 / 89 / 115 KiB.
//   xdim <= 68:  C = 64, WB = 64      xdim <= 132: C = 32, WB = 64      xdim <= 260: C = 32, WB = 32
inline int chunk_wb(int xdim) { return round_up4(xdim) <= 132 ? 64 : 32; }

template <typename T, int ROLE>
cudaError_t run_chunk(const CoreArgs& a, cudaStream_t stream) {
  const int XP = round_up4(a.xdim);
  if (XP <= 68) return launch_chunk_cfg<T, ROLE, 64, 68, 64>(a, stream);
  if (XP <= 132) return launch_chunk_cfg<T, ROLE, 32, 132, 64>(a, stream);
  if (XP <= 260) return launch_chunk_cfg<T, ROLE, 32, 260, 32>(a, stream);
  return cudaErrorInvalidValue;
}

// Entry point of one (dtype, role): explicitly instantiated in the la_chunk_*.cu files (so the
// instantiations compile in parallel) and declared `extern template` where it is called.
template <typename T, int ROLE>
cudaError_t run_chunk_role(const CoreArgs& a, cudaStream_t stream) {
  return run_chunk<T, ROLE>(a, stream);
}

#define KEXUE_LA_CHUNK_INSTANCES(X)                                                              \
  X(float, kFwd) X(float, kPrep) X(float, kDq) X(float, kDk) X(float, kDv)                        \
  X(__half, kFwd) X(__half, kPrep) X(__half, kDq) X(__half, kDk) X(__half, kDv)                   \
  X(__nv_bfloat16, kFwd) X(__nv_bfloat16, kPrep) X(__nv_bfloat16, kDq) X(__nv_bfloat16, kDk)      \
  X(__nv_bfloat16, kDv)

}  // namespace detail
}  // namespace la
}  // namespace kexue
