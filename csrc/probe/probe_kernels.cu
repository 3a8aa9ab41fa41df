// CUDA kernels of the perturbed-masking probe ops and their launchers (declared in
// probe_params.h).  Torch-free: raw pointers and the params structs; every launch is checked and
// its error returned.  Semantics: pyext/probe/kernels_reference.py.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/cuda_common.cuh"
#include "probe/probe_params.h"

namespace kexue {
namespace probe {
namespace {

constexpr int kThreads = 256;          // threads per block of every kernel here
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride loops beyond this (enough to fill any GPU)
constexpr float kCosEps = 1e-8f;       // clamp of ‖a‖‖b‖ in the cosine (the reference's)

#define KEXUE_PROBE_RETURN_IF_ERROR(...)    \
  do {                                      \
    const cudaError_t err_ = (__VA_ARGS__); \
    if (err_ != cudaSuccess) return err_;   \
  } while (0)

int grid_for(int64_t work_items, int64_t items_per_block) {
  int64_t blocks = (work_items + items_per_block - 1) / items_per_block;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

// ---------------------------------------------------------------------------------------------
// masked_batch
// ---------------------------------------------------------------------------------------------

// What one row (s, i, j) of seqs needs: the sentence's token range and the two masked spans
// (empty spans for -1).  ok = false when any index is out of range (then nothing is read).
struct RowInfo {
  int64_t t0 = 0, n = 0;
  int64_t a0 = 0, b0 = 0, a1 = 0, b1 = 0;  // spans [a0, b0) of word i, [a1, b1) of word j
  bool ok = false;
};

__device__ __forceinline__ bool word_span(const MaskedBatchParams& p, int64_t w0, int64_t nw, int64_t n, int64_t w,
                                          int64_t& a, int64_t& b) {
  a = 0;
  b = 0;
  if (w == -1) return true;
  if (w < -1 || w >= nw) return false;
  a = p.word_start[w0 + w];
  b = p.word_end[w0 + w];
  return a >= 0 && a <= b && b <= n;
}

__device__ __forceinline__ RowInfo row_info(const MaskedBatchParams& p, int64_t k) {
  RowInfo r;
  const int64_t s = p.seqs[3 * k], wi = p.seqs[3 * k + 1], wj = p.seqs[3 * k + 2];
  if (s < 0 || s >= p.num_sentences) return r;
  const int64_t t0 = p.tok_offsets[s], t1 = p.tok_offsets[s + 1];
  const int64_t w0 = p.word_offsets[s], w1 = p.word_offsets[s + 1];
  if (t0 < 0 || t0 > t1 || t1 > p.num_tokens || t1 - t0 > p.length) return r;
  if (w0 < 0 || w0 > w1 || w1 > p.num_words) return r;
  r.t0 = t0;
  r.n = t1 - t0;
  r.ok = word_span(p, w0, w1 - w0, r.n, wi, r.a0, r.b0) && word_span(p, w0, w1 - w0, r.n, wj, r.a1, r.b1);
  return r;
}

// One thread per row of seqs: sets *error when the row's indices are invalid.  K threads,
// ~10 int64 loads each.
__global__ void masked_batch_validate_kernel(const MaskedBatchParams p) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < p.K;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!row_info(p, k).ok) *p.error = 1;  // benign race: every writer stores 1
  }
}

// One thread per output element (k, t), 64-bit flat index, grid-stride: the row's info (cached
// loads shared by the row's threads), then one token load and two int64 stores.  Memory:
// K·length·16 bytes written, at most K·length·8 read; no arithmetic beyond index math.
// Invalid rows are written as padding.
__global__ void masked_batch_kernel(const MaskedBatchParams p) {
  const int64_t total = p.K * p.length;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = idx / p.length;
    const int64_t t = idx - k * p.length;
    const RowInfo r = row_info(p, k);
    int64_t id = p.pad_id, am = 0;
    if (r.ok && t < r.n) {
      am = 1;
      const bool masked = (t >= r.a0 && t < r.b0) || (t >= r.a1 && t < r.b1);
      id = masked ? p.mask_id : p.tokens[r.t0 + t];
    }
    p.input_ids[idx] = id;
    p.attention_mask[idx] = am;
  }
}

// ---------------------------------------------------------------------------------------------
// segment_distance
// ---------------------------------------------------------------------------------------------

using cuda_common::to_float;  // csrc/common/cuda_common.cuh
using cuda_common::warp_sum;

