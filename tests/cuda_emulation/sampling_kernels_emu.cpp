// Host emulation of the CUDA sampling kernel (csrc/sampling/sampling_kernels.cu) for machines
// without a GPU: the real launcher (launch_sampling) and kernel, compiled by g++ on the CUDA
// stand-ins of cuda_host_emu.h, against a reference written here from pyext/decoding/reference.py
// (float64, sort-based): candidates x >= the k-th largest x (ties kept); w = exp((x − max x) / T);
// τ = the weight at the first descending position whose cumulative mass reaches p·Z; kept =
// candidates with w >= τ, plus the keep ids; q = w / Σ kept; the token = the inverse CDF at u in
// token order.  Checked: the kept set (exact), q (2e-6 absolute: float32 sums), the token (exact),
// bad rows (NaN, +inf, all −inf) giving −1.  Shapes across one and several CTA tiles, strided
// logits, every dtype, per-row parameters, ties and −inf masks, temperatures from 1e-300 (float32
// rounds it to 0: the greedy limit) to 1e38 (on logits near 1e38).
// Built and run by tests/test_sampling_cuda_emulation.py; exit status 1 on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "cuda_host_emu.h"
#include "sampling/sampling_kernels.cu"

using namespace kexue::sampling;
using kexue_emu::fromf;
using kexue_emu::tof;

int g_fail = 0;

struct RowRef {
  std::vector<double> q;
  int64_t token = -1;
  bool bad = false;
};

RowRef reference_row(const std::vector<float>& x, double T, int64_t k, double p, const std::vector<int64_t>& keep,
                     double u) {
  RowRef out;
  const int64_t V = static_cast<int64_t>(x.size());
  std::vector<double> a(V);
  double m = -INFINITY;
  for (int64_t i = 0; i < V; ++i) {
    a[i] = static_cast<double>(x[i]);  // the logits: top-k on them (the order of x / T)
    if (std::isnan(a[i]) || a[i] == INFINITY) out.bad = true;
    m = std::max(m, a[i]);
  }
  if (out.bad || m == -INFINITY) {
    out.bad = true;
    return out;
  }
  double theta = -INFINITY;
  if (k > 0 && k < V) {
    std::vector<double> s(a);
    std::sort(s.begin(), s.end(), std::greater<double>());
    theta = s[k - 1];
  }
  std::vector<double> w(V), wc(V);
  double Z = 0;
  for (int64_t i = 0; i < V; ++i) {
    w[i] = a[i] == m ? 1.0 : std::exp((a[i] - m) / T);  // (no overflow in double for float logits)
    wc[i] = a[i] >= theta ? w[i] : 0.0;
    Z += wc[i];
  }
  double tau = 0;
  if (p < 1.0) {
    std::vector<double> s(wc);
    std::sort(s.begin(), s.end(), std::greater<double>());
    double c = 0;
    for (double v : s) {
      c += v;
      if (c >= p * Z) {
        tau = v;
        break;
      }
    }
  }
  out.q.assign(V, 0.0);
  double ZK = 0;
  for (int64_t i = 0; i < V; ++i) {
    bool kept = a[i] >= theta && wc[i] >= tau;
    for (int64_t e : keep) kept |= e == i;
    out.q[i] = kept ? w[i] : 0.0;
    ZK += out.q[i];
  }
  for (int64_t i = 0; i < V; ++i) out.q[i] /= ZK;
  double c = 0;
  for (int64_t i = 0; i < V; ++i) {
    if (out.q[i] > 0) {
      c += out.q[i];
      out.token = i;
      if (c > u) break;
    }
  }
  return out;
}

