// The chunked linear-attention kernel on tensor cores (WMMA 16×16×16, bfloat16 operands, float32
// accumulators), for every role (chunk_common.cuh).  The same algorithm as chunk_fp32.cuh:
//   P  = mask(X Kᵀ)          C×C,      K-dim xdim   (tiles above / below the diagonal skipped)
//   Y  = P W + X S           C×WB,     K-dims C (causal part only), xdim
//   S += Kᵀ W                xdim×WB,  K-dim C      (float32 state in shared memory)
// with the operands rounded to bfloat16 as they enter the products: φ(q), φ(k), the linear rows
// (g', v'), the masked P, and a bfloat16 copy of the state refreshed after each chunk (the
// state itself stays float32).  The normaliser uses the operands as rounded (den = Σ_j P̃_tj +
// X̃_t·z with z summed from the rounded K rows), so the output stays a weighted mean of the
// values under the rounding, as in the Triton kernels.  Error: ≈ 2⁻⁹ relative per rounded
// operand, i.e. bfloat16's own precision; float16 and float32 run on chunk_fp32.cuh.
// FLOPs per token and slice: 2·(C·xdim/2 + C·WB/2 + 2·xdim·WB) on tensor cores (the causal
// halves of P and P·W skipped at 16×16 granularity); shared traffic per chunk: the three
// operand tiles once in 16 bits, P and Y once in float32.
// Phases per causal chunk (each ends in __syncthreads):
//   A load X, K, W (φ fused, rounded)     B P tiles → Pf;  Sf += Kᵀ W (Sh keeps the old state)
//   C Ph = round(mask(Pf))                 D den (Ph, X̃·z);  Y = Ph W + X Sh → Ys (aliases Pf)
//   E z += Σ K̃;  Sh = round(Sf);  Y rows → global
#pragma once

#include <type_traits>

#include "linear_attention/chunk_common.cuh"

#ifdef __CUDACC__
#include <mma.h>
#endif

