// Feature maps φ of linear attention and their vector-Jacobian products, one row at a time
// (the definition is pyext/linear_attention/feature_maps.py):
//
//   none     φ(x) = x                                   F = Dk
//   elu      φ(x) = elu(x) + 1 = (x > 0 ? x + 1 : e^x)   F = Dk
//   relu     φ(x) = max(x, 0)                           F = Dk
//   softmax  φ(x) = softmax(x) over the Dk features      F = Dk
//   taylor   φ(x) = [1, x / max(‖x‖₂, 1e-12)]           F = Dk + 1
//
// Row functions work in the accumulation type T (float or double); O(Dk) work per row.  W is the
// SIMD width of the calling kernel's ISA path (cpu_isa.h); they are always inlined into it.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "common/cpu_isa.h"
#include "common/cpu_vec.h"

namespace kexue::la {

enum class FeatureMap { None, Elu, Relu, Softmax, Taylor };

// F.normalize's clamp of ‖x‖ in the "taylor" map (NORMALIZE_EPS in feature_maps.py).
constexpr double kTaylorNormEps = 1e-12;

inline FeatureMap parse_feature_map(const std::string& name) {
  if (name == "none") return FeatureMap::None;
  if (name == "elu") return FeatureMap::Elu;
  if (name == "relu") return FeatureMap::Relu;
  if (name == "softmax") return FeatureMap::Softmax;
  if (name == "taylor") return FeatureMap::Taylor;
  TORCH_CHECK(false, "linear_attention: feature_map must be one of 'none', 'elu', 'relu', 'softmax', 'taylor'; got '",
              name, "'");
}

inline int64_t feature_dim(FeatureMap fm, int64_t dk) { return fm == FeatureMap::Taylor ? dk + 1 : dk; }

// y[0:F] = φ(x[0:dk]).  aux receives what the backward needs besides x and y: ‖x‖₂ for
// "taylor" (unused otherwise).
template <int W, typename T>
KEXUE_ALWAYS_INLINE void feature_map_row(FeatureMap fm, const T* __restrict x, int64_t dk, T* __restrict y,
                                         T* __restrict aux) {
  switch (fm) {
    case FeatureMap::None:
      std::copy(x, x + dk, y);
      break;
    case FeatureMap::Elu:
      cpu::elu1_n<W>(x, y, dk);
      break;
    case FeatureMap::Relu:
      for (int64_t d = 0; d < dk; ++d) y[d] = x[d] > T(0) ? x[d] : T(0);
      break;
    case FeatureMap::Softmax:
      cpu::softmax_n<W>(x, y, dk);
      break;
    case FeatureMap::Taylor: {
      const T n = std::sqrt(cpu::dot<W>(x, x, dk));
      const T c = std::max(n, static_cast<T>(kTaylorNormEps));
      y[0] = T(1);
      for (int64_t d = 0; d < dk; ++d) y[d + 1] = x[d] / c;
      *aux = n;
      break;
    }
  }
}

// dx[0:dk] = (∂φ/∂x)ᵀ dy[0:F] at x, given y = φ(x) and aux from feature_map_row.
template <int W, typename T>
KEXUE_ALWAYS_INLINE void feature_map_vjp_row(FeatureMap fm, const T* __restrict x, const T* __restrict y, T aux,
                                             const T* __restrict dy, int64_t dk, T* __restrict dx) {
  switch (fm) {
    case FeatureMap::None:
      std::copy(dy, dy + dk, dx);
      break;
    case FeatureMap::Elu:  // d/dx = 1 for x > 0, e^x = φ(x) otherwise
      cpu::elu1_vjp_n<W>(x, y, dy, dx, dk);
      break;
    case FeatureMap::Relu:  // torch's threshold_backward: gradient where the output is > 0
      for (int64_t d = 0; d < dk; ++d) dx[d] = x[d] > T(0) ? dy[d] : T(0);
      break;
    case FeatureMap::Softmax: {  // dx = y ⊙ (dy - y·dy)
      const T s = cpu::dot<W>(y, dy, dk);
      for (int64_t d = 0; d < dk; ++d) dx[d] = y[d] * (dy[d] - s);
      break;
    }
    case FeatureMap::Taylor: {
      // y[1:] = x / c with c = max(‖x‖, eps).  ‖x‖ >= eps: dx = (g - u (u·g)) / ‖x‖ with
      // u = y[1:], g = dy[1:]; below the clamp c is constant: dx = g / eps.
      const T* g = dy + 1;
      const T* u = y + 1;
      const T n = aux;
      if (n >= static_cast<T>(kTaylorNormEps)) {
        const T s = cpu::dot<W>(u, g, dk);
        const T inv = T(1) / n;
        for (int64_t d = 0; d < dk; ++d) dx[d] = (g[d] - u[d] * s) * inv;
      } else {
        for (int64_t d = 0; d < dk; ++d) dx[d] = g[d] / static_cast<T>(kTaylorNormEps);
      }
      break;
    }
  }
}

}  // namespace kexue::la
