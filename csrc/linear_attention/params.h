// Torch-free description of one linear-attention call: raw pointers, strides (in elements),
// sizes and flags.  Filled by the torch binding (linear_attention_cuda.cpp), read by the CUDA
// launchers (linear_attention_api.cu).  Semantics: pyext/linear_attention/reference.py.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace kexue {
namespace la {

enum class FeatureMap : int { kNone = 0, kElu = 1, kRelu = 2, kSoftmax = 3, kTaylor = 4 };
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
// Arithmetic of the chunked kernels: kAuto = tensor cores (16-bit operands, float32
// accumulation) for bfloat16 and float16 inputs, float32 CUDA cores for float32; kFloat32 =
// float32 CUDA cores for every dtype (exact to float32 rounding); kTensorCores = tensor cores
// where the dtype has them (bfloat16, float16; float32 stays on CUDA cores).  Where a
// tensor-core tile configuration exceeds the device's shared memory per block (sm_86 / sm_89 at
// D = 128), that pass runs on float32 CUDA cores instead (chunk_kernel.cuh).
enum class Math : int { kAuto = 0, kFloat32 = 1, kTensorCores = 2 };

// Strides of a (B, H, N, D) tensor, in elements.
struct Strides4 {
  int64_t b = 0, h = 0, n = 0, d = 0;
};

struct LinearAttentionParams {
  // ---- sizes --------------------------------------------------------------------------------
  int B = 0;     // batch (1 with cu_seqlens)
  int H = 0;     // query heads
  int Hkv = 0;   // key/value heads, H % Hkv == 0; query head h reads kv head h / (H / Hkv)
  int64_t N = 0; // tokens along the sequence dim (all packed sequences with cu_seqlens)
  int Dk = 0;    // q/k head dim, 1..256
  int Dv = 0;    // v head dim, 1..256
  int F = 0;     // feature dim of φ: Dk, or Dk + 1 for "taylor"
  int nseq = 0;  // number of sequences: B, or len(cu_seqlens) - 1
  FeatureMap feature_map = FeatureMap::kElu;
  DType dtype = DType::kFloat32;  // dtype of q, k, v, out, grad_out, dq, dk, dv
  bool causal = false;
  bool normalize = true;
  float eps = 1e-6f;
  Math math = Math::kAuto;

  // ---- inputs -------------------------------------------------------------------------------
  const void* q = nullptr;  // (B, H, N, Dk)
  const void* k = nullptr;  // (B, Hkv, N, Dk)
  const void* v = nullptr;  // (B, Hkv, N, Dv)
  Strides4 q_stride, k_stride, v_stride;
  const uint8_t* mask = nullptr;  // key_padding_mask (B, N) bool, True = ignore key; nullable
  int64_t mask_stride_b = 0, mask_stride_n = 0;
  // Initial state, float32 contiguous: S0 (nseq, H, F, Dv), z0 (nseq, H, F); nullable (then 0).
  const float* S0 = nullptr;
  const float* z0 = nullptr;
  const void* cu_seqlens = nullptr;  // (nseq + 1,) int32 or int64 on the device; nullable
  bool cu_seqlens_int64 = false;

  // ---- forward outputs ----------------------------------------------------------------------
  void* out = nullptr;  // (B, H, N, Dv) in dtype
  Strides4 out_stride;
  float* S = nullptr;  // (nseq, H, F, Dv) float32 contiguous
  float* z = nullptr;  // (nseq, H, F) float32 contiguous

  // ---- backward -----------------------------------------------------------------------------
  const void* dout = nullptr;  // grad_out (B, H, N, Dv)
  Strides4 dout_stride;
  const float* dS = nullptr;  // grad of the final S (nseq, H, F, Dv) float32 contiguous; nullable
  const float* dz = nullptr;  // grad of the final z (nseq, H, F) float32 contiguous; nullable
  void* dq = nullptr;         // shapes and dtype of q, k, v
  void* dk = nullptr;
  void* dv = nullptr;
  Strides4 dq_stride, dk_stride, dv_stride;
  float* dS0 = nullptr;  // (nseq, H, F, Dv) float32 contiguous; nullptr when no initial state
  float* dz0 = nullptr;  // (nseq, H, F)
};

// Largest Dk / Dv the kernels accept (the feature dim may be one more: "taylor").
constexpr int kMaxHeadDim = 256;

// nullptr when the current device has the shared memory the chunked kernels of p need (forward
// and backward), else why not: on GPUs that allow 99 KiB per block (sm_86 / sm_89) feature dims
// F or Dv + 1 above 132 fit no configuration (chunk_kernel.cuh).  The launchers then return
// cudaErrorInvalidValue without running anything.
const char* linear_attention_unsupported_reason(const LinearAttentionParams& p);

// Forward.  N == 1 without cu_seqlens runs the decoding-step kernel, anything else the chunked
// kernel.  Returns the first CUDA error (argument errors are cudaErrorInvalidValue).
cudaError_t launch_linear_attention_fwd(const LinearAttentionParams& p, cudaStream_t stream);

// Bytes of device scratch the backward needs (float32 buffers of size O(B·H·N·(F + Dv)), never
// N·F·Dv).  The caller allocates it (e.g. from torch's caching allocator) and passes it below.
size_t linear_attention_bwd_workspace_bytes(const LinearAttentionParams& p);

cudaError_t launch_linear_attention_bwd(const LinearAttentionParams& p, void* workspace, size_t workspace_bytes,
                                        cudaStream_t stream);

}  // namespace la
}  // namespace kexue
