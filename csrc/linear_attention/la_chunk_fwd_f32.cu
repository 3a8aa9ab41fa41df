// Instantiations of the chunked linear-attention kernel: dtype float, roles kFwd kPrep.
// (One small file per group so nvcc compiles them in parallel; see chunk_kernel.cuh.)
#include "linear_attention/chunk_kernel.cuh"

namespace kexue {
namespace la {
namespace detail {

template cudaError_t run_chunk_role<float, kFwd>(const CoreArgs&, cudaStream_t);
template cudaError_t run_chunk_role<float, kPrep>(const CoreArgs&, cudaStream_t);

}  // namespace detail
}  // namespace la
}  // namespace kexue
