// Always-inline SIMD helpers for the CPU kernels (GCC / clang vector extensions), templated on
// the vector width W in bytes (cpu_isa.h: 64 in the AVX-512 path, 32 in the AVX2 path, 16 in the
// baseline path).
//
// Nothing here is compiled for a particular ISA: the kernels' entry points (cpu_isa.h) inline
// these helpers and so compile them for their own ISA.  Reductions keep one partial sum per lane
// (the compiler would not reorder a scalar float sum by itself), so results differ from a
// sequential sum by normal float rounding only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/cpu_isa.h"

namespace kexue::cpu {

// One W-byte vector of T.
template <typename T, int W>
struct Vec {
  typedef T type __attribute__((vector_size(W)));
  static constexpr int kLanes = W / static_cast<int>(sizeof(T));
};

template <int W, typename T>
KEXUE_ALWAYS_INLINE typename Vec<T, W>::type vload(const T* p) {
  typename Vec<T, W>::type v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}
template <int W, typename T>
KEXUE_ALWAYS_INLINE void vstore(T* p, typename Vec<T, W>::type v) {
  std::memcpy(p, &v, sizeof(v));
}
template <int W, typename T>
KEXUE_ALWAYS_INLINE T hsum(typename Vec<T, W>::type v) {
  T s = 0;
  for (int i = 0; i < Vec<T, W>::kLanes; ++i) s += v[i];
  return s;
}

// Σ a[i] b[i].
template <int W, typename T>
KEXUE_ALWAYS_INLINE T dot(const T* a, const T* b, int64_t n) {
  using V = typename Vec<T, W>::type;
  constexpr int L = Vec<T, W>::kLanes;
  V acc0 = V{}, acc1 = V{};
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    acc0 += vload<W>(a + i) * vload<W>(b + i);
    acc1 += vload<W>(a + i + L) * vload<W>(b + i + L);
  }
  for (; i + L <= n; i += L) acc0 += vload<W>(a + i) * vload<W>(b + i);
  T s = hsum<W, T>(acc0 + acc1);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Σ a[i].
template <int W, typename T>
KEXUE_ALWAYS_INLINE T sum(const T* a, int64_t n) {
  using V = typename Vec<T, W>::type;
  constexpr int L = Vec<T, W>::kLanes;
  V acc = V{};
  int64_t i = 0;
  for (; i + L <= n; i += L) acc += vload<W>(a + i);
  T s = hsum<W, T>(acc);
  for (; i < n; ++i) s += a[i];
  return s;
}

// max_i a[i] (n >= 1), lane-wise then across lanes (a scalar std::max chain is one compare per
// element, latency-bound).
template <int W, typename T>
KEXUE_ALWAYS_INLINE T maximum(const T* a, int64_t n) {
  using V = typename Vec<T, W>::type;
  constexpr int L = Vec<T, W>::kLanes;
  T m = a[0];
  int64_t i = 0;
  if (n >= L) {
    V acc = vload<W>(a);
    for (i = L; i + L <= n; i += L) {
      const V v = vload<W>(a + i);
      acc = v > acc ? v : acc;
    }
    for (int l = 0; l < L; ++l) m = std::max(m, acc[l]);
  }
  for (; i < n; ++i) m = std::max(m, a[i]);
  return m;
}

// e^x lane-wise for floats: Cephes' expf (x = k ln2 + r, |r| <= ln2/2, degree-7 polynomial, 2^k
// built in the exponent bits); about 1 ulp on [-87.3, 88].  Below -87.3 (e^x under the smallest
// normal float) 2^k is applied as two factors 2^(k - k/2) · 2^(k/2), each a normal float, so the
// last product rounds once into the denormals and reaches 0 as IEEE exp does (x <= -104: 0; -inf:
// 0).  Inputs above 88 are clamped to 88 (the kernels only pass x <= 0).
template <int W>
KEXUE_ALWAYS_INLINE typename Vec<float, W>::type vexp(typename Vec<float, W>::type x) {
  using V = typename Vec<float, W>::type;
  using VI = typename Vec<int32_t, W>::type;
  const V hi = V{} + 88.0f, lo = V{} - 104.0f;  // e^-104 is under half the smallest denormal: 0
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  // k = round(x / ln2): adding 1.5 * 2^23 rounds to an integer in the low mantissa bits.
  const V shifter = V{} + 12582912.0f;
  V k = x * 1.44269504088896341f + shifter;
  k -= shifter;
  V r = x - k * 0.693359375f;  // ln2 in two parts: k * 0.693359375 is exact
  r = r - k * -2.12194440e-4f;
  V p = V{} + 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * (r * r) + r + 1.0f;
  // 2^k = 2^k1 · 2^k2, k in [-150, 127]: k1 = k >> 1 (floor), k2 = k - k1, both in [-75, 64]
  const VI ki = __builtin_convertvector(k, VI);
  const VI k1 = ki >> 1;
  const VI e1 = (k1 + 127) << 23, e2 = (ki - k1 + 127) << 23;
  V pow1, pow2;
  std::memcpy(&pow1, &e1, sizeof(pow1));
  std::memcpy(&pow2, &e2, sizeof(pow2));
  return (p * pow1) * pow2;
}

// y[i] = elu(x[i]) + 1 = (x > 0 ? x + 1 : e^x).
template <int W>
KEXUE_ALWAYS_INLINE typename Vec<float, W>::type velu1(typename Vec<float, W>::type x) {
  using V = typename Vec<float, W>::type;
  const V zero = V{};
  const V e = vexp<W>(x > zero ? zero : x);
  return x > zero ? x + 1.0f : e;
}

// Applies a lane-wise float function to n values (x, y may alias), the tail through a padded
// block so that every element gets the same function.
template <int W, typename Fn>
KEXUE_ALWAYS_INLINE void map_n(const float* x, float* y, int64_t n, Fn fn) {
  constexpr int L = Vec<float, W>::kLanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) vstore<W>(y + i, fn(vload<W>(x + i)));
  if (i < n) {
    float buf[L] = {};
    std::memcpy(buf, x + i, sizeof(float) * (n - i));
    vstore<W>(buf, fn(vload<W>(buf)));
    std::memcpy(y + i, buf, sizeof(float) * (n - i));
  }
}

