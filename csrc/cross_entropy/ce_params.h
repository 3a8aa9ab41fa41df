// Torch-free description of one cross-entropy call: raw pointers, strides (in elements), sizes
// and options.  Filled by the torch binding (cross_entropy_cuda.cpp), read by the CUDA launchers
// (cross_entropy_api.cu).  Semantics: pyext/cross_entropy/reference.py; the formulas are those
// of the CPU kernel (cross_entropy_cpu.cpp), in float32.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace kexue {
namespace ce {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// "No out-of-range target seen" value of the error word (see error_row below).
constexpr unsigned long long kNoErrorRow = ~0ull;

struct CrossEntropyParams {
  // ---- sizes and options ----------------------------------------------------------------------
  int64_t N = 0;  // rows
  int64_t C = 0;  // classes, >= 1
  DType dtype = DType::kFloat32;  // dtype of logits and of the gradient
  float label_smoothing = 0.f;    // ε in [0, 1]
  float z_loss = 0.f;             // coefficient of lse², >= 0
  int64_t ignore_index = -100;

  // ---- inputs ---------------------------------------------------------------------------------
  const void* logits = nullptr;  // (N, C) any strides
  int64_t logits_stride0 = 0, logits_stride1 = 1;
  const int64_t* target = nullptr;  // (N,)
  int64_t target_stride = 1;
  const float* bias = nullptr;    // (C,) contiguous float32: tau·log(prior); nullable
  const float* weight = nullptr;  // (C,) contiguous float32 class weights; nullable

  // ---- forward outputs ------------------------------------------------------------------------
  float* loss = nullptr;  // (N,) contiguous: ℓ_i (0 for ignored rows, NaN for out-of-range targets)
  float* lse = nullptr;   // (N,) contiguous: logsumexp of the adjusted row
  // Device error word, nullable.  A row whose target is neither ignore_index nor in [0, C)
  // atomicMin's its index into it (forward and backward), so after the kernels it holds the
  // smallest bad row index, or stays kNoErrorRow.  The caller initialises it; the kernels never
  // read it back to the host (no synchronisation).
  unsigned long long* error_row = nullptr;

  // ---- backward -------------------------------------------------------------------------------
  const float* grad_loss = nullptr;  // (N,) ∂L/∂ℓ_i
  int64_t grad_loss_stride = 1;
  const float* lse_in = nullptr;  // (N,) lse from the forward
  int64_t lse_in_stride = 1;
  void* grad = nullptr;  // (N, C) in dtype, any strides; may be the logits themselves (in place)
  int64_t grad_stride0 = 0, grad_stride1 = 1;
};

// nullptr when p describes a valid call (forward when backward == false), else why not.
const char* cross_entropy_invalid_reason(const CrossEntropyParams& p, bool backward);

// Forward: loss, lse (and error_row).  Returns the first CUDA error (invalid parameters give
// cudaErrorInvalidValue; cross_entropy_invalid_reason says which).
cudaError_t launch_cross_entropy_fwd(const CrossEntropyParams& p, cudaStream_t stream);

// Bytes of device scratch the backward needs (one float, Σ_c w_c, when weights and label
// smoothing are both used; else 0).  The caller allocates it and passes it below.
size_t cross_entropy_bwd_workspace_bytes(const CrossEntropyParams& p);

// Backward: grad[i, c] = grad_loss[i] · ∂ℓ_i/∂a_{i,c}.  grad may alias the logits (same strides).
cudaError_t launch_cross_entropy_bwd(const CrossEntropyParams& p, void* workspace, size_t workspace_bytes,
                                     cudaStream_t stream);

}  // namespace ce
}  // namespace kexue
