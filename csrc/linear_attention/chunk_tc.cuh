// The chunked linear-attention kernel on tensor cores (WMMA 16×16×16, 16-bit operands: bfloat16
// or float16, float32 accumulators), for every role (chunk_common.cuh).  The same algorithm as
// chunk_fp32.cuh:
//   P  = mask(X Kᵀ)          C×C,      K-dim xdim   (tiles above / below the diagonal skipped)
//   Y  = P W + X S           C×WB,     K-dims C (causal part only), xdim
//   S += Kᵀ W                xdim×WB,  K-dim C      (float32 state in shared memory)
// with the operands rounded to 16 bits as they enter the products: φ(q), φ(k), the linear rows
// (g', v'), the masked P, and a 16-bit copy of the state refreshed after each chunk (the state
// itself stays float32).  The normaliser uses the operands as rounded (den = Σ_j P̃_tj + X̃_t·z
// with z summed from the rounded K rows), so the output stays a weighted mean of the values under
// the rounding, as in the Triton kernels.  Error: ≈ 2⁻⁹ (bfloat16) or 2⁻¹² (float16) relative
// per rounded operand; float32 runs on chunk_fp32.cuh.
// float16's range (6e-8 .. 65504) is too small for the tiles derived from sums and from 1/den:
// P grows with the feature dimension, the state with the sequence, and g' = do·r shrinks with it
// (r = 1/den ~ 1/N).  So in float16 each such tile carries a power-of-two scale 2^e chosen from
// its largest entry (to [2^13, 2^14), full precision, no overflow) before the cast: P per chunk,
// the state copy per chunk, the rows built from dout per chunk, and the φ rows per chunk (features
// far below 2^-14, as a peaked softmax gives, would be subnormals or 0); the products are rescaled in the
// float32 accumulators (exact) before they are combined.  The maxima come from the accumulator
// fragments (P, the new state) and a read of the dout rows; bfloat16 (float32's range) skips it.
// FLOPs per token and slice: 2·(C·xdim/2 + C·WB/2 + 2·xdim·WB) on tensor cores (the causal
// halves of P and P·W skipped at 16×16 granularity); shared traffic per chunk: the three
// operand tiles once in 16 bits, P and Y once in float32.
// Phases per causal chunk (each ends in __syncthreads):
//   A load X, K, W (φ fused, rounded; float16: the dout rows' and the φ rows' maxima first, one
//     more barrier each)
//   B P tiles → Pf;  Sf += Kᵀ W (Sh keeps the old state)
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
  static constexpr size_t kRed = kDen + 4 * C;  // per-warp maxima of P, the state, the dout rows
  static constexpr size_t kBytes = kRed + 4 * 3 * kWarps;
  static_assert(C % 16 == 0 && XPMAX % 16 == 0 && WB % 16 == 0, "WMMA tiles");
};

__host__ __device__ __forceinline__ int round_up16(int x) { return (x + 15) & ~15; }

// The element type of the kernel's dynamic shared memory: only its alignment matters.
struct alignas(128) SmemBase128 {
  unsigned char bytes[128];
};

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

// ---- float16 range scaling (see the top) -----------------------------------------------------
// The exponent e putting absmax · 2^e in [2^13, 2^14), within ±kMaxPow2 (a tile below 2^-50 keeps
// a smaller top); 0 for an all-zero or non-finite tile.
constexpr int kMaxPow2 = 64;
__device__ __forceinline__ int pow2_exponent(float absmax) {
  if (!(absmax > 0.f && absmax <= 3.4e38f)) return 0;
  int k;
  frexpf(absmax, &k);  // absmax in [2^(k-1), 2^k)
  return max(-kMaxPow2, min(kMaxPow2, 14 - k));
}

// f *= 2^e, element-wise (the same for every element, as WMMA allows)
__device__ __forceinline__ void scale_fragment(AccFrag& f, int e) {
  if (e == 0) return;
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = ldexpf(f.x[i], e);
}

__device__ __forceinline__ float fragment_absmax(const AccFrag& f, float m) {
  for (int i = 0; i < f.num_elements; ++i) m = fmaxf(m, fabsf(f.x[i]));
  return m;
}

// red[warp] = the warp's max of m (lane 0 writes)
__device__ __forceinline__ void put_warp_max(float* red, float m) {
  m = warp_max(m);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
}

