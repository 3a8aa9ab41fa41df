// Torch-free description of the perturbed-masking probe ops for the CUDA kernels: raw pointers,
// strides (in elements), sizes.  Filled by the torch binding (probe_cuda.cpp), read by the
// launchers (probe_kernels.cu).  Semantics: pyext/probe/kernels_reference.py.
//
// Invalid indices never make a kernel read or write out of bounds: the row (masked_batch) or
// the pair k (segment_distance) is skipped (padding, or no contribution) and *error is set to 1.
// The binding turns that flag into a device-side assertion (no host synchronisation).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace kexue {
namespace probe {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
enum class Metric : int { kDist = 0, kCos = 1 };

struct MaskedBatchParams {
  // ---- inputs (all int64, contiguous, on the device) ----------------------------------------
  const int64_t* tokens = nullptr;        // (num_tokens,) sentences packed end to end
  int64_t num_tokens = 0;
  const int64_t* tok_offsets = nullptr;   // (num_sentences + 1,) sentence s = tokens[off[s]:off[s+1]]
  const int64_t* word_offsets = nullptr;  // (num_sentences + 1,) words of s at [off[s], off[s+1])
  int64_t num_sentences = 0;
  const int64_t* word_start = nullptr;    // (num_words,) span [start, end) relative to the sentence
  const int64_t* word_end = nullptr;
  int64_t num_words = 0;
  const int64_t* seqs = nullptr;          // (K, 3) rows (s, i, j); -1 = no word
  int64_t K = 0;
  int64_t mask_id = 0;
  int64_t pad_id = 0;
  int64_t length = 0;                     // columns of the outputs

  // ---- outputs (K, length) int64 contiguous ----------------------------------------------------
  int64_t* input_ids = nullptr;
  int64_t* attention_mask = nullptr;
  int32_t* error = nullptr;  // set to 1 when a row is invalid (may be nullptr)
};

// One thread per output element (grid-stride, 64-bit indices).  Returns the launch error.
cudaError_t launch_masked_batch(const MaskedBatchParams& p, cudaStream_t stream);

struct SegmentDistanceParams {
  DType dtype = DType::kFloat32;  // dtype of h and ref
  Metric metric = Metric::kDist;
  const void* h = nullptr;        // (h_rows, D), strides in elements
  int64_t h_rows = 0, h_stride0 = 0, h_stride1 = 0;
  const void* ref = nullptr;      // (ref_rows_count, D)
  int64_t ref_rows_count = 0, ref_stride0 = 0, ref_stride1 = 0;
  int64_t D = 0;
  const int64_t* rows = nullptr;  // (K,) contiguous
  const int64_t* ref_rows = nullptr;
  const int64_t* seg = nullptr;
  int64_t K = 0;
  int64_t num_segments = 0;
  float* out = nullptr;           // (num_segments,) float32
  int32_t* error = nullptr;       // set to 1 when an index is out of range (may be nullptr)
};

// Bytes of device scratch segment_distance needs: per-segment float sums and uint64 counts.
size_t segment_distance_workspace_bytes(const SegmentDistanceParams& p);

// Zeroes the workspace, runs the distance kernel (one warp per k, atomics into the segment's
// sum and count) and the mean kernel.  Returns the first CUDA error.
cudaError_t launch_segment_distance(const SegmentDistanceParams& p, void* workspace, size_t workspace_bytes,
                                    cudaStream_t stream);

}  // namespace probe
}  // namespace kexue
