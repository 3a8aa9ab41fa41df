// CPU kernels of kexue.sample / kexue.decoding.sampling_probs (semantics:
// pyext/decoding/reference.py; schemas: csrc/registration.cpp).
//
// The row-parallel algorithm every backend follows (no backend sorts the vocabulary):
//   1. one pass over the logits x: m = max x, and a NaN or +inf in the row is an error.
//   2. top-k: the k-th largest value θ_k of x (a selection, not a sort; ties with θ_k kept; the
//      order of x / T): candidates C = {i : x_i >= θ_k} (C = all tokens without top-k).
//   3. w_i = exp(g_i) on C with g_i = (x_i − m) / T, computed as x_i / T − m / T where x_i − m
//      overflows and T >= 1, else as (x_i − m) / T (no overflow for any T > 0: reference.py's scaled_gap);
//      Z = Σ_C w (w = 0 for a masked token, x = -inf).
//   4. top-p: the crossing value τ = max{v : Σ_{i∈C, w_i >= v} w_i >= p·Z}; kept K = {i ∈ C : w_i >= τ}
//      (the smallest prefix by descending probability whose mass reaches p, its crossing token and
//      every token tied with it kept; the largest token is always kept since τ <= 1).
//   5. K ∪= keep ids (with their own weight exp(a_i - m)); Z_K = Σ_K w.
//   6. draw: with u ~ U[0, 1), the first i in index order with Σ_{j∈K, j<=i} w_j > u·Z_K; or the
//      distribution w_i / Z_K on K (sampling_probs).
// Here (CPU): step 2 is a size-k min-heap pass (k <= kHeapMaxK; nth_element on a copy above that);
// step 4 is a radix selection on the bits of w (positive floats order as their bit patterns):
// a 2^11-bucket histogram of the mass of C, the bucket where the descending mass crosses p·Z,
// then the same on the next 11 bits of that bucket's values only, until one value (or a handful,
// sorted) is left.  Cost per row: ~3 passes over V (load + max, exp, histogram), O(V) scratch,
// O(|C|) more for the draw; Triton: pyext/../triton_kernels/sampling.py (bisection on the bits).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/cpu_isa.h"
#include "common/cpu_vec.h"

