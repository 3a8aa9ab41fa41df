// CUDA kernels of kexue::cross_entropy_fwd / _bwd / _bwd_inplace (torch-free; parameters in
// ce_params.h, launchers in cross_entropy_api.cu, one instantiation file per dtype).
//
// Layout: a row group of G threads (G a power of two, 32..1024, picked by launch_shape from C and
// N) owns one row; a CTA holds max(G, 256) / G row groups.  All math is float32.
//
// Forward (ce_fwd_kernel): each thread streams its share of the row once, with 16-byte vector
// loads when the row is contiguous (a scalar head up to the first 16-byte boundary and a
// scalar tail; the strided fallback reads element by element), adds the bias tau·log(prior) and
// keeps an online softmax: running max m, Σ exp(a − m) rescaled when m grows, and for label
// smoothing Σ w (a − m) and Σ w re-shifted the same way.  The group merges the threads' states
// (warp shuffles, then shared memory across the group's warps, fixed order: deterministic) and
// thread 0 writes lse_i and ℓ_i.  Cost: N·C element loads (+ C-float bias / weight reads that stay
// in L2), ~N·C·(exp + 4) flops, 8 bytes written per row; no scratch.
//
// Backward (ce_bwd_kernel), the CPU kernel's formula:
//   grad[i, c] = coef·exp(a_c − lse) − (g ε/C)·w_c − g (1−ε) w_y δ_{c,y},
//   coef = g·((1−ε) w_y + ε W/C + 2 z lse),  g = grad_loss[i],  W = Σ_c w_c (C without weights).
// Each thread reads its elements once and writes each gradient element once (the target column
// is fixed in float32 in the same pass, so it is stored once; in place the write goes over the
// element just read by the same thread).  Ignored rows get 0 without reading the logits; rows
// with an out-of-range target get NaN.  Cost: N·C loads + N·C stores, ~N·C·(exp + 4) flops.
//
// Out-of-range targets never crash: the row's loss (and gradient) is NaN and the row index is
// atomicMin'd into p.error_row when given.  Indexing is 64-bit (N·C may exceed 2^31).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/cuda_common.cuh"
#include "cross_entropy/ce_params.h"

