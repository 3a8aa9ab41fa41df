// CPU kernels of kexue::cross_entropy_fwd / _bwd / _bwd_inplace (schemas in csrc/registration.cpp,
// semantics in pyext/cross_entropy/reference.py).
//
// Rows run in parallel (at::parallel_for); each row is read in blocks of kBlock elements that
// stay in L1.  Per block the forward takes the block max, rescales the running sum once when the
// max grows and adds Σ exp(a - max) (online softmax over blocks: one read of the row from
// memory).  The backward reads the row once more and writes the gradient once.  Accumulation is
// float32 (float64 for float64 logits); logits may have any strides (a block of a strided,
// half-precision or bias-adjusted row is first gathered into a float scratch block).
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "common/cpu_buffer_cache.h"
#include "common/cpu_huge_pages.h"
#include "cross_entropy/row_math.h"

namespace kexue::ce {
namespace {

constexpr int64_t kBlock = 2048;          // elements per block: 8 KiB of float, two blocks fit L1
constexpr int64_t kGrainElements = 1 << 15;  // ~32K elements of work per parallel task

struct Options {
  double label_smoothing;
  double z_loss;
  int64_t ignore_index;
};

// The row's inputs: logits row i with stride, the optional bias / class weights (contiguous,
// accumulation type).
template <typename scalar_t, typename acc_t>
struct RowReader {
  const scalar_t* base;
  int64_t stride0, stride1;
  const acc_t* bias;
  int64_t C;

  // Pointer to a[i, c0 : c0 + n] as acc_t: the row itself when it already is a contiguous
  // acc_t row without bias, else the block gathered (and bias-added) into buf.
  const acc_t* block(int64_t i, int64_t c0, int64_t n, acc_t* buf) const {
    const scalar_t* row = base + i * stride0;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (stride1 == 1 && bias == nullptr) return row + c0;
    }
    if (stride1 == 1) {
      const scalar_t* src = row + c0;
      if (bias == nullptr) {
        for (int64_t j = 0; j < n; ++j) buf[j] = static_cast<acc_t>(src[j]);
      } else {
        for (int64_t j = 0; j < n; ++j) buf[j] = static_cast<acc_t>(src[j]) + bias[c0 + j];
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        buf[j] = static_cast<acc_t>(row[(c0 + j) * stride1]) + (bias ? bias[c0 + j] : acc_t(0));
      }
    }
    return buf;
  }

  acc_t at(int64_t i, int64_t c) const {
    return static_cast<acc_t>(base[i * stride0 + c * stride1]) + (bias ? bias[c] : acc_t(0));
  }
};

inline void check_target(int64_t y, int64_t C, int64_t i, int64_t ignore_index) {
  TORCH_CHECK(y >= 0 && y < C, "kexue.cross_entropy: target[", i, "] = ", y,
              " is out of range: class indices must be in [0, ", C, ") or equal ignore_index=", ignore_index);
}

// Forward of one dtype.  Per row: one pass over C (max, Σexp, smoothing sum), O(1) extra memory
// per thread (one scratch block); writes loss[i], lse[i].  Cost ≈ N·C·(exp + 4 flops).
template <typename scalar_t>
void forward_kernel(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& bias,
                    const at::Tensor& weight, const Options& opt, at::Tensor& loss, at::Tensor& lse) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = logits.size(0), C = logits.size(1);
  const RowReader<scalar_t, acc_t> rd{logits.const_data_ptr<scalar_t>(), logits.stride(0), logits.stride(1),
                                      bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr, C};
  const acc_t* w = weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr;
  const int64_t* tgt = target.const_data_ptr<int64_t>();
  const int64_t ts = target.stride(0);
  acc_t* out_loss = loss.data_ptr<acc_t>();
  acc_t* out_lse = lse.data_ptr<acc_t>();
  const acc_t eps = static_cast<acc_t>(opt.label_smoothing);
  const acc_t z = static_cast<acc_t>(opt.z_loss);
  acc_t wsum = static_cast<acc_t>(C);  // Σ_c w_c
  if (w) {
    wsum = 0;
    for (int64_t c = 0; c < C; ++c) wsum += w[c];
  }
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(C, 1));

  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(std::min(kBlock, C));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t y = tgt[i * ts];
      const bool valid = y != opt.ignore_index;
      if (valid) check_target(y, C, i, opt.ignore_index);
      acc_t m = -inf, s = 0, smooth = 0, shift = 0;
      int has_nan = 0;
      for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
        const int64_t n = std::min(kBlock, C - c0);
        const acc_t* a = rd.block(i, c0, n, buf.data());
        const acc_t bm = block_max(a, n, &has_nan);
        if (c0 == 0 && std::isfinite(bm)) shift = bm;  // fixed shift of the smoothing sum
        if (bm > m) {
          s = (m == -inf) ? acc_t(0) : s * std::exp(m - bm);
          m = bm;
        }
        if (std::isfinite(m)) s += block_sum_exp(a, n, m);
        if (valid && eps != 0) smooth += block_sum(a, w ? w + c0 : nullptr, n, shift);
      }
      acc_t l = std::isfinite(m) ? m + std::log(s) : m;  // ±inf rows: lse = max (torch's logsumexp)
      if (has_nan) l = std::numeric_limits<acc_t>::quiet_NaN();
      out_lse[i] = l;
      if (!valid) {
        out_loss[i] = 0;
        continue;
      }
      const acc_t wy = w ? w[y] : acc_t(1);
      acc_t v = (1 - eps) * wy * (l - rd.at(i, y));
      if (eps != 0) v += eps / C * (wsum * (l - shift) - smooth);  // Σ_c w_c (lse - a_c)
      if (z != 0) v += z * l * l;
      out_loss[i] = v;
    }
  });
}