// y = e^x (float: vexp; double: std::exp, used by the float64 path only).
template <int W>
KEXUE_ALWAYS_INLINE void exp_n(const float* x, float* y, int64_t n) {
  map_n<W>(x, y, n, [](typename Vec<float, W>::type v) KEXUE_LAMBDA_INLINE { return vexp<W>(v); });
}
template <int W>
KEXUE_ALWAYS_INLINE void exp_n(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

// y = e^(x - m) (float: vexp; double: std::exp).
template <int W>
KEXUE_ALWAYS_INLINE void exp_shifted_n(const float* x, float m, float* y, int64_t n) {
  map_n<W>(x, y, n, [m](typename Vec<float, W>::type v) KEXUE_LAMBDA_INLINE { return vexp<W>(v - m); });
}
template <int W>
KEXUE_ALWAYS_INLINE void exp_shifted_n(const double* x, double m, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i] - m);
}

// y = softmax(x) over n >= 1 values, e^(x - max x) / Σ (x, y may alias).
template <int W, typename T>
KEXUE_ALWAYS_INLINE void softmax_n(const T* x, T* y, int64_t n) {
  exp_shifted_n<W>(x, maximum<W>(x, n), y, n);
  const T inv = T(1) / sum<W>(y, n);
  for (int64_t i = 0; i < n; ++i) y[i] *= inv;
}

// y = elu(x) + 1.
template <int W>
KEXUE_ALWAYS_INLINE void elu1_n(const float* x, float* y, int64_t n) {
  map_n<W>(x, y, n, [](typename Vec<float, W>::type v) KEXUE_LAMBDA_INLINE { return velu1<W>(v); });
}
template <int W>
KEXUE_ALWAYS_INLINE void elu1_n(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0 ? x[i] + 1 : std::exp(x[i]);
}

// dx[i] = dy[i] * (x > 0 ? 1 : y[i]): the vjp of elu + 1 given y = elu(x) + 1 (= e^x for x <= 0).
// Written with vectors: GCC keeps the scalar form as a (mispredicted) branch.
template <int W, typename T>
KEXUE_ALWAYS_INLINE void elu1_vjp_n(const T* x, const T* y, const T* dy, T* dx, int64_t n) {
  using V = typename Vec<T, W>::type;
  constexpr int L = Vec<T, W>::kLanes;
  const V zero = V{}, one = V{} + T(1);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    vstore<W>(dx + i, vload<W>(dy + i) * (vload<W>(x + i) > zero ? one : vload<W>(y + i)));
  }
  for (; i < n; ++i) dx[i] = x[i] > T(0) ? dy[i] : dy[i] * y[i];
}

}  // namespace kexue::cpu
