// Torch binding of the CUDA linear-attention kernels: argument checks (each naming the
// argument), LinearAttentionParams from the tensors (strides passed, no copies of q/k/v/grad_out),
// outputs and workspace from torch's allocator, launch on the current stream, error check.
// The kernels themselves are torch-free (params.h, linear_attention_api.cu).
#include <Python.h>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>

#include "linear_attention/params.h"

// `import kexue._C_cuda` loads this library and so runs the registrations below; the module
// itself is empty (limited API, like kexue._C).
extern "C" {
PyObject* PyInit__C_cuda(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace kexue {
namespace la {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

FeatureMap parse_feature_map(const std::string& name) {
  if (name == "none") return FeatureMap::kNone;
  if (name == "elu") return FeatureMap::kElu;
  if (name == "relu") return FeatureMap::kRelu;
  if (name == "softmax") return FeatureMap::kSoftmax;
  if (name == "taylor") return FeatureMap::kTaylor;
  TORCH_CHECK(false, "linear_attention (CUDA): feature_map must be one of 'none', 'elu', 'relu', 'softmax', "
              "'taylor'; got '", name, "'");
}

DType parse_dtype(const Tensor& q) {
  switch (q.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kDouble:
      TORCH_CHECK(false, "linear_attention (CUDA): q is float64, which the CUDA kernels do not support; "
                  "use float32/float16/bfloat16, or backend='torch' for float64");
    default:
      TORCH_CHECK(false, "linear_attention (CUDA): q must be float32, float16 or bfloat16, got ", q.scalar_type());
  }
}

// KEXUE_LA_CUDA_MATH: "auto" (default: bfloat16 and float16 on tensor cores, float32 on float32
// CUDA cores), "fp32" (every dtype on float32 CUDA cores: exact to float32 rounding) or "tc".
// Read at every call, for A/B timings and checks of the two chunked kernels.
Math math_from_env() {
  const char* m = std::getenv("KEXUE_LA_CUDA_MATH");
  const std::string s = m == nullptr ? "" : m;
  if (s.empty() || s == "auto") return Math::kAuto;
  if (s == "fp32") return Math::kFloat32;
  if (s == "tc") return Math::kTensorCores;
  TORCH_CHECK(false, "linear_attention (CUDA): KEXUE_LA_CUDA_MATH must be auto, fp32 or tc, got '", s, "'");
}

Strides4 strides4(const Tensor& t) {
  Strides4 s;
  s.b = t.stride(0);
  s.h = t.stride(1);
  s.n = t.stride(2);
  s.d = t.stride(3);
  return s;
}

void check_cuda(const char* name, const Tensor& t, const Tensor& q) {
  TORCH_CHECK(t.is_cuda(), "linear_attention (CUDA): ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == q.device(), "linear_attention (CUDA): ", name, " is on ", t.device(), " but q is on ",
              q.device());
}

// A float32 state-shaped tensor (initial state or a gradient of the final state): checked, then
// made float32 contiguous (states are small; q/k/v are never copied).
Tensor state_arg(const char* name, const Tensor& t, const Tensor& q, at::IntArrayRef shape) {
  check_cuda(name, t, q);
  TORCH_CHECK(t.sizes() == shape, "linear_attention (CUDA): ", name, " must have shape ", shape, ", got ",
              t.sizes());
  TORCH_CHECK(t.is_floating_point(), "linear_attention (CUDA): ", name, " must be a float tensor, got ",
              t.scalar_type());
  return t.to(at::kFloat).contiguous();
}

// Checks shared by forward and backward; fills sizes, inputs, options.  Returns the contiguous
// float32 initial state (undefined tensors when absent) so their memory outlives the launch.
std::tuple<Tensor, Tensor> fill_common(LinearAttentionParams& p, const Tensor& q, const Tensor& k, const Tensor& v,
                                       const OptTensor& mask, const OptTensor& S0, const OptTensor& z0,
                                       const OptTensor& cu, const std::string& feature_map, bool causal,
                                       bool normalize, double eps) {
  TORCH_CHECK(q.dim() == 4, "linear_attention (CUDA): q must be (B, H, N, Dk), got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 4, "linear_attention (CUDA): k must be (B, Hkv, N, Dk), got shape ", k.sizes());
  TORCH_CHECK(v.dim() == 4, "linear_attention (CUDA): v must be (B, Hkv, N, Dv), got shape ", v.sizes());
  check_cuda("q", q, q);
  check_cuda("k", k, q);
  check_cuda("v", v, q);
  p.dtype = parse_dtype(q);
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), "linear_attention (CUDA): k has dtype ", k.scalar_type(),
              " but q has ", q.scalar_type());
  TORCH_CHECK(v.scalar_type() == q.scalar_type(), "linear_attention (CUDA): v has dtype ", v.scalar_type(),
              " but q has ", q.scalar_type());
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), Dk = q.size(3);
  const int64_t Hkv = k.size(1), Dv = v.size(3);
  TORCH_CHECK(k.size(0) == B && v.size(0) == B, "linear_attention (CUDA): batch sizes differ: q ", B, ", k ",
              k.size(0), ", v ", v.size(0));
  TORCH_CHECK(k.size(2) == N && v.size(2) == N, "linear_attention (CUDA): sequence lengths differ: q ", N, ", k ",
              k.size(2), ", v ", v.size(2));
  TORCH_CHECK(k.size(3) == Dk, "linear_attention (CUDA): k's head dim ", k.size(3), " differs from q's ", Dk);
  TORCH_CHECK(v.size(1) == Hkv, "linear_attention (CUDA): v has ", v.size(1), " heads but k has ", Hkv);
  TORCH_CHECK(Hkv >= 1 && H % Hkv == 0, "linear_attention (CUDA): q's heads (", H,
              ") must be a multiple of k's and v's heads (", Hkv, ")");
  TORCH_CHECK(H <= 65535, "linear_attention (CUDA): at most 65535 heads, got ", H);
  TORCH_CHECK(B <= INT32_MAX, "linear_attention (CUDA): at most 2^31 - 1 batch rows (one CUDA block row each), got ",
              B);
  TORCH_CHECK(Dk >= 1 && Dk <= kMaxHeadDim, "linear_attention (CUDA): q and k's head dim Dk=", Dk,
              " must be in [1, ", kMaxHeadDim, "]");
  TORCH_CHECK(Dv >= 1 && Dv <= kMaxHeadDim, "linear_attention (CUDA): v's head dim Dv=", Dv, " must be in [1, ",
              kMaxHeadDim, "]");
  TORCH_CHECK(eps >= 0, "linear_attention (CUDA): eps must be >= 0, got ", eps);
  p.feature_map = parse_feature_map(feature_map);
  p.B = static_cast<int>(B);
  p.H = static_cast<int>(H);
  p.Hkv = static_cast<int>(Hkv);
  p.N = N;
  p.Dk = static_cast<int>(Dk);
  p.Dv = static_cast<int>(Dv);
  p.F = static_cast<int>(Dk) + (p.feature_map == FeatureMap::kTaylor ? 1 : 0);
  p.causal = causal;
  p.normalize = normalize;
  p.eps = static_cast<float>(eps);
  p.math = math_from_env();
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.q_stride = strides4(q);
  p.k_stride = strides4(k);
  p.v_stride = strides4(v);

  p.nseq = static_cast<int>(B);
  if (cu.has_value()) {
    const Tensor& c = *cu;
    check_cuda("cu_seqlens", c, q);
    TORCH_CHECK(c.dim() == 1 && c.size(0) >= 2, "linear_attention (CUDA): cu_seqlens must be 1-D with at least 2 "
                "offsets, got shape ", c.sizes());
    TORCH_CHECK(c.scalar_type() == at::kInt || c.scalar_type() == at::kLong,
                "linear_attention (CUDA): cu_seqlens must be int32 or int64, got ", c.scalar_type());
    TORCH_CHECK(c.is_contiguous(), "linear_attention (CUDA): cu_seqlens must be contiguous");
    TORCH_CHECK(B == 1, "linear_attention (CUDA): with cu_seqlens the batch must be 1, got ", B);
    TORCH_CHECK(c.size(0) - 1 <= INT32_MAX, "linear_attention (CUDA): too many sequences in cu_seqlens");
    p.cu_seqlens = c.data_ptr();
    p.cu_seqlens_int64 = c.scalar_type() == at::kLong;
    p.nseq = static_cast<int>(c.size(0) - 1);
  }
  if (mask.has_value()) {
    const Tensor& m = *mask;
    check_cuda("key_padding_mask", m, q);
    TORCH_CHECK(m.scalar_type() == at::kBool, "linear_attention (CUDA): key_padding_mask must be bool (True = "
                "ignore), got ", m.scalar_type());
    TORCH_CHECK(m.dim() == 2 && m.size(0) == B && m.size(1) == N, "linear_attention (CUDA): key_padding_mask must "
                "have shape (B, N) = (", B, ", ", N, "), got ", m.sizes());
    p.mask = reinterpret_cast<const uint8_t*>(m.data_ptr<bool>());
    p.mask_stride_b = m.stride(0);
    p.mask_stride_n = m.stride(1);
  }
  TORCH_CHECK(S0.has_value() == z0.has_value(), "linear_attention (CUDA): initial_S and initial_z must be given "
              "together");
  Tensor S0c, z0c;
  if (S0.has_value()) {
    S0c = state_arg("initial_S", *S0, q, {p.nseq, H, p.F, Dv});
    z0c = state_arg("initial_z", *z0, q, {p.nseq, H, p.F});
    p.S0 = S0c.data_ptr<float>();
    p.z0 = z0c.data_ptr<float>();
  }
  return {S0c, z0c};
}

// A launch error as an exception; an invalid-value error the device's shared memory explains (the
// chunked kernels' configurations on GPUs with 99 KiB per block) says so, with the head dims.
void check_launch(cudaError_t err, const char* op, const LinearAttentionParams& p) {
  if (err == cudaSuccess) return;
  const char* why = err == cudaErrorInvalidValue ? linear_attention_unsupported_reason(p) : nullptr;
  TORCH_CHECK(why == nullptr, "kexue::", op, " (CUDA) failed: ", cudaGetErrorString(err), " (Dk=", p.Dk, ", Dv=",
              p.Dv, ": ", why, ")");
  TORCH_CHECK(false, "kexue::", op, " (CUDA) failed: ", cudaGetErrorString(err),
              err == cudaErrorInvalidValue ? " (invalid arguments)" : "");
}

std::tuple<Tensor, Tensor, Tensor> linear_attention_fwd_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                                                              const OptTensor& key_padding_mask,
                                                              const OptTensor& initial_S, const OptTensor& initial_z,
                                                              const OptTensor& cu_seqlens,
                                                              c10::string_view feature_map, bool causal,
                                                              bool normalize, double eps) {
  LinearAttentionParams p;
  const c10::cuda::CUDAGuard guard(q.device());
  auto keep = fill_common(p, q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, std::string(feature_map),
                          causal, normalize, eps);
  const auto f32 = q.options().dtype(at::kFloat);
  Tensor out = at::empty({p.B, p.H, p.N, p.Dv}, q.options());
  Tensor S = at::empty({p.nseq, p.H, p.F, p.Dv}, f32);
  Tensor z = at::empty({p.nseq, p.H, p.F}, f32);
  p.out = out.data_ptr();
  p.out_stride = strides4(out);
  p.S = S.data_ptr<float>();
  p.z = z.data_ptr<float>();
  check_launch(launch_linear_attention_fwd(p, c10::cuda::getCurrentCUDAStream().stream()), "linear_attention_fwd", p);
  return {out, S, z};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> linear_attention_bwd_cuda(
    const Tensor& grad_out, const OptTensor& grad_S, const OptTensor& grad_z, const Tensor& q, const Tensor& k,
    const Tensor& v, const OptTensor& key_padding_mask, const OptTensor& initial_S, const OptTensor& initial_z,
    const OptTensor& cu_seqlens, c10::string_view feature_map, bool causal, bool normalize, double eps) {
  LinearAttentionParams p;
  const c10::cuda::CUDAGuard guard(q.device());
  auto keep = fill_common(p, q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, std::string(feature_map),
                          causal, normalize, eps);
  check_cuda("grad_out", grad_out, q);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == p.B && grad_out.size(1) == p.H && grad_out.size(2) == p.N &&
                  grad_out.size(3) == p.Dv,
              "linear_attention (CUDA): grad_out must have the shape of out (", p.B, ", ", p.H, ", ", p.N, ", ", p.Dv,
              "), got ", grad_out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == q.scalar_type(), "linear_attention (CUDA): grad_out has dtype ",
              grad_out.scalar_type(), " but q has ", q.scalar_type());
  p.dout = grad_out.data_ptr();
  p.dout_stride = strides4(grad_out);
  Tensor dSc, dzc;
  if (grad_S.has_value()) {
    dSc = state_arg("grad_S", *grad_S, q, {p.nseq, p.H, p.F, p.Dv});
    p.dS = dSc.data_ptr<float>();
  }
  if (grad_z.has_value()) {
    dzc = state_arg("grad_z", *grad_z, q, {p.nseq, p.H, p.F});
    p.dz = dzc.data_ptr<float>();
  }
  const auto f32 = q.options().dtype(at::kFloat);
  Tensor dq = at::empty_like(q);
  Tensor dk = at::empty_like(k);
  Tensor dv = at::empty_like(v);
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  p.dq_stride = strides4(dq);
  p.dk_stride = strides4(dk);
  p.dv_stride = strides4(dv);
  Tensor dS0, dz0;
  if (initial_S.has_value()) {
    dS0 = at::empty(initial_S->sizes(), f32);
    dz0 = at::empty(initial_z->sizes(), f32);
    p.dS0 = dS0.data_ptr<float>();
    p.dz0 = dz0.data_ptr<float>();
  } else {
    dS0 = at::empty({0}, f32);
    dz0 = at::empty({0}, f32);
  }
  const size_t ws_bytes = linear_attention_bwd_workspace_bytes(p);
  Tensor ws = at::empty({static_cast<int64_t>((ws_bytes + sizeof(float) - 1) / sizeof(float))}, f32);
  check_launch(launch_linear_attention_bwd(p, ws_bytes ? ws.data_ptr() : nullptr, ws_bytes,
                                           c10::cuda::getCurrentCUDAStream().stream()),
               "linear_attention_bwd", p);
  return {dq, dk, dv, dS0, dz0};
}

}  // namespace
}  // namespace la
}  // namespace kexue

TORCH_LIBRARY_IMPL(kexue, CUDA, m) {
  m.impl("linear_attention_fwd", &kexue::la::linear_attention_fwd_cuda);
  m.impl("linear_attention_bwd", &kexue::la::linear_attention_bwd_cuda);
}
