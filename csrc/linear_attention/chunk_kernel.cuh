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
//                                                (87 KiB)   <= 260: C 32, WB 32 (113 KiB)
//   tensor-core kernel (rounded to 16):         <= 64: C 64, WB 64 (80 KiB)   <= 144: C 64, WB 64
//                                                (132 KiB)  <= 272: C 32, WB 32 (105 KiB)
// (144 and not 128: the dq and dk passes have X width Dv + 1, 129 at D = 128.)
// A block may opt into 163 KiB on sm_80 and 227 KiB on sm_90, but only 99 KiB on sm_86 / sm_89
// (RTX 30xx / 40xx, A10, L4, L40: they run the sm_80 code).  There a tensor-core configuration
// that does not fit falls back to the float32 kernel's (X width <= 132, e.g. bfloat16 at
// D = 128: exact to float32 rounding, slower), and an X width above 132 has no configuration:
// the launch is refused (linear_attention_unsupported_reason says why), never run.
enum ChunkConfig : int { kF32x68, kF32x132, kF32x260, kTc64, kTc144, kTc272, kNoConfig };

inline bool use_tensor_cores(const LinearAttentionParams& p) {
  return p.dtype != DType::kFloat32 && p.math != Math::kFloat32;
}

// Dynamic shared memory of a configuration, in bytes (the kernels' layouts; 0 for kNoConfig).
inline size_t config_smem_bytes(ChunkConfig c) {
  switch (c) {
    case kF32x68: return ChunkSmem<64, 68, 64>::kBytes;
    case kF32x132: return ChunkSmem<32, 132, 64>::kBytes;
    case kF32x260: return ChunkSmem<32, 260, 32>::kBytes;
    case kTc64: return ChunkSmemTc<64, 64, 64>::kBytes;
    case kTc144: return ChunkSmemTc<64, 144, 64>::kBytes;
    case kTc272: return ChunkSmemTc<32, 272, 32>::kBytes;
    default: return 0;
  }
}

// The most dynamic shared memory a block of the current device may opt into (0 when the query
// fails: then no configuration is chosen and the launch reports the error).  A host-side
// attribute query (no synchronisation), made per pass so it follows the current device.
inline size_t device_smem_optin() {
  int dev = 0, bytes = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) return 0;
  return bytes > 0 ? static_cast<size_t>(bytes) : 0;
}

// The configuration of a pass with this X width on a device allowing smem_limit bytes per block.
inline ChunkConfig chunk_config(const LinearAttentionParams& p, int xdim, size_t smem_limit) {
  if (use_tensor_cores(p)) {
    const int xp = round_up16(xdim);
    const ChunkConfig c = xp <= 64 ? kTc64 : xp <= 144 ? kTc144 : xp <= 272 ? kTc272 : kNoConfig;
    if (c != kNoConfig && config_smem_bytes(c) <= smem_limit) return c;
  }
  const int xp = round_up4(xdim);
  const ChunkConfig c = xp <= 68 ? kF32x68 : xp <= 132 ? kF32x132 : xp <= 260 ? kF32x260 : kNoConfig;
  return config_smem_bytes(c) <= smem_limit ? c : kNoConfig;
}

inline ChunkConfig chunk_config(const LinearAttentionParams& p, int xdim) {
  return chunk_config(p, xdim, device_smem_optin());
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
  return cudaErrorInvalidValue;  // no configuration fits this device (or the attribute query failed)
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
