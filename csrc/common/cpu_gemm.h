// Small dense GEMMs for the CPU kernels (chunk products of a few dozen rows and columns).
//
// Every operand is row-major scratch owned by the calling kernel, with leading dimensions
// padded by pad_cols(): the micro-kernel reads and writes whole register tiles of kGemmColPad
// columns, so columns [N, pad_cols(N)) of B and C must exist (their values are arbitrary and
// only ever land in C's padding columns).  These routines are not BLAS: no packing, no cache
// blocking beyond the register tile, because the operands (<= 256 x 257) already sit in L1/L2.
//
// The routines are compiled for x86-64-v3 (AVX2 + FMA) and for the baseline ISA; the best one
// runs (see cpu_isa.h).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>

namespace kexue::cpu {

// Columns of one register tile of the float kernel (2 AVX2 vectors of 8 floats; the double
// kernel uses 2 x 4, so padding to 16 serves both).
constexpr int64_t kGemmColPad = 16;

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

// dst[c][r] = src[r][c] for r < rows, c < cols (row-major, leading dims lds / ldd).
void transpose(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd);
void transpose(int64_t rows, int64_t cols, const double* src, int64_t lds, double* dst, int64_t ldd);

// Name of the instruction set the dispatched clones use on this CPU ("x86-64-v3" or
// "baseline"), for benchmark reports.
const char* gemm_isa();

// One 64-byte-aligned allocation holding all scratch matrices of a kernel task (allocated once
// per task, never per chunk):  off = arena.reserve(n) for each block, arena.allocate(), then
// arena.at(off).  Each block starts on a cache line.
template <typename T>
class ScratchArena {
 public:
  static constexpr int64_t kAlign = 64;  // bytes: a cache line, and the widest vector load
  ScratchArena() = default;
  ScratchArena(const ScratchArena&) = delete;
  ScratchArena& operator=(const ScratchArena&) = delete;
  ~ScratchArena() { std::free(base_); }

  // Reserves n elements; returns the block's offset (resolve it with at() after allocate()).
  int64_t reserve(int64_t n) {
    const int64_t per_line = kAlign / static_cast<int64_t>(sizeof(T));
    const int64_t off = size_;
    size_ += (n + per_line - 1) / per_line * per_line;
    return off;
  }
  void allocate() {
    const size_t bytes = static_cast<size_t>(size_ > 0 ? size_ : 1) * sizeof(T);
    base_ = static_cast<T*>(std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign));
    if (base_ == nullptr) throw std::bad_alloc();
  }
  T* at(int64_t offset) const { return base_ + offset; }

 private:
  T* base_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace kexue::cpu
