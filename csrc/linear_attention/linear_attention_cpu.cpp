// CPU entry points of kexue::linear_attention_fwd / _bwd (schemas in csrc/registration.cpp, exact
// semantics in pyext/linear_attention/reference.py): argument checks, dtype and ISA dispatch.  The
// kernels and their algorithm are in linear_attention_cpu_kernels.h, compiled per (pass, dtype)
// in la_cpu_<pass>_<dtype>.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "linear_attention/linear_attention_cpu_kernels.h"

namespace kexue::la {
namespace {


// ---------------------------------------------------------------------------------------------
// Argument checks (the ops can be called directly, so every error names its argument).

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

struct Checked {
  int64_t B, H, Hkv, N, Dk, Dv, F, nseq;
  FeatureMap fm;
  std::vector<int64_t> cu;
};

void check_state(const char* op, const char* name, const std::optional<at::Tensor>& t, at::ScalarType acc,
                 std::vector<int64_t> shape) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK(t->device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t->device());
  TORCH_CHECK(t->scalar_type() == acc, op, ": ", name, " must have the accumulation dtype ", acc, ", got ",
              t->scalar_type());
  TORCH_CHECK(t->sizes() == at::IntArrayRef(shape), op, ": ", name, " must have shape ", at::IntArrayRef(shape),
              ", got ", t->sizes());
}

Checked check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& S0,
                     const std::optional<at::Tensor>& z0, const std::optional<at::Tensor>& cu_seqlens,
                     c10::string_view feature_map, double eps) {
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"q", &q}, {"k", &k}, {"v", &v}}) {
    TORCH_CHECK(t->defined(), op, ": ", name, " is undefined");
    TORCH_CHECK(t->device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t->device());
    TORCH_CHECK(t->dim() == 4, op, ": ", name, " must have 4 dims (B, H, N, D), got shape ", t->sizes());
  }
  const auto dt = q.scalar_type();
  TORCH_CHECK(dt == at::kHalf || dt == at::kBFloat16 || dt == at::kFloat || dt == at::kDouble, op,
              ": q must be float16, bfloat16, float32 or float64, got ", dt);
  TORCH_CHECK(k.scalar_type() == dt, op, ": k has dtype ", k.scalar_type(), " but q has ", dt);
  TORCH_CHECK(v.scalar_type() == dt, op, ": v has dtype ", v.scalar_type(), " but q has ", dt);
  Checked c;
  c.B = q.size(0), c.H = q.size(1), c.N = q.size(2), c.Dk = q.size(3);
  c.Hkv = k.size(1), c.Dv = v.size(3);
  TORCH_CHECK(k.size(0) == c.B && v.size(0) == c.B, op, ": batch sizes differ: q ", c.B, ", k ", k.size(0), ", v ",
              v.size(0));
  TORCH_CHECK(k.size(2) == c.N && v.size(2) == c.N, op, ": sequence lengths differ: q ", c.N, ", k ", k.size(2),
              ", v ", v.size(2));
  TORCH_CHECK(k.size(3) == c.Dk, op, ": k's head dim ", k.size(3), " differs from q's ", c.Dk);
  TORCH_CHECK(v.size(1) == c.Hkv, op, ": v has ", v.size(1), " heads but k has ", c.Hkv);
  TORCH_CHECK(c.Hkv > 0 && c.H % c.Hkv == 0, op, ": q's heads (", c.H, ") must be a multiple of k's and v's heads (",
              c.Hkv, ")");
  TORCH_CHECK(c.Dk >= 1 && c.Dv >= 1, op, ": head dims must be >= 1, got Dk=", c.Dk, ", Dv=", c.Dv);
  TORCH_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  c.fm = parse_feature_map(std::string(feature_map));
  c.F = feature_dim(c.fm, c.Dk);
  c.nseq = c.B;
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->device().is_cpu(), op, ": key_padding_mask must be a CPU tensor, got ", mask->device());
    TORCH_CHECK(mask->scalar_type() == at::kBool, op, ": key_padding_mask must be bool (True = ignore), got ",
                mask->scalar_type());
    TORCH_CHECK(mask->dim() == 2 && mask->size(0) == c.B && mask->size(1) == c.N, op,
                ": key_padding_mask must have shape (B, N) = (", c.B, ", ", c.N, "), got ", mask->sizes());
  }
  if (cu_seqlens.has_value() && cu_seqlens->defined()) {
    const auto& cs = *cu_seqlens;
    TORCH_CHECK(cs.device().is_cpu(), op, ": cu_seqlens must be a CPU tensor, got ", cs.device());
    TORCH_CHECK(cs.scalar_type() == at::kInt || cs.scalar_type() == at::kLong, op,
                ": cu_seqlens must be int32 or int64, got ", cs.scalar_type());
    TORCH_CHECK(cs.dim() == 1 && cs.size(0) >= 2, op, ": cu_seqlens must be 1-D with at least 2 offsets, got shape ",
                cs.sizes());
    TORCH_CHECK(c.B == 1, op, ": with cu_seqlens the sequences are packed along N: batch must be 1, got ", c.B);
    const auto cl = cs.to(at::kLong);
    const int64_t* p = cl.data_ptr<int64_t>();
    const int64_t st = cl.stride(0);
    c.cu.resize(cs.size(0));
    for (int64_t i = 0; i < cs.size(0); ++i) c.cu[i] = p[i * st];
    bool ok = c.cu.front() == 0 && c.cu.back() == c.N;
    for (size_t i = 1; i < c.cu.size(); ++i) ok = ok && c.cu[i] >= c.cu[i - 1];
    TORCH_CHECK(ok, op, ": cu_seqlens must rise from 0 to N=", c.N, ", got ", cs);
    c.nseq = cs.size(0) - 1;
  }
  const auto acc = acc_type(dt);
  check_state(op, "initial_S", S0, acc, {c.nseq, c.H, c.F, c.Dv});
  check_state(op, "initial_z", z0, acc, {c.nseq, c.H, c.F});
  return c;
}

