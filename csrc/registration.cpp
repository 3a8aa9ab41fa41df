// Op schemas of kexue: written once here, for every device.  Implementations register per
// device elsewhere (TORCH_LIBRARY_IMPL in csrc/<op>/<op>_cpu.cpp and <op>_cuda.cpp); fake
// kernels and autograd are registered in Python (pyext/<op>/op.py).
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "common/cpu_buffer_cache.h"
#include "common/cpu_isa.h"

// `import kexue._C` loads this library (and so runs the registrations below).  The module
// itself is empty and built against the limited API, so one wheel serves several Pythons.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(kexue, m) {
  // Linear attention (Katharopoulos et al. 2020).  See pyext/linear_attention/reference.py for
  // the exact semantics.  feature_map is one of "none", "elu", "relu", "softmax", "taylor".
  // Returns out (B, H, N, Dv) in q's dtype and the final state S (B', H, F, Dv), z (B', H, F)
  // in the accumulation dtype (float32, or float64 for float64 inputs); B' = number of
  // sequences (B, or len(cu_seqlens) - 1).
  m.def(
      "linear_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, "
      "Tensor? initial_S, Tensor? initial_z, Tensor? cu_seqlens, str feature_map, bool causal, "
      "bool normalize, float eps) -> (Tensor out, Tensor S, Tensor z)");
  // Gradients of linear_attention_fwd.  grad_S / grad_z are the gradients of the final state
  // (None when unused).  Returns dq, dk, dv (shapes of q, k, v, their dtype) and dS0, dz0
  // (shapes of initial_S / initial_z, empty when those are None).
  m.def(
      "linear_attention_bwd(Tensor grad_out, Tensor? grad_S, Tensor? grad_z, Tensor q, Tensor k, "
      "Tensor v, Tensor? key_padding_mask, Tensor? initial_S, Tensor? initial_z, "
      "Tensor? cu_seqlens, str feature_map, bool causal, bool normalize, float eps) "
      "-> (Tensor dq, Tensor dk, Tensor dv, Tensor dS0, Tensor dz0)");

  // Flooding + logit-adjusted cross-entropy.  See pyext/cross_entropy/reference.py for the exact
  // semantics.  logits (N, C) any strides, target (N,) int64, bias (C,) the additive logit
  // adjustment tau*log(prior) in the accumulation dtype, weight (C,) class weights.  Returns the
  // per-row loss l (ignored rows 0) and lse of the adjusted logits, both (N,) in the accumulation
  // dtype (float32, or float64 for float64 logits).  inplace_backward only tells autograd to
  // call cross_entropy_bwd_inplace.  An out-of-range target (not ignore_index) is an error.
  m.def(
      "cross_entropy_fwd(Tensor logits, Tensor target, Tensor? bias, Tensor? weight, float label_smoothing, "
      "float z_loss, int ignore_index, bool inplace_backward) -> (Tensor loss, Tensor lse)");
  // Gradient of sum_i grad_loss[i] * l_i with respect to the logits: (N, C) contiguous, logits' dtype.
  m.def(
      "cross_entropy_bwd(Tensor grad_loss, Tensor logits, Tensor target, Tensor? bias, Tensor? weight, "
      "Tensor lse, float label_smoothing, float z_loss, int ignore_index) -> Tensor");
  // The same gradient written over the logits (their strides kept).
  m.def(
      "cross_entropy_bwd_inplace(Tensor grad_loss, Tensor(a!) logits, Tensor target, Tensor? bias, "
      "Tensor? weight, Tensor lse, float label_smoothing, float z_loss, int ignore_index) -> ()");

  // lm_head matmul fused with cross_entropy_fwd, chunked over rows: logits = hidden @ weight^T
  // (+ bias) exist chunk_size rows at a time.  kernel names the per-chunk cross-entropy ops:
  // "native" (cross_entropy_fwd/_bwd of the device) or "triton".  class_weight / logit_bias as
  // weight / bias of cross_entropy_fwd.  Implemented once for every device in Python
  // (pyext/cross_entropy/linear.py) on top of the per-chunk ops.
  m.def(
      "linear_cross_entropy_fwd(Tensor hidden, Tensor weight, Tensor target, Tensor? bias, Tensor? logit_bias, "
      "Tensor? class_weight, float label_smoothing, float z_loss, int ignore_index, int chunk_size, str kernel) "
      "-> (Tensor loss, Tensor lse)");
  // Gradients of sum_i grad_loss[i] * l_i: grad_hidden (hidden's dtype), grad_weight and grad_bias
  // (accumulated in float32, returned in weight's dtype; grad_bias empty without bias).  The
  // logits are recomputed chunk by chunk.
  m.def(
      "linear_cross_entropy_bwd(Tensor grad_loss, Tensor hidden, Tensor weight, Tensor target, Tensor? bias, "
      "Tensor? logit_bias, Tensor? class_weight, Tensor lse, float label_smoothing, float z_loss, "
      "int ignore_index, int chunk_size, str kernel) -> (Tensor grad_hidden, Tensor grad_weight, Tensor grad_bias)");

  // Perturbed-masking probe (kexue.probe).  See pyext/probe/kernels_reference.py for the exact
  // semantics.  probe_masked_batch: sentences packed end to end (tokens, tok_offsets), words as
  // token spans [word_start, word_end) relative to their sentence (word_offsets), rows
  // seqs (K, 3) = (s, i, j) with -1 for "no word"; returns input_ids and attention_mask, both
  // (K, length) int64: the sentence with words i and j replaced by mask_id, padded with pad_id.
  // Invalid indices, or a sentence longer than length, are an error.
  m.def(
      "probe_masked_batch(Tensor tokens, Tensor tok_offsets, Tensor word_start, Tensor word_end, "
      "Tensor word_offsets, Tensor seqs, int mask_id, int pad_id, int length) "
      "-> (Tensor input_ids, Tensor attention_mask)");
  // out[s] = mean over {k : seg[k] == s} of d(h[rows[k]], ref[ref_rows[k]]) (0 for an empty
  // segment), d = Euclidean distance (metric "dist") or 1 - cosine ("cos"); h (R, D), ref (R2, D)
  // any strides, same float dtype; rows/ref_rows/seg (K,) int64.  Returns (num_segments,) in the
  // accumulation dtype (float32, or float64 for float64 inputs).  Autograd (h and ref) in Python.
  m.def(
      "probe_segment_distance(Tensor h, Tensor rows, Tensor ref, Tensor ref_rows, Tensor seg, "
      "int num_segments, str metric) -> Tensor");
  // Eisner's projective maximum spanning tree (perturbed-masking probe).  See
  // pyext/probe/parsers.py (eisner_reference) for the exact semantics and tie-breaking.
  // scores (B, n+1, n+1) floating, scores[b, h, d] = score of the arc h -> d, node 0 = root;
  // lengths (B,) int64 number of words of each sentence (<= n).  single_root: the root takes
  // exactly one child.  Returns heads (B, n+1) int64: heads[b, 0] = -1, heads[b, d] the head of
  // word d for d <= lengths[b], -1 beyond.  Not differentiable.
  m.def("eisner(Tensor scores, Tensor lengths, bool single_root) -> Tensor");
  // Unmasked multi-head softmax attention read from a fused QKV projection (the hand-written
  // integrated-gradients integrand, kexue.attribution).  See pyext/attribution/reference.py
  // (attention_qkv_reference) for the exact semantics.  qkv (R, L, 3D) rows [q | k | v], D =
  // heads * head_dim; returns out (R, L, D) and the attention probabilities (R, heads, L, L), both
  // in qkv's dtype (float32 or float64).  attention_qkv_bwd: the gradient of
  // <out, grad_out> + <probs, grad_probs> in qkv, (R, L, 3D), given the forward's probabilities.
  m.def("attention_qkv_fwd(Tensor qkv, int heads, float scale) -> (Tensor out, Tensor probs)");
  m.def(
      "attention_qkv_bwd(Tensor grad_out, Tensor? grad_probs, Tensor qkv, Tensor probs, int heads, float scale) "
      "-> Tensor");

  // Consistent top-k / nucleus sampling (kexue.sample).  See pyext/decoding/reference.py for the
  // exact semantics.  logits (B, V) any strides; per row: temperature (B,) float64 > 0, top_k (B,)
  // int64 (0 = no top-k), top_p (B,) float64 in (0, 1] (1 = no top-p), keep (B, K) int64 token ids
  // kept whatever the filters say (-1 = none).  sampling_probs returns the filtered, renormalised
  // distribution (B, V) in the accumulation dtype (float32, float64 for float64 logits); sample
  // returns (B,) int64 tokens drawn by the inverse CDF in token order at uniform (B,) float64 in
  // [0, 1).  A NaN or +inf logit, or a row that is all -inf, is an error.  Not differentiable.
  m.def("sampling_probs(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor keep) -> Tensor");
  m.def("sample(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor keep, Tensor uniform) "
        "-> Tensor");
  // The instruction-set path the CPU kernels take in this process (csrc/common/cpu_isa.h):
  // "avx512", "avx2" or "base".
  m.def("cpu_isa() -> str", []() -> std::string {
    switch (kexue::cpu::cpu_isa()) {
      case kexue::cpu::Isa::kAvx512: return "avx512";
      case kexue::cpu::Isa::kAvx2: return "avx2";
      default: return "base";
    }
  });
  // The cache of large CPU output buffers (csrc/common/cpu_buffer_cache.h): bytes it holds now,
  // and release of them all (returns the bytes released).
  m.def("cpu_cache_bytes() -> int", []() -> int64_t { return kexue::cpu::cached_buffer_bytes(); });
  m.def("cpu_cache_release() -> int", []() -> int64_t { return kexue::cpu::release_cached_buffers(); });
}

