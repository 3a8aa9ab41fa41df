// CUDA kernel of kexue.sample / kexue.decoding.sampling_probs and its launcher (declared in
// sampling_params.h).  Torch-free.  Semantics: pyext/decoding/reference.py.
//
// The row algorithm is the one every backend shares (csrc/sampling/sampling_cpu.cpp, top
// comment); here, as in the Triton kernel, the thresholds are found by sorting-free pivot
// search (FlashInfer style), exact on the float bits: one CTA of kThreads threads per row,
//   pass 1        m = max a over the logits a = x, NaN / +inf flagged;
//   top-k         θ_k = the largest int32 order key t with #{key(a) >= t} >= k: 32 bisection
//                 steps, each one counting pass over the row (block reduction);
//   Z             Σ exp(g) over the candidates key(a) >= θ_k, g = (a − m) / T without overflow
//                 (Row::gap, reference.py's scaled_gap);
//   top-p         τ = the largest bit pattern t with Σ_{bits(w) >= t} w >= p·Z: 31 steps;
//   Z_K, draw     the kept mass (keep ids added), then tiles of kThreads tokens in order: a tile's
//                 mass by block reduction, and in the tile where the running mass passes u·Z_K
//                 one thread walks its kThreads weights (kept in shared memory) in order.
// Cost per row: (4 + 32·[top-k] + 31·[top-p]) reads of the row (L2-resident for V·4 <= a few MB),
// O(kThreads) shared memory, no global scratch, no host synchronisation.  A bad row writes
// token −1; the binding turns that into a device-side assertion.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "common/cuda_common.cuh"
#include "sampling/sampling_params.h"