namespace kexue {
namespace ce {
namespace detail {

constexpr int kMaxThreads = 1024;    // largest row group: one CTA per row
constexpr int kMinBlock = 256;       // CTA size when several row groups share a CTA
constexpr int kUnroll = 2;           // 16-byte loads issued per thread before they are used
constexpr int kElemsPerThread = 64;  // row group grows (up to 256 threads) until each thread has ~this many
constexpr float kLog2e = 1.4426950408889634f;

// Elements of T in one 16-byte vector.
template <typename T>
struct Vec {
  static constexpr int kN = 16 / static_cast<int>(sizeof(T));
};

// ---- dtype conversion: csrc/common/cuda_common.cuh ---------------------------------------
using cuda_common::from_float;
using cuda_common::to_float;

// exp(d) as one MUFU.EX2 (d ≤ 0 in every use; exp(-inf) = 0, NaN propagates).  The argument is
// a difference taken first (a − m), so large logits (±1e4) lose nothing in the scaling.
__device__ __forceinline__ float exp_f(float d) { return exp2f(d * kLog2e); }

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

// ---- 16-byte loads and stores -----------------------------------------------------------------
// x[0..V) = p[0..V) as float; p is 16-byte aligned.
template <typename T>
__device__ __forceinline__ void load16(const T* p, float (&x)[Vec<T>::kN]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if constexpr (std::is_same_v<T, float>) {
      x[k] = __uint_as_float(w[k]);
    } else if constexpr (std::is_same_v<T, __half>) {
      __half2_raw r;  // (the raw structs are trivially copyable; __half2 itself is not)
      memcpy(&r, &w[k], sizeof(r));
      const float2 f = __half22float2(__half2(r));
      x[2 * k] = f.x;
      x[2 * k + 1] = f.y;
    } else {
      __nv_bfloat162_raw r;
      memcpy(&r, &w[k], sizeof(r));
      const float2 f = __bfloat1622float2(__nv_bfloat162(r));
      x[2 * k] = f.x;
      x[2 * k + 1] = f.y;
    }
  }
}

// p[0..V) = x rounded to T; p is 16-byte aligned.
template <typename T>
__device__ __forceinline__ void store16(T* p, const float (&x)[Vec<T>::kN]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if constexpr (std::is_same_v<T, float>) {
      w[k] = __float_as_uint(x[k]);
    } else if constexpr (std::is_same_v<T, __half>) {
      const __half2_raw r = __floats2half2_rn(x[2 * k], x[2 * k + 1]);
      memcpy(&w[k], &r, sizeof(r));
    } else {
      const __nv_bfloat162_raw r = __floats2bfloat162_rn(x[2 * k], x[2 * k + 1]);
      memcpy(&w[k], &r, sizeof(r));
    }
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// x[0..K) = p[0..K) of a float32 vector (bias, weights: small, read by every row, cached);
// float4 loads when vec4 (p 16-byte aligned), else scalar.
template <int K>
__device__ __forceinline__ void load_f32(const float* p, bool vec4, float (&x)[K]) {
  if (K % 4 == 0 && vec4) {
#pragma unroll
    for (int q = 0; q < K / 4; ++q) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(p) + q);
      x[4 * q] = v.x;
      x[4 * q + 1] = v.y;
      x[4 * q + 2] = v.z;
      x[4 * q + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < K; ++k) x[k] = __ldg(p + k);
  }
}

// The class terms of V columns from c0, shared by the forward and backward vector loops:
// a[k] += bias[c0 + k] (tau·log prior) when HAS_BIAS; w[k] = wt[c0 + k], or 1 when wt is null
// (callers pass null where the weights are not needed, so nothing is read then).
template <int V, bool HAS_BIAS>
__device__ __forceinline__ void add_bias_load_weights(float (&a)[V], float (&w)[V], const float* bias, bool bias_vec,
                                                      const float* wt, bool w_vec, int64_t c0) {
  if constexpr (HAS_BIAS) {
    float b[V];
    load_f32<V>(bias + c0, bias_vec, b);
#pragma unroll
    for (int k = 0; k < V; ++k) a[k] += b[k];
  }
#pragma unroll
  for (int k = 0; k < V; ++k) w[k] = 1.f;
  if (wt != nullptr) load_f32<V>(wt + c0, w_vec, w);
}

// Position of a row pointer inside its 16-byte line, in elements of T.
template <typename T>
__device__ __forceinline__ int vec_phase(const T* p) {
  return static_cast<int>((reinterpret_cast<uintptr_t>(p) / sizeof(T)) % Vec<T>::kN);
}

// ---- online softmax state -------------------------------------------------------------------
// m: running max; s = Σ exp(a − ref); sw = Σ w (a − ref); ws = Σ w; ref = m, or 0 while m = -inf
// (then every a seen is -inf: s = 0, sw = 0 or -inf, which a later re-shift leaves alone).
struct RowStats {
  float m, s, sw, ws;
};

__device__ __forceinline__ float ref_of(float m) { return m == -INFINITY ? 0.f : m; }

template <int K, bool SMOOTH>
__device__ __forceinline__ void update(RowStats& st, const float (&a)[K], const float (&w)[K]) {
  float vmax = a[0];
#pragma unroll
  for (int k = 1; k < K; ++k) vmax = fmaxf(vmax, a[k]);  // (NaNs skipped: they reach s below)
  if (vmax > st.m) {  // rare after the first elements: one rescale per new maximum
    if (SMOOTH && st.m != -INFINITY) st.sw = fmaf(st.ws, st.m - vmax, st.sw);
    st.s *= exp_f(st.m - vmax);
    st.m = vmax;
  }
  const float ref = ref_of(st.m);
#pragma unroll
  for (int k = 0; k < K; ++k) st.s += exp_f(a[k] - ref);
  if constexpr (SMOOTH) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      st.sw = fmaf(w[k], a[k] - ref, st.sw);
      st.ws += w[k];
    }
  }
}

// The state of the union of two column sets (commutative: every lane of a butterfly gets the
// same bits).
template <bool SMOOTH>
__device__ __forceinline__ RowStats merge(RowStats a, const RowStats& b) {
  const float M = fmaxf(a.m, b.m);
  if (M == -INFINITY) {  // both relative to 0
    a.s += b.s;
    if (SMOOTH) {
      a.sw += b.sw;
      a.ws += b.ws;
    }
    return a;
  }
  if (SMOOTH) {
    const float swa = a.m == -INFINITY ? a.sw : fmaf(a.ws, a.m - M, a.sw);
    const float swb = b.m == -INFINITY ? b.sw : fmaf(b.ws, b.m - M, b.sw);
    a.sw = swa + swb;
    a.ws += b.ws;
  }
  a.s = a.s * exp_f(a.m - M) + b.s * exp_f(b.m - M);
  a.m = M;
  return a;
}