namespace kexue {
namespace {

constexpr int64_t kHeapMaxK = 256;           // top-k by heap up to this k (O(V + k log k · log V))
constexpr int kRadixBits = 11;               // histogram width of one radix level: 2048 buckets
constexpr int64_t kSortBelow = 32;           // a bucket this small is sorted instead of refined
constexpr int64_t kGrainElements = 1 << 15;  // ~32K elements of work per parallel task

template <typename acc_t>
using bits_t = std::conditional_t<std::is_same_v<acc_t, double>, uint64_t, uint32_t>;

template <typename acc_t>
inline bits_t<acc_t> bits_of(acc_t v) {
  bits_t<acc_t> b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

// The crossing value τ of step 4 over the n non-negative weights w: max{v : Σ_{w_j >= v} w_j >= target}.
// Radix selection from the top bits down; only the crossing bucket's values are carried on.
template <typename acc_t>
acc_t crossing_value(const acc_t* w, int64_t n, double target, std::vector<acc_t>& buf_a,
                     std::vector<acc_t>& buf_b) {
  using B = bits_t<acc_t>;
  constexpr int kTop = static_cast<int>(sizeof(B) * 8) - 1;  // the sign bit is 0 for w >= 0
  constexpr int64_t kBuckets = int64_t(1) << kRadixBits;
  double mass[kBuckets];
  const acc_t* src = w;
  double above = 0.0;  // mass of the values above the current bucket
  std::vector<acc_t>* dst = &buf_a;
  for (int hi = kTop; hi > 0;) {
    const int shift = std::max(hi - kRadixBits, 0);
    const B mask = static_cast<B>((B(1) << (hi - shift)) - 1);
    std::fill(mass, mass + kBuckets, 0.0);
    for (int64_t j = 0; j < n; ++j) mass[(bits_of(src[j]) >> shift) & mask] += static_cast<double>(src[j]);
    int64_t b = static_cast<int64_t>(mask);
    for (; b > 0; --b) {
      if (above + mass[b] >= target) break;
      above += mass[b];
    }
    dst->clear();
    for (int64_t j = 0; j < n; ++j) {
      if (static_cast<int64_t>((bits_of(src[j]) >> shift) & mask) == b) dst->push_back(src[j]);
    }
    src = dst->data();
    n = static_cast<int64_t>(dst->size());
    dst = (dst == &buf_a) ? &buf_b : &buf_a;
    hi = shift;
    if (n <= kSortBelow || hi == 0) break;
  }
  if (n == 0) return acc_t(0);  // (rounding: nothing left to cross; keep every positive weight)
  std::vector<acc_t> rest(src, src + n);
  std::sort(rest.begin(), rest.end(), std::greater<acc_t>());
  double cum = above;
  for (int64_t j = 0; j < n;) {
    int64_t e = j;
    while (e < n && rest[e] == rest[j]) cum += static_cast<double>(rest[e++]);
    if (cum >= target) return rest[j];
    j = e;
  }
  return rest[n - 1];  // (rounding: the sums fell short by an ulp; the smallest of the bucket)
}

// The k-th largest of a[0..V) (1 <= k < V), ties counted.
template <typename acc_t>
acc_t kth_largest(const acc_t* a, int64_t V, int64_t k, std::vector<acc_t>& tmp) {
  if (k <= kHeapMaxK) {
    tmp.assign(a, a + k);
    std::make_heap(tmp.begin(), tmp.end(), std::greater<acc_t>());  // min-heap: front = smallest
    acc_t low = tmp.front();
    for (int64_t i = k; i < V; ++i) {
      if (a[i] > low) {
        std::pop_heap(tmp.begin(), tmp.end(), std::greater<acc_t>());
        tmp.back() = a[i];
        std::push_heap(tmp.begin(), tmp.end(), std::greater<acc_t>());
        low = tmp.front();
      }
    }
    return low;
  }
  tmp.assign(a, a + V);
  std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), std::greater<acc_t>());
  return tmp[k - 1];
}

enum RowError : int { kOk = 0, kNonFinite = 1, kAllMasked = 2 };

struct Scratch {
  std::vector<float> fa, fw, ft1, ft2, ft3;
  std::vector<double> da, dw, dt1, dt2, dt3;
  std::vector<int64_t> idx;
  template <typename acc_t>
  std::vector<acc_t>& v(int which) {
    if constexpr (std::is_same_v<acc_t, double>) {
      std::vector<double>* all[] = {&da, &dw, &dt1, &dt2, &dt3};
      return *all[which];
    } else {
      std::vector<float>* all[] = {&fa, &fw, &ft1, &ft2, &ft3};
      return *all[which];
    }
  }
};

template <typename scalar_t, typename acc_t>
struct SampleJob {
  const scalar_t* x;
  int64_t s0, s1, V;
  const double* temperature;
  const int64_t* top_k;
  const double* top_p;
  const int64_t* keep;  // (B, K), -1 = none
  int64_t K;
  const double* uniform;  // (B,) or nullptr (probabilities only)
  int64_t* tokens;        // (B,) or nullptr
  acc_t* probs;           // (B, V) or nullptr
  std::atomic<int64_t>* bad_row;
  std::atomic<int>* bad_kind;

  void fail(int64_t r, int kind) const {
    int64_t cur = bad_row->load();
    while ((cur < 0 || r < cur) && !bad_row->compare_exchange_weak(cur, r)) {
    }
    if (bad_row->load() == r) bad_kind->store(kind);
  }

