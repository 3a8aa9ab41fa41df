// The chunked linear-attention pass of one (dtype, role): the tile configuration, the choice
// between the float32 CUDA-core kernel (chunk_fp32.cuh) and the 16-bit tensor-core kernel
// (chunk_tc.cuh: bfloat16, float16 with power-of-two tile scales), and the checked launch.
// The roles and what they compute: chunk_common.cuh.
#pragma once

#include <type_traits>

#include "linear_attention/chunk_fp32.cuh"
#include "linear_attention/chunk_tc.cuh"

namespace kexue {
namespace la {
namespace detail {

// Configurations by the padded X width (the state's rows).  Shared memory per CTA:
//   float32 kernel (X width rounded to 4):      <= 68: C 64, WB 64 (89 KiB)   <= 132: C 32, WB 64
//                                                (89 KiB)   <= 260: C 32, WB 32 (115 KiB)
//   tensor-core kernel (rounded to 16):         <= 64: C 64, WB 64 (80 KiB)   <= 144: C 64, WB 64
//                                                (132 KiB)  <= 272: C 32, WB 32 (105 KiB)
// (144 and not 128: the dq and dk passes have X width Dv + 1, 129 at D = 128.)
enum ChunkConfig : int { kF32x68, kF32x132, kF32x260, kTc64, kTc144, kTc272, kNoConfig };

inline bool use_tensor_cores(const LinearAttentionParams& p) {
  return p.dtype != DType::kFloat32 && p.math != Math::kFloat32;
}

inline ChunkConfig chunk_config(const LinearAttentionParams& p, int xdim) {
  if (use_tensor_cores(p)) {
    const int xp = round_up16(xdim);
    return xp <= 64 ? kTc64 : xp <= 144 ? kTc144 : xp <= 272 ? kTc272 : kNoConfig;
  }
  const int xp = round_up4(xdim);
  return xp <= 68 ? kF32x68 : xp <= 132 ? kF32x132 : xp <= 260 ? kF32x260 : kNoConfig;
}

// Width of the W column slices (one CTA each) of a pass with this X width.
inline int chunk_wb(const LinearAttentionParams& p, int xdim) {
  const ChunkConfig c = chunk_config(p, xdim);
  return (c == kF32x260 || c == kTc272) ? 32 : 64;
}

// Launch of one configuration: dynamic smem above 48 KiB must be opted into per kernel.
template <typename Kernel>
cudaError_t launch_chunk(Kernel kernel, size_t smem_bytes, int wb, const CoreArgs& a, bool per_kv,
                         cudaStream_t stream) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem_bytes));
  if (err != cudaSuccess) return err;
  const dim3 grid(a.p.nseq, per_kv ? a.p.Hkv : a.p.H, (a.wdim + wb - 1) / wb);
  KEXUE_LAUNCH(grid, kThreads, smem_bytes, stream, kernel)(a);
  return cudaGetLastError();
}

template <typename T, int ROLE, int C, int XPMAX, int WB>
cudaError_t launch_fp32(const CoreArgs& a, cudaStream_t stream) {
  return launch_chunk(la_chunk_kernel<T, ROLE, C, XPMAX, WB>, ChunkSmem<C, XPMAX, WB>::kBytes, WB, a,
                      RoleTraits<ROLE>::kPerKv, stream);
}

template <typename T, int ROLE, int C, int XPMAX, int WB>
cudaError_t launch_tc(const CoreArgs& a, cudaStream_t stream) {
  return launch_chunk(la_chunk_tc_kernel<T, ROLE, C, XPMAX, WB>, ChunkSmemTc<C, XPMAX, WB>::kBytes, WB, a,
                      RoleTraits<ROLE>::kPerKv, stream);
}

template <typename T, int ROLE>
cudaError_t run_chunk(const CoreArgs& a, cudaStream_t stream) {
  const ChunkConfig c = chunk_config(a.p, a.xdim);
  if constexpr (sizeof(T) == 2) {  // bfloat16, float16
    if (c == kTc64) return launch_tc<T, ROLE, 64, 64, 64>(a, stream);
    if (c == kTc144) return launch_tc<T, ROLE, 64, 144, 64>(a, stream);
    if (c == kTc272) return launch_tc<T, ROLE, 32, 272, 32>(a, stream);
  }
  if (c == kF32x68) return launch_fp32<T, ROLE, 64, 68, 64>(a, stream);
  if (c == kF32x132) return launch_fp32<T, ROLE, 32, 132, 64>(a, stream);
  if (c == kF32x260) return launch_fp32<T, ROLE, 32, 260, 32>(a, stream);
  return cudaErrorInvalidValue;
}

// Entry point of one (dtype, role): explicitly instantiated in the la_chunk_*.cu files (so the
// instantiations compile in parallel) and declared `extern template` where it is called.
template <typename T, int ROLE>
cudaError_t run_chunk_role(const CoreArgs& a, cudaStream_t stream) {
  return run_chunk<T, ROLE>(a, stream);
}

#define KEXUE_LA_CHUNK_INSTANCES(X)                                                              \
  X(float, kFwd) X(float, kPrep) X(float, kDq) X(float, kDk) X(float, kDv)                        \
  X(__half, kFwd) X(__half, kPrep) X(__half, kDq) X(__half, kDk) X(__half, kDv)                   \
  X(__nv_bfloat16, kFwd) X(__nv_bfloat16, kPrep) X(__nv_bfloat16, kDq) X(__nv_bfloat16, kDk)      \
  X(__nv_bfloat16, kDv)

}  // namespace detail
}  // namespace la
}  // namespace kexue
