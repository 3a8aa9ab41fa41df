// CPU kernels of kexue::attention_qkv_fwd / attention_qkv_bwd (schemas: csrc/registration.cpp;
// semantics: pyext/attribution/reference.py, attention_qkv_reference): unmasked multi-head
// softmax attention over short sequences, read from and written to the fused-QKV layout of a
// BERT layer, for the hand-written integrated-gradients integrand (pyext/attribution/bert_fast.py).
//
//   qkv (R, L, 3D), rows [q | k | v], head h in columns [h·dh, (h+1)·dh) of each part (D = H·dh);
//   P_h = softmax(q_h k_hᵀ · scale) per row (R, H, L, L), out[:, :, h·dh:(h+1)·dh] = P_h v_h.
//   Backward, given dout (R, L, D) (and optionally dprobs, the gradient of P itself):
//   dP = dout_h v_hᵀ (+ dprobs_h), dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale,
//   dq_h = dS k_h, dk_h = dSᵀ q_h, dv_h = Pᵀ dout_h, written to dqkv (R, L, 3D) in qkv's layout.
//
// Why a kernel: in PyTorch the heads must first be split out of the (R, L, 3D) rows into
// (3, R, H, L, dh) (a copy), merged back after P v (a copy), and the backward's three products
// copied into the fused layout (three copies); at BERT sizes (L ~ 10-60, dh = 32) batched GEMMs
// of 30 x 30 x 32 also run at a fraction of the machine's rate.  Here one task per (row, head)
// loads its q, k, v rows straight from the strided input into L1-resident scratch, runs the
// products as register-tiled cpu::gemm calls, and stores its columns of the output in place:
// the only memory traffic is reading qkv (and P, dout in the backward) once and writing the
// outputs once.  FLOPs per row and head: forward 4·L²·dh, backward 8·L²·dh (as the composite);
// scratch per task O(L·(L + dh)) elements; P is kept for the backward, as autograd would keep it.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>

#include "common/cpu_gemm.h"
#include "common/cpu_isa.h"
#include "common/cpu_scratch.h"
#include "common/cpu_vec.h"

namespace kexue {
namespace {

using cpu::gemm;
using cpu::gemm_tn;
using cpu::pad_cols;
using cpu::transpose;

constexpr int64_t kGrainFlops = int64_t{1} << 17;  // ~128K multiply-adds of work per parallel task

// A (rows x cols) block of a 3-D tensor, row r at p + r·rs, column c at + c·cs.
template <typename T>
struct Block {
  T* p;
  int64_t rs, cs;
};

template <typename T>
KEXUE_ALWAYS_INLINE void load(const Block<const T>& b, int64_t rows, int64_t cols, T* dst, int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = b.p + r * b.rs;
    T* d = dst + r * ldd;
    if (b.cs == 1) {
      std::copy(s, s + cols, d);
    } else {
      for (int64_t c = 0; c < cols; ++c) d[c] = s[c * b.cs];
    }
  }
}

template <typename T>
KEXUE_ALWAYS_INLINE void store(const T* src, int64_t lds, int64_t rows, int64_t cols, const Block<T>& b) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * lds;
    T* d = b.p + r * b.rs;
    if (b.cs == 1) {
      std::copy(s, s + cols, d);
    } else {
      for (int64_t c = 0; c < cols; ++c) d[c * b.cs] = s[c];
    }
  }
}

// Scratch of one task: L x dh blocks (leading dim ldh) and L x L blocks (leading dim ldl); the
// transposes are dh x L (leading dim ldl).
template <typename T>
struct Scratch {
  int64_t L, dh, ldh, ldl;
  cpu::ScratchArena<T> arena;
  int64_t oq, ok, ov, og, oo, ot, os, op;
  Scratch(int64_t L_, int64_t dh_) : L(L_), dh(dh_), ldh(pad_cols(dh_)), ldl(pad_cols(L_)) {
    const int64_t rows_l = std::max(L, dh);  // a transpose has dh rows of ldl
    oq = arena.reserve(L * ldh);
    ok = arena.reserve(L * ldh);
    ov = arena.reserve(L * ldh);
    og = arena.reserve(L * ldh);
    oo = arena.reserve(L * ldh);
    ot = arena.reserve(rows_l * ldl);
    os = arena.reserve(L * ldl);
    op = arena.reserve(L * ldl);
    const int64_t total = arena.reserve(0);
    arena.allocate();
    // Zeroed once: the padding columns of the scratch blocks only ever feed padding columns of
    // the products (never stored), but uninitialised bits there could be denormals (slow) or NaN.
    std::fill_n(arena.at(0), total, T(0));
  }
  T* at(int64_t off) const { return arena.at(off); }
};

struct Dims {
  int64_t R, L, H, dh, D;
  double scale;
};