namespace kexue {
namespace sampling {
namespace {

constexpr int kThreads = 256;  // threads per CTA (one row)
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride over rows beyond this
constexpr int kKeySteps = 32;            // int32 key range: 2^32 values
constexpr int kTauSteps = 31;            // bits of w in [0, 1.0f]: < 2^30 + 1 values
constexpr int32_t kOneBits = 0x3F800000;  // bits of 1.0f

// Order-preserving int32 key of a float (negative floats have their magnitude bits flipped); -0.0 is
// +0.0 first: equal floats, equal keys, so a zero tied with theta_k is kept.
__device__ __forceinline__ int32_t order_key(float a) {
  const int32_t b = static_cast<int32_t>(__float_as_uint(a == 0.f ? 0.f : a));
  return b ^ ((b >> 31) & 0x7FFFFFFF);
}
__device__ __forceinline__ int32_t bits_of(float w) { return static_cast<int32_t>(__float_as_uint(w)); }

__device__ __forceinline__ int warp_sum_int(int x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Block reductions: every thread gets the result; partials summed in warp order (deterministic).
__device__ __forceinline__ float block_sum(float x, float* red) {
  x = cuda_common::warp_sum(x);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
  __syncthreads();
  float t = 0.f;
  for (int i = 0; i < kWarps; ++i) t += red[i];
  __syncthreads();
  return t;
}
__device__ __forceinline__ float block_max(float x, float* red) {
  x = cuda_common::warp_max(x);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
  __syncthreads();
  float t = red[0];
  for (int i = 1; i < kWarps; ++i) t = fmaxf(t, red[i]);
  __syncthreads();
  return t;
}
__device__ __forceinline__ int block_sum_int(int x, int* red) {
  x = warp_sum_int(x);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
  __syncthreads();
  int t = 0;
  for (int i = 0; i < kWarps; ++i) t += red[i];
  __syncthreads();
  return t;
}

template <typename T>
struct Row {
  const T* x;
  int64_t s1;
  float T_;
  __device__ __forceinline__ float a(int64_t i) const { return cuda_common::to_float(x[i * s1]); }
  // (a − m) / T: a / T − m / T for T >= 1 (no quotient overflows), else (a − m) / T (overflows
  // only where e^gap = 0 anyway); exactly 0 at the max (T may round to 0 in float); -inf for a
  // masked token (T above float's range rounds to inf, and -inf / inf is NaN)
  __device__ __forceinline__ float gap(float a, float m) const {
    if (a == -INFINITY) return a;
    if (a == m) return 0.f;
    const float d = a - m;  // the quotients only where d overflows (they round by |a| / T units)
    return d == -INFINITY && T_ >= 1.f ? a / T_ - m / T_ : d / T_;
  }
};

__device__ __forceinline__ bool is_keep(const int64_t* keep, int64_t K, int64_t i) {
  for (int64_t c = 0; c < K; ++c) {
    if (keep[c] == i) return true;
  }
  return false;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sampling_kernel(SamplingParams p) {
  __shared__ float redf[kWarps];
  __shared__ int redi[kWarps];
  __shared__ float tile[kThreads];
  const int tid = threadIdx.x;
  const int64_t V = p.V;
  for (int64_t r = blockIdx.x; r < p.B; r += gridDim.x) {
    const Row<T> row{static_cast<const T*>(p.logits) + r * p.stride0, p.stride1, static_cast<float>(p.temperature[r])};
    const int64_t k = p.top_k[r];
    const float top_p = static_cast<float>(p.top_p[r]);
    const int64_t* keep = p.keep + r * p.K;
    // pass 1: max and bad values
    float m = -INFINITY;
    int bad = 0;
    for (int64_t i = tid; i < V; i += kThreads) {
      const float a = row.a(i);
      bad |= !(a < INFINITY);
      m = fmaxf(m, a);
    }
    m = block_max(m, redf);
    bad = block_sum_int(bad, redi) > 0 || m == -INFINITY;
    if (bad) m = 0.f;  // (the row's token is −1; the passes below run on harmless values)
    // top-k: θ = the k-th largest key, bisection on [lo, hi): #{key >= lo} >= k > #{key >= hi}
    int64_t lo = INT32_MIN, hi = static_cast<int64_t>(order_key(m)) + 1;
    if (k > 0 && k < V) {
      for (int step = 0; step < kKeySteps; ++step) {
        const int64_t mid = lo + (hi - lo) / 2;
        int cnt = 0;
        for (int64_t i = tid; i < V; i += kThreads) cnt += order_key(row.a(i)) >= mid;
        const bool ge = block_sum_int(cnt, redi) >= k;
        lo = ge ? mid : lo;
        hi = ge ? hi : mid;
      }
    }
    const int64_t theta = lo;
    float z = 0.f;
    for (int64_t i = tid; i < V; i += kThreads) {
      const float a = row.a(i);
      z += order_key(a) >= theta ? expf(row.gap(a, m)) : 0.f;
    }
    const float Z = block_sum(z, redf);
    // top-p: τ bits = the largest t with Σ_{bits(w) >= t} w >= p·Z
    int32_t tlo = 0, thi = kOneBits + 1;
    if (top_p < 1.f) {
      const float target = top_p * Z;
      for (int step = 0; step < kTauSteps; ++step) {
        const int32_t mid = tlo + (thi - tlo) / 2;
        float s = 0.f;
        for (int64_t i = tid; i < V; i += kThreads) {
          const float a = row.a(i);
          const float w = order_key(a) >= theta ? expf(row.gap(a, m)) : 0.f;
          s += bits_of(w) >= mid ? w : 0.f;
        }
        const bool ge = block_sum(s, redf) >= target;
        tlo = ge ? mid : tlo;
        thi = ge ? thi : mid;
      }
    }
    const int32_t tau = tlo;
    // kept mass, then the draw in token order, tile by tile
    auto kept_weight = [&](int64_t i) -> float {
      const float a = row.a(i);
      const float e = expf(row.gap(a, m));
      const bool kept = (order_key(a) >= theta && bits_of(e) >= tau) || is_keep(keep, p.K, i);
      return kept ? e : 0.f;
    };
    float zk = 0.f;
    for (int64_t i = tid; i < V; i += kThreads) zk += kept_weight(i);
    const float ZK = block_sum(zk, redf);
    const float goal = static_cast<float>(p.uniform[r]) * ZK;
    float cum = 0.f;
    int64_t token = -1, last = -1;
    for (int64_t t0 = 0; t0 < V; t0 += kThreads) {  // uniform trip count: every thread reaches the barriers
      const int64_t i = t0 + tid;
      const float w = i < V ? kept_weight(i) : 0.f;
      if (p.probs != nullptr && i < V) p.probs[r * V + i] = w / ZK;
      tile[tid] = w;
      const float tsum = block_sum(w, redf);  // (its barriers also publish tile[])
      if (token < 0 && cum + tsum > goal) {
        // every thread walks the tile the same way (no divergence, no extra barrier)
        float c = cum;
        for (int j = 0; j < kThreads && t0 + j < V; ++j) {
          if (tile[j] > 0.f) {
            c += tile[j];
            last = t0 + j;
            if (c > goal) {
              token = t0 + j;
              break;
            }
          }
        }
      } else if (tsum > 0.f) {
        for (int j = kThreads - 1; j >= 0; --j) {
          if (t0 + j < V && tile[j] > 0.f) {
            last = t0 + j;
            break;
          }
        }
      }
      cum += tsum;
      __syncthreads();  // tile[] is rewritten by the next tile
      if (token >= 0 && p.probs == nullptr) break;  // (block-uniform)
    }
    if (tid == 0) p.tokens[r] = bad ? -1 : (token >= 0 ? token : last);
  }
}

template <typename T>
cudaError_t launch_typed(const SamplingParams& p, cudaStream_t stream) {
  const int blocks = static_cast<int>(p.B < kMaxBlocks ? p.B : kMaxBlocks);
  KEXUE_LAUNCH(blocks, kThreads, 0, stream, sampling_kernel<T>)(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_sampling(const SamplingParams& p, cudaStream_t stream) {
  if (p.B == 0) return cudaSuccess;
  switch (p.dtype) {
    case DType::kFloat32: return launch_typed<float>(p, stream);
    case DType::kFloat16: return launch_typed<__half>(p, stream);
    case DType::kBFloat16: return launch_typed<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace sampling
}  // namespace kexue
