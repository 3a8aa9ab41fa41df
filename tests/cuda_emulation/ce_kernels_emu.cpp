// Host emulation of the CUDA cross-entropy kernels (csrc/cross_entropy/ce_kernels.cuh) for
// machines without a GPU: the real kernel source and launchers (run_fwd / run_bwd) compiled by
// g++ on the CUDA stand-ins of cuda_host_emu.h (every CUDA thread a fiber, warp shuffles and
// __syncthreads barriers, CTAs one after another).  Each case runs the forward
// and the backward (out of place or in place) and compares loss, lse, gradient and the error
// word with a float64 reference.  Covers row groups of 32..1024 threads, contiguous /
// misaligned / strided rows, misaligned bias and weights, all dtypes, smoothing, z-loss,
// ignored rows, out-of-range targets, -inf and ±1e4 logits.  It checks the algorithm and the
// indexing, not the GPU's memory model or timing (compute-sanitizer on a GPU does that).
// Built and run by tests/test_cross_entropy_cuda_emulation.py; exit status 1 on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_host_emu.h"
#include "cross_entropy/ce_kernels.cuh"

using namespace kexue::ce;
using namespace kexue::ce::detail;
using kexue_emu::fromf;
using kexue_emu::tof;

int g_fail = 0;
double g_worst = 0;

// layout: 0 contiguous, 1 misaligned rows (row stride C+1, +1 offset), 2 strided (stride1 = 2)
template <class T>
void run_case(int64_t N, int64_t C, int layout, bool bias_on, bool bias_misaligned, bool w_on, float eps, float z,
              bool inplace, bool huge, int sms, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 3.f);
  int64_t s0, s1, off;
  if (layout == 0) { s0 = C; s1 = 1; off = 0; }
  else if (layout == 1) { s0 = C + 1; s1 = 1; off = 1; }
  else { s0 = 2 * C; s1 = 2; off = 0; }
  // 16-byte aligned storage
  std::vector<uint4> store((N * s0 + off + 64) * sizeof(T) / 16 + 2);
  T* buf = reinterpret_cast<T*>(store.data());
  T* logits = buf + off;
  for (int64_t i = 0; i < N; ++i) for (int64_t c = 0; c < C; ++c) logits[i * s0 + c * s1] = fromf<T>(nd(rng));
  if (huge) {  // ±1e4 with O(1) differences (as rounded in T)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c) {
        const float x = tof(logits[i * s0 + c * s1]);
        logits[i * s0 + c * s1] = fromf<T>((x < 0 ? -1e4f : 1e4f) + x / 3);
      }
  }
  if (N > 1 && C > 3) logits[1 * s0 + 2 * s1] = fromf<T>(-INFINITY);
  std::vector<int64_t> target(N);
  for (int64_t i = 0; i < N; ++i) target[i] = std::uniform_int_distribution<int64_t>(0, C - 1)(rng);
  if (N > 2) target[2] = -100;
  if (N > 3) target[3] = C;  // out of range
  if (N > 1 && C > 3) target[1] = 0;
  std::vector<float> biasv(C + 4), wv(C + 4);
  for (auto& b : biasv) b = nd(rng) / 3;
  for (auto& w : wv) w = 0.5f + std::uniform_real_distribution<float>(0, 1)(rng);
  const float* bias = bias_on ? biasv.data() + (bias_misaligned ? 1 : 0) : nullptr;
  const float* wt = w_on ? wv.data() + (bias_misaligned ? 3 : 0) : nullptr;
  std::vector<float> loss(N, NAN), lse(N, NAN), g(N);
  for (auto& x : g) x = std::uniform_real_distribution<float>(-1, 2)(rng);
  unsigned long long err = kNoErrorRow;
  CrossEntropyParams p;
  p.N = N; p.C = C; p.label_smoothing = eps; p.z_loss = z; p.ignore_index = -100;
  p.logits = logits; p.logits_stride0 = s0; p.logits_stride1 = s1;
  p.target = target.data(); p.target_stride = 1; p.bias = bias; p.weight = wt;
  p.loss = loss.data(); p.lse = lse.data(); p.error_row = &err;
  const LaunchShape ls = launch_shape(N, C, sms);
  std::vector<T> orig(logits - off, logits - off + N * s0 + off);  // copy for reference
  auto L = [&](int64_t i, int64_t c) { return (double)tof(orig[off + i * s0 + c * s1]) + (bias ? bias[c] : 0.0); };
  bool launch_ok = run_fwd<T>(p, sms, nullptr) == cudaSuccess;
  // backward
  std::vector<T> outbuf(N * C);
  p.grad_loss = g.data(); p.grad_loss_stride = 1; p.lse_in = lse.data(); p.lse_in_stride = 1;
  if (inplace) { p.grad = logits; p.grad_stride0 = s0; p.grad_stride1 = s1; }
  else { p.grad = outbuf.data(); p.grad_stride0 = C; p.grad_stride1 = 1; }
  float wsum = 0; if (wt) for (int64_t c = 0; c < C; ++c) wsum += wt[c];
  launch_ok = run_bwd<T>(p, &wsum, sms, nullptr) == cudaSuccess && launch_ok;
  // reference
  const double tol_out = sizeof(T) == 4 ? 1e-5 : (sizeof(T) == 2 && std::is_same_v<T, __half> ? 2e-3 : 1.6e-2);
  double worst = 0; bool ok = launch_ok; char why[256] = "";
  if (!launch_ok) snprintf(why, sizeof why, "launch failed");
  for (int64_t i = 0; i < N; ++i) {
    double M = -INFINITY; for (int64_t c = 0; c < C; ++c) M = std::max(M, L(i, c));
    double S = 0; for (int64_t c = 0; c < C; ++c) S += std::exp(L(i, c) - M);
    const double rl = M + std::log(S);
    double e = std::fabs(lse[i] - rl) / std::max(1.0, std::fabs(rl));
    if (!(e < 2e-6)) { ok = false; snprintf(why, sizeof why, "lse row %ld: %g vs %g", (long)i, lse[i], rl); }
    worst = std::max(worst, e);
    const int64_t y = target[i];
    double rloss;
    if (y == -100) rloss = 0; else if (y < 0 || y >= C) rloss = NAN;
    else {
      const double wy = wt ? wt[y] : 1.0;
      rloss = (1 - eps) * wy * (rl - L(i, y));
      if (eps != 0) { double s = 0; for (int64_t c = 0; c < C; ++c) s += (wt ? wt[c] : 1.0) * (rl - L(i, c)); rloss += eps / C * s; }
      rloss += z * rl * rl;
    }
    if (std::isnan(rloss)) { if (!std::isnan(loss[i])) { ok = false; snprintf(why, sizeof why, "row %ld loss not NaN", (long)i); } }
    else if (std::isinf(rloss)) { if (loss[i] != rloss) { ok = false; snprintf(why, sizeof why, "row %ld loss %g vs inf", (long)i, loss[i]); } }
    else { e = std::fabs(loss[i] - rloss) / std::max(1.0, std::fabs(rl)); worst = std::max(worst, e);
      if (!(e < 1e-5)) { ok = false; snprintf(why, sizeof why, "loss row %ld: %g vs %g", (long)i, loss[i], rloss); } }
    // gradient
    const double Wsum = wt ? (double)wsum : (double)C;
    for (int64_t c = 0; c < C; ++c) {
      const float got = inplace ? tof(logits[i * s0 + c * s1]) : tof(outbuf[i * C + c]);
      double r;
      if (y == -100) r = 0; else if (y < 0 || y >= C) r = NAN;
      else {
        const double wy = wt ? wt[y] : 1.0, wc = wt ? wt[c] : 1.0;
        const double coef = g[i] * ((1 - eps) * wy + eps * Wsum / C + 2 * z * rl);
        r = coef * std::exp(L(i, c) - rl) - g[i] * eps / C * wc - (c == y ? g[i] * (1 - eps) * wy : 0.0);
      }
      if (std::isnan(r)) { if (!std::isnan(got)) { ok = false; snprintf(why, sizeof why, "grad row %ld not NaN", (long)i); } continue; }
      const double scale = std::fabs(g[i]) * (1 + 2 * z * std::fabs(rl)) * std::max(1.0, wt ? 1.5 : 1.0);
      e = std::fabs(got - r) / std::max(scale, 1e-30);
      const double sub = std::is_same_v<T, __half> ? 6e-8 : 0.0;  // fp16 subnormal step
      // float32 lse and a + bias carry an absolute rounding of ~|lse|·6e-8 into the exponent
      const double rel = tol_out + 3e-7 * std::fabs(rl);
      const double allowed = 2e-6 + (rel * std::fabs(r) + sub) / std::max(scale, 1e-30);
      worst = std::max(worst, e - rel * std::fabs(r) / std::max(scale, 1e-30));
      if (!(e <= allowed)) { ok = false; snprintf(why, sizeof why, "grad[%ld,%ld]: %g vs %g", (long)i, (long)c, got, r); }
    }
  }
  unsigned long long expect_err = N > 3 ? 3ull : kNoErrorRow;
  if (err != expect_err) { ok = false; snprintf(why, sizeof why, "error_row %llu, expected %llu", err, expect_err); }
  g_worst = std::max(g_worst, worst);
  printf("%s T=%d N=%ld C=%ld layout=%d bias=%d%s w=%d eps=%.2f z=%g inplace=%d huge=%d group=%d threads=%d worst=%.2g %s\n",
         ok ? "PASS" : "FAIL", (int)sizeof(T) * (std::is_same_v<T, __half> ? -1 : 1), (long)N, (long)C, layout,
         bias_on, bias_misaligned ? "(misaligned)" : "", w_on, eps, z, inplace, huge, ls.group, ls.threads, worst, why);
  g_fail += !ok;
}

