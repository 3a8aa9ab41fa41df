// CPU kernels of kexue::probe_masked_batch and kexue::probe_segment_distance (schemas in
// csrc/registration.cpp, semantics in pyext/probe/kernels_reference.py).
//
// probe_masked_batch: a serial O(K) pass checks every row's indices (sentence, words, spans,
// length) with errors naming the argument; then rows run in parallel (at::parallel_for), each a
// memcpy of the sentence's tokens, std::fill of the masked spans and of the padding: K·length
// int64 stores, no arithmetic.
//
// probe_segment_distance: a serial O(K) pass checks the indices; rows k then run in parallel,
// each computing d(h[rows[k]], ref[ref_rows[k]]) in one pass over D (Σ(a-b)² for "dist";
// a·b, a·a, b·b for "cos") with one accumulator vector per sum (GCC vectors, cpu_vec.h; AVX2 or
// the baseline path picked at run time, cpu_isa.h).  Strided or half-precision rows are first
// converted into float blocks of kBlock values that stay in L1.  Cost: 2·K·D loads, ~3·K·D
// flops; extra memory K accumulators.  The per-segment mean is then a serial O(K) sum over k in
// index order (deterministic; negligible next to the K·D distance work).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/cpu_isa.h"
#include "common/cpu_vec.h"

// 32-byte vectors passed between always-inlined helpers never cross an ABI boundary
#pragma GCC diagnostic ignored "-Wpsabi"

