// Block primitives of the CPU cross-entropy kernels: max, sum of exp, sums and the gradient
// formula over a contiguous block of one row, in the accumulation type (float or double).
//
// The float versions use an inline, branch-free exp (Cephes' expf: range reduction by ln 2 and a
// degree-6 polynomial, about 1 ulp) on 8-lane GCC vectors (explicit, so no reliance on the
// auto-vectoriser, which leaves the clamps as branches); on x86-64 GCC builds x86-64-v3
// (AVX2+FMA) and x86-64-v4 (AVX-512) clones next to the baseline one and picks one at load time
// by ISA level, not CPU model (target_clones), so the library still runs on any x86-64.  The
// double versions are plain loops with std::exp (float64 is the accuracy path, not the speed one).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KEXUE_CE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KEXUE_CE_CLONES
#endif
// helpers forced inline into each clone, so they are compiled for the clone's instruction set
#define KEXUE_CE_INLINE inline __attribute__((always_inline))
// 32-byte vectors passed between always-inlined helpers never cross an ABI boundary
#pragma GCC diagnostic ignored "-Wpsabi"

namespace kexue::ce {

// exp(x) for x <= 0 in the kernels' use (x = a - max or a - lse), valid on all of float's range:
// below ln(FLT_MIN) it returns 0 (as expf does up to denormals), -inf gives 0.
KEXUE_CE_INLINE float fast_exp(float x) {
  constexpr float kLo = -87.33654f;  // ln(FLT_MIN): smaller inputs underflow to 0
  constexpr float kHi = 88.72283f;   // ln(FLT_MAX)
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;      // ln 2 split in two for an exact reduction
  constexpr float kLn2Lo = -2.12194440e-4f;
  float xc = x < kHi ? x : kHi;
  xc = xc > kLo ? xc : kLo;
  const float n = std::nearbyint(xc * kLog2e);
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  // Cephes expf minimax polynomial of exp(r) - 1 - r on |r| <= ln2/2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < kLo ? 0.0f : e * scale;
}

// 8 floats as one GCC vector: AVX registers in the v3/v4 clones, two SSE registers in
// the baseline clone.  Loads and stores go through memcpy (unaligned vmovups).
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

KEXUE_CE_INLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
KEXUE_CE_INLINE void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); }
KEXUE_CE_INLINE v8f splat(float x) { return v8f{} + x; }
KEXUE_CE_INLINE float hsum(v8f v) {
  float s = 0.f;
  for (int k = 0; k < kLanes; ++k) s += v[k];
  return s;
}

// fast_exp on 8 lanes, branch-free (the same constants and rounding as the scalar version;
// round-to-nearest by adding and subtracting 1.5·2^23).
KEXUE_CE_INLINE v8f fast_exp8(v8f x) {
  const v8f lo = splat(-87.33654f), hi = splat(88.72283f);
  v8f xc = x < hi ? x : hi;
  xc = xc > lo ? xc : lo;
  const v8f round = splat(12582912.0f);  // 1.5 * 2^23
  const v8f n = (xc * 1.44269504088896341f + round) - round;
  v8f r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8f p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const v8f e = p * r * r + r + 1.0f;
  const v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8f scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < lo ? splat(0.0f) : e * scale;
}

// max over x[0, n); sets *has_nan when some x is NaN (the max itself skips NaNs).
KEXUE_CE_CLONES inline float block_max(const float* x, int64_t n, int* has_nan) {
  const float ninf = -std::numeric_limits<float>::infinity();
  v8f mv = splat(ninf);
  v8i nanv = v8i{};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const v8f v = load8(x + j);
    mv = v > mv ? v : mv;
    nanv |= (v != v);
  }
  float m = ninf;
  int nan = 0;
  for (int k = 0; k < kLanes; ++k) {
    m = mv[k] > m ? mv[k] : m;
    nan |= nanv[k];
  }
  for (; j < n; ++j) {
    m = x[j] > m ? x[j] : m;
    nan |= (x[j] != x[j]);
  }
  *has_nan |= nan;
  return m;
}

KEXUE_CE_CLONES inline float block_sum_exp(const float* x, int64_t n, float shift) {
  v8f acc = v8f{};
  const v8f sh = splat(shift);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) acc += fast_exp8(load8(x + j) - sh);
  float s = hsum(acc);
  for (; j < n; ++j) s += fast_exp(x[j] - shift);
  return s;
}

// Σ (x - shift) or Σ w (x - shift): the label-smoothing sum, shifted to keep it well conditioned.
KEXUE_CE_CLONES inline float block_sum(const float* x, const float* w, int64_t n, float shift) {
  v8f acc = v8f{};
  const v8f sh = splat(shift);
  int64_t j = 0;
  float s = 0.f;
  if (w == nullptr) {
    for (; j + kLanes <= n; j += kLanes) acc += load8(x + j) - sh;
    s = hsum(acc);
    for (; j < n; ++j) s += x[j] - shift;
  } else {
    for (; j + kLanes <= n; j += kLanes) acc += load8(w + j) * (load8(x + j) - sh);
    s = hsum(acc);
    for (; j < n; ++j) s += w[j] * (x[j] - shift);
  }
  return s;
}

// out = coef * exp(x - lse) - smooth * w   (w = 1 when null); out may alias x.
KEXUE_CE_CLONES inline void block_grad(const float* x, const float* w, int64_t n, float lse, float coef,
                                       float smooth, float* out) {
  const v8f l = splat(lse), cf = splat(coef), sm = splat(smooth);
  int64_t j = 0;
  if (w == nullptr) {
    for (; j + kLanes <= n; j += kLanes) store8(out + j, cf * fast_exp8(load8(x + j) - l) - sm);
    for (; j < n; ++j) out[j] = coef * fast_exp(x[j] - lse) - smooth;
  } else {
    for (; j + kLanes <= n; j += kLanes) store8(out + j, cf * fast_exp8(load8(x + j) - l) - sm * load8(w + j));
    for (; j < n; ++j) out[j] = coef * fast_exp(x[j] - lse) - smooth * w[j];
  }
}

inline double block_max(const double* x, int64_t n, int* has_nan) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    m = x[j] > m ? x[j] : m;
    *has_nan |= (x[j] != x[j]);
  }
  return m;
}

inline double block_sum_exp(const double* x, int64_t n, double shift) {
  double s = 0.0;
  for (int64_t j = 0; j < n; ++j) s += std::exp(x[j] - shift);
  return s;
}

inline double block_sum(const double* x, const double* w, int64_t n, double shift) {
  double s = 0.0;
  for (int64_t j = 0; j < n; ++j) s += (w ? w[j] : 1.0) * (x[j] - shift);
  return s;
}

inline void block_grad(const double* x, const double* w, int64_t n, double lse, double coef, double smooth,
                       double* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = coef * std::exp(x[j] - lse) - smooth * (w ? w[j] : 1.0);
}

}  // namespace kexue::ce