namespace kexue {
namespace la {
namespace detail {

namespace wm = nvcuda::wmma;
using AccFrag = wm::fragment<wm::accumulator, 16, 16, 16, float>;

// Byte offsets of one configuration's shared tiles.  16-bit rows are padded by 8 elements and
// float rows by 4 (16 bytes: WMMA's leading dimensions must be multiples of 16 bytes, and the
// padding shifts consecutive rows across banks); every tile starts on a 32-byte boundary, as
// WMMA's loads and stores need, because C, XPMAX and WB are multiples of 16.
template <int C, int XPMAX, int WB>
struct ChunkSmemTc {
  static constexpr int XLD = XPMAX + 8;              // Xh, Kh   (16-bit, C × XPMAX)
  static constexpr int WLDH = WB + 8;                // Wh, Sh   (16-bit, C × WB, XPMAX × WB)
  static constexpr int PLDH = C + 8;                 // Ph       (16-bit, C × C)
  static constexpr int PLD = (C > WB ? C : WB) + 4;  // Pf / Ys  (float, C × C then C × WB)
  static constexpr int WLD = WB + 4;                 // Sf       (float, XPMAX × WB)
  static constexpr size_t kX = 0;
  static constexpr size_t kK = kX + 2 * C * XLD;
  static constexpr size_t kW = kK + 2 * C * XLD;
  static constexpr size_t kPh = kW + 2 * C * WLDH;
  static constexpr size_t kSh = kPh + 2 * C * PLDH;
  static constexpr size_t kPf = kSh + 2 * XPMAX * WLDH;
  static constexpr size_t kS = kPf + 4 * C * PLD;
  static constexpr size_t kZ = kS + 4 * XPMAX * WLD;
  static constexpr size_t kDen = kZ + 4 * XPMAX;
  static constexpr size_t kBytes = kDen + 4 * C;
  static_assert(C % 16 == 0 && XPMAX % 16 == 0 && WB % 16 == 0, "WMMA tiles");
};

__host__ __device__ __forceinline__ int round_up16(int x) { return (x + 15) & ~15; }

// acc += Σ_{k in [k0, k1), step 16} A(16 rows at m0, k..k+16) · B(k..k+16, 16 cols at n0), the
// operands in shared memory: A row-major ([m][k], ld lda) or column-major ([k][m]); B row-major
// ([k][n], ld ldb) or column-major ([n][k]).  One warp.
template <typename T, typename LA, typename LB>
__device__ __forceinline__ void tile_mma(AccFrag& acc, const T* A, int lda, int m0, const T* B, int ldb, int n0,
                                         int k0, int k1) {
  constexpr bool a_row = std::is_same<LA, wm::row_major>::value;
  constexpr bool b_row = std::is_same<LB, wm::row_major>::value;
  wm::fragment<wm::matrix_a, 16, 16, 16, T, LA> fa;
  wm::fragment<wm::matrix_b, 16, 16, 16, T, LB> fb;
  for (int k = k0; k < k1; k += 16) {
    wm::load_matrix_sync(fa, a_row ? A + m0 * lda + k : A + k * lda + m0, lda);
    wm::load_matrix_sync(fb, b_row ? B + k * ldb + n0 : B + n0 * ldb + k, ldb);
    wm::mma_sync(acc, fa, fb, acc);
  }
}

template <typename T, int ROLE, int C, int XPMAX, int WB>
__global__ void __launch_bounds__(kThreads, 1) la_chunk_tc_kernel(const CoreArgs args) {
  using R = RoleTraits<ROLE>;
  using L = ChunkSmemTc<C, XPMAX, WB>;
  using row = wm::row_major;
  using col = wm::col_major;
  static_assert(sizeof(T) == 2, "tensor-core operands are 16-bit");
  constexpr int XLD = L::XLD, WLDH = L::WLDH, PLDH = L::PLDH, PLD = L::PLD, WLD = L::WLD;
  constexpr int CT = C / 16, WT = WB / 16;  // 16×16 tiles along C and WB

  KEXUE_DYNAMIC_SMEM(float4, smem_f4);
  unsigned char* smem = reinterpret_cast<unsigned char*>(smem_f4);
  T* Xh = reinterpret_cast<T*>(smem + L::kX);
  T* Kh = reinterpret_cast<T*>(smem + L::kK);
  T* Wh = reinterpret_cast<T*>(smem + L::kW);
  T* Ph = reinterpret_cast<T*>(smem + L::kPh);
  T* Sh = reinterpret_cast<T*>(smem + L::kSh);
  float* Pf = reinterpret_cast<float*>(smem + L::kPf);
  float* Ys = Pf;
  float* Sf = reinterpret_cast<float*>(smem + L::kS);
  float* zs = reinterpret_cast<float*>(smem + L::kZ);
  float* dens = reinterpret_cast<float*>(smem + L::kDen);

  const int tid = threadIdx.x, warp = tid / 32;
  const int XP = round_up16(args.xdim);  // <= XPMAX (run_chunk's choice)
  const int XT = XP / 16;
  const SeqSpan span = seq_span(args.p, blockIdx.x);

  auto refresh_sh = [&] {  // Sh = round(Sf)
    for (int e = tid; e < XP * WB; e += kThreads) Sh[(e / WB) * WLDH + e % WB] = from_float<T>(Sf[(e / WB) * WLD + e % WB]);
  };
  auto update_state = [&](int nvalid) {  // Sf += K̃ᵀ W̃
    const int kend = round_up16(nvalid);
    for (int t = warp; t < XT * WT; t += kWarps) {
      const int m0 = (t / WT) * 16, n0 = (t % WT) * 16;
      AccFrag acc;
      wm::load_matrix_sync(acc, Sf + m0 * WLD + n0, WLD, wm::mem_row_major);
      tile_mma<T, col, row>(acc, Kh, XLD, m0, Wh, WLDH, n0, 0, kend);
      wm::store_matrix_sync(Sf + m0 * WLD + n0, acc, WLD, wm::mem_row_major);
    }
  };
  auto sum_keys = [&](int nvalid) {  // z += Σ K̃ (the roles with a normaliser column)
    if constexpr (R::kAug) add_key_sums(zs, Kh, XLD, XP, nvalid);
  };

  const int nheads = R::kPerKv ? args.p.H / args.p.Hkv : 1;
  for (int hh = 0; hh < nheads; ++hh) {
    const HeadView<T, ROLE> v(args, span, blockIdx.x, blockIdx.y, hh, blockIdx.z, WB);

    __syncthreads();  // the previous head is done with Sf / Ys
    v.load_state(Sf, WLD, XP, WB, zs);

    if (args.p.causal) {
      __syncthreads();
      refresh_sh();
      for_each_chunk<C>(span, R::kReverse, [&](int64_t t0, int nvalid) {
        const int kend = round_up16(nvalid);
        __syncthreads();  // A: the previous chunk's readers are done
        v.load_x(Xh, XLD, XP, C, t0, nvalid);
        v.load_k(Kh, XLD, XP, C, t0, nvalid);
        v.load_w(Wh, WLDH, WB, C, t0, nvalid);
        __syncthreads();  // B
        for (int t = warp; t < CT * CT; t += kWarps) {
          const int i = t / CT, j = t % CT;
          if (R::kReverse ? j < i : j > i) continue;  // wholly masked: the mask pass writes 0
          AccFrag acc;
          wm::fill_fragment(acc, 0.f);
          tile_mma<T, row, col>(acc, Xh, XLD, i * 16, Kh, XLD, j * 16, 0, XP);
          wm::store_matrix_sync(Pf + i * 16 * PLD + j * 16, acc, PLD, wm::mem_row_major);
        }
        update_state(nvalid);  // Y below reads the old state's copy Sh
        __syncthreads();  // C
        for (int e = tid; e < C * C; e += kThreads) {
          const int r = e / C, c = e % C;
          const bool keep = R::kReverse ? c >= r : c <= r;
          Ph[r * PLDH + c] = keep ? from_float<T>(Pf[r * PLD + c]) : from_float<T>(0.f);
        }
        __syncthreads();  // D
        if constexpr (R::kAug) chunk_normaliser(dens, Ph, PLDH, Xh, XLD, zs, C, XP);  // rounded operands
        for (int t = warp; t < CT * WT; t += kWarps) {
          const int i = t / WT, n0 = (t % WT) * 16;
          AccFrag acc;
          wm::fill_fragment(acc, 0.f);
          const int k0 = R::kReverse ? i * 16 : 0;
          const int k1 = R::kReverse ? kend : min(kend, (i + 1) * 16);
          tile_mma<T, row, row>(acc, Ph, PLDH, i * 16, Wh, WLDH, n0, k0, k1);
          tile_mma<T, row, row>(acc, Xh, XLD, i * 16, Sh, WLDH, n0, 0, XP);
          wm::store_matrix_sync(Ys + i * 16 * PLD + n0, acc, PLD, wm::mem_row_major);
        }
        __syncthreads();  // E
        sum_keys(nvalid);
        refresh_sh();
        v.epilogue(Ys, PLD, dens, t0, nvalid);
      });
    } else {
      // pass 1: S = S_init + Σ_j K_j W_jᵀ over the whole sequence
      for_each_chunk<C>(span, false, [&](int64_t t0, int nvalid) {
        __syncthreads();
        v.load_k(Kh, XLD, XP, C, t0, nvalid);
        v.load_w(Wh, WLDH, WB, C, t0, nvalid);
        __syncthreads();
        update_state(nvalid);
        sum_keys(nvalid);
      });
      __syncthreads();
      refresh_sh();
      // pass 2: Y = X S
      for_each_chunk<C>(span, false, [&](int64_t t0, int nvalid) {
        __syncthreads();
        v.load_x(Xh, XLD, XP, C, t0, nvalid);
        __syncthreads();
        if constexpr (R::kAug) chunk_normaliser(dens, static_cast<const T*>(nullptr), 0, Xh, XLD, zs, C, XP);
        for (int t = warp; t < CT * WT; t += kWarps) {
          const int i = t / WT, n0 = (t % WT) * 16;
          AccFrag acc;
          wm::fill_fragment(acc, 0.f);
          tile_mma<T, row, row>(acc, Xh, XLD, i * 16, Sh, WLDH, n0, 0, XP);
          wm::store_matrix_sync(Ys + i * 16 * PLD + n0, acc, PLD, wm::mem_row_major);
        }
        __syncthreads();
        v.epilogue(Ys, PLD, dens, t0, nvalid);
      });
    }

    __syncthreads();
    v.store_state(Sf, WLD, zs);
  }
}

}  // namespace detail
}  // namespace la
}  // namespace kexue