namespace kexue::probe {
namespace {

constexpr int64_t kBlock = 256;              // values per converted block (1 KiB of float per operand)
constexpr int64_t kGrainElements = 1 << 15;  // ~32K values of work per parallel task
constexpr double kCosEps = 1e-8;             // clamp of ‖a‖‖b‖ in the cosine (the reference's)

void check_index_vector(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", t.scalar_type());
}

// ---------------------------------------------------------------------------------------------
// probe_masked_batch
// ---------------------------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> probe_masked_batch_cpu(const at::Tensor& tokens_in, const at::Tensor& tok_offsets_in,
                                                          const at::Tensor& word_start_in,
                                                          const at::Tensor& word_end_in,
                                                          const at::Tensor& word_offsets_in, const at::Tensor& seqs_in,
                                                          int64_t mask_id, int64_t pad_id, int64_t length) {
  const char* op = "kexue.probe.masked_batch";
  check_index_vector(op, "tokens", tokens_in);
  check_index_vector(op, "tok_offsets", tok_offsets_in);
  check_index_vector(op, "word_start", word_start_in);
  check_index_vector(op, "word_end", word_end_in);
  check_index_vector(op, "word_offsets", word_offsets_in);
  TORCH_CHECK(seqs_in.device().is_cpu(), op, ": seqs must be a CPU tensor, got ", seqs_in.device());
  TORCH_CHECK(seqs_in.dim() == 2 && seqs_in.size(1) == 3, op, ": seqs must have shape (K, 3) (rows s, i, j), got ",
              seqs_in.sizes());
  TORCH_CHECK(seqs_in.scalar_type() == at::kLong, op, ": seqs must be int64, got ", seqs_in.scalar_type());
  TORCH_CHECK(tok_offsets_in.size(0) >= 1, op, ": tok_offsets must have n_sentences + 1 >= 1 entries");
  TORCH_CHECK(word_offsets_in.size(0) == tok_offsets_in.size(0), op, ": word_offsets has ", word_offsets_in.size(0),
              " entries but tok_offsets has ", tok_offsets_in.size(0), " (both must be n_sentences + 1)");
  TORCH_CHECK(word_start_in.size(0) == word_end_in.size(0), op, ": word_start has ", word_start_in.size(0),
              " entries but word_end has ", word_end_in.size(0));
  TORCH_CHECK(length >= 0, op, ": length must be >= 0, got ", length);

  const at::Tensor tokens = tokens_in.contiguous(), tok_offsets = tok_offsets_in.contiguous();
  const at::Tensor word_start = word_start_in.contiguous(), word_end = word_end_in.contiguous();
  const at::Tensor word_offsets = word_offsets_in.contiguous(), seqs = seqs_in.contiguous();
  const int64_t K = seqs.size(0), n_sent = tok_offsets.size(0) - 1;
  const int64_t L_total = tokens.size(0), W_total = word_start.size(0);
  const int64_t* tok = tokens.const_data_ptr<int64_t>();
  const int64_t* toff = tok_offsets.const_data_ptr<int64_t>();
  const int64_t* wst = word_start.const_data_ptr<int64_t>();
  const int64_t* wen = word_end.const_data_ptr<int64_t>();
  const int64_t* woff = word_offsets.const_data_ptr<int64_t>();
  const int64_t* sq = seqs.const_data_ptr<int64_t>();

  // Serial validation of every row (O(K)): afterwards the parallel fill cannot read out of range.
  for (int64_t k = 0; k < K; ++k) {
    const int64_t s = sq[3 * k], wi = sq[3 * k + 1], wj = sq[3 * k + 2];
    TORCH_CHECK(s >= 0 && s < n_sent, op, ": seqs[", k, ", 0] = ", s, " is not a sentence index in [0, ", n_sent,
                ")");
    const int64_t t0 = toff[s], t1 = toff[s + 1];
    TORCH_CHECK(t0 >= 0 && t0 <= t1 && t1 <= L_total, op, ": tok_offsets[", s, ":", s + 2, "] = (", t0, ", ", t1,
                ") is not a range of tokens (", L_total, " tokens)");
    const int64_t n = t1 - t0;
    TORCH_CHECK(n <= length, op, ": length = ", length, " is shorter than sentence ", s, " (", n,
                " tokens, referenced by seqs[", k, "]); length must be >= the longest sentence referenced");
    const int64_t w0 = woff[s], w1 = woff[s + 1];
    TORCH_CHECK(w0 >= 0 && w0 <= w1 && w1 <= W_total, op, ": word_offsets[", s, ":", s + 2, "] = (", w0, ", ", w1,
                ") is not a range of words (", W_total, " words)");
    const int64_t nw = w1 - w0;
    const int64_t ws[2] = {wi, wj};
    for (int c = 0; c < 2; ++c) {
      const int64_t w = ws[c];
      TORCH_CHECK(w >= -1 && w < nw, op, ": seqs[", k, ", ", c + 1, "] = ", w, " is not a word of sentence ", s,
                  " (", nw, " words; -1 means no word)");
      if (w >= 0) {
        const int64_t a = wst[w0 + w], b = wen[w0 + w];
        TORCH_CHECK(a >= 0 && a <= b && b <= n, op, ": word ", w, " of sentence ", s, " has the span [", a, ", ", b,
                    ") (word_start/word_end[", w0 + w, "]), not within the sentence's ", n, " tokens");
      }
    }
  }

  at::Tensor input_ids = at::empty({K, length}, tokens.options());
  at::Tensor attention_mask = at::empty({K, length}, tokens.options());
  int64_t* ids = input_ids.data_ptr<int64_t>();
  int64_t* att = attention_mask.data_ptr<int64_t>();
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(length, 1));
  at::parallel_for(0, K, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t s = sq[3 * k];
      const int64_t t0 = toff[s], n = toff[s + 1] - t0, w0 = woff[s];
      int64_t* row = ids + k * length;
      int64_t* arow = att + k * length;
      if (n > 0) std::memcpy(row, tok + t0, sizeof(int64_t) * n);
      for (int c = 1; c <= 2; ++c) {
        const int64_t w = sq[3 * k + c];
        if (w >= 0) std::fill(row + wst[w0 + w], row + wen[w0 + w], mask_id);
      }
      std::fill(row + n, row + length, pad_id);
      std::fill(arow, arow + n, int64_t(1));
      std::fill(arow + n, arow + length, int64_t(0));
    }
  });
  return {input_ids, attention_mask};
}

// ---------------------------------------------------------------------------------------------
// probe_segment_distance
// ---------------------------------------------------------------------------------------------

// Running sums of one row pair: s0 = Σ(a-b)² ("dist") or a·b ("cos"), s1 = a·a, s2 = b·b.
template <typename T>
struct Sums {
  T s0 = 0, s1 = 0, s2 = 0;
};