int main() {
  struct Shape { int64_t N, C; int sms; };
  const Shape shapes[] = {{5, 1, 100}, {6, 7, 100}, {9, 37, 100}, {5, 300, 100}, {6, 2100, 100}, {4, 5003, 1}, {3, 9000, 1},
                          {2, 20000, 1}, {2, 33000, 1000}};
  unsigned seed = 1;
  for (const auto& s : shapes) {
    for (int layout = 0; layout < 3; ++layout) {
      for (int variant = 0; variant < 4; ++variant) {
        const bool bias = variant != 0, misal = variant == 3, w = variant >= 2;
        const float eps = (variant == 1 || variant == 3) ? 0.1f : 0.f;
        const float z = variant == 2 ? 1e-3f : 0.f;
        const bool inplace = (variant + layout) % 2 == 1;
        const bool huge = seed % 5 == 0;
        switch ((variant + layout + seed) % 3) {
          case 0: run_case<float>(s.N, s.C, layout, bias, misal, w, eps, z, inplace, huge, s.sms, seed); break;
          case 1: run_case<__half>(s.N, s.C, layout, bias, misal, w, eps, z, inplace, huge, s.sms, seed); break;
          default: run_case<__nv_bfloat16>(s.N, s.C, layout, bias, misal, w, eps, z, inplace, huge, s.sms, seed); break;
        }
        ++seed;
      }
    }
  }
  printf("%d failed, worst %.3g, %d emulation errors\n", g_fail, g_worst, kexue_emu::g_errors);
  return g_fail != 0 || kexue_emu::g_errors != 0;
}
