// CPU kernels of kexue::linear_attention_fwd / _bwd (schemas in csrc/registration.cpp, exact
// semantics in pyext/linear_attention/reference.py).
//
// Notation (per query head h, one sequence): a_i = φ(q_i), b_j = φ(k_j) (0 for padded keys),
// rows of A (c x F), B (c x F), V (c x Dv) for a chunk of c <= kChunk* tokens.  The state is
// S (F x Dv) and z (F); the normaliser is the extra value column of V' = [V, 1] / S' = [S, z],
// handled here as its own vector (a Dv+1-wide matrix would waste a register tile).
//
// Work split: one task per (sequence, kv head), run with at::parallel_for.  A task loops over
// the G = H / Hkv query heads sharing its kv head, so B, V and their products are loaded once
// per chunk, and dk / dv are summed over the group inside the task (no races, no atomics).
// Every task allocates one scratch arena (O(G·(F + Dv)·kChunk* + G·L) elements), never per chunk.
// Inputs are read through their strides (no .contiguous() copies); half / bf16 are converted to
// float on load, the accumulation type is float (double for double inputs).  All products are
// cpu::gemm calls on row-major scratch (register-blocked, FMA; see common/cpu_gemm.h).
//
// This header holds the kernels (Forward, Backward); each (pass, dtype) pair is compiled in its own
// translation unit, la_cpu_<pass>_<dtype>.cpp, for every ISA path, so a parallel build spreads
// them over the cores; linear_attention_cpu.cpp holds the argument checks and the dispatch.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/cpu_gemm.h"
#include "common/cpu_isa.h"
#include "common/cpu_scratch.h"
#include "common/cpu_vec.h"
#include "linear_attention/feature_map.h"

namespace kexue::la {

using cpu::gemm;
using cpu::pad_cols;
using cpu::transpose;
using cpu::Tri;

// Tokens per chunk.  Causal: the intra-chunk products cost O(c (F + Dv)) per token and the state
// products O(F Dv), so smaller chunks do fewer FLOPs but smaller GEMMs; c = 32 measured fastest
// for D = 64 (forward and backward, 5-10 % ahead of 64; 24 and 48 slower in the backward).
// Non-causal: no intra-chunk work, c only sets the GEMM height; 64 (slightly ahead of 32).
constexpr int64_t kChunkCausal = 32;
constexpr int64_t kChunkNonCausal = 64;
constexpr int64_t kChunkMax = 256;  // the scratch GEMMs are sized for operands of at most 256 rows

// ---------------------------------------------------------------------------------------------
// Strided access to tensors of any layout (64-bit index arithmetic throughout).

template <typename S>
struct Strided {
  S* p = nullptr;
  int64_t st[4] = {0, 0, 0, 0};
  Strided() = default;
  // From an at::Tensor (a template, so the kernel translation units need no ATen headers).
  template <typename Tensor>
  explicit Strided(const Tensor& t) {
    if (!t.defined()) return;
    p = static_cast<S*>(t.data_ptr());
    for (int64_t d = 0; d < t.dim(); ++d) st[d] = t.stride(d);
  }
  explicit operator bool() const { return p != nullptr; }
  // Start of the innermost row at (i0, i1, i2) of a 4-D tensor (elements then step st[3]).
  S* row(int64_t i0, int64_t i1, int64_t i2) const { return p + i0 * st[0] + i1 * st[1] + i2 * st[2]; }
  // Start of the innermost row at (i0, i1) of a 3-D tensor (elements then step st[2]).
  S* row(int64_t i0, int64_t i1) const { return p + i0 * st[0] + i1 * st[1]; }
};

// dst[r][0:cols] = src[r * rs + c * cs] converted to T, for r < rows.  float16 / bfloat16 go
// through c10's portable conversions (a _Float16 path would vectorise in the AVX2 path but makes
// the library need libgcc_s from GCC >= 12 for the baseline path's soft conversions).
template <typename S, typename T>
KEXUE_ALWAYS_INLINE void load_rows(const S* src, int64_t rs, int64_t cs, int64_t rows, int64_t cols, T* dst,
                                   int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r) {
    const S* s = src + r * rs;
    T* d = dst + r * ldd;
    if (cs == 1) {
      for (int64_t c = 0; c < cols; ++c) d[c] = static_cast<T>(s[c]);
    } else {
      for (int64_t c = 0; c < cols; ++c) d[c] = static_cast<T>(s[c * cs]);
    }
  }
}

