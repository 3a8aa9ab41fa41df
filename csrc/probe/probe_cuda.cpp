// Torch binding of the CUDA probe kernels: argument checks (each naming the argument), the
// params structs from the tensors (h and ref passed with their strides, never copied; the small
// int64 index tensors made contiguous), outputs and workspace from torch's allocator, launch on
// the current stream, launch-error check.  The kernels are torch-free (probe_params.h,
// probe_kernels.cu).
//
// Index values live on the device, so they are validated there: the kernels skip invalid rows
// (never reading out of bounds) and set a device flag, which becomes a device-side assertion
// (at::_assert_async: no host synchronisation; a failure surfaces at the next synchronising call
// as "device-side assert triggered").  On CPU tensors the same errors are raised eagerly, with
// the offending index in the message (probe_cpu.cpp and the Python wrapper).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "probe/probe_params.h"

namespace kexue {
namespace probe {
namespace {

using at::Tensor;

void check_device(const char* op, const char* name, const Tensor& t, const Tensor& like) {
  TORCH_CHECK(t.is_cuda(), op, " (CUDA): ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == like.device(), op, " (CUDA): ", name, " is on ", t.device(), " but the other inputs are on ",
              like.device());
}

// A 1-D int64 index tensor on the device, made contiguous (index tensors are small).
Tensor index_vector(const char* op, const char* name, const Tensor& t, const Tensor& like) {
  check_device(op, name, t, like);
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", t.scalar_type());
  return t.contiguous();
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "kexue::", op, " (CUDA) failed: ", cudaGetErrorString(err),
              err == cudaErrorInvalidValue ? " (invalid arguments)" : "");
}

std::tuple<Tensor, Tensor> probe_masked_batch_cuda(const Tensor& tokens, const Tensor& tok_offsets,
                                                   const Tensor& word_start, const Tensor& word_end,
                                                   const Tensor& word_offsets, const Tensor& seqs, int64_t mask_id,
                                                   int64_t pad_id, int64_t length) {
  const char* op = "kexue.probe.masked_batch";
  const c10::cuda::CUDAGuard guard(seqs.device());
  const Tensor tok = index_vector(op, "tokens", tokens, seqs);
  const Tensor toff = index_vector(op, "tok_offsets", tok_offsets, seqs);
  const Tensor wst = index_vector(op, "word_start", word_start, seqs);
  const Tensor wen = index_vector(op, "word_end", word_end, seqs);
  const Tensor woff = index_vector(op, "word_offsets", word_offsets, seqs);
  check_device(op, "seqs", seqs, seqs);
  TORCH_CHECK(seqs.dim() == 2 && seqs.size(1) == 3, op, ": seqs must have shape (K, 3) (rows s, i, j), got ",
              seqs.sizes());
  TORCH_CHECK(seqs.scalar_type() == at::kLong, op, ": seqs must be int64, got ", seqs.scalar_type());
  TORCH_CHECK(toff.size(0) >= 1, op, ": tok_offsets must have n_sentences + 1 >= 1 entries");
  TORCH_CHECK(woff.size(0) == toff.size(0), op, ": word_offsets has ", woff.size(0), " entries but tok_offsets has ",
              toff.size(0), " (both must be n_sentences + 1)");
  TORCH_CHECK(wst.size(0) == wen.size(0), op, ": word_start has ", wst.size(0), " entries but word_end has ",
              wen.size(0));
  TORCH_CHECK(length >= 0, op, ": length must be >= 0, got ", length);
  const Tensor sq = seqs.contiguous();
  const int64_t K = sq.size(0);

  MaskedBatchParams p;
  p.tokens = tok.const_data_ptr<int64_t>();
  p.num_tokens = tok.size(0);
  p.tok_offsets = toff.const_data_ptr<int64_t>();
  p.word_offsets = woff.const_data_ptr<int64_t>();
  p.num_sentences = toff.size(0) - 1;
  p.word_start = wst.const_data_ptr<int64_t>();
  p.word_end = wen.const_data_ptr<int64_t>();
  p.num_words = wst.size(0);
  p.seqs = sq.const_data_ptr<int64_t>();
  p.K = K;
  p.mask_id = mask_id;
  p.pad_id = pad_id;
  p.length = length;
  Tensor input_ids = at::empty({K, length}, seqs.options());
  Tensor attention_mask = at::empty({K, length}, seqs.options());
  Tensor error = at::zeros({1}, seqs.options().dtype(at::kInt));
  p.input_ids = input_ids.data_ptr<int64_t>();
  p.attention_mask = attention_mask.data_ptr<int64_t>();
  p.error = error.data_ptr<int32_t>();
  check_launch(launch_masked_batch(p, c10::cuda::getCurrentCUDAStream().stream()), "probe_masked_batch");
  at::_assert_async(error.eq(0), "kexue.probe.masked_batch: a row of seqs is invalid (sentence or word index out "
                    "of range, a word span outside its sentence, or a sentence longer than length)");
  return {input_ids, attention_mask};
}

DType parse_dtype(const char* op, const Tensor& h) {
  switch (h.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kDouble:
      TORCH_CHECK(false, op, " (CUDA): h is float64, which the CUDA kernels do not support; use float32/float16/"
                  "bfloat16, or backend='torch' for float64");
    default:
      TORCH_CHECK(false, op, " (CUDA): h must be float32, float16 or bfloat16, got ", h.scalar_type());
  }
}

Tensor probe_segment_distance_cuda(const Tensor& h, const Tensor& rows, const Tensor& ref, const Tensor& ref_rows,
                                   const Tensor& seg, int64_t num_segments, c10::string_view metric) {
  const char* op = "kexue.probe.segment_distance";
  const c10::cuda::CUDAGuard guard(h.device());
  check_device(op, "h", h, h);
  check_device(op, "ref", ref, h);
  TORCH_CHECK(h.dim() == 2, op, ": h must have shape (R, D), got ", h.sizes());
  TORCH_CHECK(ref.dim() == 2, op, ": ref must have shape (R2, D), got ", ref.sizes());
  SegmentDistanceParams p;
  p.dtype = parse_dtype(op, h);
  TORCH_CHECK(ref.scalar_type() == h.scalar_type(), op, ": ref has dtype ", ref.scalar_type(), " but h has ",
              h.scalar_type());
  TORCH_CHECK(ref.size(1) == h.size(1), op, ": ref has D = ", ref.size(1), " columns but h has ", h.size(1));
  const std::string m(metric);
  TORCH_CHECK(m == "dist" || m == "cos", op, ": metric must be 'dist' or 'cos', got '", m, "'");
  p.metric = m == "cos" ? Metric::kCos : Metric::kDist;
  const Tensor r = index_vector(op, "rows", rows, h);
  const Tensor q = index_vector(op, "ref_rows", ref_rows, h);
  const Tensor s = index_vector(op, "seg", seg, h);
  const int64_t K = r.size(0);
  TORCH_CHECK(q.size(0) == K, op, ": ref_rows has ", q.size(0), " entries but rows has ", K);
  TORCH_CHECK(s.size(0) == K, op, ": seg has ", s.size(0), " entries but rows has ", K);
  TORCH_CHECK(num_segments >= 0, op, ": num_segments must be >= 0, got ", num_segments);
  // (values are checked on the device; these size-only cases have no valid index at all)
  TORCH_CHECK(K == 0 || h.size(0) > 0, op, ": rows is out of range: h has no rows");
  TORCH_CHECK(K == 0 || ref.size(0) > 0, op, ": ref_rows is out of range: ref has no rows");
  TORCH_CHECK(K == 0 || num_segments > 0, op, ": seg is out of range: num_segments is 0");
  p.h = h.data_ptr();
  p.h_rows = h.size(0);
  p.h_stride0 = h.stride(0);
  p.h_stride1 = h.stride(1);
  p.ref = ref.data_ptr();
  p.ref_rows_count = ref.size(0);
  p.ref_stride0 = ref.stride(0);
  p.ref_stride1 = ref.stride(1);
  p.D = h.size(1);
  p.rows = r.const_data_ptr<int64_t>();
  p.ref_rows = q.const_data_ptr<int64_t>();
  p.seg = s.const_data_ptr<int64_t>();
  p.K = K;
  p.num_segments = num_segments;
  Tensor out = at::empty({num_segments}, h.options().dtype(at::kFloat));
  Tensor error = at::zeros({1}, h.options().dtype(at::kInt));
  p.out = out.data_ptr<float>();
  p.error = error.data_ptr<int32_t>();
  const size_t ws_bytes = segment_distance_workspace_bytes(p);
  Tensor ws = at::empty({static_cast<int64_t>(ws_bytes)}, h.options().dtype(at::kByte));
  check_launch(launch_segment_distance(p, ws_bytes ? ws.data_ptr() : nullptr, ws_bytes,
                                       c10::cuda::getCurrentCUDAStream().stream()),
               "probe_segment_distance");
  at::_assert_async(error.eq(0), "kexue.probe.segment_distance: an index is out of range (rows must be in [0, R), "
                    "ref_rows in [0, R2), seg in [0, num_segments))");
  return out;
}

}  // namespace
}  // namespace probe
}  // namespace kexue

TORCH_LIBRARY_IMPL(kexue, CUDA, m) {
  m.impl("probe_masked_batch", &kexue::probe::probe_masked_batch_cuda);
  m.impl("probe_segment_distance", &kexue::probe::probe_segment_distance_cuda);
}