// Adds one contiguous block of n values (in the accumulation type) to the sums, one accumulator
// vector per sum (lane-wise partial sums, reduced at the end of the block).
template <int W, bool kCos, typename T>
KEXUE_ALWAYS_INLINE void block_sums(const T* a, const T* b, int64_t n, Sums<T>& out) {
  using V = typename cpu::Vec<T, W>::type;
  constexpr int L = cpu::Vec<T, W>::kLanes;
  V v0 = V{}, v1 = V{}, v2 = V{};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const V x = cpu::vload<W>(a + i), y = cpu::vload<W>(b + i);
    if constexpr (kCos) {
      v0 += x * y;
      v1 += x * x;
      v2 += y * y;
    } else {
      const V d = x - y;
      v0 += d * d;
    }
  }
  T s0 = cpu::hsum<W, T>(v0), s1 = 0, s2 = 0;
  if constexpr (kCos) {
    s1 = cpu::hsum<W, T>(v1);
    s2 = cpu::hsum<W, T>(v2);
  }
  for (; i < n; ++i) {
    if constexpr (kCos) {
      s0 += a[i] * b[i];
      s1 += a[i] * a[i];
      s2 += b[i] * b[i];
    } else {
      const T d = a[i] - b[i];
      s0 += d * d;
    }
  }
  out.s0 += s0;
  out.s1 += s1;
  out.s2 += s2;
}

// One job: the inputs and the per-row distance output.
template <typename S, typename T>
struct DistanceJob {
  const S* h;
  int64_t h0, h1;
  const S* ref;
  int64_t r0, r1;
  const int64_t* rows;
  const int64_t* ref_rows;
  int64_t D;
  bool cos;
  T* dist;  // (K,) per-row distances

  // Pointer to x[c0 : c0 + n] as T: the row itself when it already is contiguous T, else the
  // values converted into buf.
  KEXUE_ALWAYS_INLINE const T* block(const S* row, int64_t stride, int64_t c0, int64_t n, T* buf) const {
    if constexpr (std::is_same_v<S, T>) {
      if (stride == 1) return row + c0;
    }
    if (stride == 1) {
      for (int64_t j = 0; j < n; ++j) buf[j] = static_cast<T>(row[c0 + j]);
    } else {
      for (int64_t j = 0; j < n; ++j) buf[j] = static_cast<T>(row[(c0 + j) * stride]);
    }
    return buf;
  }

  template <int W, bool kCos>
  KEXUE_ALWAYS_INLINE T row_distance(int64_t k, T* abuf, T* bbuf) const {
    const S* a = h + rows[k] * h0;
    const S* b = ref + ref_rows[k] * r0;
    Sums<T> s;
    for (int64_t c0 = 0; c0 < D; c0 += kBlock) {
      const int64_t n = std::min(kBlock, D - c0);
      block_sums<W, kCos, T>(block(a, h1, c0, n, abuf), block(b, r1, c0, n, bbuf), n, s);
    }
    if constexpr (kCos) {
      const T denom = std::max(std::sqrt(s.s1) * std::sqrt(s.s2), static_cast<T>(kCosEps));
      return T(1) - s.s0 / denom;
    } else {
      return std::sqrt(s.s0);
    }
  }

  template <int W>
  KEXUE_ALWAYS_INLINE void run(int64_t begin, int64_t end) const {
    T abuf[kBlock], bbuf[kBlock];
    if (cos) {
      for (int64_t k = begin; k < end; ++k) dist[k] = row_distance<W, true>(k, abuf, bbuf);
    } else {
      for (int64_t k = begin; k < end; ++k) dist[k] = row_distance<W, false>(k, abuf, bbuf);
    }
  }
};

// The row loops, one function per input dtype and ISA path (cpu_isa.h): everything they call is
// always inlined, so it compiles for the function's ISA.
#define KEXUE_PROBE_BODY(W) job.template run<W>(begin, end);
#define KEXUE_PROBE_RANGE(S, T) \
  KEXUE_CPU_ENTRIES(range, (const DistanceJob<S, T>& job, int64_t begin, int64_t end), KEXUE_PROBE_BODY)
KEXUE_PROBE_RANGE(float, float)
KEXUE_PROBE_RANGE(double, double)
KEXUE_PROBE_RANGE(at::Half, float)
KEXUE_PROBE_RANGE(at::BFloat16, float)
#undef KEXUE_PROBE_RANGE
#undef KEXUE_PROBE_BODY

bool parse_metric(const char* op, c10::string_view metric) {
  const std::string m(metric);
  TORCH_CHECK(m == "dist" || m == "cos", op, ": metric must be 'dist' or 'cos', got '", m, "'");
  return m == "cos";
}

