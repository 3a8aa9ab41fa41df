// Torch binding of the CUDA cross-entropy kernels: argument checks (each naming the argument),
// CrossEntropyParams from the tensors (logits, target, grad_loss and lse passed with their
// strides, never copied; bias / weight made float32 contiguous: C floats), outputs and the
// backward workspace from torch's allocator, launch on the current stream, error check.  The
// kernels themselves are torch-free (ce_params.h, cross_entropy_api.cu, ce_kernels.cuh).
//
// Out-of-range targets.  The kernels never synchronise with the host: such a row's loss and
// gradient are NaN and its index is atomicMin'd into a per-device error word (kept here, sticky).
// Raising at the call itself needs the host to wait for the kernel, so it is opt-in:
// with the environment variable KEXUE_SYNC_CHECKS=1 (read at each call) the forward, when its
// stream is not being captured into a CUDA graph, resets the word before the launch, waits for
// the kernel, and raises the same "target[i] = y is out of range" error as the CPU kernel.
// Without it (the default: training and CUDA graphs) nothing waits.  PyInit__C_cuda is defined
// in linear_attention_cuda.cpp (one per library).
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "cross_entropy/ce_params.h"

namespace kexue {
namespace ce {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

DType parse_dtype(const char* op, const Tensor& logits) {
  switch (logits.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kDouble:
      TORCH_CHECK(false, op, " (CUDA): logits are float64, which the CUDA kernels do not support; use "
                  "float32/float16/bfloat16, or backend='torch' for float64");
    default:
      TORCH_CHECK(false, op, " (CUDA): logits must be float16, bfloat16 or float32, got ", logits.scalar_type());
  }
}

void check_device(const char* op, const char* name, const Tensor& t, const Tensor& logits) {
  TORCH_CHECK(t.is_cuda(), op, " (CUDA): ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == logits.device(), op, " (CUDA): ", name, " is on ", t.device(), " but logits are on ",
              logits.device());
}

// A (C,) float vector (bias, weight): checked, then float32 contiguous (C floats; kept alive by
// the caller until the launch is enqueued).
Tensor class_vector(const char* op, const char* name, const OptTensor& t, const Tensor& logits) {
  if (!t.has_value() || !t->defined()) return Tensor();
  check_device(op, name, *t, logits);
  const int64_t C = logits.size(1);
  TORCH_CHECK(t->dim() == 1 && t->size(0) == C, op, " (CUDA): ", name, " must have shape (C,) = (", C, "), got ",
              t->sizes());
  TORCH_CHECK(t->is_floating_point(), op, " (CUDA): ", name, " must be a float tensor, got ", t->scalar_type());
  return t->to(at::kFloat).contiguous();
}

// A (N,) float row vector (grad_loss, lse): float32 with its strides (a copy only for another dtype).
Tensor row_vector(const char* op, const char* name, const Tensor& t, const Tensor& logits) {
  check_device(op, name, t, logits);
  const int64_t N = logits.size(0);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == N, op, " (CUDA): ", name, " must have shape (N,) = (", N, "), got ",
              t.sizes());
  TORCH_CHECK(t.is_floating_point(), op, " (CUDA): ", name, " must be a float tensor, got ", t.scalar_type());
  return t.to(at::kFloat);
}

struct Inputs {
  CrossEntropyParams p;
  Tensor bias, weight;  // float32 contiguous copies, alive until the launch is enqueued
};

// Checks shared by the three ops; fills sizes, options, logits, target, bias, weight.
Inputs fill_common(const char* op, const Tensor& logits, const Tensor& target, const OptTensor& bias,
                   const OptTensor& weight, double label_smoothing, double z_loss, int64_t ignore_index) {
  TORCH_CHECK(logits.is_cuda(), op, " (CUDA): logits must be a CUDA tensor, got ", logits.device());
  TORCH_CHECK(logits.dim() == 2, op, " (CUDA): logits must have shape (N, C), got ", logits.sizes());
  Inputs in;
  CrossEntropyParams& p = in.p;
  p.dtype = parse_dtype(op, logits);
  const int64_t N = logits.size(0), C = logits.size(1);
  TORCH_CHECK(C >= 1, op, " (CUDA): logits must have at least one class");
  TORCH_CHECK(N <= INT32_MAX, op, " (CUDA): at most 2^31 - 1 rows, got ", N);
  check_device(op, "target", target, logits);
  TORCH_CHECK(target.dim() == 1 && target.size(0) == N, op, " (CUDA): target must have shape (N,) = (", N,
              "), got ", target.sizes());
  TORCH_CHECK(target.scalar_type() == at::kLong, op, " (CUDA): target must be int64, got ", target.scalar_type());
  TORCH_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, " (CUDA): label_smoothing must be in [0, 1], got ",
              label_smoothing);
  TORCH_CHECK(z_loss >= 0.0, op, " (CUDA): z_loss must be >= 0, got ", z_loss);
  in.bias = class_vector(op, "bias", bias, logits);
  in.weight = class_vector(op, "weight", weight, logits);
  p.N = N;
  p.C = C;
  p.label_smoothing = static_cast<float>(label_smoothing);
  p.z_loss = static_cast<float>(z_loss);
  p.ignore_index = ignore_index;
  p.logits = logits.data_ptr();
  p.logits_stride0 = logits.stride(0);
  p.logits_stride1 = logits.stride(1);
  p.target = target.const_data_ptr<int64_t>();
  p.target_stride = target.stride(0);
  p.bias = in.bias.defined() ? in.bias.const_data_ptr<float>() : nullptr;
  p.weight = in.weight.defined() ? in.weight.const_data_ptr<float>() : nullptr;
  return in;
}