// The views of row r, head h: q/k/v (and their gradients) in the fused layout, out/dout, P.
template <typename T>
struct Views {
  const T* qkv;
  int64_t qkv_s[3];
  T* out;  // out (forward) or dqkv (backward)
  int64_t out_s[3];
  const T* dout;  // backward only
  int64_t dout_s[3];
  T* probs;  // (R, H, L, L): written by the forward, read by the backward
  int64_t probs_s[4];
  const T* dprobs;  // backward only, optional: the gradient of probs
  int64_t dprobs_s[4];

  Block<const T> part(const Dims& d, int64_t r, int64_t h, int64_t which) const {
    return {qkv + r * qkv_s[0] + (which * d.D + h * d.dh) * qkv_s[2], qkv_s[1], qkv_s[2]};
  }
  Block<T> out_part(const Dims& d, int64_t r, int64_t h, int64_t which) const {
    return {out + r * out_s[0] + (which * d.D + h * d.dh) * out_s[2], out_s[1], out_s[2]};
  }
  Block<const T> dout_head(const Dims& d, int64_t r, int64_t h) const {
    return {dout + r * dout_s[0] + h * d.dh * dout_s[2], dout_s[1], dout_s[2]};
  }
  Block<T> probs_rows(int64_t r, int64_t h) const {
    return {probs + r * probs_s[0] + h * probs_s[1], probs_s[2], probs_s[3]};
  }
  Block<const T> dprobs_rows(int64_t r, int64_t h) const {
    return {dprobs + r * dprobs_s[0] + h * dprobs_s[1], dprobs_s[2], dprobs_s[3]};
  }
  // q, k, v of row r, head h into L x dh scratch blocks (leading dim ldh).
  KEXUE_ALWAYS_INLINE void load_qkv(const Dims& d, int64_t r, int64_t h, T* q, T* k, T* v, int64_t ldh) const {
    load(part(d, r, h, 0), d.L, d.dh, q, ldh);
    load(part(d, r, h, 1), d.L, d.dh, k, ldh);
    load(part(d, r, h, 2), d.L, d.dh, v, ldh);
  }
};

// Row-wise softmax of s (rows x n, leading dim ld) scaled by `scale`, in place.
template <int W, typename T>
KEXUE_ALWAYS_INLINE void softmax_rows(T* s, int64_t rows, int64_t n, int64_t ld, T scale) {
  for (int64_t i = 0; i < rows; ++i) {
    T* x = s + i * ld;
    for (int64_t j = 0; j < n; ++j) x[j] *= scale;
    cpu::softmax_n<W>(x, x, n);
  }
}

// dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale, in place over dP.
template <typename T>
KEXUE_ALWAYS_INLINE void softmax_back_rows(const T* p, T* dp, int64_t rows, int64_t n, int64_t ld, T scale) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* pi = p + i * ld;
    T* gi = dp + i * ld;
    T dot = 0;
    for (int64_t j = 0; j < n; ++j) dot += gi[j] * pi[j];
    for (int64_t j = 0; j < n; ++j) gi[j] = pi[j] * (gi[j] - dot) * scale;
  }
}

// The task loop of both passes: tasks [begin, end) are (row, head) pairs; each loads its q, k, v
// into the scratch blocks s.oq / s.ok / s.ov (one arena for the whole range), then runs
// body(s, r, h) (inlined, so it compiles for the caller's ISA path).
template <typename T, typename Body>
KEXUE_ALWAYS_INLINE void for_each_head(const Dims& d, const Views<T>& v, int64_t begin, int64_t end, Body&& body) {
  const Scratch<T> s(d.L, d.dh);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t r = task / d.H, h = task % d.H;
    v.load_qkv(d, r, h, s.at(s.oq), s.at(s.ok), s.at(s.ov), s.ldh);
    body(s, r, h);
  }
}

template <typename T>
struct ForwardJob {
  Dims d;
  Views<T> v;

  template <int W>
  KEXUE_ALWAYS_INLINE void run(int64_t begin, int64_t end) const {
    const int64_t L = d.L, dh = d.dh;
    for_each_head(d, v, begin, end, [&](const Scratch<T>& s, int64_t r, int64_t h) KEXUE_LAMBDA_INLINE {
      T *q = s.at(s.oq), *k = s.at(s.ok), *vv = s.at(s.ov), *o = s.at(s.oo), *kt = s.at(s.ot), *p = s.at(s.os);
      transpose(L, dh, k, s.ldh, kt, s.ldl);                  // kᵀ: dh x L
      gemm(L, L, dh, q, s.ldh, kt, s.ldl, p, s.ldl, false);  // S = q kᵀ
      softmax_rows<W>(p, L, L, s.ldl, static_cast<T>(d.scale));
      store(p, s.ldl, L, L, v.probs_rows(r, h));
      gemm(L, dh, L, p, s.ldl, vv, s.ldh, o, s.ldh, false);  // P v
      store(o, s.ldh, L, dh, v.out_part(d, r, h, 0));
    });
  }
};

