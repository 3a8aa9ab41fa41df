// The chunked linear-attention kernel on float32 CUDA cores, for every role (chunk_common.cuh).
//
// Per chunk of C tokens (all in shared memory, fp32):
//   P  = mask(X Kᵀ)          C×C,   K-dim xdim      (P·W and X·S below are one output tile)
//   Y  = P W + X S           C×WB,  K-dims C, xdim
//   S += Kᵀ W                xdim×WB, K-dim C      (state held in shared memory all along)
// FLOPs per token and slice: 2·(C·xdim + C·WB + 2·xdim·WB); global traffic: each input row is
// read once per slice, each output row written once.  Non-causal runs two passes (state, then
// Y = X S).  The GEMMs are fp32 on CUDA cores (register tiles of up to 4×4, 16-byte shared
// loads): exact to fp32 rounding for every dtype.
#pragma once

#include "linear_attention/chunk_common.cuh"

namespace kexue {
namespace la {
namespace detail {

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

  const int tid = threadIdx.x;
  const int rg = tid / 16, cg = tid % 16;
  const int XP = round_up4(args.xdim);
  const SeqSpan span = seq_span(args.p, blockIdx.x);

  const int nheads = R::kPerKv ? args.p.H / args.p.Hkv : 1;
  for (int hh = 0; hh < nheads; ++hh) {
    const HeadView<T, ROLE> v(args, span, blockIdx.x, blockIdx.y, hh, blockIdx.z, WB);

    __syncthreads();  // the previous head is done with Ss / Ys
    v.load_state(Ss, WLD, XP, WB, zs);

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
      if constexpr (R::kAug) add_key_sums(zs, Ks, XLD, XP, nvalid);
    };

    if (args.p.causal) {
      for_each_chunk<C>(span, R::kReverse, [&](int64_t t0, int nvalid) {
        __syncthreads();  // previous chunk's readers of Xs/Ks/Ws/Ys/dens are done
        v.load_x(Xs, XLD, XP, C, t0, nvalid);
        v.load_k(Ks, XLD, XP, C, t0, nvalid);
        v.load_w(Ws, WLD, WB, C, t0, nvalid);
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
        if constexpr (R::kAug) chunk_normaliser(dens, Ps, PLD, Xs, XLD, zs, C, XP);  // Σ_j P_tj + X_t · z
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
        v.epilogue(Ys, PLD, dens, t0, nvalid);
      });
    } else {
      // pass 1: S = S_init + Σ_j K_j W_jᵀ over the whole sequence
      for_each_chunk<C>(span, false, [&](int64_t t0, int nvalid) {
        __syncthreads();
        v.load_k(Ks, XLD, XP, C, t0, nvalid);
        v.load_w(Ws, WLD, WB, C, t0, nvalid);
        __syncthreads();
        update_state(nvalid);
      });
      // pass 2: Y = X S
      for_each_chunk<C>(span, false, [&](int64_t t0, int nvalid) {
        __syncthreads();
        v.load_x(Xs, XLD, XP, C, t0, nvalid);
        __syncthreads();
        if constexpr (R::kAug) chunk_normaliser(dens, static_cast<const float*>(nullptr), 0, Xs, XLD, zs, C, XP);
        float acc[TYM][TYN] = {};
        mt_gemm<TYM, TYN, true, false>(acc, Xs, XLD, rg, 16, Ss, WLD, cg * TYN, 1, 0, XP);
#pragma unroll
        for (int i = 0; i < TYM; ++i)
#pragma unroll
          for (int j = 0; j < TYN; ++j) Ys[(rg + 16 * i) * PLD + cg * TYN + j] = acc[i][j];
        __syncthreads();
        v.epilogue(Ys, PLD, dens, t0, nvalid);
      });
    }

    __syncthreads();
    v.store_state(Ss, WLD, zs);
  }
}

}  // namespace detail
}  // namespace la
}  // namespace kexue
