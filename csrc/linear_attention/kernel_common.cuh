// Device helpers shared by the linear-attention kernels: dtype conversion, warp reductions,
// the feature maps φ (fused into the loads) and their vjps, and a register-tiled fp32 GEMM on
// shared-memory tiles.  Torch-free.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_common.cuh"
#include "linear_attention/params.h"

namespace kexue {
namespace la {
namespace detail {

constexpr float kNormalizeEps = 1e-12f;  // F.normalize's clamp of ‖x‖ in the "taylor" map

// dtype conversion and warp reductions: csrc/common/cuda_common.cuh
using cuda_common::from_float;
using cuda_common::to_float;
using cuda_common::warp_max;
using cuda_common::warp_sum;


__host__ __device__ __forceinline__ int round_up4(int x) { return (x + 3) & ~3; }

// ---- feature maps -------------------------------------------------------------------------
// Row statistics a map needs over the whole input row (Dk values): softmax (max, 1/Σexp),
// taylor (1/max(‖x‖, 1e-12), ‖x‖).  Computed by one full warp (all lanes must call).
struct PhiStats {
  float a = 0.f;
  float b = 0.f;
};

template <typename T>
__device__ __forceinline__ PhiStats phi_stats(const T* row, int64_t sd, int Dk, FeatureMap fm, int lane) {
  PhiStats st;
  if (fm == FeatureMap::kSoftmax) {
    float m = -INFINITY;
    for (int d = lane; d < Dk; d += 32) m = fmaxf(m, to_float(row[d * sd]));
    m = warp_max(m);
    float s = 0.f;
    for (int d = lane; d < Dk; d += 32) s += expf(to_float(row[d * sd]) - m);
    s = warp_sum(s);
    st.a = m;
    st.b = 1.f / s;
  } else if (fm == FeatureMap::kTaylor) {
    float ss = 0.f;
    for (int d = lane; d < Dk; d += 32) {
      const float x = to_float(row[d * sd]);
      ss = fmaf(x, x, ss);
    }
    const float n = sqrtf(warp_sum(ss));
    st.a = 1.f / fmaxf(n, kNormalizeEps);
    st.b = n;
  }
  return st;
}

// φ(x)[f] for f < F (F = Dk, or Dk + 1 for taylor).
template <typename T>
__device__ __forceinline__ float phi_value(const T* row, int64_t sd, int f, FeatureMap fm, const PhiStats& st) {
  switch (fm) {
    case FeatureMap::kTaylor:
      return f == 0 ? 1.f : to_float(row[(f - 1) * sd]) * st.a;
    case FeatureMap::kSoftmax:
      return expf(to_float(row[f * sd]) - st.a) * st.b;
    case FeatureMap::kElu: {
      const float x = to_float(row[f * sd]);
      return x > 0.f ? x + 1.f : expf(x);  // elu(x) + 1
    }
    case FeatureMap::kRelu:
      return fmaxf(to_float(row[f * sd]), 0.f);
    default:
      return to_float(row[f * sd]);
  }
}

// ---- register-tiled GEMM on shared memory -------------------------------------------------
// acc[i][j] += Σ_{k in [k0, k1)} A(m_i, k) · B(k, n_j),  m_i = m0 + i·mstep, n_j = n0 + j·nstep.
// A_KC: A stored [m][k] (k contiguous, any mstep); else [k][m] (m contiguous, mstep must be 1).
// B_KC: B stored [n][k] (k contiguous, any nstep); else [k][n] (n contiguous, nstep must be 1).
// k0, k1, leading dims and the contiguous offsets are multiples of 4 (16-byte vector loads),
// and the tiles are zero-padded up to k1.  Per 4 k-steps: TM + TN vector loads, 4·TM·TN FMAs.
template <int L>
__device__ __forceinline__ void ld_vec(float (&r)[L], const float* p) {
  if constexpr (L == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    r[0] = t.x;
    r[1] = t.y;
    r[2] = t.z;
    r[3] = t.w;
  } else if constexpr (L == 2) {
    const float2 t = *reinterpret_cast<const float2*>(p);
    r[0] = t.x;
    r[1] = t.y;
  } else {
#pragma unroll
    for (int i = 0; i < L; ++i) r[i] = p[i];
  }
}

template <int TM, int TN, bool A_KC, bool B_KC>
__device__ __forceinline__ void mt_gemm(float (&acc)[TM][TN], const float* A, int lda, int m0, int mstep,
                                        const float* B, int ldb, int n0, int nstep, int k0, int k1) {
  for (int k = k0; k < k1; k += 4) {
    float a[TM][4];
    float b[4][TN];
    if constexpr (A_KC) {
#pragma unroll
      for (int i = 0; i < TM; ++i) ld_vec<4>(a[i], A + (m0 + i * mstep) * lda + k);
    } else {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        float t[TM];
        ld_vec<TM>(t, A + (k + kk) * lda + m0);
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i][kk] = t[i];
      }
    }
    if constexpr (B_KC) {
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        float t[4];
        ld_vec<4>(t, B + (n0 + j * nstep) * ldb + k);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) b[kk][j] = t[kk];
      }
    } else {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) ld_vec<TN>(b[kk], B + (k + kk) * ldb + n0);
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i][kk], b[kk][j], acc[i][j]);
  }
}

}  // namespace detail
}  // namespace la
}  // namespace kexue