template <typename T>
struct BackwardJob {
  Dims d;
  Views<T> v;

  template <int W>
  KEXUE_ALWAYS_INLINE void run(int64_t begin, int64_t end) const {
    const int64_t L = d.L, dh = d.dh;
    for_each_head(d, v, begin, end, [&](const Scratch<T>& s, int64_t r, int64_t h) KEXUE_LAMBDA_INLINE {
      T *q = s.at(s.oq), *k = s.at(s.ok), *vv = s.at(s.ov), *g = s.at(s.og), *o = s.at(s.oo), *vt = s.at(s.ot);
      T *ds = s.at(s.os), *p = s.at(s.op);
      load(v.dout_head(d, r, h), L, dh, g, s.ldh);
      const Block<T> pr = v.probs_rows(r, h);
      load(Block<const T>{pr.p, pr.rs, pr.cs}, L, L, p, s.ldl);
      transpose(L, dh, vv, s.ldh, vt, s.ldl);                 // vᵀ: dh x L
      gemm(L, L, dh, g, s.ldh, vt, s.ldl, ds, s.ldl, false);  // dP = dout vᵀ
      if (v.dprobs != nullptr) {  // + the gradient of P itself
        const Block<const T> gp = v.dprobs_rows(r, h);
        for (int64_t i = 0; i < L; ++i) {
          for (int64_t j = 0; j < L; ++j) ds[i * s.ldl + j] += gp.p[i * gp.rs + j * gp.cs];
        }
      }
      softmax_back_rows(p, ds, L, L, s.ldl, static_cast<T>(d.scale));
      gemm(L, dh, L, ds, s.ldl, k, s.ldh, o, s.ldh, false);  // dq = dS k
      store(o, s.ldh, L, dh, v.out_part(d, r, h, 0));
      gemm_tn(L, dh, L, ds, s.ldl, q, s.ldh, o, s.ldh, false);  // dk = dSᵀ q
      store(o, s.ldh, L, dh, v.out_part(d, r, h, 1));
      gemm_tn(L, dh, L, p, s.ldl, g, s.ldh, o, s.ldh, false);  // dv = Pᵀ dout
      store(o, s.ldh, L, dh, v.out_part(d, r, h, 2));
    });
  }
};

#define KEXUE_ATTN_BODY(W) job.template run<W>(begin, end);
#define KEXUE_ATTN_ENTRIES(T)                                                                               \
  KEXUE_CPU_ENTRIES(attn_fwd_range, (const ForwardJob<T>& job, int64_t begin, int64_t end), KEXUE_ATTN_BODY) \
  KEXUE_CPU_ENTRIES(attn_bwd_range, (const BackwardJob<T>& job, int64_t begin, int64_t end), KEXUE_ATTN_BODY)
KEXUE_ATTN_ENTRIES(float)
KEXUE_ATTN_ENTRIES(double)
#undef KEXUE_ATTN_ENTRIES
#undef KEXUE_ATTN_BODY

template <typename T>
void run_fwd(const ForwardJob<T>& job, int64_t begin, int64_t end, cpu::Isa isa) {
  KEXUE_CPU_DISPATCH(isa, attn_fwd_range, (job, begin, end));
}
template <typename T>
void run_bwd(const BackwardJob<T>& job, int64_t begin, int64_t end, cpu::Isa isa) {
  KEXUE_CPU_DISPATCH(isa, attn_bwd_range, (job, begin, end));
}

Dims check_qkv(const char* op, const at::Tensor& qkv, int64_t heads, double scale) {
  TORCH_CHECK(qkv.dim() == 3, op, ": qkv must have shape (R, L, 3D), got ", qkv.sizes());
  TORCH_CHECK(qkv.scalar_type() == at::kFloat || qkv.scalar_type() == at::kDouble, op,
              ": qkv must be float32 or float64, got ", qkv.scalar_type());
  TORCH_CHECK(heads >= 1, op, ": heads must be >= 1, got ", heads);
  TORCH_CHECK(std::isfinite(scale), op, ": scale must be finite, got ", scale);
  const int64_t C = qkv.size(2);
  TORCH_CHECK(C % (3 * heads) == 0, op, ": qkv's last dimension (", C, ") must be 3 * heads * head_dim for heads = ",
              heads);
  const int64_t D = C / 3;
  return Dims{qkv.size(0), qkv.size(1), heads, D / heads, D, scale};
}

