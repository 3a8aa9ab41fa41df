// Register-blocked GEMM micro-kernels for the CPU kernels; see cpu_gemm.h.
#include "common/cpu_gemm.h"

#include <algorithm>
#include <type_traits>

#include "common/cpu_isa.h"
#include "common/cpu_vec.h"

#if KEXUE_CPU_HAS_AVX2_PATH
#include <immintrin.h>
#endif

namespace kexue::cpu {
namespace {

// Rows of the register tile: MR x (2 vectors) accumulators.  With 16 vector registers (AVX2,
// SSE2 / NEON): MR = 6, 12 accumulators plus 2 for the B row and 1 for the broadcast A element
// (the BLIS Haswell shape).  AVX-512 has 32: MR = 8 (16 accumulators), which also divides the
// chunk and head sizes the kernels use (32, 64, 128), where 6 left a 2-row edge tile (load-bound:
// 4 FMAs per 8 loads) on every 32 rows.
template <int W>
constexpr int kMR = W >= 64 ? 8 : 6;

// acc[0:MR, 0:NV·L] += A[0:MR, k0:k1] * B[k0:k1, 0:NV·L] (A transposed: At[k0:k1, 0:MR]), NV = 1
// or 2 vectors of L lanes.  Per k: NV vector loads of B, MR broadcasts of A, NV*MR FMAs.  The
// accumulators stay in registers (the arrays are indexed by constants once the loops are unrolled).
template <int W, typename T, int MR, int NV, bool kTransA>
KEXUE_ALWAYS_INLINE void tile_k(typename Vec<T, W>::type (&acc)[NV][MR], int64_t k0, int64_t k1,
                                const T* __restrict A, int64_t lda, const T* __restrict B, int64_t ldb) {
  using V = typename Vec<T, W>::type;
  constexpr int L = Vec<T, W>::kLanes;
  const T* a = kTransA ? A + k0 * lda : A + k0;
  const T* b = B + k0 * ldb;
  for (int64_t k = k0; k < k1; ++k, b += ldb) {
    V bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = vload<W>(b + v * L);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const T ar = kTransA ? a[r] : a[r * lda];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[v][r] += ar * bv[v];
    }
    a += kTransA ? lda : 1;
  }
}

// Rows [k0, k1) of term t that tile row block [i0, i0 + mr) reads: all K, or the part the
// triangular structure of A leaves (see Tri in cpu_gemm.h).
template <typename T>
KEXUE_ALWAYS_INLINE void term_k_range(const GemmTerm<T>& t, int64_t i0, int64_t i1, int64_t& k0, int64_t& k1) {
  k0 = 0, k1 = t.K;
  if (t.tri == Tri::ALower) k1 = std::min(t.K, i1);
  if (t.tri == Tri::AUpper) k0 = std::min(t.K, i0);
}

// C[i0:i0+MR, j0:j0+NV·L] (+)= Σ_t A_t B_t over nterms terms (rows i0.., columns j0.. of each).
template <int W, typename T, int MR, int NV>
KEXUE_ALWAYS_INLINE void tile(int64_t i0, int64_t j0, const GemmTerm<T>* terms, int nterms, T* __restrict C,
                              int64_t ldc, bool accumulate) {
  using V = typename Vec<T, W>::type;
  constexpr int L = Vec<T, W>::kLanes;
  V acc[NV][MR];
  T* c = C + i0 * ldc + j0;
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      if (accumulate) {
        acc[v][r] = vload<W>(c + r * ldc + v * L);
      } else {
        acc[v][r] = V{};
      }
    }
  }
  for (int t = 0; t < nterms; ++t) {
    const GemmTerm<T>& tm = terms[t];
    int64_t k0, k1;
    term_k_range(tm, i0, i0 + MR, k0, k1);
    if (tm.transposed) {
      tile_k<W, T, MR, NV, true>(acc, k0, k1, tm.A + i0, tm.lda, tm.B + j0, tm.ldb);
    } else {
      tile_k<W, T, MR, NV, false>(acc, k0, k1, tm.A + i0 * tm.lda, tm.lda, tm.B + j0, tm.ldb);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) vstore<W>(c + r * ldc + v * L, acc[v][r]);
  }
}

// The tile of mr <= MR rows (the edge of M when MR does not divide it).
template <int W, typename T, int MR, int NV>
KEXUE_ALWAYS_INLINE void tile_rows(int mr, int64_t i0, int64_t j0, const GemmTerm<T>* terms, int nterms, T* C,
                                   int64_t ldc, bool accumulate) {
  if constexpr (MR > 1) {
    if (mr < MR) return tile_rows<W, T, MR - 1, NV>(mr, i0, j0, terms, nterms, C, ldc, accumulate);
  }
  tile<W, T, MR, NV>(i0, j0, terms, nterms, C, ldc, accumulate);
}

