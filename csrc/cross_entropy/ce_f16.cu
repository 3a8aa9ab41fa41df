// Instantiations of the CUDA cross-entropy kernels for logits of dtype __half (forward and backward,
// every bias / smoothing variant).  One small file per dtype so nvcc compiles them in parallel;
// see ce_kernels.cuh.
#include "cross_entropy/ce_kernels.cuh"

namespace kexue {
namespace ce {
namespace detail {

template cudaError_t run_fwd<__half>(const CrossEntropyParams&, int, cudaStream_t);
template cudaError_t run_bwd<__half>(const CrossEntropyParams&, const float*, int, cudaStream_t);

}  // namespace detail
}  // namespace ce
}  // namespace kexue