int64_t grain(const Dims& d) {
  const int64_t per_task = std::max<int64_t>(1, d.L * d.L * d.dh);
  return std::max<int64_t>(1, kGrainFlops / per_task);
}

std::tuple<at::Tensor, at::Tensor> attention_qkv_fwd_cpu(const at::Tensor& qkv, int64_t heads, double scale) {
  const char* op = "kexue::attention_qkv_fwd";
  const Dims d = check_qkv(op, qkv, heads, scale);
  at::Tensor out = at::empty({d.R, d.L, d.D}, qkv.options());
  at::Tensor probs = at::empty({d.R, d.H, d.L, d.L}, qkv.options());
  if (d.R == 0 || d.L == 0 || d.dh == 0) {
    out.zero_();
    return {out, probs};
  }
  const cpu::Isa isa = cpu::cpu_isa();
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "kexue_attention_qkv_fwd", [&] {
    Views<scalar_t> v{};
    v.qkv = qkv.const_data_ptr<scalar_t>();
    v.out = out.data_ptr<scalar_t>();
    v.probs = probs.data_ptr<scalar_t>();
    for (int i = 0; i < 3; ++i) v.qkv_s[i] = qkv.stride(i), v.out_s[i] = out.stride(i);
    for (int i = 0; i < 4; ++i) v.probs_s[i] = probs.stride(i);
    const ForwardJob<scalar_t> job{d, v};
    at::parallel_for(0, d.R * d.H, grain(d),
                     [&](int64_t begin, int64_t end) { run_fwd(job, begin, end, isa); });
  });
  return {out, probs};
}

at::Tensor attention_qkv_bwd_cpu(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_probs,
                                 const at::Tensor& qkv, const at::Tensor& probs, int64_t heads, double scale) {
  const char* op = "kexue::attention_qkv_bwd";
  const Dims d = check_qkv(op, qkv, heads, scale);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({d.R, d.L, d.D}), op, ": grad_out must have shape (",
              d.R, ", ", d.L, ", ", d.D, "), got ", grad_out.sizes());
  TORCH_CHECK(probs.sizes() == at::IntArrayRef({d.R, d.H, d.L, d.L}), op, ": probs must have shape (",
              d.R, ", ", d.H, ", ", d.L, ", ", d.L, "), got ", probs.sizes());
  TORCH_CHECK(grad_out.scalar_type() == qkv.scalar_type() && probs.scalar_type() == qkv.scalar_type(), op,
              ": grad_out, qkv and probs must share a dtype, got ", grad_out.scalar_type(), ", ",
              qkv.scalar_type(), ", ", probs.scalar_type());
  const bool has_gp = grad_probs.has_value() && grad_probs->defined();
  if (has_gp) {
    TORCH_CHECK(grad_probs->sizes() == probs.sizes(), op, ": grad_probs must have the shape of probs ",
                probs.sizes(), ", got ", grad_probs->sizes());
    TORCH_CHECK(grad_probs->scalar_type() == qkv.scalar_type(), op, ": grad_probs must have qkv's dtype ",
                qkv.scalar_type(), ", got ", grad_probs->scalar_type());
  }
  at::Tensor dqkv = at::empty({d.R, d.L, 3 * d.D}, qkv.options());
  if (d.R == 0 || d.L == 0 || d.dh == 0) return dqkv.zero_();
  const cpu::Isa isa = cpu::cpu_isa();
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "kexue_attention_qkv_bwd", [&] {
    Views<scalar_t> v{};
    v.qkv = qkv.const_data_ptr<scalar_t>();
    v.out = dqkv.data_ptr<scalar_t>();
    v.dout = grad_out.const_data_ptr<scalar_t>();
    v.probs = const_cast<scalar_t*>(probs.const_data_ptr<scalar_t>());  // read only in the backward
    for (int i = 0; i < 3; ++i) v.qkv_s[i] = qkv.stride(i), v.out_s[i] = dqkv.stride(i), v.dout_s[i] = grad_out.stride(i);
    for (int i = 0; i < 4; ++i) v.probs_s[i] = probs.stride(i);
    v.dprobs = has_gp ? grad_probs->const_data_ptr<scalar_t>() : nullptr;
    for (int i = 0; i < 4; ++i) v.dprobs_s[i] = has_gp ? grad_probs->stride(i) : 0;
    const BackwardJob<scalar_t> job{d, v};
    at::parallel_for(0, d.R * d.H, grain(d),
                     [&](int64_t begin, int64_t end) { run_bwd(job, begin, end, isa); });
  });
  return dqkv;
}

}  // namespace

TORCH_LIBRARY_IMPL(kexue, CPU, m) {
  m.impl("attention_qkv_fwd", &attention_qkv_fwd_cpu);
  m.impl("attention_qkv_bwd", &attention_qkv_bwd_cpu);
}

}  // namespace kexue
