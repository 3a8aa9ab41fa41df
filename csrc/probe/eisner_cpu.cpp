// CPU kernel of kexue::eisner (schema in csrc/registration.cpp, semantics and tie-breaking in
// pyext/probe/parsers.py: eisner_reference).
//
// Eisner's algorithm (Eisner 1996): the maximum-score projective dependency tree over nodes
// 0..n (0 = artificial root) for arc scores s[h][d], by dynamic programming over spans [a, b]:
//   I_R(a,b) = max_{a<=r<b} C_R(a,r) + C_L(r+1,b) + s[a][b]      (incomplete: arc a -> b)
//   I_L(a,b) = max_{a<=r<b} C_R(a,r) + C_L(r+1,b) + s[b][a]      (incomplete: arc b -> a)
//   C_L(a,b) = max_{a<=r<b} C_L(a,r) + I_L(r,b)                  (complete, head b)
//   C_R(a,b) = max_{a<r<=b} I_R(a,r) + C_R(r,b)                  (complete, head a)
// The tree score is C_R(0,n).  single_root: I_R(0,b) only with r = 0, so the root has one
// child.  Ties: the smallest split r wins (strict '>' while r ascends), as in the reference.
// Cost per sentence: ~(n+1)^3 / 3 additions/comparisons, 6 double tables and 4 int32 backpointer
// tables of (n+1)^2 (each table is kept in the orientation its inner loop reads contiguously),
// allocated once per parallel task; sentences of a batch run in parallel (at::parallel_for).
// Not differentiable (integer output).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

namespace kexue::probe {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Scratch tables of one sentence with up to N1 nodes; index [x * N1 + y].
struct Tables {
  int64_t N1 = 0;
  std::vector<double> CRs, CRt;  // complete right C_R(a,b): [a][b] and transposed [b][a]
  std::vector<double> CLs, CLt;  // complete left  C_L(a,b): [a][b] and transposed [b][a]
  std::vector<double> IRs;       // incomplete right I_R(a,b): [a][b]
  std::vector<double> ILt;       // incomplete left  I_L(a,b): [b][a]
  std::vector<int32_t> bIR, bIL, bCR, bCL;  // split points, [a][b]