// Backward of one dtype: grad[i, c] = g_i · ∂ℓ_i/∂a_{i,c}
//   = g_i·[((1-ε) w_y + ε W/C + 2 z lse) p_c − (ε/C) w_c − (1-ε) w_y δ_{c,y}],  p_c = exp(a_c − lse).
// One read of each row and one write of the gradient (out may be the logits: in-place); the
// target column is computed in acc_t and stored once.  Ignored rows are zero.
template <typename scalar_t>
void backward_kernel(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                     const at::Tensor& bias, const at::Tensor& weight, const at::Tensor& lse, const Options& opt,
                     at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = logits.size(0), C = logits.size(1);
  const RowReader<scalar_t, acc_t> rd{logits.const_data_ptr<scalar_t>(), logits.stride(0), logits.stride(1),
                                      bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr, C};
  const acc_t* w = weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr;
  const int64_t* tgt = target.const_data_ptr<int64_t>();
  const int64_t ts = target.stride(0);
  const acc_t* g = grad_loss.const_data_ptr<acc_t>();
  const int64_t gs = grad_loss.stride(0);
  const acc_t* lse_p = lse.const_data_ptr<acc_t>();
  const int64_t ls = lse.stride(0);
  scalar_t* dst = out.data_ptr<scalar_t>();
  const int64_t os0 = out.stride(0), os1 = out.stride(1);
  const acc_t eps = static_cast<acc_t>(opt.label_smoothing);
  const acc_t z = static_cast<acc_t>(opt.z_loss);
  acc_t wsum = static_cast<acc_t>(C);
  if (w) {
    wsum = 0;
    for (int64_t c = 0; c < C; ++c) wsum += w[c];
  }
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(C, 1));

  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(std::min(kBlock, C)), res(std::min(kBlock, C));
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* orow = dst + i * os0;
      const int64_t y = tgt[i * ts];
      if (y == opt.ignore_index) {
        for (int64_t c = 0; c < C; ++c) orow[c * os1] = scalar_t(0);
        continue;
      }
      check_target(y, C, i, opt.ignore_index);
      const acc_t gi = g[i * gs], l = lse_p[i * ls];
      const acc_t wy = w ? w[y] : acc_t(1);
      const acc_t a_y = rd.at(i, y);  // read before an in-place write overwrites it
      const acc_t coef = gi * ((1 - eps) * wy + eps * wsum / C + 2 * z * l);
      const acc_t smooth = gi * eps / C;
      const acc_t grad_y = coef * std::exp(a_y - l) - smooth * wy - gi * (1 - eps) * wy;
      for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
        const int64_t n = std::min(kBlock, C - c0);
        const acc_t* a = rd.block(i, c0, n, buf.data());
        const acc_t* wb = w ? w + c0 : nullptr;
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          if (os1 == 1) {
            block_grad(a, wb, n, l, coef, smooth, orow + c0);
            continue;
          }
        }
        block_grad(a, wb, n, l, coef, smooth, res.data());
        for (int64_t j = 0; j < n; ++j) orow[(c0 + j) * os1] = static_cast<scalar_t>(res[j]);
      }
      orow[y * os1] = static_cast<scalar_t>(grad_y);
    }
  });
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Checks shared by the three ops; returns bias / weight as contiguous acc-type tensors.
std::tuple<at::Tensor, at::Tensor> check_inputs(const char* op, const at::Tensor& logits, const at::Tensor& target,
                                                const std::optional<at::Tensor>& bias,
                                                const std::optional<at::Tensor>& weight) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must have shape (N, C), got ", logits.sizes());
  TORCH_CHECK(logits.device().is_cpu(), op, ": logits must be a CPU tensor");
  const auto dt = logits.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16, op,
              ": logits must be float16, bfloat16, float32 or float64, got ", dt);
  const int64_t N = logits.size(0), C = logits.size(1);
  TORCH_CHECK(C >= 1, op, ": logits must have at least one class");
  TORCH_CHECK(target.dim() == 1 && target.size(0) == N, op, ": target must have shape (N,) = (", N, "), got ",
              target.sizes());
  TORCH_CHECK(target.scalar_type() == at::kLong, op, ": target must be int64, got ", target.scalar_type());
  const auto acc = acc_type(dt);
  at::Tensor b, w;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == C, op, ": bias must have shape (C,) = (", C, ")");
    b = bias->to(acc).contiguous();
  }
  if (weight.has_value() && weight->defined()) {
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == C, op, ": weight must have shape (C,) = (", C, ")");
    w = weight->to(acc).contiguous();
  }
  return {b, w};
}