  template <int W>
  KEXUE_ALWAYS_INLINE void row(int64_t r, Scratch& s) const {
    std::vector<acc_t>& a = s.v<acc_t>(0);
    std::vector<acc_t>& w = s.v<acc_t>(1);
    a.resize(V);
    const acc_t T = static_cast<acc_t>(temperature[r]);
    const scalar_t* xr = x + r * s0;
    constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();
    acc_t m = -inf;
    bool bad = false;
    for (int64_t i = 0; i < V; ++i) {  // a = the logits themselves (T enters through gap below)
      const acc_t v = static_cast<acc_t>(xr[i * s1]);
      a[i] = v;
      bad |= !(v < inf);  // NaN or +inf
      m = v > m ? v : m;
    }
    if (bad) return fail(r, kNonFinite);
    if (m == -inf) return fail(r, kAllMasked);
    const bool scale_first = T >= acc_t(1);
    const acc_t mT = m / T;
    // (v - m) / T without overflow; exactly 0 at the max (T may round to 0 in float: the rest is -inf);
    // -inf for a masked token (T above float's range rounds to inf: -inf / inf would be NaN); the
    // quotients v / T - m / T only where v - m overflows (T >= 1: they round by |v| / T units)
    auto gap = [&](acc_t v) {
      if (v == -inf) return v;
      if (v == m) return acc_t(0);
      const acc_t d = v - m;
      return d == -inf && scale_first ? v / T - mT : d / T;
    };
    const int64_t k = top_k[r];
    const bool use_k = k > 0 && k < V;
    int64_t n = V;
    const int64_t* idx = nullptr;
    acc_t kth = -inf;
    if (use_k) {
      kth = kth_largest(a.data(), V, k, s.v<acc_t>(2));
      s.idx.clear();
      w.clear();
      for (int64_t i = 0; i < V; ++i) {
        if (a[i] >= kth) {
          s.idx.push_back(i);
          w.push_back(gap(a[i]));
        }
      }
      n = static_cast<int64_t>(w.size());
      idx = s.idx.data();
    } else {
      w.resize(V);
      for (int64_t i = 0; i < V; ++i) w[i] = gap(a[i]);
    }
    cpu::exp_n<W>(w.data(), w.data(), n);  // a masked token (gap -inf) gets exactly 0
    double Z = 0.0;
    for (int64_t j = 0; j < n; ++j) Z += static_cast<double>(w[j]);
    acc_t tau = 0;
    const double p = top_p[r];
    if (p < 1.0) tau = crossing_value<acc_t>(w.data(), n, p * Z, s.v<acc_t>(3), s.v<acc_t>(4));
    // keep ids outside K, sorted and unique, with their own weights
    std::vector<std::pair<int64_t, acc_t>> extra;
    for (int64_t c = 0; c < K; ++c) {
      const int64_t id = keep[r * K + c];
      if (id < 0) continue;
      acc_t wid;
      bool in_k;
      if (idx) {
        const int64_t* pos = std::lower_bound(idx, idx + n, id);
        in_k = pos != idx + n && *pos == id && w[pos - idx] >= tau;
        wid = in_k ? acc_t(0) : (a[id] == -inf ? acc_t(0) : static_cast<acc_t>(std::exp(gap(a[id]))));
      } else {
        in_k = w[id] >= tau;
        wid = w[id];
      }
      if (!in_k) extra.emplace_back(id, wid);
    }
    std::sort(extra.begin(), extra.end());
    extra.erase(std::unique(extra.begin(), extra.end()), extra.end());
    double ZK = 0.0;
    for (int64_t j = 0; j < n; ++j) ZK += w[j] >= tau ? static_cast<double>(w[j]) : 0.0;
    for (const auto& e : extra) ZK += static_cast<double>(e.second);
    if (probs) {
      acc_t* pr = probs + r * V;
      std::fill(pr, pr + V, acc_t(0));
      const double inv = 1.0 / ZK;
      for (int64_t j = 0; j < n; ++j) {
        if (w[j] >= tau) pr[idx ? idx[j] : j] = static_cast<acc_t>(w[j] * inv);
      }
      for (const auto& e : extra) pr[e.first] = static_cast<acc_t>(e.second * inv);
    }
    if (tokens) {
      // inverse CDF in index order over K: candidates and extra keep ids merged
      const double target = uniform[r] * ZK;
      double cum = 0.0;
      int64_t last = -1;
      size_t e = 0;
      int64_t j = 0;
      while (j < n || e < extra.size()) {
        const int64_t cj = j < n ? (idx ? idx[j] : j) : std::numeric_limits<int64_t>::max();
        int64_t id;
        double wt;
        if (e < extra.size() && extra[e].first < cj) {
          id = extra[e].first;
          wt = static_cast<double>(extra[e].second);
          ++e;
        } else {
          id = cj;
          wt = w[j] >= tau ? static_cast<double>(w[j]) : 0.0;
          ++j;
        }
        if (wt <= 0.0) continue;
        cum += wt;
        last = id;
        if (cum > target) break;
      }
      tokens[r] = last;  // (rounding: u·Z_K at the very top falls back to the last kept token)
    }
  }

  template <int W>
  KEXUE_ALWAYS_INLINE void run(int64_t begin, int64_t end) const {
    Scratch s;
    for (int64_t r = begin; r < end; ++r) row<W>(r, s);
  }
};

#define KEXUE_SAMPLE_BODY(W) job.template run<W>(begin, end);
#define KEXUE_SAMPLE_RANGE(S, T) \
  KEXUE_CPU_ENTRIES(sample_range, (const SampleJob<S, T>& job, int64_t begin, int64_t end), KEXUE_SAMPLE_BODY)
KEXUE_SAMPLE_RANGE(float, float)
KEXUE_SAMPLE_RANGE(double, double)
KEXUE_SAMPLE_RANGE(at::Half, float)
KEXUE_SAMPLE_RANGE(at::BFloat16, float)
#undef KEXUE_SAMPLE_RANGE
#undef KEXUE_SAMPLE_BODY

void check_row_vector(const char* op, const char* name, const at::Tensor& t, int64_t B, at::ScalarType dt) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == B, op, ": ", name, " must have shape (B,) = (", B, ",), got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == dt, op, ": ", name, " must be ", dt, ", got ", t.scalar_type());
}