// Forward-mode AD (torch.autograd.forward_ad): the ops below have no forward-mode formula, and
// a custom op called with a dual tensor while nothing requires grad goes straight to its kernel,
// which returns plain outputs: the tangent would be dropped without a word.  Every call passes
// through the ADInplaceOrView key after autograd, so one boxed kernel there refuses dual inputs
// with an error naming the op and what to use instead, and otherwise redispatches to the device
// kernel (cost: one pass over the arguments).  The public functions never get here with dual
// tensors: inside a dual level they run as their references (kexue._autograd.forward_ad_active).
// torch.func.jvp does not either: its tensors reach the kernels unwrapped, through the
// reference route at functorch's key.  The in-place backward op is left to torch's own
// ADInplaceOrView handling (it bumps the mutated tensor's version counter).
namespace {

// Forward AD in eager mode has one level (torch refuses nested dual levels).
constexpr uint64_t kForwardAdLevel = 0;

void refuse_dual_inputs(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto& args = op.schema().arguments();
  auto values = torch::jit::last(*stack, args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    if (!values[i].isTensor()) continue;
    const at::Tensor& t = values[i].toTensor();
    TORCH_CHECK(!t.defined() || !t._fw_grad(kForwardAdLevel).defined(), op.schema().name(), ": argument '",
                args[i].name(),
                "' is a dual tensor (torch.autograd.forward_ad), and this raw op has no forward-mode "
                "formula, so its tangent would be lost. Call the public kexue function instead (inside a "
                "dual level it runs the reference, which carries tangents), or use torch.func.jvp.");
  }
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
}

}  // namespace

TORCH_LIBRARY_IMPL(kexue, ADInplaceOrView, m) {
  for (const char* name : {"linear_attention_fwd", "linear_attention_bwd", "cross_entropy_fwd", "cross_entropy_bwd",
                           "linear_cross_entropy_fwd", "linear_cross_entropy_bwd", "probe_segment_distance",
                           "sampling_probs"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&refuse_dual_inputs>());
  }
}