// Inverse of load_rows: converts to the output type S.
template <typename S, typename T>
KEXUE_ALWAYS_INLINE void store_rows(const T* src, int64_t lds, int64_t rows, int64_t cols, S* dst, int64_t rs,
                                    int64_t cs) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * lds;
    S* d = dst + r * rs;
    if (cs == 1) {
      for (int64_t c = 0; c < cols; ++c) d[c] = static_cast<S>(s[c]);
    } else {
      for (int64_t c = 0; c < cols; ++c) d[c * cs] = static_cast<S>(s[c]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Problem description shared by the forward and backward tasks.

template <typename S, typename T>
struct Problem {
  int64_t B = 0, H = 0, Hkv = 0, G = 1, N = 0, Dk = 0, Dv = 0, F = 0, nseq = 0;
  FeatureMap fm = FeatureMap::None;
  bool causal = false, normalize = true;
  int64_t chunk = 0;  // tokens per chunk (kChunkCausal / kChunkNonCausal unless overridden)
  T eps = 0;
  std::vector<int64_t> cu;  // sequence offsets (empty: one sequence per batch row)
  Strided<const S> q, k, v;
  const bool* mask = nullptr;
  int64_t mask_st[2] = {0, 0};
  Strided<const T> S0, z0;  // initial state (null when absent)

  // Sequence s: batch row, first token, length.
  void seq(int64_t s, int64_t& b, int64_t& t0, int64_t& len) const {
    if (cu.empty()) {
      b = s, t0 = 0, len = N;
    } else {
      b = 0, t0 = cu[s], len = cu[s + 1] - cu[s];
    }
  }
  KEXUE_ALWAYS_INLINE bool masked(int64_t b, int64_t t) const {
    return mask != nullptr && mask[b * mask_st[0] + t * mask_st[1]];
  }

  // X (raw, c x Dk) and Y = φ(X) (c x F) for rows t..t+c of x[b, h]; aux per row (taylor norm).
  // With key_mask, rows of padded keys get Y = 0.
  template <int W>
  KEXUE_ALWAYS_INLINE void load_mapped(const Strided<const S>& x, int64_t b, int64_t h, int64_t t, int64_t c, T* X,
                                       int64_t ldx, T* Y, int64_t ldy, T* aux, bool key_mask) const {
    load_rows(x.row(b, h, t), x.st[2], x.st[3], c, Dk, X, ldx);
    for (int64_t i = 0; i < c; ++i) {
      T* y = Y + i * ldy;
      if (key_mask && masked(b, t + i)) {
        std::fill(y, y + F, T(0));
        aux[i] = 0;
      } else {
        feature_map_row<W>(fm, X + i * ldx, Dk, y, aux + i);
      }
    }
  }

  // Initial state of query head h of sequence s into Sd (F x ld, or its transpose Dv x ld) and
  // zd (F); zeros where absent.
  KEXUE_ALWAYS_INLINE void load_initial(int64_t s, int64_t h, T* Sd, int64_t ld, bool transposed, T* zd) const {
    for (int64_t f = 0; f < F; ++f) {
      const T* src = S0 ? S0.row(s, h, f) : nullptr;
      for (int64_t d = 0; d < Dv; ++d) {
        const T val = src ? src[d * S0.st[3]] : T(0);
        if (transposed) {
          Sd[d * ld + f] = val;
        } else {
          Sd[f * ld + d] = val;
        }
      }
      zd[f] = z0 ? z0.row(s, h)[f * z0.st[2]] : T(0);
    }
  }
};

// den[i] (+)= Σ_{j<=i} K[i][j] over a causal chunk, after zeroing K above the diagonal (the
// GEMMs that read K with Tri::ALower need real zeros there).
template <int W, typename T>
KEXUE_ALWAYS_INLINE void causal_mask_rowsum(T* K, int64_t ldk, int64_t c, T* den) {
  for (int64_t i = 0; i < c; ++i) {
    T* row = K + i * ldk;
    std::fill(row + i + 1, row + c, T(0));
    den[i] = cpu::sum<W>(row, i + 1);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward.
//
// Causal, per chunk of c tokens and query head:
//   K = tril(A Bᵀ)                     c·c·F / 2 FMAs (tiles above the diagonal skipped)
//   num = K V + A S,  den = K 1 + A z  c·c·Dv / 2 + c·F·Dv FMAs
// then per chunk and kv head:  S += Bᵀ V, z += Bᵀ 1  (c·F·Dv).
// Non-causal: S = S0 + Bᵀ V over all chunks first (N·F·Dv per kv head), then num = A S
// (N·F·Dv per query head).  Scratch per task: ~8 matrices of kChunk* x (F | Dv) plus the state;
// no O(N) memory beyond the outputs.
//
// With GQA (G > 1) the kv-only prefix P = Σ Bᵀ V is shared by the group and the state of
// head h is S0_h + P (an F·Dv add per chunk); with G == 1 or no initial state P is the state.

template <typename S, typename T>
struct Forward : Problem<S, T> {
  Strided<S> out;
  Strided<T> S_out, z_out;

  template <int W>
  KEXUE_ALWAYS_INLINE void run_task(int64_t task) const {
    const auto& P_ = *this;
    const int64_t s = task / P_.Hkv, hk = task % P_.Hkv;
    int64_t b, t0, L;
    P_.seq(s, b, t0, L);
    const int64_t C = P_.chunk, F = P_.F, Dk = P_.Dk, Dv = P_.Dv, G = P_.G;
    const int64_t ldF = pad_cols(F), ldDv = pad_cols(Dv), ldC = pad_cols(C), ldDk = pad_cols(Dk);
    const bool has_state = P_.S0 || P_.z0;
    const bool shared = G == 1 || !has_state;

    cpu::ScratchArena<T> ar;
    const int64_t oX = ar.reserve(C * ldDk), oAux = ar.reserve(C), oA = ar.reserve(C * ldF),
                  oB = ar.reserve(C * ldF), oBt = ar.reserve(F * ldC), oV = ar.reserve(C * ldDv),
                  oK = ar.reserve(C * ldC), oO = ar.reserve(C * ldDv), oDen = ar.reserve(C),
                  oP = ar.reserve(F * ldDv), oPz = ar.reserve(F), oSh = ar.reserve(F * ldDv),
                  oZh = ar.reserve(F), oS0 = ar.reserve((shared ? 0 : G) * F * ldDv),
                  oZ0 = ar.reserve((shared ? 0 : G) * F);
    ar.allocate();
    T *X = ar.at(oX), *aux = ar.at(oAux), *A = ar.at(oA), *Bm = ar.at(oB), *Bt = ar.at(oBt), *V = ar.at(oV),
      *K = ar.at(oK), *O = ar.at(oO), *den = ar.at(oDen), *P = ar.at(oP), *pz = ar.at(oPz), *Sh = ar.at(oSh),
      *zh = ar.at(oZh), *S0b = ar.at(oS0), *z0b = ar.at(oZ0);

    // P = the kv prefix state (plus S0 when it is the only head's state).
    if (shared && has_state) {
      P_.load_initial(s, hk * G, P, ldDv, false, pz);
    } else {
      for (int64_t f = 0; f < F; ++f) std::fill(P + f * ldDv, P + f * ldDv + Dv, T(0));
      std::fill(pz, pz + F, T(0));
    }
    if (!shared) {
      for (int64_t g = 0; g < G; ++g) P_.load_initial(s, hk * G + g, S0b + g * F * ldDv, ldDv, false, z0b + g * F);
    }
    // The state of head g: P itself, or S0_g + P in Sh.
    auto head_state = [&](int64_t g, const T*& Sg, const T*& zg) KEXUE_LAMBDA_INLINE {
      if (shared) {
        Sg = P, zg = pz;
        return;
      }
      const T* s0 = S0b + g * F * ldDv;
      for (int64_t f = 0; f < F; ++f)
        for (int64_t d = 0; d < Dv; ++d) Sh[f * ldDv + d] = s0[f * ldDv + d] + P[f * ldDv + d];
      for (int64_t f = 0; f < F; ++f) zh[f] = z0b[g * F + f] + pz[f];
      Sg = Sh, zg = zh;
    };
    // Loads k, v of a chunk into B, Bᵀ, V.
    auto load_kv = [&](int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      P_.template load_mapped<W>(P_.k, b, hk, t0 + lo, c, X, ldDk, Bm, ldF, aux, true);
      transpose(c, F, Bm, ldF, Bt, ldC);
      load_rows(P_.v.row(b, hk, t0 + lo), P_.v.st[2], P_.v.st[3], c, Dv, V, ldDv);
    };
    auto update_state = [&](int64_t c) KEXUE_LAMBDA_INLINE {  // P += Bᵀ V, pz += Bᵀ 1
      gemm(F, Dv, c, Bt, ldC, V, ldDv, P, ldDv, true);
      for (int64_t i = 0; i < c; ++i)
        for (int64_t f = 0; f < F; ++f) pz[f] += Bm[i * ldF + f];
    };
    // out rows lo..lo+c of head h from O (num) and den.
    auto write_out = [&](int64_t h, int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      if (P_.normalize) {
        for (int64_t i = 0; i < c; ++i) {
          const T dn = den[i] + P_.eps;
          for (int64_t d = 0; d < Dv; ++d) O[i * ldDv + d] /= dn;
        }
      }
      store_rows(O, ldDv, c, Dv, out.row(b, h, t0 + lo), out.st[2], out.st[3]);
    };

    if (!P_.causal) {
      for (int64_t lo = 0; lo < L; lo += C) {
        const int64_t c = std::min(C, L - lo);
        load_kv(lo, c);
        update_state(c);
      }
    }
    for (int64_t lo = 0; lo < L; lo += C) {
      const int64_t c = std::min(C, L - lo);
      if (P_.causal) load_kv(lo, c);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = hk * G + g;
        const T *Sg, *zg;
        head_state(g, Sg, zg);
        P_.template load_mapped<W>(P_.q, b, h, t0 + lo, c, X, ldDk, A, ldF, aux, false);
        if (P_.causal) {
          gemm(c, c, F, A, ldF, Bt, ldC, K, ldC, false, Tri::OutLower);  // K = A Bᵀ
          causal_mask_rowsum<W>(K, ldC, c, den);
          gemm(c, Dv, c, K, ldC, V, ldDv, O, ldDv, false, Tri::ALower);  // O = tril(K) V
          gemm(c, Dv, F, A, ldF, Sg, ldDv, O, ldDv, true);               // O += A S
        } else {
          gemm(c, Dv, F, A, ldF, Sg, ldDv, O, ldDv, false);  // O = A S
          std::fill(den, den + c, T(0));
        }
        for (int64_t i = 0; i < c; ++i) den[i] += cpu::dot<W>(A + i * ldF, zg, F);
        write_out(h, lo, c);
      }
      if (P_.causal) update_state(c);
    }
    // Final state of every head of the group.
    for (int64_t g = 0; g < G; ++g) {
      const int64_t h = hk * G + g;
      const T *Sg, *zg;
      head_state(g, Sg, zg);
      for (int64_t f = 0; f < F; ++f) {
        T* dst = S_out.row(s, h, f);
        for (int64_t d = 0; d < Dv; ++d) dst[d * S_out.st[3]] = Sg[f * ldDv + d];
        z_out.row(s, h)[f * z_out.st[2]] = zg[f];
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Backward.
//
// With do_i the output gradient, r_i = 1/(den_i + eps) and t_i = do_i·out_i, the gradient of
// num'_i = [num_i, den_i] is g'_i = [r_i do_i, -r_i t_i] (normalize) or [do_i, 0].  Then
//   da_i = (S'_{<i} + Σ_{j<=i in chunk} b_j v'_jᵀ) g'_i      (S'_{<i}: state before the chunk)
//   db_j = R'_j v'_j,  dv_j = R_jᵀ b_j,  R'_j = Σ_{i>=j} a_i g'_iᵀ + [grad_S, grad_z]
//   dS0 = R_0, dz0 = rz_0 (the reverse accumulator after the whole sequence).
// Causal, two passes over the chunks, nothing of size N·F·Dv stored:
//   1. forward pass (dq): per chunk and head  K = tril(A Bᵀ), W = tril(Do Vᵀ), U = Do Sᵀ;
//      den = K 1 + A z, do·num = Σ_j K∘W + Σ_f A∘U, M = r (W - t) (masked),
//      da = M B + r (U - t zᵀ); then Sᵀ += Vᵀ B.  r_i, t_i are kept for pass 2 (2 scalars per
//      token and head).  FMAs per chunk and head: c²(F + Dv + F)/2 + c·F·Dv (+ c·F·Dv per kv
//      head for the state).
//   2. reverse pass (dk, dv): per chunk and head  Kᵀ, Mᵀ (upper triangles), dv += Kᵀ G + B R,
//      db += Mᵀ A + V Rᵀ + rz, then R += Aᵀ G, rz -= Aᵀ (r t) (G = r do).  FMAs per chunk and
//      head: c²(F + 2 Dv + F)/2 + 3 c·F·Dv.  Both passes reload and re-map q, k (O(c·Dk)).
// Non-causal: pass 1 builds S (kv only), pass 2 per head computes da = r (U - t zᵀ) with
// U = Do Sᵀ and accumulates R, pass 3 gives db = V (Σ_h R_h)ᵀ + Σ rz, dv = B Σ_h R_h.
// The feature-map vjp is applied to da / db in the kernel (dk, dv summed over the group).

template <typename S, typename T>
struct Backward : Problem<S, T> {
  Strided<const S> go;        // grad_out
  Strided<const T> gS, gz;    // gradients of the final state (null when absent)
  Strided<S> dq, dk, dv;
  Strided<T> dS0, dz0;

  template <int W>
  KEXUE_ALWAYS_INLINE void run_task(int64_t task) const {
    const auto& P_ = *this;
    const int64_t s = task / P_.Hkv, hk = task % P_.Hkv;
    int64_t b, t0, L;
    P_.seq(s, b, t0, L);
    const int64_t C = P_.chunk, F = P_.F, Dk = P_.Dk, Dv = P_.Dv, G = P_.G;
    const int64_t ldF = pad_cols(F), ldDv = pad_cols(Dv), ldC = pad_cols(C), ldDk = pad_cols(Dk);
    const bool has_state = P_.S0 || P_.z0;
    const bool shared = G == 1 || !has_state;
    const bool causal = P_.causal, normalize = P_.normalize;

    cpu::ScratchArena<T> ar;
    const int64_t oXq = ar.reserve(C * ldDk), oXk = ar.reserve(C * ldDk), oAuxq = ar.reserve(C),
                  oAuxk = ar.reserve(C), oA = ar.reserve(C * ldF), oAt = ar.reserve(F * ldC),
                  oB = ar.reserve(C * ldF), oBt = ar.reserve(F * ldC), oV = ar.reserve(C * ldDv),
                  oVt = ar.reserve(Dv * ldC), oDo = ar.reserve(C * ldDv), oDot = ar.reserve(Dv * ldC),
                  oK = ar.reserve(C * ldC), oW = ar.reserve(C * ldC), oU = ar.reserve(C * ldF),
                  oDA = ar.reserve(C * ldF), oDB = ar.reserve(C * ldF), oDV = ar.reserve(C * ldDv),
                  oDx = ar.reserve(ldDk), oDen = ar.reserve(C), oRT = ar.reserve(C), oRTt = ar.reserve(C),
                  oPt = ar.reserve(Dv * ldF), oPz = ar.reserve(F), oSht = ar.reserve(Dv * ldF),
                  oZh = ar.reserve(F), oS0t = ar.reserve((shared ? 0 : G) * Dv * ldF),
                  oZ0 = ar.reserve((shared ? 0 : G) * F), oR = ar.reserve(G * F * ldDv),
                  oRt = ar.reserve(G * Dv * ldF), oRz = ar.reserve(G * F),
                  oSave = ar.reserve(causal ? G * L * 2 : 0);
    ar.allocate();
    T *Xq = ar.at(oXq), *Xk = ar.at(oXk), *auxq = ar.at(oAuxq), *auxk = ar.at(oAuxk), *A = ar.at(oA),
      *At = ar.at(oAt), *Bm = ar.at(oB), *Bt = ar.at(oBt), *V = ar.at(oV), *Vt = ar.at(oVt), *Do = ar.at(oDo),
      *Dot = ar.at(oDot), *K = ar.at(oK), *Wm = ar.at(oW), *U = ar.at(oU), *dA = ar.at(oDA), *dB = ar.at(oDB),
      *dV = ar.at(oDV), *dx = ar.at(oDx), *den = ar.at(oDen), *rr = ar.at(oRT), *tt = ar.at(oRTt),
      *Pt = ar.at(oPt), *pz = ar.at(oPz), *Sht = ar.at(oSht), *zh = ar.at(oZh), *S0t = ar.at(oS0t),
      *z0b = ar.at(oZ0), *R = ar.at(oR), *Rt = ar.at(oRt), *rz = ar.at(oRz), *saved = ar.at(oSave);

    // Pt = (kv prefix state)ᵀ, Dv x F (plus S0ᵀ when it is the only head's state).
    if (shared && has_state) {
      P_.load_initial(s, hk * G, Pt, ldF, true, pz);
    } else {
      for (int64_t d = 0; d < Dv; ++d) std::fill(Pt + d * ldF, Pt + d * ldF + F, T(0));
      std::fill(pz, pz + F, T(0));
    }
    if (!shared) {
      for (int64_t g = 0; g < G; ++g) P_.load_initial(s, hk * G + g, S0t + g * Dv * ldF, ldF, true, z0b + g * F);
    }
    auto head_state = [&](int64_t g, const T*& Sg, const T*& zg) KEXUE_LAMBDA_INLINE {  // (S0_g + P)ᵀ, z0_g + pz
      if (shared) {
        Sg = Pt, zg = pz;
        return;
      }
      const T* s0 = S0t + g * Dv * ldF;
      for (int64_t d = 0; d < Dv; ++d)
        for (int64_t f = 0; f < F; ++f) Sht[d * ldF + f] = s0[d * ldF + f] + Pt[d * ldF + f];
      for (int64_t f = 0; f < F; ++f) zh[f] = z0b[g * F + f] + pz[f];
      Sg = Sht, zg = zh;
    };
    // Reverse accumulators start at the gradient of the final state.
    for (int64_t g = 0; g < G; ++g) {
      const int64_t h = hk * G + g;
      T* Rg = R + g * F * ldDv;
      for (int64_t f = 0; f < F; ++f) {
        const T* src = gS ? gS.row(s, h, f) : nullptr;
        for (int64_t d = 0; d < Dv; ++d) Rg[f * ldDv + d] = src ? src[d * gS.st[3]] : T(0);
        rz[g * F + f] = gz ? gz.row(s, h)[f * gz.st[2]] : T(0);
      }
    }
    auto load_k = [&](int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      P_.template load_mapped<W>(P_.k, b, hk, t0 + lo, c, Xk, ldDk, Bm, ldF, auxk, true);
    };
    auto load_v = [&](int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      load_rows(P_.v.row(b, hk, t0 + lo), P_.v.st[2], P_.v.st[3], c, Dv, V, ldDv);
    };
    auto load_q = [&](int64_t h, int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      P_.template load_mapped<W>(P_.q, b, h, t0 + lo, c, Xq, ldDk, A, ldF, auxq, false);
    };
    auto load_do = [&](int64_t h, int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      load_rows(go.row(b, h, t0 + lo), go.st[2], go.st[3], c, Dv, Do, ldDv);
    };
    auto update_state = [&](int64_t c) KEXUE_LAMBDA_INLINE {  // Pᵀ += Vᵀ B, pz += Bᵀ 1
      gemm(Dv, F, c, Vt, ldC, Bm, ldF, Pt, ldF, true);
      for (int64_t i = 0; i < c; ++i)
        for (int64_t f = 0; f < F; ++f) pz[f] += Bm[i * ldF + f];
    };
    // r_i, t_i from den (normaliser without eps) and dotn_i = do_i·num_i.
    auto finish_rt = [&](int64_t c, const T* dotn) KEXUE_LAMBDA_INLINE {
      for (int64_t i = 0; i < c; ++i) {
        if (normalize) {
          rr[i] = T(1) / (den[i] + P_.eps);
          tt[i] = dotn[i] * rr[i];
        } else {
          rr[i] = T(1), tt[i] = T(0);
        }
      }
    };
    // dq rows of head h from dA (F columns): the feature-map vjp.
    auto write_dq = [&](int64_t h, int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      for (int64_t i = 0; i < c; ++i) {
        feature_map_vjp_row<W>(P_.fm, Xq + i * ldDk, A + i * ldF, auxq[i], dA + i * ldF, Dk, dx);
        store_rows(dx, ldDk, 1, Dk, dq.row(b, h, t0 + lo + i), 0, dq.st[3]);
      }
    };
    // dk, dv rows of the group from dB, dV (padded keys get 0).
    auto write_dkdv = [&](int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      for (int64_t i = 0; i < c; ++i) {
        if (P_.masked(b, t0 + lo + i)) {
          std::fill(dx, dx + Dk, T(0));
          std::fill(dV + i * ldDv, dV + i * ldDv + Dv, T(0));
        } else {
          feature_map_vjp_row<W>(P_.fm, Xk + i * ldDk, Bm + i * ldF, auxk[i], dB + i * ldF, Dk, dx);
        }
        store_rows(dx, ldDk, 1, Dk, dk.row(b, hk, t0 + lo + i), 0, dk.st[3]);
      }
      store_rows(dV, ldDv, c, Dv, dv.row(b, hk, t0 + lo), dv.st[2], dv.st[3]);
    };
    // Do <- G = r ⊙ Do (the Dv columns of g').
    auto scale_do = [&](int64_t c) KEXUE_LAMBDA_INLINE {
      for (int64_t i = 0; i < c; ++i)
        for (int64_t d = 0; d < Dv; ++d) Do[i * ldDv + d] *= rr[i];
    };
    // R_g += Aᵀ G (G in Do), rz_g -= Aᵀ (r t); refreshes Rt_g = R_gᵀ if asked.
    auto accumulate_R = [&](int64_t g, int64_t c, bool refresh_t) KEXUE_LAMBDA_INLINE {
      T* Rg = R + g * F * ldDv;
      gemm(F, Dv, c, At, ldC, Do, ldDv, Rg, ldDv, true);
      if (normalize) {
        for (int64_t i = 0; i < c; ++i) {
          const T w = -rr[i] * tt[i];
          for (int64_t f = 0; f < F; ++f) rz[g * F + f] += A[i * ldF + f] * w;
        }
      }
      if (refresh_t) transpose(F, Dv, Rg, ldDv, Rt + g * Dv * ldF, ldF);
    };

    // dS0 / dz0 = the reverse accumulators after the whole sequence.
    auto write_initial_grads = [&]() KEXUE_LAMBDA_INLINE {
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = hk * G + g;
        for (int64_t f = 0; f < F; ++f) {
          if (dS0) {
            T* dst = dS0.row(s, h, f);
            for (int64_t d = 0; d < Dv; ++d) dst[d * dS0.st[3]] = R[(g * F + f) * ldDv + d];
          }
          if (dz0) dz0.row(s, h)[f * dz0.st[2]] = rz[g * F + f];
        }
      }
    };

    if (causal) {
      // Pass 1: forward over chunks, dq.
      for (int64_t lo = 0; lo < L; lo += C) {
        const int64_t c = std::min(C, L - lo);
        load_k(lo, c);
        transpose(c, F, Bm, ldF, Bt, ldC);
        load_v(lo, c);
        transpose(c, Dv, V, ldDv, Vt, ldC);
        for (int64_t g = 0; g < G; ++g) {
          const int64_t h = hk * G + g;
          const T *Sg, *zg;
          head_state(g, Sg, zg);
          load_q(h, lo, c);
          load_do(h, lo, c);
          gemm(c, c, F, A, ldF, Bt, ldC, K, ldC, false, Tri::OutLower);  // K = A Bᵀ
          causal_mask_rowsum<W>(K, ldC, c, den);
          for (int64_t i = 0; i < c; ++i) den[i] += cpu::dot<W>(A + i * ldF, zg, F);
          gemm(c, c, Dv, Do, ldDv, Vt, ldC, Wm, ldC, false, Tri::OutLower);  // W = Do Vᵀ (in Wm)
          gemm(c, F, Dv, Do, ldDv, Sg, ldF, U, ldF, false);                 // U = Do Sᵀ
          for (int64_t i = 0; i < c; ++i) {
            // do_i·num_i = Σ_{j<=i} K_ij W_ij + a_i·U_i
            const T* kr = K + i * ldC;
            const T* wr = Wm + i * ldC;
            T sacc = 0;
            if (normalize) sacc = cpu::dot<W>(kr, wr, i + 1) + cpu::dot<W>(A + i * ldF, U + i * ldF, F);
            tt[i] = sacc;
          }
          finish_rt(c, tt);
          for (int64_t i = 0; i < c; ++i) {  // Wm <- M = r (W - t), zero above the diagonal
            T* wr = Wm + i * ldC;
            for (int64_t j = 0; j <= i; ++j) wr[j] = rr[i] * (wr[j] - tt[i]);
            std::fill(wr + i + 1, wr + c, T(0));
          }
          for (int64_t i = 0; i < c; ++i) {  // dA = r (U - t zᵀ) + M B
            T* da = dA + i * ldF;
            const T* u = U + i * ldF;
            for (int64_t f = 0; f < F; ++f) da[f] = rr[i] * (u[f] - tt[i] * zg[f]);
          }
          gemm(c, F, c, Wm, ldC, Bm, ldF, dA, ldF, true, Tri::ALower);
          write_dq(h, lo, c);
          T* sv = saved + (g * L + lo) * 2;
          for (int64_t i = 0; i < c; ++i) sv[2 * i] = rr[i], sv[2 * i + 1] = tt[i];
        }
        update_state(c);
      }
      // Pass 2: reverse over chunks, dk and dv.
      for (int64_t g = 0; g < G; ++g) transpose(F, Dv, R + g * F * ldDv, ldDv, Rt + g * Dv * ldF, ldF);
      const int64_t nchunks = (L + C - 1) / C;
      for (int64_t ci = nchunks - 1; ci >= 0; --ci) {
        const int64_t lo = ci * C, c = std::min(C, L - lo);
        load_k(lo, c);
        load_v(lo, c);
        for (int64_t g = 0; g < G; ++g) {
          const int64_t h = hk * G + g;
          const T* sv = saved + (g * L + lo) * 2;
          for (int64_t i = 0; i < c; ++i) rr[i] = sv[2 * i], tt[i] = sv[2 * i + 1];
          load_q(h, lo, c);
          transpose(c, F, A, ldF, At, ldC);
          load_do(h, lo, c);
          transpose(c, Dv, Do, ldDv, Dot, ldC);
          scale_do(c);
          gemm(c, c, F, Bm, ldF, At, ldC, K, ldC, false, Tri::OutUpper);  // Kᵀ[j][i] = b_j·a_i
          gemm(c, c, Dv, V, ldDv, Dot, ldC, Wm, ldC, false, Tri::OutUpper);  // Wᵀ[j][i] = v_j·do_i
          for (int64_t j = 0; j < c; ++j) {  // keep i >= j; Wᵀ <- Mᵀ = r_i (Wᵀ - t_i)
            T* kr = K + j * ldC;
            T* wr = Wm + j * ldC;
            std::fill(kr, kr + j, T(0));
            std::fill(wr, wr + j, T(0));
            for (int64_t i = j; i < c; ++i) wr[i] = rr[i] * (wr[i] - tt[i]);
          }
          const T* Rg = R + g * F * ldDv;
          const bool first = g == 0;
          gemm(c, Dv, c, K, ldC, Do, ldDv, dV, ldDv, !first, Tri::AUpper);  // dv += Kᵀ G
          gemm(c, Dv, F, Bm, ldF, Rg, ldDv, dV, ldDv, true);                 // dv += B R
          gemm(c, F, c, Wm, ldC, A, ldF, dB, ldF, !first, Tri::AUpper);       // db += Mᵀ A
          gemm(c, F, Dv, V, ldDv, Rt + g * Dv * ldF, ldF, dB, ldF, true);    // db += V Rᵀ
          for (int64_t j = 0; j < c; ++j)                                     // db += rz
            for (int64_t f = 0; f < F; ++f) dB[j * ldF + f] += rz[g * F + f];
          accumulate_R(g, c, true);
        }
        write_dkdv(lo, c);
      }
      write_initial_grads();
    } else {
      // Pass 1: the kv state.
      for (int64_t lo = 0; lo < L; lo += C) {
        const int64_t c = std::min(C, L - lo);
        load_k(lo, c);
        load_v(lo, c);
        transpose(c, Dv, V, ldDv, Vt, ldC);
        update_state(c);
      }
      // Pass 2: per head, dq and the accumulator R_h = Σ_i a_i g_iᵀ + grad_S.
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = hk * G + g;
        const T *Sg, *zg;
        head_state(g, Sg, zg);
        for (int64_t lo = 0; lo < L; lo += C) {
          const int64_t c = std::min(C, L - lo);
          load_q(h, lo, c);
          transpose(c, F, A, ldF, At, ldC);
          load_do(h, lo, c);
          gemm(c, F, Dv, Do, ldDv, Sg, ldF, U, ldF, false);  // U = Do Sᵀ
          for (int64_t i = 0; i < c; ++i) {
            den[i] = cpu::dot<W>(A + i * ldF, zg, F);
            tt[i] = normalize ? cpu::dot<W>(A + i * ldF, U + i * ldF, F) : T(0);
          }
          finish_rt(c, tt);
          for (int64_t i = 0; i < c; ++i) {  // dA = r (U - t zᵀ)
            T* da = dA + i * ldF;
            const T* u = U + i * ldF;
            for (int64_t f = 0; f < F; ++f) da[f] = rr[i] * (u[f] - tt[i] * zg[f]);
          }
          write_dq(h, lo, c);
          scale_do(c);
          accumulate_R(g, c, false);
        }
      }
      // Pass 3: db = V (Σ_g R_g)ᵀ + Σ_g rz_g, dv = B Σ_g R_g.
      write_initial_grads();
      T* Rs = R;  // the sum goes into head 0's accumulator (dS0 / dz0 are written already)
      for (int64_t g = 1; g < G; ++g) {
        for (int64_t f = 0; f < F; ++f) {
          for (int64_t d = 0; d < Dv; ++d) Rs[f * ldDv + d] += R[(g * F + f) * ldDv + d];
          rz[f] += rz[g * F + f];
        }
      }
      transpose(F, Dv, Rs, ldDv, Rt, ldF);
      for (int64_t lo = 0; lo < L; lo += C) {
        const int64_t c = std::min(C, L - lo);
        load_k(lo, c);
        load_v(lo, c);
        gemm(c, Dv, F, Bm, ldF, Rs, ldDv, dV, ldDv, false);  // dv = B R
        gemm(c, F, Dv, V, ldDv, Rt, ldF, dB, ldF, false);    // db = V Rᵀ + rz
        for (int64_t j = 0; j < c; ++j)
          for (int64_t f = 0; f < F; ++f) dB[j * ldF + f] += rz[f];
        write_dkdv(lo, c);
      }
    }
  }
};

// The task loops, one function per (pass, input dtype) and ISA path (cpu_isa.h): run_task and
// every helper it uses are always inlined into them, so they compile for the function's ISA.
// Declared here for every pair; defined by KEXUE_LA_TASK_RANGE in la_cpu_<pass>_<dtype>.cpp.
template <int W, typename Task>
KEXUE_ALWAYS_INLINE void task_range_impl(const Task& task, int64_t begin, int64_t end) {
  for (int64_t t = begin; t < end; ++t) task.template run_task<W>(t);
}
#define KEXUE_LA_TASK_BODY(W) task_range_impl<W>(task, begin, end);
#define KEXUE_LA_TASK_RANGE(PASS, S, T) \
  KEXUE_CPU_ENTRIES(task_range, (const PASS<S, T>& task, int64_t begin, int64_t end), KEXUE_LA_TASK_BODY)
#define KEXUE_LA_TASK_DECL(PASS, S, T) \
  KEXUE_CPU_DECLARE_ENTRIES(task_range, (const PASS<S, T>& task, int64_t begin, int64_t end))
KEXUE_LA_TASK_DECL(Forward, float, float)
KEXUE_LA_TASK_DECL(Forward, double, double)
KEXUE_LA_TASK_DECL(Forward, c10::Half, float)
KEXUE_LA_TASK_DECL(Forward, c10::BFloat16, float)
KEXUE_LA_TASK_DECL(Backward, float, float)
KEXUE_LA_TASK_DECL(Backward, double, double)
KEXUE_LA_TASK_DECL(Backward, c10::Half, float)
KEXUE_LA_TASK_DECL(Backward, c10::BFloat16, float)
#undef KEXUE_LA_TASK_DECL

}  // namespace kexue::la