template <bool SMOOTH>
__device__ __forceinline__ RowStats warp_merge(RowStats st) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    RowStats other;
    other.m = __shfl_xor_sync(0xffffffffu, st.m, o);
    other.s = __shfl_xor_sync(0xffffffffu, st.s, o);
    if (SMOOTH) {
      other.sw = __shfl_xor_sync(0xffffffffu, st.sw, o);
      other.ws = __shfl_xor_sync(0xffffffffu, st.ws, o);
    } else {
      other.sw = 0.f;
      other.ws = 0.f;
    }
    st = merge<SMOOTH>(st, other);
  }
  return st;
}

// Row-group geometry: the group's thread index t, the row i.
struct GroupPos {
  int t;
  int64_t i;
};

__device__ __forceinline__ GroupPos group_pos(int group) {
  GroupPos g;
  g.t = static_cast<int>(threadIdx.x) & (group - 1);
  g.i = static_cast<int64_t>(blockIdx.x) * (blockDim.x / group) + threadIdx.x / group;
  return g;
}

// ---- forward ----------------------------------------------------------------------------------
// One row per group of `group` threads (see the file comment).  HAS_BIAS: p.bias is added;
// SMOOTH: label smoothing (ε != 0), which needs Σ w (a − m) and Σ w over the row.
template <typename T, bool HAS_BIAS, bool SMOOTH>
__global__ void __launch_bounds__(kMaxThreads) ce_fwd_kernel(const CrossEntropyParams p, int group) {
  constexpr int V = Vec<T>::kN;
  __shared__ RowStats red[kMaxThreads / 32];
  const GroupPos gp = group_pos(group);
  const int t = gp.t;
  const int64_t i = gp.i;
  const int64_t C = p.C;
  const float* bias = p.bias;
  const float* wt = p.weight;
  RowStats st{-INFINITY, 0.f, 0.f, 0.f};
  const T* row = static_cast<const T*>(p.logits) + (i < p.N ? i : 0) * p.logits_stride0;

  // one element (strided path, head and tail of the vector path)
  auto step1 = [&](int64_t c) {
    float a[1] = {to_float(row[c * p.logits_stride1])};
    if constexpr (HAS_BIAS) a[0] += __ldg(bias + c);
    float w[1] = {1.f};
    if constexpr (SMOOTH) {
      if (wt != nullptr) w[0] = __ldg(wt + c);
    }
    update<1, SMOOTH>(st, a, w);
  };

  if (i < p.N) {
    if (p.logits_stride1 == 1) {
      const int64_t head = min(static_cast<int64_t>((V - vec_phase(row)) % V), C);
      const int64_t nvec = (C - head) / V;
      const int64_t tail = head + nvec * V;
      for (int64_t c = t; c < head; c += group) step1(c);
      for (int64_t c = tail + t; c < C; c += group) step1(c);
      // bias / weights in float4 when column head + V·v is 16-byte aligned in them
      const bool bias_vec = HAS_BIAS && (reinterpret_cast<uintptr_t>(bias) % 16 == 0) && head % 4 == 0;
      const bool w_vec = wt != nullptr && (reinterpret_cast<uintptr_t>(wt) % 16 == 0) && head % 4 == 0;
      const T* vrow = row + head;
      for (int64_t v0 = t; v0 < nvec; v0 += static_cast<int64_t>(group) * kUnroll) {
        float a[kUnroll][V];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t v = v0 + static_cast<int64_t>(u) * group;
          if (v < nvec) load16(vrow + v * V, a[u]);
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t v = v0 + static_cast<int64_t>(u) * group;
          if (v < nvec) {
            float w[V];
            add_bias_load_weights<V, HAS_BIAS>(a[u], w, bias, bias_vec, SMOOTH ? wt : nullptr, w_vec, head + v * V);
            update<V, SMOOTH>(st, a[u], w);
          }
        }
      }
    } else {
      for (int64_t c = t; c < C; c += group) step1(c);
    }
  }

  st = warp_merge<SMOOTH>(st);
  if (group > 32) {  // uniform over the CTA: every thread reaches the barrier
    const int warp = static_cast<int>(threadIdx.x) / 32;
    if ((threadIdx.x & 31) == 0) red[warp] = st;
    __syncthreads();
    if (t == 0) {
      st = red[warp];
      for (int k = 1; k < group / 32; ++k) st = merge<SMOOTH>(st, red[warp + k]);
    }
  }
  if (i >= p.N || t != 0) return;

  const float M = st.m;
  const float lse = fabsf(M) == INFINITY ? M : M + logf(st.s);  // ±inf rows: lse = max (torch's rule)
  p.lse[i] = lse;
  const int64_t y = p.target[i * p.target_stride];
  float loss = 0.f;
  if (y != p.ignore_index) {
    if (y < 0 || y >= C) {
      loss = quiet_nan();
      if (p.error_row != nullptr) atomicMin(p.error_row, static_cast<unsigned long long>(i));
    } else {
      const float eps = p.label_smoothing, z = p.z_loss;
      float a_y = to_float(row[y * p.logits_stride1]);
      if constexpr (HAS_BIAS) a_y += bias[y];
      const float wy = wt != nullptr ? wt[y] : 1.f;
      loss = (1.f - eps) * wy * (lse - a_y);
      // Σ_c w_c (lse − a_c) = W (lse − ref) − Σ_c w_c (a_c − ref), W = Σ_c w_c = st.ws
      if constexpr (SMOOTH) loss += eps / static_cast<float>(C) * (st.ws * (lse - ref_of(M)) - st.sw);
      if (z != 0.f) loss += z * lse * lse;
    }
  }
  p.loss[i] = loss;
}

