// Torch binding of the CUDA sampling kernel: argument checks (each naming the argument), the
// params struct from the tensors (logits passed with their strides, never copied; the small
// per-row tensors made contiguous), outputs from torch's allocator, launch on the current
// stream, launch-error check.  The kernel is torch-free (sampling_params.h, sampling_kernels.cu).
//
// Parameter values (temperature, top_p, keep ids) live on the device and are checked by the
// Python wrapper (eagerly on CPU, by value on host scalars); a bad logits row (NaN / +inf, or all
// −inf) makes the kernel write token −1, turned here into a device-side assertion
// (at::_assert_async: no host synchronisation).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "sampling/sampling_params.h"

namespace kexue {
namespace sampling {
namespace {

using at::Tensor;

void check_vec(const char* op, const char* name, const Tensor& t, const Tensor& like, int64_t B, at::ScalarType dt) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device(), op, " (CUDA): ", name, " must be on ", like.device(),
              ", got ", t.device());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == B, op, " (CUDA): ", name, " must have shape (B,) = (", B, ",), got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == dt, op, " (CUDA): ", name, " must be ", dt, ", got ", t.scalar_type());
}

Tensor run(const char* op, const Tensor& logits, const Tensor& temperature, const Tensor& top_k, const Tensor& top_p,
           const Tensor& keep, const Tensor* uniform, bool want_probs) {
  TORCH_CHECK(logits.is_cuda(), op, " (CUDA): logits must be a CUDA tensor, got ", logits.device());
  TORCH_CHECK(logits.dim() == 2, op, " (CUDA): logits must have shape (B, V), got ", logits.sizes());
  const auto dt = logits.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, op,
              " (CUDA): logits must be float16, bfloat16 or float32, got ", dt);
  const int64_t B = logits.size(0), V = logits.size(1);
  TORCH_CHECK(V >= 1, op, " (CUDA): logits must have at least one token (V >= 1)");
  check_vec(op, "temperature", temperature, logits, B, at::kDouble);
  check_vec(op, "top_k", top_k, logits, B, at::kLong);
  check_vec(op, "top_p", top_p, logits, B, at::kDouble);
  TORCH_CHECK(keep.is_cuda() && keep.device() == logits.device() && keep.dim() == 2 && keep.size(0) == B &&
                  keep.scalar_type() == at::kLong,
              op, " (CUDA): keep must be an int64 tensor of shape (B, K) on ", logits.device());
  const c10::cuda::CUDAGuard guard(logits.device());
  const Tensor T = temperature.contiguous(), k = top_k.contiguous(), p = top_p.contiguous(), E = keep.contiguous();
  Tensor u = uniform ? uniform->contiguous() : at::zeros({B}, logits.options().dtype(at::kDouble));
  if (uniform) check_vec(op, "uniform", u, logits, B, at::kDouble);
  Tensor tokens = at::empty({B}, logits.options().dtype(at::kLong));
  Tensor probs = want_probs ? at::empty({B, V}, logits.options().dtype(at::kFloat)) : Tensor();
  SamplingParams prm;
  prm.dtype = dt == at::kFloat ? DType::kFloat32 : dt == at::kHalf ? DType::kFloat16 : DType::kBFloat16;
  prm.logits = logits.const_data_ptr();
  prm.B = B;
  prm.V = V;
  prm.stride0 = logits.stride(0);
  prm.stride1 = logits.stride(1);
  prm.temperature = T.const_data_ptr<double>();
  prm.top_k = k.const_data_ptr<int64_t>();
  prm.top_p = p.const_data_ptr<double>();
  prm.keep = E.const_data_ptr<int64_t>();
  prm.K = E.size(1);
  prm.uniform = u.const_data_ptr<double>();
  prm.tokens = tokens.data_ptr<int64_t>();
  prm.probs = want_probs ? probs.data_ptr<float>() : nullptr;
  const cudaError_t err = launch_sampling(prm, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "kexue::", op, " (CUDA) failed: ", cudaGetErrorString(err));
  if (B > 0) {
    at::_assert_async(tokens.ge(0).all(), "kexue.sample: a logits row contains NaN or +inf, or is all -inf");
  }
  return want_probs ? probs : tokens;
}

Tensor sample_cuda(const Tensor& logits, const Tensor& temperature, const Tensor& top_k, const Tensor& top_p,
                   const Tensor& keep, const Tensor& uniform) {
  return run("sample", logits, temperature, top_k, top_p, keep, &uniform, false);
}

Tensor sampling_probs_cuda(const Tensor& logits, const Tensor& temperature, const Tensor& top_k, const Tensor& top_p,
                           const Tensor& keep) {
  return run("sampling_probs", logits, temperature, top_k, top_p, keep, nullptr, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(kexue, CUDA, m) {
  m.impl("sample", &sample_cuda);
  m.impl("sampling_probs", &sampling_probs_cuda);
}

}  // namespace sampling
}  // namespace kexue
