// Host launchers of the CUDA cross-entropy (declared in ce_params.h): parameter validation,
// dtype dispatch, the backward's Σ w workspace, and a checked launch of every kernel.
// Torch-free.  The kernels are in ce_kernels.cuh, instantiated per dtype in ce_{f32,f16,bf16}.cu.
#include <atomic>
#include <climits>

#include "cross_entropy/ce_kernels.cuh"
#include "cross_entropy/ce_params.h"

namespace kexue {
namespace ce {
namespace detail {

#define KEXUE_CE_EXTERN(T)                                                                        \
  extern template cudaError_t run_fwd<T>(const CrossEntropyParams&, int, cudaStream_t);          \
  extern template cudaError_t run_bwd<T>(const CrossEntropyParams&, const float*, int, cudaStream_t);
KEXUE_CE_INSTANCES(KEXUE_CE_EXTERN)
#undef KEXUE_CE_EXTERN

namespace {

#define KEXUE_CE_RETURN_IF_ERROR(...)       \
  do {                                      \
    const cudaError_t err_ = (__VA_ARGS__); \
    if (err_ != cudaSuccess) return err_;   \
  } while (0)

constexpr int kSumThreads = 1024;

// *out = Σ_c w[c]: one CTA, strided per-thread sums then a shared-memory tree in a fixed order
// (deterministic).  Reads C floats; runs once per backward, only with weights and smoothing.
__global__ void __launch_bounds__(kSumThreads) ce_weight_sum_kernel(const float* w, int64_t C, float* out) {
  __shared__ float red[kSumThreads];
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += kSumThreads) s += w[c];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int o = kSumThreads / 2; o > 0; o >>= 1) {
    if (static_cast<int>(threadIdx.x) < o) red[threadIdx.x] += red[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = red[0];
}

// Number of SMs of the current device (cached per device; a host-side attribute query, no sync).
cudaError_t sm_count(int* out) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices] = {};
  int dev = 0;
  KEXUE_CE_RETURN_IF_ERROR(cudaGetDevice(&dev));
  if (dev >= 0 && dev < kMaxDevices) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) {
      *out = c;
      return cudaSuccess;
    }
  }
  int n = 0;
  KEXUE_CE_RETURN_IF_ERROR(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  if (n < 1) n = 1;
  if (dev >= 0 && dev < kMaxDevices) cache[dev].store(n, std::memory_order_relaxed);
  *out = n;
  return cudaSuccess;
}

bool w_smooth(const CrossEntropyParams& p) { return p.weight != nullptr && p.label_smoothing != 0.f; }

}  // namespace
}  // namespace detail

const char* cross_entropy_invalid_reason(const CrossEntropyParams& p, bool backward) {
  if (p.N < 0) return "N must be >= 0";
  if (p.C < 1) return "C must be >= 1";
  if (p.C > INT64_MAX / 2) return "C is too large";
  if (!(p.label_smoothing >= 0.f && p.label_smoothing <= 1.f)) return "label_smoothing must be in [0, 1]";
  if (!(p.z_loss >= 0.f)) return "z_loss must be >= 0";
  if (p.dtype != DType::kFloat32 && p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) {
    return "dtype must be float32, float16 or bfloat16";
  }
  if (p.N == 0) return nullptr;
  // the widest launch: one row per CTA of 32..1024 threads; blocks fit grid.x
  if (p.N > static_cast<int64_t>(INT_MAX)) return "N is too large (more than 2^31 - 1 rows)";
  if (p.logits == nullptr || p.target == nullptr) return "logits and target must be given";
  if (!backward) {
    if (p.loss == nullptr || p.lse == nullptr) return "loss and lse outputs must be given";
  } else {
    if (p.grad_loss == nullptr || p.lse_in == nullptr || p.grad == nullptr) {
      return "grad_loss, lse_in and grad must be given";
    }
  }
  return nullptr;
}

cudaError_t launch_cross_entropy_fwd(const CrossEntropyParams& p, cudaStream_t stream) {
  using namespace detail;
  if (cross_entropy_invalid_reason(p, false) != nullptr) return cudaErrorInvalidValue;
  if (p.N == 0) return cudaSuccess;
  int sms = 1;
  KEXUE_CE_RETURN_IF_ERROR(sm_count(&sms));
  switch (p.dtype) {
    case DType::kFloat32:
      return run_fwd<float>(p, sms, stream);
    case DType::kFloat16:
      return run_fwd<__half>(p, sms, stream);
    case DType::kBFloat16:
      return run_fwd<__nv_bfloat16>(p, sms, stream);
  }
  return cudaErrorInvalidValue;
}

size_t cross_entropy_bwd_workspace_bytes(const CrossEntropyParams& p) {
  return detail::w_smooth(p) ? 16 : 0;  // one float, padded to 16 bytes
}

cudaError_t launch_cross_entropy_bwd(const CrossEntropyParams& p, void* workspace, size_t workspace_bytes,
                                     cudaStream_t stream) {
  using namespace detail;
  if (cross_entropy_invalid_reason(p, true) != nullptr) return cudaErrorInvalidValue;
  if (workspace_bytes < cross_entropy_bwd_workspace_bytes(p)) return cudaErrorInvalidValue;
  if (p.N == 0) return cudaSuccess;
  int sms = 1;
  KEXUE_CE_RETURN_IF_ERROR(sm_count(&sms));
  float* wsum = nullptr;
  if (w_smooth(p)) {
    if (workspace == nullptr) return cudaErrorInvalidValue;
    wsum = static_cast<float*>(workspace);
    KEXUE_LAUNCH(1, kSumThreads, 0, stream, ce_weight_sum_kernel)(p.weight, p.C, wsum);
    KEXUE_CE_RETURN_IF_ERROR(cudaGetLastError());
  }
  switch (p.dtype) {
    case DType::kFloat32:
      return run_bwd<float>(p, wsum, sms, stream);
    case DType::kFloat16:
      return run_bwd<__half>(p, wsum, sms, stream);
    case DType::kBFloat16:
      return run_bwd<__nv_bfloat16>(p, wsum, sms, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace ce
}  // namespace kexue