void check_launch(cudaError_t err, const char* op, const CrossEntropyParams& p, bool backward) {
  if (err == cudaSuccess) return;
  const char* why = err == cudaErrorInvalidValue ? cross_entropy_invalid_reason(p, backward) : nullptr;
  TORCH_CHECK(false, "kexue::", op, " (CUDA) failed: ", cudaGetErrorString(err), why ? " (" : "", why ? why : "",
              why ? ")" : "");
}

// The per-device error word (see the file comment): one int64 per device from torch's allocator,
// created on the first call on that device (make that call before capturing a CUDA graph) and
// never freed.  Holds kNoErrorRow (-1 as int64) or the smallest out-of-range row seen since the
// last reset.
unsigned long long* error_word(const Tensor& like) {
  static std::mutex mu;
  static std::vector<Tensor*> words;
  const auto idx = static_cast<size_t>(like.device().index());
  const std::lock_guard<std::mutex> lock(mu);
  if (words.size() <= idx) words.resize(idx + 1, nullptr);
  if (words[idx] == nullptr) {
    // leaked on purpose: a static tensor would be freed after the CUDA context at exit
    words[idx] = new Tensor(at::full({1}, -1, like.options().dtype(at::kLong)));
  }
  return reinterpret_cast<unsigned long long*>(words[idx]->data_ptr<int64_t>());
}

// KEXUE_SYNC_CHECKS=1 and the stream is not capturing: the caller may wait for the kernels.
bool sync_checks_enabled(cudaStream_t stream) {
  const char* env = std::getenv("KEXUE_SYNC_CHECKS");
  if (env == nullptr || std::strcmp(env, "1") != 0) return false;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &status) == cudaSuccess && status == cudaStreamCaptureStatusNone;
}

// Waits for the forward, then raises the CPU kernel's error for the first out-of-range row.
void raise_if_bad_target(const CrossEntropyParams& p, const Tensor& target, const Tensor& logits) {
  const Tensor word = at::from_blob(p.error_row, {1}, logits.options().dtype(at::kLong));
  const int64_t row = word.item<int64_t>();  // (waits for the stream)
  if (row < 0) return;
  word.fill_(-1);
  const int64_t y = target[row].item<int64_t>();
  TORCH_CHECK(false, "kexue.cross_entropy (cuda): target[", row, "] = ", y,
              " is out of range: class indices must be in [0, ", p.C, ") or equal ignore_index=",
              p.ignore_index);
}

