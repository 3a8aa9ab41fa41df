// Small kernels of linear attention: the decoding step (N == 1) and the backward's finishing
// pass (feature-map vjp, cast to the input dtype).  Torch-free.
#pragma once

#include "linear_attention/kernel_common.cuh"

namespace kexue {
namespace la {
namespace detail {

constexpr int kStepThreads = 128;  // one thread per value column of the slice
constexpr int kStepMaxF = kMaxHeadDim + 1;

// Decoding step, one token per sequence with the carried state (S0, z0) (zero when absent):
//   S = S0 + b vᵀ,  z = z0 + b,  out = aᵀ S / (a · z + eps)     (a = φ(q), b = φ(k) or 0 if masked)
// Grid (B, H, ceil(Dv / 128)), 128 threads: warp 0 maps q, warp 1 maps k into shared memory,
// then thread d streams column d of S0 (coalesced across threads) and writes column d of S.
// Memory-bound: reads F·Dv + F floats, writes the same; 4·F·Dv FLOPs.
template <typename T>
__global__ void __launch_bounds__(kStepThreads, 1) la_step_kernel(const LinearAttentionParams p) {
  __shared__ float as[kStepMaxF];
  __shared__ float bs[kStepMaxF];
  __shared__ float red[kStepThreads / 32];
  const int b = blockIdx.x, h = blockIdx.y, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int hk = h / (p.H / p.Hkv);
  const int F = p.F;
  const int64_t sh = static_cast<int64_t>(b) * p.H + h;
  if (warp < 2) {
    const T* row = warp == 0 ? static_cast<const T*>(p.q) + b * p.q_stride.b + h * p.q_stride.h
                             : static_cast<const T*>(p.k) + b * p.k_stride.b + hk * p.k_stride.h;
    const int64_t sd = warp == 0 ? p.q_stride.d : p.k_stride.d;
    float* dst = warp == 0 ? as : bs;
    const bool masked = warp == 1 && p.mask != nullptr && p.mask[b * p.mask_stride_b] != 0;
    if (masked) {
      for (int f = lane; f < F; f += 32) dst[f] = 0.f;
    } else {
      const PhiStats st = phi_stats(row, sd, p.Dk, p.feature_map, lane);
      for (int f = lane; f < F; f += 32) dst[f] = phi_value(row, sd, f, p.feature_map, st);
    }
  }
  __syncthreads();
  float part = 0.f;
  for (int f = tid; f < F; f += kStepThreads) {
    const float zn = (p.z0 != nullptr ? p.z0[sh * F + f] : 0.f) + bs[f];
    if (p.z != nullptr && blockIdx.z == 0) p.z[sh * F + f] = zn;
    part = fmaf(as[f], zn, part);
  }
  part = warp_sum(part);
  if (lane == 0) red[warp] = part;
  __syncthreads();
  float den = 0.f;
#pragma unroll
  for (int w = 0; w < kStepThreads / 32; ++w) den += red[w];
  const int d = blockIdx.z * kStepThreads + tid;
  if (d >= p.Dv) return;
  const float vd = to_float(static_cast<const T*>(p.v)[b * p.v_stride.b + hk * p.v_stride.h + d * p.v_stride.d]);
  float acc = 0.f;
  for (int f = 0; f < F; ++f) {
    const int64_t idx = (sh * F + f) * p.Dv + d;
    const float s = fmaf(bs[f], vd, p.S0 != nullptr ? p.S0[idx] : 0.f);
    if (p.S != nullptr) p.S[idx] = s;
    acc = fmaf(as[f], s, acc);
  }
  if (p.normalize) acc = acc / (den + p.eps);
  static_cast<T*>(p.out)[b * p.out_stride.b + h * p.out_stride.h + d * p.out_stride.d] = from_float<T>(acc);
}

// Finishing pass of the backward, one warp per row (b, head, t) of `rows` = B·heads·N:
//   dx = vjp_φ(x, g) with g the float32 cotangent of φ(x) (width F); zero where masked (keys);
//   or, with x == nullptr, dx = g cast to T (dv, width Dk).
// Reads x (Dk) and g (F) once (twice for softmax/taylor from L1), writes dx (Dk).
template <typename T>
__global__ void __launch_bounds__(256, 1) la_vjp_rows_kernel(const T* x, Strides4 xs, const float* g, T* dx,
                                                          Strides4 dxs, int heads, int64_t N, int Dk, int F,
                                                          FeatureMap fm, const uint8_t* mask, int64_t msb,
                                                          int64_t msn, int64_t rows) {
  const int lane = threadIdx.x % 32;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; row < rows;
       row += warps_total) {
    const int64_t t = row % N;
    const int64_t bh = row / N;
    const int64_t h = bh % heads, b = bh / heads;
    T* drow = dx + b * dxs.b + h * dxs.h + t * dxs.n;
    const float* grow = g + row * F;
    if (x == nullptr) {
      for (int d = lane; d < Dk; d += 32) drow[d * dxs.d] = from_float<T>(grow[d]);
      continue;
    }
    if (mask != nullptr && mask[b * msb + t * msn] != 0) {
      for (int d = lane; d < Dk; d += 32) drow[d * dxs.d] = from_float<T>(0.f);
      continue;
    }
    const T* xrow = x + b * xs.b + h * xs.h + t * xs.n;
    const PhiStats st = phi_stats(xrow, xs.d, Dk, fm, lane);
    if (fm == FeatureMap::kSoftmax) {  // y ∘ (g - y·g)
      float dot = 0.f;
      for (int d = lane; d < Dk; d += 32) dot = fmaf(expf(to_float(xrow[d * xs.d]) - st.a) * st.b, grow[d], dot);
      dot = warp_sum(dot);
      for (int d = lane; d < Dk; d += 32) {
        const float y = expf(to_float(xrow[d * xs.d]) - st.a) * st.b;
        drow[d * dxs.d] = from_float<T>(y * (grow[d] - dot));
      }
    } else if (fm == FeatureMap::kTaylor) {  // u = x / max(‖x‖, ε): (g_u - u (u·g_u)) / ‖x‖ if ‖x‖ > ε
      const bool clamped = !(st.b > kNormalizeEps);
      float dot = 0.f;
      if (!clamped) {
        for (int d = lane; d < Dk; d += 32) dot = fmaf(to_float(xrow[d * xs.d]) * st.a, grow[d + 1], dot);
        dot = warp_sum(dot);
      }
      for (int d = lane; d < Dk; d += 32) {
        const float u = to_float(xrow[d * xs.d]) * st.a;
        drow[d * dxs.d] = from_float<T>((grow[d + 1] - (clamped ? 0.f : u * dot)) * st.a);
      }
    } else {
      for (int d = lane; d < Dk; d += 32) {
        const float xv = to_float(xrow[d * xs.d]);
        float r = grow[d];
        if (fm == FeatureMap::kElu) r = xv > 0.f ? r : r * expf(xv);
        if (fm == FeatureMap::kRelu) r = xv > 0.f ? r : 0.f;
        drow[d * dxs.d] = from_float<T>(r);
      }
    }
  }
}

}  // namespace detail
}  // namespace la
}  // namespace kexue