void check_range(const char* op, const char* name, const int64_t* idx, int64_t K, int64_t n, const char* what) {
  for (int64_t k = 0; k < K; ++k) {
    TORCH_CHECK(idx[k] >= 0 && idx[k] < n, op, ": ", name, "[", k, "] = ", idx[k], " is out of range: ", what,
                " indices must be in [0, ", n, ")");
  }
}

at::Tensor probe_segment_distance_cpu(const at::Tensor& h, const at::Tensor& rows_in, const at::Tensor& ref,
                                      const at::Tensor& ref_rows_in, const at::Tensor& seg_in, int64_t num_segments,
                                      c10::string_view metric) {
  const char* op = "kexue.probe.segment_distance";
  TORCH_CHECK(h.device().is_cpu(), op, ": h must be a CPU tensor, got ", h.device());
  TORCH_CHECK(ref.device().is_cpu(), op, ": ref must be a CPU tensor, got ", ref.device());
  TORCH_CHECK(h.dim() == 2, op, ": h must have shape (R, D), got ", h.sizes());
  TORCH_CHECK(ref.dim() == 2, op, ": ref must have shape (R2, D), got ", ref.sizes());
  const auto dt = h.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16, op,
              ": h must be float16, bfloat16, float32 or float64, got ", dt);
  TORCH_CHECK(ref.scalar_type() == dt, op, ": ref has dtype ", ref.scalar_type(), " but h has ", dt);
  TORCH_CHECK(ref.size(1) == h.size(1), op, ": ref has D = ", ref.size(1), " columns but h has ", h.size(1));
  check_index_vector(op, "rows", rows_in);
  check_index_vector(op, "ref_rows", ref_rows_in);
  check_index_vector(op, "seg", seg_in);
  const int64_t K = rows_in.size(0), D = h.size(1);
  TORCH_CHECK(ref_rows_in.size(0) == K, op, ": ref_rows has ", ref_rows_in.size(0), " entries but rows has ", K);
  TORCH_CHECK(seg_in.size(0) == K, op, ": seg has ", seg_in.size(0), " entries but rows has ", K);
  TORCH_CHECK(num_segments >= 0, op, ": num_segments must be >= 0, got ", num_segments);
  const bool cos = parse_metric(op, metric);
  const at::Tensor rows = rows_in.contiguous(), ref_rows = ref_rows_in.contiguous(), seg = seg_in.contiguous();
  const int64_t* rp = rows.const_data_ptr<int64_t>();
  const int64_t* qp = ref_rows.const_data_ptr<int64_t>();
  const int64_t* sp = seg.const_data_ptr<int64_t>();
  check_range(op, "rows", rp, K, h.size(0), "h row");
  check_range(op, "ref_rows", qp, K, ref.size(0), "ref row");
  check_range(op, "seg", sp, K, num_segments, "segment");

  const auto acc = dt == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::empty({num_segments}, h.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dt, "probe_segment_distance_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    std::vector<acc_t> dist(static_cast<size_t>(K));
    const DistanceJob<scalar_t, acc_t> job{h.const_data_ptr<scalar_t>(), h.stride(0), h.stride(1),
                                           ref.const_data_ptr<scalar_t>(), ref.stride(0), ref.stride(1), rp, qp, D,
                                           cos, dist.data()};
    const cpu::Isa isa = cpu::cpu_isa();
    const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(D, 1));
    at::parallel_for(0, K, grain, [&](int64_t begin, int64_t end) {
      KEXUE_CPU_DISPATCH(isa, range, (job, begin, end));
    });
    // segment means: serial sums in k order (deterministic), then the division
    std::vector<acc_t> sums(static_cast<size_t>(num_segments), acc_t(0));
    std::vector<int64_t> counts(static_cast<size_t>(num_segments), 0);
    for (int64_t k = 0; k < K; ++k) {
      sums[sp[k]] += dist[k];
      counts[sp[k]] += 1;
    }
    acc_t* o = out.data_ptr<acc_t>();
    for (int64_t s = 0; s < num_segments; ++s) o[s] = counts[s] ? sums[s] / static_cast<acc_t>(counts[s]) : acc_t(0);
  });
  return out;
}

}  // namespace
}  // namespace kexue::probe

TORCH_LIBRARY_IMPL(kexue, CPU, m) {
  m.impl("probe_masked_batch", &kexue::probe::probe_masked_batch_cpu);
  m.impl("probe_segment_distance", &kexue::probe::probe_segment_distance_cpu);
}
