// Torch-free description of kexue.sample / sampling_probs for the CUDA kernel: raw pointers,
// strides (in elements), sizes.  Filled by the torch binding (sampling_cuda.cpp), read by the
// launcher (sampling_kernels.cu).  Semantics: pyext/decoding/reference.py; the row algorithm:
// csrc/sampling/sampling_cpu.cpp (top comment).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace kexue {
namespace sampling {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct SamplingParams {
  DType dtype = DType::kFloat32;
  const void* logits = nullptr;  // (B, V), strides in elements
  int64_t B = 0, V = 0, stride0 = 0, stride1 = 0;
  const double* temperature = nullptr;  // (B,) > 0
  const int64_t* top_k = nullptr;       // (B,) 0 = none
  const double* top_p = nullptr;        // (B,) in (0, 1], 1 = none
  const int64_t* keep = nullptr;        // (B, K) token ids, -1 = none
  int64_t K = 0;
  const double* uniform = nullptr;  // (B,) in [0, 1)
  int64_t* tokens = nullptr;        // (B,) out: the drawn token, -1 for a bad row (NaN / +inf / all -inf)
  float* probs = nullptr;           // (B, V) contiguous out, or nullptr
};

// One CTA per row (grid-stride over rows).  Returns the launch error.
cudaError_t launch_sampling(const SamplingParams& p, cudaStream_t stream);

}  // namespace sampling
}  // namespace kexue