void check_row_vector(const char* op, const char* name, const at::Tensor& t, int64_t N) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == N, op, ": ", name, " must have shape (N,) = (", N, "), got ",
              t.sizes());
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_fwd_cpu(const at::Tensor& logits, const at::Tensor& target,
                                                         const std::optional<at::Tensor>& bias,
                                                         const std::optional<at::Tensor>& weight,
                                                         double label_smoothing, double z_loss, int64_t ignore_index,
                                                         bool inplace_backward) {
  auto [b, w] = check_inputs("cross_entropy_fwd", logits, target, bias, weight);
  const auto acc = acc_type(logits.scalar_type());
  auto loss = at::empty({logits.size(0)}, logits.options().dtype(acc));
  auto lse = at::empty({logits.size(0)}, logits.options().dtype(acc));
  const Options opt{label_smoothing, z_loss, ignore_index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "cross_entropy_fwd_cpu",
                                  [&] { forward_kernel<scalar_t>(logits, target, b, w, opt, loss, lse); });
  return {loss, lse};
}

void run_backward(const char* op, const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                  const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& weight,
                  const at::Tensor& lse, double label_smoothing, double z_loss, int64_t ignore_index,
                  at::Tensor& out) {
  auto [b, w] = check_inputs(op, logits, target, bias, weight);
  const int64_t N = logits.size(0);
  check_row_vector(op, "grad_loss", grad_loss, N);
  check_row_vector(op, "lse", lse, N);
  const auto acc = acc_type(logits.scalar_type());
  const auto g = grad_loss.to(acc);
  const auto l = lse.to(acc);
  const Options opt{label_smoothing, z_loss, ignore_index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "cross_entropy_bwd_cpu",
                                  [&] { backward_kernel<scalar_t>(g, logits, target, b, w, l, opt, out); });
}

at::Tensor cross_entropy_bwd_cpu(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& weight,
                                 const at::Tensor& lse, double label_smoothing, double z_loss, int64_t ignore_index) {
  TORCH_CHECK(logits.dim() == 2, "cross_entropy_bwd: logits must have shape (N, C), got ", logits.sizes());
  // written whole below, so it may be a cached buffer whose pages an earlier call already faulted
  // in (cpu_buffer_cache.h: 128k page faults fewer at 500 MiB); when fresh and
  // KEXUE_HUGE_PAGES=1, faulted in 2 MiB pages (cpu_huge_pages.h)
  auto out = kexue::cpu::empty_cached({logits.size(0), logits.size(1)}, logits.options());
  kexue::cpu::advise_huge_pages(out.data_ptr(), out.nbytes());
  run_backward("cross_entropy_bwd", grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss,
               ignore_index, out);
  return out;
}

void cross_entropy_bwd_inplace_cpu(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                                   const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& weight,
                                   const at::Tensor& lse, double label_smoothing, double z_loss,
                                   int64_t ignore_index) {
  TORCH_CHECK(at::has_internal_overlap(logits) != at::MemOverlap::Yes,
              "cross_entropy_bwd_inplace: logits overlap in memory (an expanded tensor); the gradient cannot be "
              "written over them (use inplace_backward=False)");
  at::Tensor out = logits;
  run_backward("cross_entropy_bwd_inplace", grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss,
               ignore_index, out);
}

}  // namespace
}  // namespace kexue::ce

TORCH_LIBRARY_IMPL(kexue, CPU, m) {
  m.impl("cross_entropy_fwd", &kexue::ce::cross_entropy_fwd_cpu);
  m.impl("cross_entropy_bwd", &kexue::ce::cross_entropy_bwd_cpu);
  m.impl("cross_entropy_bwd_inplace", &kexue::ce::cross_entropy_bwd_inplace_cpu);
}
