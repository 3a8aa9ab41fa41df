// Register-blocked GEMM micro-kernels for the CPU kernels; see cpu_gemm.h.
#include "common/cpu_gemm.h"

#include <algorithm>

#include "common/cpu_isa.h"
#include "common/cpu_vec.h"

namespace kexue::cpu {
namespace {

// Rows of the register tile.  MR x (2 vectors) accumulators: 6 x 2 = 12 of the 16 vector
// registers (AVX2 or SSE2 / NEON), plus 2 for the B row and 1 for the broadcast A element (the
// BLIS Haswell shape); AVX-512 keeps the shape with 64-byte vectors (12 of its 32 registers).
constexpr int kMR = 6;

// C[0:MR, 0:2L] (+)= A[0:MR, k0:k1] * B[k0:k1, 0:2L].  Per k: 2 vector loads of B, MR
// broadcasts of A, 2*MR FMAs.
template <int W, typename T, int MR>
KEXUE_ALWAYS_INLINE void tile(int64_t k0, int64_t k1, const T* __restrict A, int64_t lda, const T* __restrict B,
                              int64_t ldb, T* __restrict C, int64_t ldc, bool accumulate) {
  using V = typename Vec<T, W>::type;
  constexpr int L = Vec<T, W>::kLanes;
  V c0[MR], c1[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    if (accumulate) {
      c0[r] = vload<W>(C + r * ldc);
      c1[r] = vload<W>(C + r * ldc + L);
    } else {
      c0[r] = V{};
      c1[r] = V{};
    }
  }
  const T* a = A + k0;
  const T* b = B + k0 * ldb;
  for (int64_t k = k0; k < k1; ++k, ++a, b += ldb) {
    const V b0 = vload<W>(b);
    const V b1 = vload<W>(b + L);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const T ar = a[r * lda];
      c0[r] += ar * b0;
      c1[r] += ar * b1;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    vstore<W>(C + r * ldc, c0[r]);
    vstore<W>(C + r * ldc + L, c1[r]);
  }
}

// Loops the register tile over C: row blocks of kMR, column blocks of 2 vectors, skipping the
// tiles `tri` says are not needed (see Tri in cpu_gemm.h).  O(M N K) FLOPs, no extra memory.
template <int W, typename T>
KEXUE_ALWAYS_INLINE void gemm_body(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                                   T* C, int64_t ldc, bool accumulate, Tri tri) {
  constexpr int64_t NR = 2 * Vec<T, W>::kLanes;
  static_assert(kGemmColPad % NR == 0, "scratch padding must hold whole register tiles");
  for (int64_t i0 = 0; i0 < M; i0 += kMR) {
    const int64_t mr = std::min<int64_t>(kMR, M - i0);
    const int64_t i1 = i0 + mr;
    int64_t kb = 0, ke = K, jb = 0, je = N;
    if (tri == Tri::ALower) ke = std::min(K, i1);
    if (tri == Tri::AUpper) kb = std::min(K, i0);
    if (tri == Tri::OutLower) je = std::min(N, i1);
    if (tri == Tri::OutUpper) jb = std::min(N, i0) / NR * NR;
    const T* a = A + i0 * lda;
    for (int64_t j0 = jb; j0 < je; j0 += NR) {
      const T* b = B + j0;
      T* c = C + i0 * ldc + j0;
      switch (mr) {
        case 6: tile<W, T, 6>(kb, ke, a, lda, b, ldb, c, ldc, accumulate); break;
        case 5: tile<W, T, 5>(kb, ke, a, lda, b, ldb, c, ldc, accumulate); break;
        case 4: tile<W, T, 4>(kb, ke, a, lda, b, ldb, c, ldc, accumulate); break;
        case 3: tile<W, T, 3>(kb, ke, a, lda, b, ldb, c, ldc, accumulate); break;
        case 2: tile<W, T, 2>(kb, ke, a, lda, b, ldb, c, ldc, accumulate); break;
        default: tile<W, T, 1>(kb, ke, a, lda, b, ldb, c, ldc, accumulate); break;
      }
    }
  }
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

namespace {
#define KEXUE_GEMM_BODY(W) gemm_body<W>(KEXUE_GEMM_PASS);
KEXUE_CPU_ENTRIES(gemm_isa, (KEXUE_GEMM_ARGS(float)), KEXUE_GEMM_BODY)
KEXUE_CPU_ENTRIES(gemm_isa, (KEXUE_GEMM_ARGS(double)), KEXUE_GEMM_BODY)
#undef KEXUE_GEMM_BODY
#if KEXUE_CPU_HAS_AVX2_PATH
KEXUE_TARGET_AVX2 void transpose_avx2(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst,
                                      int64_t ldd) {
  transpose_body<float>(rows, cols, src, lds, dst, ldd);
}
#endif
}  // namespace

void gemm(KEXUE_GEMM_ARGS(float)) { KEXUE_CPU_DISPATCH(cpu_isa(), gemm_isa, (KEXUE_GEMM_PASS)); }

void gemm(KEXUE_GEMM_ARGS(double)) { KEXUE_CPU_DISPATCH(cpu_isa(), gemm_isa, (KEXUE_GEMM_PASS)); }

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

}  // namespace kexue::cpu
