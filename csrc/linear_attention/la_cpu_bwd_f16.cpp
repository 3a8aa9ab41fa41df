// Backward pass of the CPU linear-attention kernel for c10::Half inputs (float accumulation), every ISA
// path (cpu_isa.h); one translation unit per (pass, dtype) so that builds run them in parallel.
#include "linear_attention/linear_attention_cpu_kernels.h"

namespace kexue::la {
KEXUE_LA_TASK_RANGE(Backward, c10::Half, float)
}  // namespace kexue::la