// Loops the register tile over C: row blocks of MR, column blocks of 2 vectors (a 1-vector tile for
// the last <= L columns), skipping the tiles `out` says are not needed and, per term, the k the
// structure of A makes zero (see Tri in cpu_gemm.h).  O(M N Σ K) FLOPs, no extra memory.
template <int W, typename T>
KEXUE_ALWAYS_INLINE void gemm_body(int64_t M, int64_t N, const GemmTerm<T>* terms, int nterms, T* C, int64_t ldc,
                                   bool accumulate, Tri out) {
  constexpr int64_t L = Vec<T, W>::kLanes;
  constexpr int64_t NR = 2 * L;
  constexpr int MR = kMR<W>;
  static_assert(kGemmColPad % NR == 0, "scratch padding must hold whole register tiles");
  for (int64_t i0 = 0; i0 < M; i0 += MR) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, M - i0));
    const int64_t i1 = i0 + mr;
    int64_t jb = 0, je = N;
    if (out == Tri::OutLower) je = std::min(N, i1);
    if (out == Tri::OutUpper) jb = std::min(N, i0) / NR * NR;
    for (int64_t j0 = jb; j0 < je; j0 += NR) {
      if (je - j0 <= L) {  // the last <= L columns: a one-vector tile (half the FMAs of a full one)
        tile_rows<W, T, MR, 1>(mr, i0, j0, terms, nterms, C, ldc, accumulate);
      } else {
        tile_rows<W, T, MR, 2>(mr, i0, j0, terms, nterms, C, ldc, accumulate);
      }
    }
  }
}

// gemm / gemm_tn: one term (an Out* tri applies to C, an A* tri to the term).
template <int W, typename T>
KEXUE_ALWAYS_INLINE void gemm1_body(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                                    int64_t ldb, T* C, int64_t ldc, bool accumulate, Tri tri, bool transposed) {
  const bool on_a = tri == Tri::ALower || tri == Tri::AUpper;
  GemmTerm<T> t;
  t.K = K, t.A = A, t.lda = lda, t.B = B, t.ldb = ldb, t.transposed = transposed, t.tri = on_a ? tri : Tri::None;
  gemm_body<W, T>(M, N, &t, 1, C, ldc, accumulate, on_a ? Tri::None : tri);
}

// 8 x 8 blocks: reads 8 rows of 8 contiguous elements, writes 8 rows of 8 contiguous elements.
template <typename T>
KEXUE_ALWAYS_INLINE void transpose_body(int64_t rows, int64_t cols, const T* src, int64_t lds, T* dst, int64_t ldd) {
  constexpr int64_t kB = 8;
  for (int64_t r0 = 0; r0 < rows; r0 += kB) {
    const int64_t r1 = std::min(rows, r0 + kB);
    for (int64_t c0 = 0; c0 < cols; c0 += kB) {
      const int64_t c1 = std::min(cols, c0 + kB);
      if (r1 - r0 == kB && c1 - c0 == kB) {
        T blk[kB][kB];
        for (int64_t r = 0; r < kB; ++r)
          for (int64_t c = 0; c < kB; ++c) blk[c][r] = src[(r0 + r) * lds + c0 + c];
        for (int64_t c = 0; c < kB; ++c)
          for (int64_t r = 0; r < kB; ++r) dst[(c0 + c) * ldd + r0 + r] = blk[c][r];
      } else {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) dst[c * ldd + r] = src[r * lds + c];
      }
    }
  }
}

}  // namespace

#define KEXUE_GEMM_ARGS(T)                                                                          \
  int64_t M, int64_t N, int64_t K, const T *A, int64_t lda, const T *B, int64_t ldb, T *C, int64_t ldc, \
      bool accumulate, Tri tri
#define KEXUE_GEMM_PASS M, N, K, A, lda, B, ldb, C, ldc, accumulate, tri
#define KEXUE_GEMM_SUM_ARGS(T) \
  int64_t M, int64_t N, const GemmTerm<T>&t1, const GemmTerm<T>&t2, T *C, int64_t ldc, bool accumulate, Tri out
#define KEXUE_GEMM_SUM_PASS M, N, t1, t2, C, ldc, accumulate, out

