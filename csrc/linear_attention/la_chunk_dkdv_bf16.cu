// Instantiations of the chunked linear-attention kernel: dtype __nv_bfloat16, roles kDk kDv.
// (One small file per group so nvcc compiles them in parallel; see chunk_kernel.cuh.)
#include "linear_attention/chunk_kernel.cuh"

namespace kexue {
namespace la {
namespace detail {

template cudaError_t run_chunk_role<__nv_bfloat16, kDk>(const CoreArgs&, cudaStream_t);
template cudaError_t run_chunk_role<__nv_bfloat16, kDv>(const CoreArgs&, cudaStream_t);

}  // namespace detail
}  // namespace la
}  // namespace kexue
