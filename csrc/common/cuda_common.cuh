// Device helpers shared by every CUDA kernel of kexue (torch-free): float32 <-> storage dtype
// conversion (float, __half, __nv_bfloat16) and full-warp butterfly reductions (every lane gets
// the result; 5 shuffles).  Each op's kernels bring them into their namespace with `using`.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Every kernel launch is KEXUE_LAUNCH(grid, block, smem, stream, kernel)(args...) and dynamic
// shared memory is declared with KEXUE_DYNAMIC_SMEM(T, name) (a T* named `name`).  Under nvcc
// they are the plain CUDA syntax; the host emulation of the kernels
// (tests/cuda_emulation/cuda_host_emu.h) defines them first, to run the real launchers on the CPU.
#ifndef KEXUE_LAUNCH
#define KEXUE_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif
#ifndef KEXUE_DYNAMIC_SMEM
#define KEXUE_DYNAMIC_SMEM(T, name) extern __shared__ T name[]
#endif

namespace kexue {
namespace cuda_common {

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

}  // namespace cuda_common
}  // namespace kexue