namespace {
#define KEXUE_GEMM_BODY(W) gemm1_body<W>(KEXUE_GEMM_PASS, false);
KEXUE_CPU_ENTRIES(gemm_isa, (KEXUE_GEMM_ARGS(float)), KEXUE_GEMM_BODY)
KEXUE_CPU_ENTRIES(gemm_isa, (KEXUE_GEMM_ARGS(double)), KEXUE_GEMM_BODY)
#undef KEXUE_GEMM_BODY
#define KEXUE_GEMM_TN_BODY(W) gemm1_body<W>(KEXUE_GEMM_PASS, true);
KEXUE_CPU_ENTRIES(gemm_tn_isa, (KEXUE_GEMM_ARGS(float)), KEXUE_GEMM_TN_BODY)
KEXUE_CPU_ENTRIES(gemm_tn_isa, (KEXUE_GEMM_ARGS(double)), KEXUE_GEMM_TN_BODY)
#undef KEXUE_GEMM_TN_BODY
#define KEXUE_GEMM_SUM_BODY(W)                       \
  {                                                  \
    const std::remove_reference_t<decltype(t1)> terms[2] = {t1, t2}; \
    gemm_body<W>(M, N, terms, 2, C, ldc, accumulate, out); \
  }
KEXUE_CPU_ENTRIES(gemm_sum_isa, (KEXUE_GEMM_SUM_ARGS(float)), KEXUE_GEMM_SUM_BODY)
KEXUE_CPU_ENTRIES(gemm_sum_isa, (KEXUE_GEMM_SUM_ARGS(double)), KEXUE_GEMM_SUM_BODY)
#undef KEXUE_GEMM_SUM_BODY
#if KEXUE_CPU_HAS_AVX2_PATH
// One 8 x 8 float block in registers: 8 row loads, 24 shuffles (unpack, shuffle, 128-bit
// permute), 8 row stores; about 4x faster than the element-wise block (the kernels transpose a
// chunk or a state matrix per chunk).
KEXUE_TARGET_AVX2 inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {  // rows 4i..4i+3 of the block, in 2 x 2 element groups
    r[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[4 + i], 0x20));
    _mm256_storeu_ps(dst + (4 + i) * ldd, _mm256_permute2f128_ps(r[i], r[4 + i], 0x31));
  }
}

KEXUE_TARGET_AVX2 void transpose_avx2(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst,
                                      int64_t ldd) {
  constexpr int64_t kB = 8;
  const int64_t rf = rows / kB * kB, cf = cols / kB * kB;
  for (int64_t r0 = 0; r0 < rf; r0 += kB)
    for (int64_t c0 = 0; c0 < cf; c0 += kB) transpose8x8(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
  for (int64_t r = 0; r < rows; ++r) {  // the edges: columns >= cf of every row, rows >= rf
    for (int64_t c = (r < rf ? cf : 0); c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
  }
}
#endif
}  // namespace

void gemm(KEXUE_GEMM_ARGS(float)) { KEXUE_CPU_DISPATCH(cpu_isa(), gemm_isa, (KEXUE_GEMM_PASS)); }
void gemm(KEXUE_GEMM_ARGS(double)) { KEXUE_CPU_DISPATCH(cpu_isa(), gemm_isa, (KEXUE_GEMM_PASS)); }
void gemm_tn(KEXUE_GEMM_ARGS(float)) { KEXUE_CPU_DISPATCH(cpu_isa(), gemm_tn_isa, (KEXUE_GEMM_PASS)); }
void gemm_tn(KEXUE_GEMM_ARGS(double)) { KEXUE_CPU_DISPATCH(cpu_isa(), gemm_tn_isa, (KEXUE_GEMM_PASS)); }
void gemm_sum(KEXUE_GEMM_SUM_ARGS(float)) { KEXUE_CPU_DISPATCH(cpu_isa(), gemm_sum_isa, (KEXUE_GEMM_SUM_PASS)); }
void gemm_sum(KEXUE_GEMM_SUM_ARGS(double)) { KEXUE_CPU_DISPATCH(cpu_isa(), gemm_sum_isa, (KEXUE_GEMM_SUM_PASS)); }

void transpose(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd) {
#if KEXUE_CPU_HAS_AVX2_PATH  // 8 x 8 blocks: AVX2 is as wide as they need
  if (cpu_isa() >= Isa::kAvx2) return transpose_avx2(rows, cols, src, lds, dst, ldd);
#endif
  transpose_body<float>(rows, cols, src, lds, dst, ldd);
}

void transpose(int64_t rows, int64_t cols, const double* src, int64_t lds, double* dst, int64_t ldd) {
  transpose_body<double>(rows, cols, src, lds, dst, ldd);  // float64 is the reference path only
}

#undef KEXUE_GEMM_ARGS
#undef KEXUE_GEMM_PASS
#undef KEXUE_GEMM_SUM_ARGS
#undef KEXUE_GEMM_SUM_PASS

}  // namespace kexue::cpu