// Tokens per chunk for feature dim F and value dim Dv: the kernels' defaults, or
// KEXUE_LA_CPU_CHUNK (1..kChunkMax) for tuning runs (bench/la_cpu_roofline.py --chunks); read at
// every call.
int64_t chunk_size(bool causal, int64_t F, int64_t Dv) {
  (void)F, (void)Dv;
  const char* env = std::getenv("KEXUE_LA_CPU_CHUNK");
  if (env == nullptr || *env == '\0') return causal ? kChunkCausal : kChunkNonCausal;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  TORCH_CHECK(end != env && *end == '\0' && v >= 1 && v <= kChunkMax,
              "KEXUE_LA_CPU_CHUNK must be an integer in [1, ", kChunkMax, "], got '", env, "'");
  return v;
}

// Bytes per task the causal backward keeps its chunk products (and mapped rows) in: kKeepBytesDefault, or
// KEXUE_LA_CPU_KEEP_MB MiB (an integer >= 0; 0 recomputes them in the second pass) for tests and
// A/B timings; read at every call.
int64_t keep_bytes() {
  const char* env = std::getenv("KEXUE_LA_CPU_KEEP_MB");
  if (env == nullptr || *env == '\0') return kKeepBytesDefault;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  constexpr long long kMaxMb = 1LL << 20;  // 1 TiB: anything larger is a typo
  TORCH_CHECK(end != env && *end == '\0' && v >= 0 && v <= kMaxMb, "KEXUE_LA_CPU_KEEP_MB must be an integer in [0, ",
              kMaxMb, "], got '", env, "'");
  return static_cast<int64_t>(v) << 20;
}

template <typename S, typename T>
void fill_problem(Problem<S, T>& p, const Checked& c, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& S0,
                  const std::optional<at::Tensor>& z0, bool causal, bool normalize, double eps) {
  p.B = c.B, p.H = c.H, p.Hkv = c.Hkv, p.G = c.H / c.Hkv, p.N = c.N, p.Dk = c.Dk, p.Dv = c.Dv, p.F = c.F;
  p.nseq = c.nseq, p.fm = c.fm, p.causal = causal, p.normalize = normalize, p.eps = static_cast<T>(eps);
  p.chunk = chunk_size(causal, c.F, c.Dv);
  p.keep_bytes = keep_bytes();
  p.cu = c.cu;
  p.q = Strided<const S>(q), p.k = Strided<const S>(k), p.v = Strided<const S>(v);
  if (mask.has_value() && mask->defined()) {
    p.mask = mask->data_ptr<bool>();
    p.mask_st[0] = mask->stride(0), p.mask_st[1] = mask->stride(1);
  }
  if (S0.has_value() && S0->defined()) p.S0 = Strided<const T>(*S0);
  if (z0.has_value() && z0->defined()) p.z0 = Strided<const T>(*z0);
}