// Conversion of the halves of a 32-bit word (two packed float16 / bfloat16 values) to float, in
// registers (bit operations: no local-memory staging array).
__device__ __forceinline__ float lo_half(uint32_t w) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu)));
}
__device__ __forceinline__ float hi_half(uint32_t w) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
}
__device__ __forceinline__ float lo_bf16(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi_bf16(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

template <bool kCos>
__device__ __forceinline__ void accumulate(float x, float y, float& s0, float& s1, float& s2) {
  if constexpr (kCos) {
    s0 = fmaf(x, y, s0);
    s1 = fmaf(x, x, s1);
    s2 = fmaf(y, y, s2);
  } else {
    const float e = x - y;
    s0 = fmaf(e, e, s0);
  }
}

// The values of T in one 32-bit word of a and of b (one float, or two halves), accumulated.
template <typename T, bool kCos>
__device__ __forceinline__ void accumulate_word(uint32_t wa, uint32_t wb, float& s0, float& s1, float& s2) {
  if constexpr (sizeof(T) == 4) {
    accumulate<kCos>(__uint_as_float(wa), __uint_as_float(wb), s0, s1, s2);
  } else if constexpr (std::is_same_v<T, __half>) {
    accumulate<kCos>(lo_half(wa), lo_half(wb), s0, s1, s2);
    accumulate<kCos>(hi_half(wa), hi_half(wb), s0, s1, s2);
  } else {
    accumulate<kCos>(lo_bf16(wa), lo_bf16(wb), s0, s1, s2);
    accumulate<kCos>(hi_bf16(wa), hi_bf16(wb), s0, s1, s2);
  }
}

// One warp per pair k (grid-stride over k): the lanes read h[rows[k]] and ref[ref_rows[k]] —
// VEC-wide 16-byte loads when both rows are contiguous and 16-byte aligned (VEC > 1), strided
// scalar loads otherwise — and accumulate Σ(a-b)² ("dist") or a·b, a·a, b·b ("cos") in float32;
// a warp reduction, then lane 0 adds d to the segment's sum and 1 to its count (atomics: the
// summation order, and so the last bits of the mean, may differ between runs).
// Cost: 2·K·D loads, ~3·K·D flops, 2·K atomics.
template <typename T, int VEC, bool kCos>
__global__ void __launch_bounds__(kThreads) segment_distance_kernel(const SegmentDistanceParams p, float* sums,
                                                                    unsigned long long* counts) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const T* h = static_cast<const T*>(p.h);
  const T* ref = static_cast<const T*>(p.ref);
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); k < p.K; k += nwarps) {
    const int64_t r = p.rows[k], q = p.ref_rows[k], s = p.seg[k];
    if (r < 0 || r >= p.h_rows || q < 0 || q >= p.ref_rows_count || s < 0 || s >= p.num_segments) {
      if (lane == 0 && p.error != nullptr) *p.error = 1;  // (warp-uniform branch)
      continue;
    }
    const T* a = h + r * p.h_stride0;
    const T* b = ref + q * p.ref_stride0;
    float s0 = 0.f, s1 = 0.f, s2 = 0.f;
    if constexpr (VEC > 1) {
      for (int64_t d = static_cast<int64_t>(lane) * VEC; d < p.D; d += 32 * VEC) {
        const uint4 ra = __ldg(reinterpret_cast<const uint4*>(a + d));  // 16 bytes = VEC values
        const uint4 rb = __ldg(reinterpret_cast<const uint4*>(b + d));
        accumulate_word<T, kCos>(ra.x, rb.x, s0, s1, s2);
        accumulate_word<T, kCos>(ra.y, rb.y, s0, s1, s2);
        accumulate_word<T, kCos>(ra.z, rb.z, s0, s1, s2);
        accumulate_word<T, kCos>(ra.w, rb.w, s0, s1, s2);
      }
    } else {
      for (int64_t d = lane; d < p.D; d += 32) {
        accumulate<kCos>(to_float(a[d * p.h_stride1]), to_float(b[d * p.ref_stride1]), s0, s1, s2);
      }
    }
    s0 = warp_sum(s0);
    if constexpr (kCos) {
      s1 = warp_sum(s1);
      s2 = warp_sum(s2);
    }
    if (lane == 0) {
      const float dist = kCos ? 1.f - s0 / fmaxf(sqrtf(s1) * sqrtf(s2), kCosEps) : sqrtf(s0);
      atomicAdd(sums + s, dist);
      atomicAdd(counts + s, 1ull);
    }
  }
}

// out[s] = sums[s] / counts[s] (0 for an empty segment): one thread per segment.
__global__ void segment_mean_kernel(const float* sums, const unsigned long long* counts, float* out, int64_t S) {
  for (int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; s < S;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const unsigned long long c = counts[s];
    out[s] = c ? sums[s] / static_cast<float>(c) : 0.f;
  }
}

size_t align16(size_t x) { return (x + 15) / 16 * 16; }

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

