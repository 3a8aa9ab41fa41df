// Host emulation of the CUDA kernels of the perturbed-masking probe (csrc/probe/probe_kernels.cu)
// for machines without a GPU: the real launchers (launch_masked_batch, launch_segment_distance,
// segment_distance_workspace_bytes) and their kernels, compiled by g++ on the CUDA stand-ins of
// cuda_host_emu.h, against a reference written here from pyext/probe/kernels_reference.py:
//   masked_batch: rows (s, i, j) -> the sentence's tokens with words i and j masked, padding and
//     attention mask; invalid rows (every way masked_batch_problems lists) come out as padding
//     and set the error word; with error == nullptr no validation pass.
//   segment_distance: d_k = ‖a − b‖ or 1 − a·b / max(‖a‖‖b‖, 1e-8) (float64 on the rounded
//     inputs), out[s] = mean of d_k over seg[k] = s (0 when empty); out-of-range indices skipped
//     with the error word set.  Row layouts that take the 16-byte vector path and the strided /
//     misaligned scalar path, all dtypes.  Tolerance: 1e-5 relative (float32 sums) + 2e-6.
// Built and run by tests/test_probe_cuda_emulation.py; exit status 1 on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_host_emu.h"
#include "probe/probe_kernels.cu"

using namespace kexue::probe;
using kexue_emu::fromf;
using kexue_emu::tof;

int g_fail = 0;

// ---- masked_batch ---------------------------------------------------------------------------
void masked_batch_case(unsigned seed, int nsent, int K, int64_t length, bool corrupt, bool with_error) {
  std::mt19937 rng(seed);
  auto U = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  std::vector<int64_t> tokens, tok_off{0}, word_off{0}, wstart, wend;
  for (int s = 0; s < nsent; ++s) {
    const int64_t n = U(0, 14);
    for (int64_t t = 0; t < n; ++t) tokens.push_back(U(100, 30000));
    tok_off.push_back(static_cast<int64_t>(tokens.size()));
    // words: consecutive spans of 1..3 tokens inside [1, n - 1) (like [CLS] ... [SEP]), some empty
    int64_t t = std::min<int64_t>(1, n);
    while (t < n - 1) {
      const int64_t len = U(0, 3);
      const int64_t e = std::min(t + len, n - 1);
      wstart.push_back(t);
      wend.push_back(e);
      t = e + (len == 0 ? 1 : 0);
    }
    word_off.push_back(static_cast<int64_t>(wstart.size()));
  }
  std::vector<int64_t> seqs;
  for (int k = 0; k < K; ++k) {
    const int64_t s = U(0, nsent - 1);
    const int64_t W = word_off[s + 1] - word_off[s];
    const int64_t i = W > 0 ? U(-1, W - 1) : -1, j = W > 0 ? U(-1, W - 1) : -1;
    seqs.insert(seqs.end(), {s, i, j});
  }
  if (corrupt && K >= 6) {  // one row per kind of invalid index
    seqs[3 * 0] = nsent;                                // sentence out of range
    seqs[3 * 1 + 0] = -1;                               // negative sentence
    seqs[3 * 2 + 1] = word_off[seqs[3 * 2] + 1] - word_off[seqs[3 * 2]];  // word i out of range
    seqs[3 * 3 + 2] = -2;                               // word j below -1
    if (!wstart.empty()) {                              // a word span outside its sentence
      seqs[3 * 4] = 0;
      while (seqs[3 * 4] < nsent && word_off[seqs[3 * 4] + 1] == word_off[seqs[3 * 4]]) ++seqs[3 * 4];
      if (seqs[3 * 4] < nsent) {
        const int64_t s = seqs[3 * 4];
        wend[word_off[s]] = tok_off[s + 1] - tok_off[s] + 1;
        seqs[3 * 4 + 1] = 0;
      }
    }
  }
  // the reference (kernels_reference.masked_batch_reference / masked_batch_problems)
  const int64_t L = static_cast<int64_t>(tokens.size()), W = static_cast<int64_t>(wstart.size());
  std::vector<int64_t> ids_ref(size_t(K) * length), am_ref(size_t(K) * length);
  bool any_bad = false;
  for (int k = 0; k < K; ++k) {
    const int64_t s = seqs[3 * k], wi = seqs[3 * k + 1], wj = seqs[3 * k + 2];
    bool ok = s >= 0 && s < nsent;
    int64_t t0 = 0, n = 0, w0 = 0, w1 = 0;
    if (ok) {
      t0 = tok_off[s];
      n = tok_off[s + 1] - t0;
      ok = t0 >= 0 && t0 <= tok_off[s + 1] && tok_off[s + 1] <= L && n <= length;
    }
    if (ok) {
      w0 = word_off[s];
      w1 = word_off[s + 1];
      ok = w0 >= 0 && w0 <= w1 && w1 <= W;
    }
    int64_t span[2][2] = {{0, 0}, {0, 0}};
    for (int q = 0; q < 2 && ok; ++q) {
      const int64_t w = q == 0 ? wi : wj;
      if (w < -1 || w >= w1 - w0) { ok = false; break; }
      if (w >= 0) {
        span[q][0] = wstart[w0 + w];
        span[q][1] = wend[w0 + w];
        if (span[q][0] < 0 || span[q][0] > span[q][1] || span[q][1] > n) ok = false;
      }
    }
    any_bad |= !ok;
    for (int64_t t = 0; t < length; ++t) {
      const bool inside = ok && t < n;
      const bool masked = (t >= span[0][0] && t < span[0][1]) || (t >= span[1][0] && t < span[1][1]);
      ids_ref[k * length + t] = inside ? (masked ? 103 : tokens[t0 + t]) : 0;
      am_ref[k * length + t] = inside;
    }
  }
  std::vector<int64_t> ids(size_t(K) * length, -5), am(size_t(K) * length, -5);
  int32_t err = 0;
  MaskedBatchParams p;
  p.tokens = tokens.data(); p.num_tokens = L;
  p.tok_offsets = tok_off.data(); p.word_offsets = word_off.data(); p.num_sentences = nsent;
  p.word_start = wstart.data(); p.word_end = wend.data(); p.num_words = W;
  p.seqs = seqs.data(); p.K = K; p.mask_id = 103; p.pad_id = 0; p.length = length;
  p.input_ids = ids.data(); p.attention_mask = am.data(); p.error = with_error ? &err : nullptr;
  const cudaError_t e = launch_masked_batch(p, nullptr);
  bool ok = e == cudaSuccess && ids == ids_ref && am == am_ref && (!with_error || err == (any_bad ? 1 : 0));
  printf("%s masked_batch sentences=%d K=%d length=%ld invalid_rows=%d error_word=%d(err=%d)\n", ok ? "PASS" : "FAIL",
         nsent, K, (long)length, (int)any_bad, (int)with_error, err);
  g_fail += !ok;
}