// One task per (sequence, kv head); grain 1: tasks are large (a whole sequence of a kv group).
template <typename Task>
void run_tasks(const Task& task, int64_t ntasks) {
  const cpu::Isa isa = cpu::cpu_isa();
  at::parallel_for(0, ntasks, 1, [&](int64_t begin, int64_t end) {
    KEXUE_CPU_DISPATCH(isa, task_range, (task, begin, end));
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_fwd_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& key_padding_mask,
    const std::optional<at::Tensor>& initial_S, const std::optional<at::Tensor>& initial_z,
    const std::optional<at::Tensor>& cu_seqlens, c10::string_view feature_map, bool causal, bool normalize,
    double eps) {
  const char* op = "kexue::linear_attention_fwd";
  const Checked c = check_inputs(op, q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, eps);
  const auto acc = acc_type(q.scalar_type());
  at::Tensor out = at::empty({c.B, c.H, c.N, c.Dv}, q.options());
  at::Tensor S = at::empty({c.nseq, c.H, c.F, c.Dv}, q.options().dtype(acc));
  at::Tensor z = at::empty({c.nseq, c.H, c.F}, q.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "linear_attention_fwd_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    Forward<scalar_t, acc_t> f;
    fill_problem(f, c, q, k, v, key_padding_mask, initial_S, initial_z, causal, normalize, eps);
    f.out = Strided<scalar_t>(out), f.S_out = Strided<acc_t>(S), f.z_out = Strided<acc_t>(z);
    run_tasks(f, c.nseq * c.Hkv);
  });
  return {out, S, z};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_attention_bwd_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_S, const std::optional<at::Tensor>& grad_z,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& key_padding_mask,
    const std::optional<at::Tensor>& initial_S, const std::optional<at::Tensor>& initial_z,
    const std::optional<at::Tensor>& cu_seqlens, c10::string_view feature_map, bool causal, bool normalize,
    double eps) {
  const char* op = "kexue::linear_attention_bwd";
  const Checked c = check_inputs(op, q, k, v, key_padding_mask, initial_S, initial_z, cu_seqlens, feature_map, eps);
  const auto acc = acc_type(q.scalar_type());
  TORCH_CHECK(grad_out.defined(), op, ": grad_out is undefined");
  TORCH_CHECK(grad_out.device().is_cpu(), op, ": grad_out must be a CPU tensor, got ", grad_out.device());
  TORCH_CHECK(grad_out.scalar_type() == q.scalar_type(), op, ": grad_out has dtype ", grad_out.scalar_type(),
              " but q has ", q.scalar_type());
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({c.B, c.H, c.N, c.Dv}), op, ": grad_out must have shape ",
              at::IntArrayRef({c.B, c.H, c.N, c.Dv}), ", got ", grad_out.sizes());
  check_state(op, "grad_S", grad_S, acc, {c.nseq, c.H, c.F, c.Dv});
  check_state(op, "grad_z", grad_z, acc, {c.nseq, c.H, c.F});
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  const bool has_S0 = initial_S.has_value() && initial_S->defined();
  const bool has_z0 = initial_z.has_value() && initial_z->defined();
  at::Tensor dS0 = has_S0 ? at::empty_like(*initial_S) : at::empty({0}, q.options().dtype(acc));
  at::Tensor dz0 = has_z0 ? at::empty_like(*initial_z) : at::empty({0}, q.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "linear_attention_bwd_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    Backward<scalar_t, acc_t> bw;
    fill_problem(bw, c, q, k, v, key_padding_mask, initial_S, initial_z, causal, normalize, eps);
    bw.go = Strided<const scalar_t>(grad_out);
    if (grad_S.has_value() && grad_S->defined()) bw.gS = Strided<const acc_t>(*grad_S);
    if (grad_z.has_value() && grad_z->defined()) bw.gz = Strided<const acc_t>(*grad_z);
    bw.dq = Strided<scalar_t>(dq), bw.dk = Strided<scalar_t>(dk), bw.dv = Strided<scalar_t>(dv);
    if (has_S0) bw.dS0 = Strided<acc_t>(dS0);
    if (has_z0) bw.dz0 = Strided<acc_t>(dz0);
    run_tasks(bw, c.nseq * c.Hkv);
  });
  return {dq, dk, dv, dS0, dz0};
}

}  // namespace
}  // namespace kexue::la

TORCH_LIBRARY_IMPL(kexue, CPU, m) {
  m.impl("linear_attention_fwd", &kexue::la::linear_attention_fwd_cpu);
  m.impl("linear_attention_bwd", &kexue::la::linear_attention_bwd_cpu);
}