// Shared by both ops: checks, then one SampleJob over the rows.  Returns (tokens or empty, probs or empty).
std::tuple<at::Tensor, at::Tensor> run_sampling(const char* op, const at::Tensor& logits,
                                                const at::Tensor& temperature_in, const at::Tensor& top_k_in,
                                                const at::Tensor& top_p_in, const at::Tensor& keep_in,
                                                const at::Tensor* uniform_in) {
  TORCH_CHECK(logits.device().is_cpu(), op, ": logits must be a CPU tensor, got ", logits.device());
  TORCH_CHECK(logits.dim() == 2, op, ": logits must have shape (B, V), got ", logits.sizes());
  const auto dt = logits.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16, op,
              ": logits must be float16, bfloat16, float32 or float64, got ", dt);
  const int64_t B = logits.size(0), V = logits.size(1);
  TORCH_CHECK(V >= 1, op, ": logits must have at least one token (V >= 1)");
  check_row_vector(op, "temperature", temperature_in, B, at::kDouble);
  check_row_vector(op, "top_k", top_k_in, B, at::kLong);
  check_row_vector(op, "top_p", top_p_in, B, at::kDouble);
  TORCH_CHECK(keep_in.device().is_cpu() && keep_in.dim() == 2 && keep_in.size(0) == B &&
                  keep_in.scalar_type() == at::kLong,
              op, ": keep must be an int64 CPU tensor of shape (B, K), got ", keep_in.sizes(), " ",
              keep_in.scalar_type());
  const at::Tensor temperature = temperature_in.contiguous(), top_k = top_k_in.contiguous(),
                   top_p = top_p_in.contiguous(), keep = keep_in.contiguous();
  const double* tp = temperature.const_data_ptr<double>();
  const double* pp = top_p.const_data_ptr<double>();
  const int64_t* kp = keep.const_data_ptr<int64_t>();
  const int64_t K = keep.size(1);
  for (int64_t r = 0; r < B; ++r) {
    TORCH_CHECK(tp[r] > 0.0 && std::isfinite(tp[r]), op, ": temperature must be > 0 and finite, got ", tp[r],
                " (row ", r, ")");
    TORCH_CHECK(pp[r] > 0.0 && pp[r] <= 1.0, op, ": top_p must be in (0, 1], got ", pp[r], " (row ", r, ")");
    for (int64_t c = 0; c < K; ++c) {
      const int64_t id = kp[r * K + c];
      TORCH_CHECK(id >= -1 && id < V, op, ": keep id ", id, " is out of range: token ids must be in [0, ", V,
                  ") (-1 = none)");
    }
  }
  at::Tensor uniform;
  if (uniform_in) {
    check_row_vector(op, "uniform", *uniform_in, B, at::kDouble);
    uniform = uniform_in->contiguous();
  }
  const auto acc = dt == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor tokens = uniform_in ? at::empty({B}, logits.options().dtype(at::kLong)) : at::Tensor();
  at::Tensor probs = uniform_in ? at::Tensor() : at::empty({B, V}, logits.options().dtype(acc));
  std::atomic<int64_t> bad_row{-1};
  std::atomic<int> bad_kind{kOk};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dt, "kexue_sampling_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const SampleJob<scalar_t, acc_t> job{logits.const_data_ptr<scalar_t>(),
                                         logits.stride(0),
                                         logits.stride(1),
                                         V,
                                         tp,
                                         top_k.const_data_ptr<int64_t>(),
                                         pp,
                                         kp,
                                         K,
                                         uniform_in ? uniform.const_data_ptr<double>() : nullptr,
                                         uniform_in ? tokens.data_ptr<int64_t>() : nullptr,
                                         uniform_in ? nullptr : probs.data_ptr<acc_t>(),
                                         &bad_row,
                                         &bad_kind};
    const cpu::Isa isa = cpu::cpu_isa();
    const int64_t grain = std::max<int64_t>(1, kGrainElements / V);
    at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
      KEXUE_CPU_DISPATCH(isa, sample_range, (job, begin, end));
    });
  });
  const int64_t br = bad_row.load();
  TORCH_CHECK(br < 0 || bad_kind.load() != kNonFinite, op, ": logits row ", br,
              " contains NaN or +inf (only -inf, a masked token, is allowed)");
  TORCH_CHECK(br < 0, op, ": logits row ", br, " is all -inf: every token is masked, none can be sampled");
  return {tokens, probs};
}

at::Tensor sampling_probs_cpu(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                              const at::Tensor& top_p, const at::Tensor& keep) {
  return std::get<1>(run_sampling("kexue.decoding.sampling_probs", logits, temperature, top_k, top_p, keep, nullptr));
}

at::Tensor sample_cpu(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
                      const at::Tensor& top_p, const at::Tensor& keep, const at::Tensor& uniform) {
  return std::get<0>(run_sampling("kexue.sample", logits, temperature, top_k, top_p, keep, &uniform));
}

}  // namespace

TORCH_LIBRARY_IMPL(kexue, CPU, m) {
  m.impl("sampling_probs", &sampling_probs_cpu);
  m.impl("sample", &sample_cpu);
}

}  // namespace kexue
