// Small dense GEMMs for the CPU kernels (chunk products of a few dozen rows and columns).
//
// Every operand is row-major scratch owned by the calling kernel, with leading dimensions
// padded by pad_cols(): the micro-kernel reads and writes whole register tiles of kGemmColPad
// columns, so columns [N, pad_cols(N)) of B and C must exist (their values are arbitrary and
// only ever land in C's padding columns).  These routines are not BLAS: no packing, no cache
// blocking beyond the register tile, because the operands (<= 256 x 257) already sit in L1/L2.
// Instead of packing, the callers avoid copies: gemm_tn reads a transposed A in place, and
// gemm_sum adds two products in one pass over C (e.g. num = K V + A S in linear attention).
//
// Each routine has an AVX-512, an AVX2 + FMA and a baseline version and picks one per call from
// cpu_isa() (see cpu_isa.h).
#pragma once

#include <cstdint>

namespace kexue::cpu {

// Columns of the widest register tile (2 AVX-512 vectors of 16 floats; the other tiles, 2 x 8
// floats or doubles, 2 x 4 in the baseline path, divide it).
constexpr int64_t kGemmColPad = 32;

// Leading dimension (in elements) of a scratch matrix with n columns.
inline int64_t pad_cols(int64_t n) {
  return (n + kGemmColPad - 1) / kGemmColPad * kGemmColPad;
}

// Structure of the product the caller needs, used to skip register tiles:
//   None      C = A B in full.
//   OutLower  only C[i][j] with j <= i is needed (tiles strictly above the diagonal are skipped;
//             entries above the diagonal inside diagonal tiles are written with arbitrary values).
//   OutUpper  only C[i][j] with j >= i is needed (likewise).
//   ALower    A is lower triangular (A[i][k] == 0 for k > i, stored as real zeros): row i sums
//             over k <= (last row of its tile) only.
//   AUpper    A is upper triangular (A[i][k] == 0 for k < i, real zeros): k >= first row of tile.
enum class Tri : int { None, OutLower, OutUpper, ALower, AUpper };

// C[M x N] = (accumulate ? C : 0) + A[M x K] * B[K x N]; all row-major with leading dims
// lda / ldb / ldc (elements).  K == 0 gives C = accumulate ? C : 0.
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
          int64_t ldc, bool accumulate, Tri tri = Tri::None);
void gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B, int64_t ldb, double* C,
          int64_t ldc, bool accumulate, Tri tri = Tri::None);

// C[M x N] = (accumulate ? C : 0) + Atᵀ B with At stored K x M (row-major, leading dim lda):
// the product with a transposed operand, without transposing it (the tile broadcasts At[k][i0 + r],
// consecutive in memory).  tri refers to the logical A = Atᵀ, as in gemm.
void gemm_tn(int64_t M, int64_t N, int64_t K, const float* At, int64_t lda, const float* B, int64_t ldb, float* C,
             int64_t ldc, bool accumulate, Tri tri = Tri::None);
void gemm_tn(int64_t M, int64_t N, int64_t K, const double* At, int64_t lda, const double* B, int64_t ldb, double* C,
             int64_t ldc, bool accumulate, Tri tri = Tri::None);

// One product A B of a sum of products (gemm_sum).  A is M x K (transposed: stored K x M); tri
// may be Tri::ALower / Tri::AUpper (structure of the logical A) or Tri::None.
template <typename T>
struct GemmTerm {
  int64_t K = 0;
  const T* A = nullptr;
  int64_t lda = 0;
  const T* B = nullptr;
  int64_t ldb = 0;
  bool transposed = false;
  Tri tri = Tri::None;
};

// C[M x N] = (accumulate ? C : 0) + Σ_t A_t B_t over two terms, in one pass over C: each register
// tile accumulates both products before it is stored (one load / store of C instead of two).
// out may be Tri::None, Tri::OutLower or Tri::OutUpper.
void gemm_sum(int64_t M, int64_t N, const GemmTerm<float>& t1, const GemmTerm<float>& t2, float* C, int64_t ldc,
              bool accumulate, Tri out = Tri::None);
void gemm_sum(int64_t M, int64_t N, const GemmTerm<double>& t1, const GemmTerm<double>& t2, double* C,
              int64_t ldc, bool accumulate, Tri out = Tri::None);

// dst[c][r] = src[r][c] for r < rows, c < cols (row-major, leading dims lds / ldd).
void transpose(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd);
void transpose(int64_t rows, int64_t cols, const double* src, int64_t lds, double* dst, int64_t ldd);

}  // namespace kexue::cpu
