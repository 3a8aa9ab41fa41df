// Always-inline SIMD helpers for the CPU kernels (GCC / clang vector extensions).
//
// Nothing here is compiled for a particular ISA: a kernel inlines these helpers into an entry
// point marked KEXUE_CPU_CLONES (cpu_isa.h), so the same source becomes AVX2 + FMA code in the
// x86-64-v3 clone and SSE2 code in the baseline clone.  Reductions keep one partial sum per
// lane (the compiler would not reorder a scalar float sum by itself), so results differ from a
// sequential sum by normal float rounding only.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/cpu_isa.h"

namespace kexue::cpu {

// One 32-byte vector (an AVX2 register; two SSE registers in the baseline clone).
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32)));
  typedef int32_t itype __attribute__((vector_size(32)));
  static constexpr int kLanes = 8;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32)));
  static constexpr int kLanes = 4;
};

template <typename T>
KEXUE_ALWAYS_INLINE typename Vec<T>::type vload(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}
template <typename T>
KEXUE_ALWAYS_INLINE void vstore(T* p, typename Vec<T>::type v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
KEXUE_ALWAYS_INLINE T hsum(typename Vec<T>::type v) {
  T s = 0;
  for (int i = 0; i < Vec<T>::kLanes; ++i) s += v[i];
  return s;
}

// Σ a[i] b[i].
template <typename T>
KEXUE_ALWAYS_INLINE T dot(const T* a, const T* b, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  V acc0 = V{}, acc1 = V{};
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    acc0 += vload(a + i) * vload(b + i);
    acc1 += vload(a + i + L) * vload(b + i + L);
  }
  for (; i + L <= n; i += L) acc0 += vload(a + i) * vload(b + i);
  T s = hsum<T>(acc0 + acc1);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Σ a[i].
template <typename T>
KEXUE_ALWAYS_INLINE T sum(const T* a, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  V acc = V{};
  int64_t i = 0;
  for (; i + L <= n; i += L) acc += vload(a + i);
  T s = hsum<T>(acc);
  for (; i < n; ++i) s += a[i];
  return s;
}

// e^x of 8 floats: Cephes' expf (x = k ln2 + r, |r| <= ln2/2, degree-7 polynomial, 2^k built in
// the exponent bits); about 1 ulp on [-87.3, 88], inputs clamped to that range (e^-87.3 is
// the smallest normal float; beyond it the result is that instead of a denormal / 0).
KEXUE_ALWAYS_INLINE Vec<float>::type vexp(Vec<float>::type x) {
  using V = Vec<float>::type;
  using VI = Vec<float>::itype;
  const V hi = V{} + 88.0f, lo = V{} - 87.3365478515625f;
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  // k = round(x / ln2): adding 1.5 * 2^23 rounds to an integer in the low mantissa bits.
  const V shifter = V{} + 12582912.0f;
  V k = x * 1.44269504088896341f + shifter;
  k -= shifter;
  V r = x - k * 0.693359375f;  // ln2 split in two for an exact product with the first part
  r = r - k * -2.12194440e-4f;
  V p = V{} + 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * (r * r) + r + 1.0f;
  const VI e = (__builtin_convertvector(k, VI) + 127) << 23;  // 2^k (k in [-126, 127])
  V pow2k;
  std::memcpy(&pow2k, &e, sizeof(pow2k));
  return p * pow2k;
}

// y[i] = e^{x[i]} for n values (may alias).  float: vexp, also for the tail (through a padded
// block, so every element gets the same function); double: std::exp.
KEXUE_ALWAYS_INLINE void exp_n(const float* x, float* y, int64_t n) {
  constexpr int L = Vec<float>::kLanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) vstore(y + i, vexp(vload(x + i)));
  if (i < n) {
    float buf[L] = {};
    std::memcpy(buf, x + i, sizeof(float) * (n - i));
    vstore(buf, vexp(vload(buf)));
    std::memcpy(y + i, buf, sizeof(float) * (n - i));
  }
}
KEXUE_ALWAYS_INLINE void exp_n(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

// y[i] = elu(x[i]) + 1 = (x > 0 ? x + 1 : e^x) for n values (may alias).
KEXUE_ALWAYS_INLINE Vec<float>::type velu1(Vec<float>::type x) {
  using V = Vec<float>::type;
  const V zero = V{};
  const V e = vexp(x > zero ? zero : x);
  return x > zero ? x + 1.0f : e;
}
KEXUE_ALWAYS_INLINE void elu1_n(const float* x, float* y, int64_t n) {
  constexpr int L = Vec<float>::kLanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) vstore(y + i, velu1(vload(x + i)));
  if (i < n) {
    float buf[L] = {};
    std::memcpy(buf, x + i, sizeof(float) * (n - i));
    vstore(buf, velu1(vload(buf)));
    std::memcpy(y + i, buf, sizeof(float) * (n - i));
  }
}
KEXUE_ALWAYS_INLINE void elu1_n(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0 ? x[i] + 1 : std::exp(x[i]);
}

// dx[i] = dy[i] * (x > 0 ? 1 : y[i]): the vjp of elu + 1 given y = elu(x) + 1 (= e^x for x <= 0).
// Written with vectors: GCC keeps the scalar form as a (mispredicted) branch.
template <typename T>
KEXUE_ALWAYS_INLINE void elu1_vjp_n(const T* x, const T* y, const T* dy, T* dx, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  const V zero = V{}, one = V{} + T(1);
  int64_t i = 0;
  for (; i + L <= n; i += L) vstore(dx + i, vload(dy + i) * (vload(x + i) > zero ? one : vload(y + i)));
  for (; i < n; ++i) dx[i] = x[i] > T(0) ? dy[i] : dy[i] * y[i];
}

}  // namespace kexue::cpu