template <typename T>
void sampling_case(unsigned seed, int64_t B, int64_t V, bool strided, int64_t top_k, double top_p, int K,
                   bool per_row, bool ties, bool bad_rows, double T0 = 0.8, float scale = 3.f, float offset = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> N(0.f, scale);
  std::uniform_real_distribution<double> U(0.0, 1.0);
  const int64_t s1 = strided ? B : 1, s0 = strided ? 1 : V;  // column-major when strided
  std::vector<T> x(size_t(B * V));
  std::vector<std::vector<float>> rows(B, std::vector<float>(V));
  for (int64_t r = 0; r < B; ++r)
    for (int64_t i = 0; i < V; ++i) {
      float v = ties ? std::round(N(rng) / 2.f) : N(rng);  // (round: -0.0 for small negatives)
      if (offset != 0.f) v += offset;  // (not + 0: that would turn -0.0 into +0.0)
      if (i % 7 == 3 && r % 2 == 1) v = -INFINITY;
      const T t = fromf<T>(v);
      x[size_t(r * s0 + i * s1)] = t;
      rows[r][i] = tof(t);
    }
  if (bad_rows && B >= 3) {
    for (int64_t i = 0; i < V; ++i) {
      x[size_t(0 * s0 + i * s1)] = fromf<T>(-INFINITY);
      rows[0][i] = -INFINITY;
    }
    x[size_t(1 * s0 + (V / 2) * s1)] = fromf<T>(NAN);
    rows[1][V / 2] = NAN;
    x[size_t(2 * s0 + (V - 1) * s1)] = fromf<T>(INFINITY);
    rows[2][V - 1] = INFINITY;
  }
  std::vector<double> temp(B), topp(B), uni(B);
  std::vector<int64_t> topk(B), keep(size_t(B * K));
  for (int64_t r = 0; r < B; ++r) {
    temp[r] = per_row ? 0.5 + U(rng) : T0;
    topk[r] = per_row ? (r % 3 == 0 ? 0 : 1 + int64_t(U(rng) * V)) : top_k;
    topp[r] = per_row ? (r % 4 == 0 ? 1.0 : 0.05 + 0.95 * U(rng)) : top_p;
    uni[r] = U(rng);
    for (int c = 0; c < K; ++c) keep[size_t(r * K + c)] = (c == K - 1 && r % 2) ? -1 : int64_t(U(rng) * V);
  }
  std::vector<int64_t> tokens(B, -7), tokens2(B, -7);
  std::vector<float> probs(size_t(B * V), NAN);
  SamplingParams p;
  p.dtype = std::is_same_v<T, float> ? DType::kFloat32 : std::is_same_v<T, __half> ? DType::kFloat16 : DType::kBFloat16;
  p.logits = x.data();
  p.B = B;
  p.V = V;
  p.stride0 = s0;
  p.stride1 = s1;
  p.temperature = temp.data();
  p.top_k = topk.data();
  p.top_p = topp.data();
  p.keep = keep.data();
  p.K = K;
  p.uniform = uni.data();
  p.tokens = tokens.data();
  p.probs = probs.data();
  cudaError_t e = launch_sampling(p, nullptr);
  p.probs = nullptr;  // the tokens-only path (it stops at the drawn tile)
  p.tokens = tokens2.data();
  const cudaError_t e2 = launch_sampling(p, nullptr);
  bool ok = e == cudaSuccess && e2 == cudaSuccess;
  double worst = 0;
  int set_diff = 0, tok_diff = 0;
  for (int64_t r = 0; r < B; ++r) {
    std::vector<int64_t> kr;
    for (int c = 0; c < K; ++c)
      if (keep[size_t(r * K + c)] >= 0) kr.push_back(keep[size_t(r * K + c)]);
    const RowRef ref = reference_row(rows[r], temp[r], topk[r], topp[r], kr, uni[r]);
    if (ref.bad) {
      ok &= tokens[r] == -1 && tokens2[r] == -1;
      continue;
    }
    for (int64_t i = 0; i < V; ++i) {
      const double q = probs[size_t(r * V + i)];
      set_diff += (q > 0) != (ref.q[i] > 0);
      worst = std::max(worst, std::isnan(q) ? INFINITY : std::fabs(q - ref.q[i]));
    }
    tok_diff += tokens[r] != ref.token || tokens2[r] != ref.token;
  }
  ok &= set_diff == 0 && tok_diff == 0 && worst <= 2e-6;
  g_fail += !ok;
  printf("%s sampling %s B=%ld V=%ld strided=%d top_k=%ld top_p=%.2f K=%d per_row=%d ties=%d bad=%d T=%g: "
         "set_diff=%d tok_diff=%d max|dq|=%.2g\n",
         ok ? "PASS" : "FAIL", kexue_emu::dtype_name<T>(), long(B), long(V), int(strided), long(top_k), top_p, K,
         int(per_row), int(ties), int(bad_rows), per_row ? -1.0 : T0, set_diff, tok_diff, worst);
}