template <typename T, bool kCos>
cudaError_t run_distance(const SegmentDistanceParams& p, float* sums, unsigned long long* counts,
                         cudaStream_t stream) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  // 16-byte loads need unit column stride, D and the row strides multiples of kVec, and aligned bases
  const bool vec = p.h_stride1 == 1 && p.ref_stride1 == 1 && p.D % kVec == 0 && p.h_stride0 % kVec == 0 &&
                   p.ref_stride0 % kVec == 0 && aligned16(p.h) && aligned16(p.ref);
  const int grid = grid_for(p.K, kWarpsPerBlock);
  if (vec) {
    KEXUE_LAUNCH(grid, kThreads, 0, stream, segment_distance_kernel<T, kVec, kCos>)(p, sums, counts);
  } else {
    KEXUE_LAUNCH(grid, kThreads, 0, stream, segment_distance_kernel<T, 1, kCos>)(p, sums, counts);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t run_distance_typed(const SegmentDistanceParams& p, float* sums, unsigned long long* counts,
                               cudaStream_t stream) {
  return p.metric == Metric::kCos ? run_distance<T, true>(p, sums, counts, stream)
                                  : run_distance<T, false>(p, sums, counts, stream);
}

}  // namespace

cudaError_t launch_masked_batch(const MaskedBatchParams& p, cudaStream_t stream) {
  if (p.K < 0 || p.length < 0 || p.num_sentences < 0 || p.num_tokens < 0 || p.num_words < 0) {
    return cudaErrorInvalidValue;
  }
  if (p.K == 0) return cudaSuccess;
  if (p.seqs == nullptr || p.tok_offsets == nullptr || p.word_offsets == nullptr) return cudaErrorInvalidValue;
  if (p.error != nullptr) {
    KEXUE_LAUNCH(grid_for(p.K, kThreads), kThreads, 0, stream, masked_batch_validate_kernel)(p);
    KEXUE_PROBE_RETURN_IF_ERROR(cudaGetLastError());
  }
  if (p.length == 0) return cudaSuccess;
  if (p.input_ids == nullptr || p.attention_mask == nullptr) return cudaErrorInvalidValue;
  if (p.K > INT64_MAX / p.length) return cudaErrorInvalidValue;  // K·length must fit int64
  KEXUE_LAUNCH(grid_for(p.K * p.length, kThreads), kThreads, 0, stream, masked_batch_kernel)(p);
  return cudaGetLastError();
}

size_t segment_distance_workspace_bytes(const SegmentDistanceParams& p) {
  const size_t S = p.num_segments > 0 ? static_cast<size_t>(p.num_segments) : 0;
  return align16(S * sizeof(unsigned long long)) + align16(S * sizeof(float));
}

cudaError_t launch_segment_distance(const SegmentDistanceParams& p, void* workspace, size_t workspace_bytes,
                                    cudaStream_t stream) {
  if (p.K < 0 || p.D < 0 || p.num_segments < 0 || p.h_rows < 0 || p.ref_rows_count < 0) {
    return cudaErrorInvalidValue;
  }
  if (p.num_segments == 0 && p.K == 0) return cudaSuccess;
  const size_t need = segment_distance_workspace_bytes(p);
  if (workspace_bytes < need || (need > 0 && workspace == nullptr) || (p.num_segments > 0 && p.out == nullptr)) {
    return cudaErrorInvalidValue;
  }
  auto* counts = static_cast<unsigned long long*>(workspace);
  auto* sums = reinterpret_cast<float*>(static_cast<char*>(workspace) +
                                        align16(static_cast<size_t>(p.num_segments) * sizeof(unsigned long long)));
  if (need > 0) KEXUE_PROBE_RETURN_IF_ERROR(cudaMemsetAsync(workspace, 0, need, stream));
  if (p.K > 0) {
    if (p.rows == nullptr || p.ref_rows == nullptr || p.seg == nullptr || p.h == nullptr || p.ref == nullptr) {
      return cudaErrorInvalidValue;
    }
    switch (p.dtype) {
      case DType::kFloat32:
        KEXUE_PROBE_RETURN_IF_ERROR(run_distance_typed<float>(p, sums, counts, stream));
        break;
      case DType::kFloat16:
        KEXUE_PROBE_RETURN_IF_ERROR(run_distance_typed<__half>(p, sums, counts, stream));
        break;
      case DType::kBFloat16:
        KEXUE_PROBE_RETURN_IF_ERROR(run_distance_typed<__nv_bfloat16>(p, sums, counts, stream));
        break;
      default:
        return cudaErrorInvalidValue;
    }
  }
  if (p.num_segments > 0) {
    KEXUE_LAUNCH(grid_for(p.num_segments, kThreads), kThreads, 0, stream, segment_mean_kernel)(
        sums, counts, p.out, p.num_segments);
    KEXUE_PROBE_RETURN_IF_ERROR(cudaGetLastError());
  }
  return cudaSuccess;
}

}  // namespace probe
}  // namespace kexue