// ---- backward ---------------------------------------------------------------------------------
// Writes `value` over the row (ignored rows: 0; out-of-range targets: NaN).
template <typename T>
__device__ __forceinline__ void fill_row(T* out, int64_t C, int64_t stride1, float value, int t, int group) {
  constexpr int V = Vec<T>::kN;
  if (stride1 != 1) {
    for (int64_t c = t; c < C; c += group) out[c * stride1] = from_float<T>(value);
    return;
  }
  const int64_t head = min(static_cast<int64_t>((V - vec_phase(out)) % V), C);
  const int64_t nvec = (C - head) / V;
  for (int64_t c = t; c < head; c += group) out[c] = from_float<T>(value);
  for (int64_t c = head + nvec * V + t; c < C; c += group) out[c] = from_float<T>(value);
  float x[V];
#pragma unroll
  for (int k = 0; k < V; ++k) x[k] = value;
  for (int64_t v = t; v < nvec; v += group) store16(out + head + v * V, x);
}

// One row per group.  HAS_BIAS: p.bias is added to the logits; W_SMOOTH: class weights enter
// the smoothing term (ε != 0 and weights given; then *wsum = Σ_c w_c).  out may be the logits.
template <typename T, bool HAS_BIAS, bool W_SMOOTH>
__global__ void __launch_bounds__(kMaxThreads) ce_bwd_kernel(const CrossEntropyParams p, const float* wsum,
                                                              int group) {
  constexpr int V = Vec<T>::kN;
  const GroupPos gp = group_pos(group);
  const int t = gp.t;
  const int64_t i = gp.i;
  if (i >= p.N) return;  // (no barrier in this kernel)
  const int64_t C = p.C;
  const T* row = static_cast<const T*>(p.logits) + i * p.logits_stride0;
  T* out = static_cast<T*>(p.grad) + i * p.grad_stride0;
  const int64_t s1 = p.logits_stride1, o1 = p.grad_stride1;
  const int64_t y = p.target[i * p.target_stride];
  if (y == p.ignore_index) {
    fill_row(out, C, o1, 0.f, t, group);
    return;
  }
  if (y < 0 || y >= C) {
    if (t == 0 && p.error_row != nullptr) atomicMin(p.error_row, static_cast<unsigned long long>(i));
    fill_row(out, C, o1, quiet_nan(), t, group);
    return;
  }
  const float* bias = p.bias;
  const float* wt = p.weight;
  const float g = p.grad_loss[i * p.grad_loss_stride];
  const float lse = p.lse_in[i * p.lse_in_stride];
  const float eps = p.label_smoothing, z = p.z_loss;
  const float Cf = static_cast<float>(C);
  const float wy = wt != nullptr ? wt[y] : 1.f;
  const float W = W_SMOOTH ? *wsum : Cf;
  const float coef = g * ((1.f - eps) * wy + eps * W / Cf + 2.f * z * lse);
  const float smooth = g * eps / Cf;
  const float ty = g * (1.f - eps) * wy;  // subtracted at the target column

  // gradient of one element of column c from the adjusted logit a
  auto grad_of = [&](float a, float w, int64_t c) {
    float d = coef * exp_f(a - lse) - smooth * w;
    return c == y ? d - ty : d;
  };
  auto step1 = [&](int64_t c) {
    float a = to_float(row[c * s1]);
    if constexpr (HAS_BIAS) a += __ldg(bias + c);
    const float w = W_SMOOTH ? __ldg(wt + c) : 1.f;
    out[c * o1] = from_float<T>(grad_of(a, w, c));
  };

  if (s1 == 1 && o1 == 1 && vec_phase(row) == vec_phase(out)) {
    const int64_t head = min(static_cast<int64_t>((V - vec_phase(row)) % V), C);
    const int64_t nvec = (C - head) / V;
    const int64_t tail = head + nvec * V;
    for (int64_t c = t; c < head; c += group) step1(c);
    for (int64_t c = tail + t; c < C; c += group) step1(c);
    const bool bias_vec = HAS_BIAS && (reinterpret_cast<uintptr_t>(bias) % 16 == 0) && head % 4 == 0;
    const bool w_vec = W_SMOOTH && (reinterpret_cast<uintptr_t>(wt) % 16 == 0) && head % 4 == 0;
    const T* vrow = row + head;
    T* vout = out + head;
    for (int64_t v0 = t; v0 < nvec; v0 += static_cast<int64_t>(group) * kUnroll) {
      float a[kUnroll][V];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {  // all loads first (in place: each element is read
        const int64_t v = v0 + static_cast<int64_t>(u) * group;  // before this thread writes it)
        if (v < nvec) load16(vrow + v * V, a[u]);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t v = v0 + static_cast<int64_t>(u) * group;
        if (v < nvec) {
          const int64_t c0 = head + v * V;
          float w[V];
          add_bias_load_weights<V, HAS_BIAS>(a[u], w, bias, bias_vec, W_SMOOTH ? wt : nullptr, w_vec, c0);
#pragma unroll
          for (int k = 0; k < V; ++k) a[u][k] = grad_of(a[u][k], w[k], c0 + k);
          store16(vout + v * V, a[u]);
        }
      }
    }
  } else {
    for (int64_t c = t; c < C; c += group) step1(c);
  }
}