int main() {
  unsigned seed = 1;
  struct S { int64_t B, V; };
  const S shapes[] = {{1, 1}, {2, 2}, {3, 7}, {4, 257}, {3, 700}};
  for (const auto& s : shapes) {
    sampling_case<float>(seed++, s.B, s.V, false, 0, 1.0, 0, false, false, false);   // plain softmax
    sampling_case<float>(seed++, s.B, s.V, false, 5, 1.0, 0, false, false, false);   // top-k
    sampling_case<float>(seed++, s.B, s.V, true, 0, 0.7, 1, false, false, false);    // top-p, strided, keep
    sampling_case<__half>(seed++, s.B, s.V, false, 50, 0.9, 2, false, false, false);
    sampling_case<__nv_bfloat16>(seed++, s.B, s.V, true, 3, 0.3, 2, false, true, false);  // ties
    sampling_case<float>(seed++, s.B, s.V, false, 0, 1.0, 2, true, true, false);     // per-row parameters
  }
  sampling_case<float>(seed++, 5, 300, false, 10, 0.8, 1, false, false, true);       // bad rows
  sampling_case<__half>(seed++, 4, 300, true, 0, 0.5, 0, false, false, true);
  // temperatures that overflow x / T: tiny ones are the greedy limit (ties share it), a huge one
  // on logits near 1e38
  sampling_case<float>(seed++, 3, 257, false, 0, 1.0, 1, false, false, false, 1e-40);
  sampling_case<float>(seed++, 3, 257, false, 5, 0.5, 1, false, true, false, 1e-300);
  sampling_case<__half>(seed++, 3, 257, false, 0, 0.9, 0, false, true, false, 1e-6);
  sampling_case<float>(seed++, 3, 257, true, 0, 0.9, 1, false, false, false, 1e38, 1e37f);
  // a temperature above float's range (inf in float) with masked tokens and keep ids: the uniform
  // limit, not -inf / inf = NaN; T > 1 on large logits: the float accuracy of (x - m) / T, not of
  // the quotients x / T and m / T (bench/fuzz_ops.py --op sample)
  sampling_case<float>(seed++, 4, 257, false, 0, 1.0, 2, false, false, false, 1e39);
  sampling_case<float>(seed++, 4, 257, false, 0, 0.9, 1, false, false, false, 1e300);
  sampling_case<float>(seed++, 4, 300, false, 0, 1.0, 0, false, false, false, 3.0, 3.f, 1e4f);
  sampling_case<float>(seed++, 4, 300, false, 5, 0.9, 1, false, false, false, 1.5, 3.f, -3e3f);
  // ties at theta_k = 0 among -0.0 and +0.0 (round() of small negatives): equal floats, both kept
  sampling_case<float>(seed++, 4, 64, false, 8, 1.0, 0, false, true, false, 0.8, 0.5f);
  sampling_case<__half>(seed++, 4, 64, true, 5, 0.9, 1, false, true, false, 0.8, 0.5f);
  printf("%d failed, %d launches, %d emulation errors\n", g_fail, kexue_emu::g_launches, kexue_emu::g_errors);
  return g_fail != 0 || kexue_emu::g_errors != 0;
}