std::tuple<Tensor, Tensor> cross_entropy_fwd_cuda(const Tensor& logits, const Tensor& target, const OptTensor& bias,
                                                  const OptTensor& weight, double label_smoothing, double z_loss,
                                                  int64_t ignore_index, bool inplace_backward) {
  constexpr const char* op = "cross_entropy_fwd";
  (void)inplace_backward;  // only tells autograd which backward to call
  const c10::cuda::CUDAGuard guard(logits.device());
  Inputs in = fill_common(op, logits, target, bias, weight, label_smoothing, z_loss, ignore_index);
  CrossEntropyParams& p = in.p;
  const auto f32 = logits.options().dtype(at::kFloat);
  Tensor loss = at::empty({p.N}, f32);
  Tensor lse = at::empty({p.N}, f32);
  p.loss = loss.data_ptr<float>();
  p.lse = lse.data_ptr<float>();
  p.error_row = error_word(logits);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const bool check = p.N > 0 && sync_checks_enabled(stream);
  if (check) at::from_blob(p.error_row, {1}, logits.options().dtype(at::kLong)).fill_(-1);
  check_launch(launch_cross_entropy_fwd(p, stream), op, p, false);
  if (check) raise_if_bad_target(p, target, logits);
  return {loss, lse};
}

void run_backward(const char* op, const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                  const OptTensor& bias, const OptTensor& weight, const Tensor& lse, double label_smoothing,
                  double z_loss, int64_t ignore_index, const Tensor& out) {
  Inputs in = fill_common(op, logits, target, bias, weight, label_smoothing, z_loss, ignore_index);
  CrossEntropyParams& p = in.p;
  const Tensor g = row_vector(op, "grad_loss", grad_loss, logits);
  const Tensor l = row_vector(op, "lse", lse, logits);
  p.grad_loss = g.const_data_ptr<float>();
  p.grad_loss_stride = g.stride(0);
  p.lse_in = l.const_data_ptr<float>();
  p.lse_in_stride = l.stride(0);
  p.grad = out.data_ptr();
  p.grad_stride0 = out.stride(0);
  p.grad_stride1 = out.stride(1);
  p.error_row = error_word(logits);
  const size_t ws_bytes = cross_entropy_bwd_workspace_bytes(p);
  Tensor ws;
  if (ws_bytes > 0) ws = at::empty({static_cast<int64_t>((ws_bytes + 3) / 4)}, logits.options().dtype(at::kFloat));
  check_launch(launch_cross_entropy_bwd(p, ws_bytes ? ws.data_ptr() : nullptr, ws_bytes,
                                        c10::cuda::getCurrentCUDAStream().stream()),
               op, p, true);
}

Tensor cross_entropy_bwd_cuda(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                              const OptTensor& bias, const OptTensor& weight, const Tensor& lse,
                              double label_smoothing, double z_loss, int64_t ignore_index) {
  constexpr const char* op = "cross_entropy_bwd";
  TORCH_CHECK(logits.dim() == 2, op, " (CUDA): logits must have shape (N, C), got ", logits.sizes());
  const c10::cuda::CUDAGuard guard(logits.device());
  Tensor out = at::empty({logits.size(0), logits.size(1)}, logits.options());
  run_backward(op, grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss, ignore_index, out);
  return out;
}

void cross_entropy_bwd_inplace_cuda(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                                    const OptTensor& bias, const OptTensor& weight, const Tensor& lse,
                                    double label_smoothing, double z_loss, int64_t ignore_index) {
  constexpr const char* op = "cross_entropy_bwd_inplace";
  TORCH_CHECK(at::has_internal_overlap(logits) != at::MemOverlap::Yes, op,
              " (CUDA): logits overlap in memory (an expanded tensor); the gradient cannot be written over them "
              "(use inplace_backward=False)");
  const c10::cuda::CUDAGuard guard(logits.device());
  run_backward(op, grad_loss, logits, target, bias, weight, lse, label_smoothing, z_loss, ignore_index, logits);
}

}  // namespace
}  // namespace ce
}  // namespace kexue

TORCH_LIBRARY_IMPL(kexue, CUDA, m) {
  m.impl("cross_entropy_fwd", &kexue::ce::cross_entropy_fwd_cuda);
  m.impl("cross_entropy_bwd", &kexue::ce::cross_entropy_bwd_cuda);
  m.impl("cross_entropy_bwd_inplace", &kexue::ce::cross_entropy_bwd_inplace_cuda);
}