// ---- launch geometry and typed launchers ------------------------------------------------------
struct LaunchShape {
  int group = 32;    // threads per row
  int threads = 0;   // threads per CTA
  int64_t blocks = 0;
};

// Group size: the smallest power of two >= 32 giving each thread <= kElemsPerThread elements, up
// to 256; then, while the rows alone cannot fill the GPU (N·G below 2048 resident threads per
// SM) and each thread keeps >= 16 elements, up to 1024 threads per row.
inline LaunchShape launch_shape(int64_t N, int64_t C, int sms) {
  LaunchShape s;
  int g = 32;
  while (g < 256 && C > static_cast<int64_t>(g) * kElemsPerThread) g *= 2;
  while (g < kMaxThreads && C > static_cast<int64_t>(g) * 16 * 2 && N * g < static_cast<int64_t>(sms) * 2048) g *= 2;
  s.group = g;
  s.threads = g > kMinBlock ? g : kMinBlock;
  const int rows = s.threads / g;
  s.blocks = (N + rows - 1) / rows;
  return s;
}

template <typename T>
cudaError_t run_fwd(const CrossEntropyParams& p, int sms, cudaStream_t stream) {
  const LaunchShape s = launch_shape(p.N, p.C, sms);
  const bool smooth = p.label_smoothing != 0.f;
  void (*kernel)(const CrossEntropyParams, int);
  if (p.bias != nullptr) {
    kernel = smooth ? ce_fwd_kernel<T, true, true> : ce_fwd_kernel<T, true, false>;
  } else {
    kernel = smooth ? ce_fwd_kernel<T, false, true> : ce_fwd_kernel<T, false, false>;
  }
  KEXUE_LAUNCH(static_cast<unsigned>(s.blocks), s.threads, 0, stream, kernel)(p, s.group);
  return cudaGetLastError();
}

template <typename T>
cudaError_t run_bwd(const CrossEntropyParams& p, const float* wsum, int sms, cudaStream_t stream) {
  const LaunchShape s = launch_shape(p.N, p.C, sms);
  const bool w_smooth = p.weight != nullptr && p.label_smoothing != 0.f;
  void (*kernel)(const CrossEntropyParams, const float*, int);
  if (p.bias != nullptr) {
    kernel = w_smooth ? ce_bwd_kernel<T, true, true> : ce_bwd_kernel<T, true, false>;
  } else {
    kernel = w_smooth ? ce_bwd_kernel<T, false, true> : ce_bwd_kernel<T, false, false>;
  }
  KEXUE_LAUNCH(static_cast<unsigned>(s.blocks), s.threads, 0, stream, kernel)(p, wsum, s.group);
  return cudaGetLastError();
}

#define KEXUE_CE_INSTANCES(X) X(float) X(__half) X(__nv_bfloat16)

}  // namespace detail
}  // namespace ce
}  // namespace kexue