// the CTA's max from red (written by every warp before a barrier)
__device__ __forceinline__ float cta_max(const float* red) {
  float m = red[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, red[w]);
  return m;
}

template <typename T, int ROLE, int C, int XPMAX, int WB>
__global__ void __launch_bounds__(kThreads, 1) la_chunk_tc_kernel(const CoreArgs args) {
  using R = RoleTraits<ROLE>;
  using L = ChunkSmemTc<C, XPMAX, WB>;
  using row = wm::row_major;
  using col = wm::col_major;
  static_assert(sizeof(T) == 2, "tensor-core operands are 16-bit");
  constexpr bool kScaled = std::is_same<T, __half>::value;  // float16: power-of-two tile scales
  constexpr int XLD = L::XLD, WLDH = L::WLDH, PLDH = L::PLDH, PLD = L::PLD, WLD = L::WLD;
  constexpr int CT = C / 16, WT = WB / 16;  // 16×16 tiles along C and WB

  // WMMA loads and stores need 32-byte aligned addresses; the layout keeps every tile at a
  // multiple of 32 bytes from the base, which CUDA aligns only to the declared type's alignment
  // (16 for float4): declare 128 (verifiable only on a GPU: the emulator's base is aligned anyway).
  KEXUE_DYNAMIC_SMEM(SmemBase128, smem_base);
  unsigned char* smem = reinterpret_cast<unsigned char*>(smem_base);
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
  float* redP = reinterpret_cast<float*>(smem + L::kRed);  // per-warp maxima (float16 only)
  float* redS = redP + kWarps;
  float* redG = redS + kWarps;

  const int tid = threadIdx.x, warp = tid / 32;
  const int XP = round_up16(args.xdim);  // <= XPMAX (run_chunk's choice)
  const int XT = XP / 16;
  const SeqSpan span = seq_span(args.p, blockIdx.x);

  // The float16 scales, as exponents (tile = value · 2^e): es of the state copy Sh; per chunk eg
  // of the rows built from dout (whichever of X, K, W they are), ep of Ph.
  int es = 0;
  auto refresh_sh = [&] {  // Sh = round(Sf · 2^es), es from redS (the state's max)
    if constexpr (kScaled) es = pow2_exponent(cta_max(redS));
    const float m = ldexpf(1.f, es);
    for (int e = tid; e < XP * WB; e += kThreads)
      Sh[(e / WB) * WLDH + e % WB] = from_float<T>(Sf[(e / WB) * WLD + e % WB] * m);
  };
  auto state_max_to_red = [&] {  // redS = per-warp max |Sf| (then a barrier before refresh_sh)
    if constexpr (kScaled) {
      float m = 0.f;
      for (int e = tid; e < XP * WB; e += kThreads) m = fmaxf(m, fabsf(Sf[(e / WB) * WLD + e % WB]));
      put_warp_max(redS, m);
    }
  };
  auto update_state = [&](int nvalid, int ekw) {  // Sf += K̃ᵀ W̃ · 2^-ekw; float16: redS = its max
    const int kend = round_up16(nvalid);
    float smax = 0.f;
    for (int t = warp; t < XT * WT; t += kWarps) {
      const int m0 = (t / WT) * 16, n0 = (t % WT) * 16;
      AccFrag acc;
      if constexpr (kScaled) {
        AccFrag old;
        wm::fill_fragment(acc, 0.f);
        tile_mma<T, col, row>(acc, Kh, XLD, m0, Wh, WLDH, n0, 0, kend);
        scale_fragment(acc, -ekw);
        wm::load_matrix_sync(old, Sf + m0 * WLD + n0, WLD, wm::mem_row_major);
        for (int i = 0; i < acc.num_elements; ++i) acc.x[i] += old.x[i];
        smax = fragment_absmax(acc, smax);
      } else {
        wm::load_matrix_sync(acc, Sf + m0 * WLD + n0, WLD, wm::mem_row_major);
        tile_mma<T, col, row>(acc, Kh, XLD, m0, Wh, WLDH, n0, 0, kend);
      }
      wm::store_matrix_sync(Sf + m0 * WLD + n0, acc, WLD, wm::mem_row_major);
    }
    if constexpr (kScaled) put_warp_max(redS, smax);
  };
  // eg of the chunk's rows built from dout, when this pass loads them (float16, normalised
  // backward roles: g' = do·r): their max over the CTA, one barrier.  Sets v.g_mult.
  auto g_exponent = [&](auto& view, bool loads_g, int64_t t0, int nvalid) {
    int eg = 0;
    if constexpr (kScaled && R::kGOperand != 0) {
      if (loads_g && view.rden_h != nullptr) {
        put_warp_max(redG, view.g_rows_absmax(t0, nvalid));
        __syncthreads();
        eg = pow2_exponent(cta_max(redG));
      }
    }
    view.g_mult = ldexpf(1.f, eg);
    return eg;
  };
  auto sum_keys = [&](int nvalid, int ek) {  // z += Σ K̃ · 2^-ek (the roles with a normaliser column)
    if constexpr (R::kAug) add_key_sums(zs, Kh, XLD, XP, nvalid, ldexpf(1.f, -ek));
  };
  // float16: the power-of-two scales of chunk t0's φ rows (those of X, K, W built from q or k that
  // this pass loads: want_*), so that small features stay normal float16 numbers.  Their maxima go
  // through redP (X or W: never both φ in one role) and redS (K), both free between a chunk's first
  // barrier and its state update; one more barrier.  The exponents are added to ex, ek, ew (the
  // products are rescaled with the others) and the multipliers set on the view for its loads.
  auto phi_exponents = [&](auto& view, int64_t t0, int nvalid, int& ex, int& ek, int& ew, bool want_x, bool want_k,
                           bool want_w) {
    if constexpr (kScaled) {
      using V = std::decay_t<decltype(view)>;
      const bool sx = V::kPhiX && want_x, sk = V::kPhiK && want_k, sw = V::kPhiW && want_w;
      if (!(sx || sw || sk)) return;
      if (sx || sw) put_warp_max(redP, sx ? view.phi_absmax_x(t0, nvalid) : view.phi_absmax_w(t0, nvalid));
      if (sk) put_warp_max(redS, view.phi_absmax_k(t0, nvalid));
      __syncthreads();
      const int exw = (sx || sw) ? pow2_exponent(cta_max(redP)) : 0;
      const int ekp = sk ? pow2_exponent(cta_max(redS)) : 0;
      view.phi_mult_x = sx ? ldexpf(1.f, exw) : 1.f;
      view.phi_mult_w = sw ? ldexpf(1.f, exw) : 1.f;
      view.phi_mult_k = sk ? ldexpf(1.f, ekp) : 1.f;
      if (sx) ex += exw;
      if (sw) ew += exw;
      if (sk) ek += ekp;
    }
  };

  const int nheads = R::kPerKv ? args.p.H / args.p.Hkv : 1;
  for (int hh = 0; hh < nheads; ++hh) {
    HeadView<T, ROLE> v(args, span, blockIdx.x, blockIdx.y, hh, blockIdx.z, WB);

    __syncthreads();  // the previous head is done with Sf / Ys
    v.load_state(Sf, WLD, XP, WB, zs);
    __syncthreads();
    if constexpr (kScaled) {  // redS: the initial state's max, for the first refresh_sh
      state_max_to_red();
      __syncthreads();
    }

    if (args.p.causal) {
      refresh_sh();
      for_each_chunk<C>(span, R::kReverse, [&](int64_t t0, int nvalid) {
        const int kend = round_up16(nvalid);
        __syncthreads();  // A: the previous chunk's readers are done
        const int eg = g_exponent(v, true, t0, nvalid);
        int ex = R::kGOperand == 'X' ? eg : 0, ek = R::kGOperand == 'K' ? eg : 0;
        int ew = R::kGOperand == 'W' ? eg : 0;
        phi_exponents(v, t0, nvalid, ex, ek, ew, true, true, true);
        v.load_x(Xh, XLD, XP, C, t0, nvalid);
        v.load_k(Kh, XLD, XP, C, t0, nvalid);
        v.load_w(Wh, WLDH, WB, C, t0, nvalid);
        __syncthreads();  // B
        float pmax = 0.f;
        for (int t = warp; t < CT * CT; t += kWarps) {
          const int i = t / CT, j = t % CT;
          if (R::kReverse ? j < i : j > i) continue;  // wholly masked: the mask pass writes 0
          AccFrag acc;
          wm::fill_fragment(acc, 0.f);
          tile_mma<T, row, col>(acc, Xh, XLD, i * 16, Kh, XLD, j * 16, 0, XP);
          if constexpr (kScaled) pmax = fragment_absmax(acc, pmax);  // the diagonal tiles' masked half too
          wm::store_matrix_sync(Pf + i * 16 * PLD + j * 16, acc, PLD, wm::mem_row_major);
        }
        if constexpr (kScaled) put_warp_max(redP, pmax);
        update_state(nvalid, ek + ew);  // Y below reads the old state's copy Sh
        __syncthreads();  // C
        const int ep = kScaled ? pow2_exponent(cta_max(redP)) : 0;  // Ph = P · 2^(ex + ek + ep)
        const float pm = ldexpf(1.f, ep);
        for (int e = tid; e < C * C; e += kThreads) {
          const int r = e / C, c = e % C;
          const bool keep = R::kReverse ? c >= r : c <= r;
          Ph[r * PLDH + c] = keep ? from_float<T>(Pf[r * PLD + c] * pm) : from_float<T>(0.f);
        }
        __syncthreads();  // D
        if constexpr (R::kAug)  // rounded operands (no dout rows in these roles: ex, ek are φ's scales)
          chunk_normaliser(dens, Ph, PLDH, Xh, XLD, zs, C, XP, ldexpf(1.f, -(ex + ek + ep)), ldexpf(1.f, -ex));
        for (int t = warp; t < CT * WT; t += kWarps) {
          const int i = t / WT, n0 = (t % WT) * 16;
          AccFrag acc;
          wm::fill_fragment(acc, 0.f);
          const int k0 = R::kReverse ? i * 16 : 0;
          const int k1 = R::kReverse ? kend : min(kend, (i + 1) * 16);
          tile_mma<T, row, row>(acc, Ph, PLDH, i * 16, Wh, WLDH, n0, k0, k1);  // · 2^(ex + ek + ep + ew)
          scale_fragment(acc, es - ek - ep - ew);                              // → · 2^(ex + es)
          tile_mma<T, row, row>(acc, Xh, XLD, i * 16, Sh, WLDH, n0, 0, XP);
          scale_fragment(acc, -(ex + es));
          wm::store_matrix_sync(Ys + i * 16 * PLD + n0, acc, PLD, wm::mem_row_major);
        }
        __syncthreads();  // E
        sum_keys(nvalid, ek);
        refresh_sh();
        v.epilogue(Ys, PLD, dens, t0, nvalid);
      });
    } else {
      // pass 1: S = S_init + Σ_j K_j W_jᵀ over the whole sequence
      for_each_chunk<C>(span, false, [&](int64_t t0, int nvalid) {
        __syncthreads();
        const int eg = g_exponent(v, R::kGOperand != 'X', t0, nvalid);
        int ex = 0, ek = R::kGOperand == 'K' ? eg : 0, ew = R::kGOperand == 'W' ? eg : 0;
        phi_exponents(v, t0, nvalid, ex, ek, ew, false, true, true);
        v.load_k(Kh, XLD, XP, C, t0, nvalid);
        v.load_w(Wh, WLDH, WB, C, t0, nvalid);
        __syncthreads();
        update_state(nvalid, ek + ew);
        sum_keys(nvalid, ek);
      });
      __syncthreads();
      refresh_sh();
      // pass 2: Y = X S
      for_each_chunk<C>(span, false, [&](int64_t t0, int nvalid) {
        __syncthreads();
        int ex = g_exponent(v, R::kGOperand == 'X', t0, nvalid), ek = 0, ew = 0;
        phi_exponents(v, t0, nvalid, ex, ek, ew, true, false, false);
        v.load_x(Xh, XLD, XP, C, t0, nvalid);
        __syncthreads();
        if constexpr (R::kAug)
          chunk_normaliser(dens, static_cast<const T*>(nullptr), 0, Xh, XLD, zs, C, XP, 1.f, ldexpf(1.f, -ex));
        for (int t = warp; t < CT * WT; t += kWarps) {
          const int i = t / WT, n0 = (t % WT) * 16;
          AccFrag acc;
          wm::fill_fragment(acc, 0.f);
          tile_mma<T, row, row>(acc, Xh, XLD, i * 16, Sh, WLDH, n0, 0, XP);
          scale_fragment(acc, -(ex + es));
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