// ---- segment_distance ---------------------------------------------------------------------------
// layout 0: contiguous rows, 16-byte aligned; 1: row stride D + 8 (aligned); 2: column stride 2;
// 3: base one element off 16 bytes
template <class T>
void segdist_case(unsigned seed, int64_t R, int64_t R2, int64_t D, int64_t K, int64_t S, bool cos, int layout,
                  bool bad_index, bool zero_rows) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  auto U = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int64_t s1 = layout == 2 ? 2 : 1;
  const int64_t s0 = layout == 1 ? D + 8 : layout == 2 ? 2 * D + 1 : D;
  const int64_t off = layout == 3 ? 1 : 0;
  auto make = [&](int64_t rows, std::vector<uint4>& store) {
    store.assign(size_t((rows * s0 + off + 16) * sizeof(T) / 16 + 2), uint4{});
    T* base = reinterpret_cast<T*>(store.data()) + off;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < D; ++d) base[r * s0 + d * s1] = fromf<T>(nd(rng) + (r % 3 == 0 ? 0.5f : 0.f));
    return base;
  };
  std::vector<uint4> hs, rs;
  T* h = make(R, hs);
  T* ref = make(R2, rs);
  if (zero_rows) {  // a zero row in each (cos: the clamp; dist: a = b)
    for (int64_t d = 0; d < D; ++d) h[0 * s0 + d * s1] = fromf<T>(0.f);
    for (int64_t d = 0; d < D; ++d) ref[0 * s0 + d * s1] = fromf<T>(0.f);
  }
  std::vector<int64_t> rows(K), ref_rows(K), seg(K);
  for (int64_t k = 0; k < K; ++k) {
    rows[k] = U(0, R - 1);
    ref_rows[k] = U(0, R2 - 1);
    seg[k] = U(0, std::max<int64_t>(S - 2, 0));  // the last segment stays empty
  }
  if (zero_rows && K > 2) { rows[0] = 0; ref_rows[0] = 0; rows[1] = 0; }
  if (bad_index && K > 3) { rows[1] = R; ref_rows[2] = -1; seg[3] = S; }
  // reference
  std::vector<double> sum(S, 0.0);
  std::vector<int64_t> cnt(S, 0);
  bool any_bad = false;
  for (int64_t k = 0; k < K; ++k) {
    if (rows[k] < 0 || rows[k] >= R || ref_rows[k] < 0 || ref_rows[k] >= R2 || seg[k] < 0 || seg[k] >= S) {
      any_bad = true;
      continue;
    }
    double ab = 0, aa = 0, bb = 0, dd = 0;
    for (int64_t d = 0; d < D; ++d) {
      const double a = tof(h[rows[k] * s0 + d * s1]), b = tof(ref[ref_rows[k] * s0 + d * s1]);
      ab += a * b; aa += a * a; bb += b * b; dd += (a - b) * (a - b);
    }
    sum[seg[k]] += cos ? 1 - ab / std::max(std::sqrt(aa) * std::sqrt(bb), 1e-8) : std::sqrt(dd);
    ++cnt[seg[k]];
  }
  std::vector<float> out(S, NAN);
  int32_t err = 0;
  SegmentDistanceParams p;
  p.dtype = std::is_same_v<T, float> ? DType::kFloat32 : std::is_same_v<T, __half> ? DType::kFloat16 : DType::kBFloat16;
  p.metric = cos ? Metric::kCos : Metric::kDist;
  p.h = h; p.h_rows = R; p.h_stride0 = s0; p.h_stride1 = s1;
  p.ref = ref; p.ref_rows_count = R2; p.ref_stride0 = s0; p.ref_stride1 = s1;
  p.D = D; p.rows = rows.data(); p.ref_rows = ref_rows.data(); p.seg = seg.data(); p.K = K; p.num_segments = S;
  p.out = out.data(); p.error = &err;
  const size_t wsb = segment_distance_workspace_bytes(p);
  std::vector<uint4> ws(wsb / 16 + 1);
  memset(ws.data(), 0xab, ws.size() * 16);  // garbage: the launcher zeroes it
  const cudaError_t e = launch_segment_distance(p, ws.data(), wsb, nullptr);
  bool ok = e == cudaSuccess && err == (any_bad ? 1 : 0);
  double worst = 0;
  for (int64_t s = 0; s < S; ++s) {
    const double r = cnt[s] ? sum[s] / cnt[s] : 0.0;
    const double allowed = 1e-5 * std::fabs(r) + 2e-6;
    const double d = std::fabs(out[s] - r);
    worst = std::max(worst, std::isnan(d) ? INFINITY : d / allowed);
    if (!(d <= allowed)) ok = false;
  }
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = s1 == 1 && D % kVec == 0 && s0 % kVec == 0 && off == 0;
  printf("%s segment_distance %s %s R=%ld R2=%ld D=%ld K=%ld S=%ld layout=%d (%s) bad_index=%d zero_rows=%d err=%d "
         "worst=%.2g\n",
         ok ? "PASS" : "FAIL", kexue_emu::dtype_name<T>(), cos ? "cos" : "dist", (long)R, (long)R2, (long)D, (long)K,
         (long)S, layout, vec ? "vector loads" : "scalar loads", (int)bad_index, (int)zero_rows, err, worst);
  g_fail += !ok;
}