  explicit Tables(int64_t n1) : N1(n1) {
    const size_t sz = static_cast<size_t>(n1 * n1);
    for (auto* v : {&CRs, &CRt, &CLs, &CLt, &IRs, &ILt}) v->assign(sz, 0.0);
    for (auto* v : {&bIR, &bIL, &bCR, &bCL}) v->assign(sz, 0);
  }
};

// Decodes one sentence of n words: s = scores (row h, column d, row stride N1), heads = its
// output row of N1 entries (heads[0] = -1, heads[d] for d > n = -1).
void eisner_one(const double* s, int64_t n, bool single_root, Tables& T, int64_t* heads) {
  const int64_t N1 = T.N1;
  for (int64_t i = 0; i < N1; ++i) heads[i] = -1;
  if (n == 0) return;
  auto at = [N1](int64_t x, int64_t y) { return x * N1 + y; };
  for (int64_t a = 0; a <= n; ++a) {
    T.CRs[at(a, a)] = T.CRt[at(a, a)] = T.CLs[at(a, a)] = T.CLt[at(a, a)] = 0.0;
  }
  for (int64_t k = 1; k <= n; ++k) {
    for (int64_t a = 0; a + k <= n; ++a) {
      const int64_t b = a + k;
      // Incomplete spans: both directions share C_R(a,r) + C_L(r+1,b).
      const double* cr = &T.CRs[at(a, 0)];     // C_R(a, r) at cr[r]
      const double* cl = &T.CLt[at(b, 0)];     // C_L(r+1, b) at cl[r+1]
      const double sR = s[a * N1 + b], sL = s[b * N1 + a];
      const int64_t rEndR = (single_root && a == 0) ? a + 1 : b;  // root: only r = 0
      double bestR = cr[a] + cl[a + 1] + sR, bestL = cr[a] + cl[a + 1] + sL;
      int32_t argR = static_cast<int32_t>(a), argL = static_cast<int32_t>(a);
      for (int64_t r = a + 1; r < b; ++r) {
        const double base = cr[r] + cl[r + 1];
        if (r < rEndR && base + sR > bestR) { bestR = base + sR; argR = static_cast<int32_t>(r); }
        if (base + sL > bestL) { bestL = base + sL; argL = static_cast<int32_t>(r); }
      }
      if (a == 0) bestL = kNegInf;  // the root is nobody's dependent
      T.IRs[at(a, b)] = bestR;
      T.bIR[at(a, b)] = argR;
      T.ILt[at(b, a)] = bestL;
      T.bIL[at(a, b)] = argL;
      // Complete left: C_L(a,r) + I_L(r,b), r in [a, b).
      {
        const double* c = &T.CLs[at(a, 0)];
        const double* in = &T.ILt[at(b, 0)];
        double best = c[a] + in[a];
        int32_t arg = static_cast<int32_t>(a);
        for (int64_t r = a + 1; r < b; ++r) {
          const double v = c[r] + in[r];
          if (v > best) { best = v; arg = static_cast<int32_t>(r); }
        }
        T.CLs[at(a, b)] = T.CLt[at(b, a)] = best;
        T.bCL[at(a, b)] = arg;
      }
      // Complete right: I_R(a,r) + C_R(r,b), r in (a, b].
      {
        const double* in = &T.IRs[at(a, 0)];
        const double* c = &T.CRt[at(b, 0)];
        double best = in[a + 1] + c[a + 1];
        int32_t arg = static_cast<int32_t>(a + 1);
        for (int64_t r = a + 2; r <= b; ++r) {
          const double v = in[r] + c[r];
          if (v > best) { best = v; arg = static_cast<int32_t>(r); }
        }
        T.CRs[at(a, b)] = T.CRt[at(b, a)] = best;
        T.bCR[at(a, b)] = arg;
      }
    }
  }
  // Backtrack from C_R(0, n) with an explicit stack of (a, b, kind); kind: 0 C_L, 1 C_R,
  // 2 I_L, 3 I_R.  At most 2 pushes per pop and n arcs: the stack stays O(n).
  struct Item { int64_t a, b; int kind; };
  std::vector<Item> stack;
  stack.reserve(static_cast<size_t>(2 * n + 2));
  stack.push_back({0, n, 1});
  while (!stack.empty()) {
    const Item it = stack.back();
    stack.pop_back();
    if (it.a == it.b) continue;
    const int64_t a = it.a, b = it.b;
    switch (it.kind) {
      case 0: {
        const int64_t r = T.bCL[at(a, b)];
        stack.push_back({a, r, 0});
        stack.push_back({r, b, 2});
        break;
      }
      case 1: {
        const int64_t r = T.bCR[at(a, b)];
        stack.push_back({a, r, 3});
        stack.push_back({r, b, 1});
        break;
      }
      case 2: {
        heads[a] = b;
        const int64_t r = T.bIL[at(a, b)];
        stack.push_back({a, r, 1});
        stack.push_back({r + 1, b, 0});
        break;
      }
      default: {
        heads[b] = a;
        const int64_t r = T.bIR[at(a, b)];
        stack.push_back({a, r, 1});
        stack.push_back({r + 1, b, 0});
        break;
      }
    }
  }
}

at::Tensor eisner_cpu(const at::Tensor& scores, const at::Tensor& lengths, bool single_root) {
  const char* op = "kexue.probe.eisner";
  TORCH_CHECK(scores.dim() == 3, op, ": scores must have shape (B, n+1, n+1), got ", scores.sizes());
  TORCH_CHECK(scores.size(1) == scores.size(2), op, ": scores must be square in its last two dims, got ",
              scores.sizes());
  TORCH_CHECK(scores.size(1) >= 1, op, ": scores must have at least the root node (n+1 >= 1)");
  TORCH_CHECK(scores.device().is_cpu(), op, ": scores must be a CPU tensor");
  TORCH_CHECK(at::isFloatingType(scores.scalar_type()), op, ": scores must be a floating tensor, got ",
              scores.scalar_type());
  const int64_t B = scores.size(0), N1 = scores.size(1);
  TORCH_CHECK(N1 - 1 <= std::numeric_limits<int32_t>::max() / 2, op, ": too many words (", N1 - 1, ")");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B, op, ": lengths must have shape (B,) = (", B,
              "), got ", lengths.sizes());
  TORCH_CHECK(lengths.scalar_type() == at::kLong, op, ": lengths must be int64, got ", lengths.scalar_type());
  TORCH_CHECK(lengths.device().is_cpu(), op, ": lengths must be a CPU tensor");

  const at::Tensor s = scores.to(at::kDouble).contiguous();
  const at::Tensor len = lengths.contiguous();
  const int64_t* lp = len.data_ptr<int64_t>();
  const double* sp = s.data_ptr<double>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(lp[b] >= 0 && lp[b] <= N1 - 1, op, ": lengths[", b, "] = ", lp[b],
                " is out of range: it must be in [0, ", N1 - 1, "] (the number of words, scores has n+1 = ",
                N1, ")");
    const int64_t n1 = lp[b] + 1;
    const double* sb = sp + b * N1 * N1;
    for (int64_t h = 0; h < n1; ++h) {
      for (int64_t d = 0; d < n1; ++d) {
        const double v = sb[h * N1 + d];
        TORCH_CHECK(!std::isnan(v) && v != std::numeric_limits<double>::infinity(), op, ": scores[", b, ", ", h,
                    ", ", d, "] = ", v, ": scores must not be NaN or +inf (-inf forbids an arc)");
      }
    }
  }

  at::Tensor heads = at::empty({B, N1}, scores.options().dtype(at::kLong));
  int64_t* hp = heads.data_ptr<int64_t>();
  // One sentence is ~N1^3/3 work: a grain of one sentence keeps every thread busy.
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    Tables T(N1);
    for (int64_t b = begin; b < end; ++b) eisner_one(sp + b * N1 * N1, lp[b], single_root, T, hp + b * N1);
  });
  return heads;
}

}  // namespace
}  // namespace kexue::probe

TORCH_LIBRARY_IMPL(kexue, CPU, m) { m.impl("eisner", &kexue::probe::eisner_cpu); }