int main() {
  unsigned seed = 1;
  // masked_batch: sentence count, rows, length, invalid rows, error word
  masked_batch_case(seed++, 5, 40, 16, false, true);
  masked_batch_case(seed++, 7, 300, 18, true, true);   // > 1 block of threads; invalid rows
  masked_batch_case(seed++, 7, 300, 18, true, false);  // no validation pass
  masked_batch_case(seed++, 3, 9, 10, false, true);    // some sentences longer than length: invalid
  masked_batch_case(seed++, 4, 6, 0, false, true);     // length 0: validation only
  masked_batch_case(seed++, 1, 1, 1, false, true);
  // segment_distance
  struct S { int64_t R, R2, D, K, S; };
  const S shapes[] = {{5, 4, 16, 40, 6}, {9, 3, 33, 300, 17}, {3, 3, 8, 7, 3}, {4, 6, 768, 20, 5},
                      {2, 2, 1, 5, 2}, {3, 2, 0, 4, 3}, {6, 5, 64, 0, 4}};
  for (const auto& s : shapes)
    for (int layout = 0; layout < 4; ++layout)
      for (int cos = 0; cos < 2; ++cos) {
        const bool bad = seed % 3 == 0, zero = seed % 4 == 1;
        switch (seed % 3) {
          case 0: segdist_case<float>(seed, s.R, s.R2, s.D, s.K, s.S, cos, layout, bad, zero); break;
          case 1: segdist_case<__half>(seed, s.R, s.R2, s.D, s.K, s.S, cos, layout, bad, zero); break;
          default: segdist_case<__nv_bfloat16>(seed, s.R, s.R2, s.D, s.K, s.S, cos, layout, bad, zero); break;
        }
        ++seed;
      }
  // every dtype on the vector path with both metrics
  segdist_case<float>(seed++, 7, 5, 64, 50, 4, false, 0, false, true);
  segdist_case<__half>(seed++, 7, 5, 64, 50, 4, true, 0, false, true);
  segdist_case<__nv_bfloat16>(seed++, 7, 5, 64, 50, 4, false, 1, true, false);
  segdist_case<__half>(seed++, 7, 5, 40, 50, 4, false, 1, false, false);
  printf("%d failed, %d launches, %d emulation errors\n", g_fail, kexue_emu::g_launches, kexue_emu::g_errors);
  return g_fail != 0 || kexue_emu::g_errors != 0;
}
