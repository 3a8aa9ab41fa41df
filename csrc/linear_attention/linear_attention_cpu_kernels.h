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
// Every task allocates one scratch arena (O(G·(F + Dv)·kChunk* + G·L) elements, plus the causal
// backward's kept chunk products and mapped rows, 2·G·L·kChunkCausal + (G + 1)·L·(F + 1) elements
// up to Problem::keep_bytes), never per chunk.  Inputs are read through their strides (no
// .contiguous() copies) and prefetched one chunk ahead; half / bf16 are converted to float on
// load, the accumulation type is float (double for double inputs).  All products are cpu::gemm /
// gemm_tn (a transposed operand read in place) / gemm_sum (two products in one pass over the
// output's register tiles) calls on row-major scratch (register-blocked, FMA; see
// common/cpu_gemm.h).
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
using cpu::gemm_tn;
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
// Bytes per task the causal backward may keep its chunk products in (Problem::keep_bytes; 2·G·L·c
// floats: 1 MiB for a sequence of 4096 tokens at c = 32, G = 1; with a feature map also φ(q), φ(k):
// (G + 1)·L·(F + 1) floats, 2 MiB more at F = 64).  Past it they are recomputed.
constexpr int64_t kKeepBytesDefault = int64_t{64} << 20;
// Chunks ahead of the one in work whose rows are prefetched (prefetch_rows): 1 measured 6 %
// faster than none in the causal D64 forward, 2 no better than 1 (noise-level in the backward).
constexpr int64_t kPrefetchChunks = 1;

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

// Prefetches rows t..t+c (cols elements each) of x[b, h] into L2, for reading (or writing: out
// = true): issued one chunk ahead, it overlaps the next chunk's cache misses on the inputs (and
// the write-allocate reads of the outputs) with this chunk's GEMMs.  Those misses (the copies
// of the rows into scratch) took about a quarter of the kernel's samples (perf, B2 H4 N4096 D64,
// causal); the prefetch removes part of it (see kPrefetchChunks).  Rows with an inner stride
// != 1 are left to the hardware.
template <typename X>
KEXUE_ALWAYS_INLINE void prefetch_rows(const Strided<X>& x, int64_t b, int64_t h, int64_t t, int64_t c, int64_t cols,
                                       bool out) {
  constexpr int64_t kLine = 64;  // bytes per cache line
  if (!x || x.st[3] != 1) return;
  const int64_t bytes = cols * static_cast<int64_t>(sizeof(X));
  for (int64_t r = 0; r < c; ++r) {
    const char* p = reinterpret_cast<const char*>(x.row(b, h, t + r));
    for (int64_t off = 0; off < bytes; off += kLine) {
      if (out) {
        __builtin_prefetch(p + off, 1, 2);
      } else {
        __builtin_prefetch(p + off, 0, 2);
      }
    }
    if (bytes % kLine == 0 && reinterpret_cast<uintptr_t>(p) % kLine == 0) continue;
    if (out) {  // the row's last line, when the row does not start on a line
      __builtin_prefetch(p + bytes - 1, 1, 2);
    } else {
      __builtin_prefetch(p + bytes - 1, 0, 2);
    }
  }
}

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

// What one task (sequence s, kv head hk) works on, and its scratch layout.
struct TaskDims {
  int64_t s = 0, hk = 0, b = 0, t0 = 0, L = 0;  // sequence, kv head, batch row, first token, length
  int64_t C = 0, F = 0, Dk = 0, Dv = 0, G = 1;  // tokens per chunk, dims, query heads per kv head
  int64_t nchunks = 0;                          // chunks of the sequence
  int64_t ldF = 0, ldDv = 0, ldC = 0, ldDk = 0;  // padded leading dims of the scratch matrices
  bool has_state = false;                       // an initial state was given
  bool shared = true;                           // the kv prefix state is every head's state (G == 1 or no S0)
};

template <typename S, typename T>
struct Problem {
  int64_t B = 0, H = 0, Hkv = 0, G = 1, N = 0, Dk = 0, Dv = 0, F = 0, nseq = 0;
  FeatureMap fm = FeatureMap::None;
  bool causal = false, normalize = true;
  int64_t chunk = 0;  // tokens per chunk (kChunkCausal / kChunkNonCausal unless overridden)
  // Causal backward: the chunk products K and M of the first pass (and, with a feature map, the
  // mapped rows) are kept for the second when they take at most this many bytes; recomputed otherwise.
  int64_t keep_bytes = 0;
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
  // The prologue of every task: task -> (sequence, kv head), chunk and scratch dims.
  TaskDims task_dims(int64_t task) const {
    TaskDims d;
    d.s = task / Hkv, d.hk = task % Hkv;
    seq(d.s, d.b, d.t0, d.L);
    d.C = chunk, d.F = F, d.Dk = Dk, d.Dv = Dv, d.G = G;
    d.nchunks = (d.L + d.C - 1) / d.C;
    d.ldF = pad_cols(F), d.ldDv = pad_cols(Dv), d.ldC = pad_cols(chunk), d.ldDk = pad_cols(Dk);
    d.has_state = S0 || z0;
    d.shared = G == 1 || !d.has_state;
    return d;
  }
  KEXUE_ALWAYS_INLINE bool masked(int64_t b, int64_t t) const {
    return mask != nullptr && mask[b * mask_st[0] + t * mask_st[1]];
  }

  // X (raw, c x Dk) and Y = φ(X) (c x F) for rows t..t+c of x[b, h]; aux per row (taylor norm).
  // With key_mask, rows of padded keys get Y = 0.  Without a feature map the rows go straight
  // into Y (X is not written: nothing reads it then).
  template <int W>
  KEXUE_ALWAYS_INLINE void load_mapped(const Strided<const S>& x, int64_t b, int64_t h, int64_t t, int64_t c, T* X,
                                       int64_t ldx, T* Y, int64_t ldy, T* aux, bool key_mask) const {
    if (fm == FeatureMap::None) {
      load_rows(x.row(b, h, t), x.st[2], x.st[3], c, Dk, Y, ldy);
      if (key_mask && mask != nullptr) {
        for (int64_t i = 0; i < c; ++i)
          if (masked(b, t + i)) std::fill(Y + i * ldy, Y + i * ldy + F, T(0));
      }
      return;
    }
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

// Zeroes K above the diagonal over a causal chunk (the GEMMs that read K as a triangular
// operand need real zeros there) and, when den is given, sets den[i] = Σ_{j<=i} K[i][j].
template <int W, typename T>
KEXUE_ALWAYS_INLINE void causal_mask(T* K, int64_t ldk, int64_t c, T* den) {
  for (int64_t i = 0; i < c; ++i) {
    T* row = K + i * ldk;
    std::fill(row + i + 1, row + c, T(0));
    if (den != nullptr) den[i] = cpu::sum<W>(row, i + 1);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward.
//
// Causal, per chunk of c tokens and query head:
//   K = tril(A Bᵀ)                     c·c·F FMAs (c·c·F / 2 for chunks wider than a tile)
//   num = K V + A S,  den = K 1 + A z  c·c·Dv / 2 + c·F·Dv FMAs, one pass over each register
//                                      tile of num (gemm_sum)
// then per chunk and kv head:  S += Bᵀ V, z += Bᵀ 1  (c·F·Dv; Bᵀ read in place, gemm_tn).
// Non-causal: S = S0 + Bᵀ V over all chunks first (N·F·Dv per kv head), then num = A S
// (N·F·Dv per query head).  Scratch per task: ~7 matrices of kChunk* x (F | Dv) plus the state;
// no O(N) memory beyond the outputs.  den is computed only with normalize.
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
    const TaskDims d = P_.task_dims(task);
    const int64_t s = d.s, hk = d.hk, b = d.b, t0 = d.t0, L = d.L, C = d.C, F = d.F, Dv = d.Dv, G = d.G;
    const int64_t ldF = d.ldF, ldDv = d.ldDv, ldC = d.ldC, ldDk = d.ldDk;
    const bool has_state = d.has_state, shared = d.shared, causal = P_.causal, normalize = P_.normalize;

    cpu::ScratchArena<T> ar;
    const int64_t oX = ar.reserve(C * ldDk), oAux = ar.reserve(C), oA = ar.reserve(C * ldF),
                  oB = ar.reserve(C * ldF), oBt = ar.reserve(causal ? F * ldC : 0), oV = ar.reserve(C * ldDv),
                  oK = ar.reserve(causal ? C * ldC : 0), oO = ar.reserve(C * ldDv), oDen = ar.reserve(C),
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
        for (int64_t e = 0; e < Dv; ++e) Sh[f * ldDv + e] = s0[f * ldDv + e] + P[f * ldDv + e];
      for (int64_t f = 0; f < F; ++f) zh[f] = z0b[g * F + f] + pz[f];
      Sg = Sh, zg = zh;
    };
    // Loads k, v of a chunk into B (and Bᵀ, for the causal K = A Bᵀ) and V.
    auto load_kv = [&](int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      P_.template load_mapped<W>(P_.k, b, hk, t0 + lo, c, X, ldDk, Bm, ldF, aux, true);
      if (causal) transpose(c, F, Bm, ldF, Bt, ldC);
      load_rows(P_.v.row(b, hk, t0 + lo), P_.v.st[2], P_.v.st[3], c, Dv, V, ldDv);
    };
    auto update_state = [&](int64_t c) KEXUE_LAMBDA_INLINE {  // P += Bᵀ V, pz += Bᵀ 1
      gemm_tn(F, Dv, c, Bm, ldF, V, ldDv, P, ldDv, true);
      for (int64_t i = 0; i < c; ++i)
        for (int64_t f = 0; f < F; ++f) pz[f] += Bm[i * ldF + f];
    };
    // out rows lo..lo+c of head h from O (num) and den.
    auto write_out = [&](int64_t h, int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      if (normalize) {
        for (int64_t i = 0; i < c; ++i) {
          const T dn = den[i] + P_.eps;
          for (int64_t e = 0; e < Dv; ++e) O[i * ldDv + e] /= dn;
        }
      }
      store_rows(O, ldDv, c, Dv, out.row(b, h, t0 + lo), out.st[2], out.st[3]);
    };

    // Prefetches of the chunk at lo (if any): k, v and / or the group's q, out rows.
    const int64_t ahead = kPrefetchChunks * C;  // prefetch distance in tokens
    auto prefetch_kv = [&](int64_t lo) KEXUE_LAMBDA_INLINE {
      if (lo >= L) return;
      const int64_t c = std::min(C, L - lo);
      prefetch_rows(P_.k, b, hk, t0 + lo, c, d.Dk, false);
      prefetch_rows(P_.v, b, hk, t0 + lo, c, Dv, false);
    };
    auto prefetch_q_out = [&](int64_t lo) KEXUE_LAMBDA_INLINE {
      if (lo >= L) return;
      const int64_t c = std::min(C, L - lo);
      for (int64_t g = 0; g < G; ++g) {
        prefetch_rows(P_.q, b, hk * G + g, t0 + lo, c, d.Dk, false);
        prefetch_rows(out, b, hk * G + g, t0 + lo, c, Dv, true);
      }
    };

    if (!causal) {
      for (int64_t lo = 0; lo < L; lo += C) {
        const int64_t c = std::min(C, L - lo);
        prefetch_kv(lo + ahead);
        load_kv(lo, c);
        update_state(c);
      }
    }
    prefetch_q_out(0);
    for (int64_t lo = 0; lo < L; lo += C) {
      const int64_t c = std::min(C, L - lo);
      if (causal) {
        prefetch_kv(lo + ahead);
        load_kv(lo, c);
      }
      prefetch_q_out(lo + ahead);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = hk * G + g;
        const T *Sg, *zg;
        head_state(g, Sg, zg);
        P_.template load_mapped<W>(P_.q, b, h, t0 + lo, c, X, ldDk, A, ldF, aux, false);
        if (causal) {
          gemm(c, c, F, A, ldF, Bt, ldC, K, ldC, false, Tri::OutLower);  // K = A Bᵀ
          causal_mask<W>(K, ldC, c, normalize ? den : nullptr);
          cpu::GemmTerm<T> kv, as;  // O = tril(K) V + A S
          kv.K = c, kv.A = K, kv.lda = ldC, kv.B = V, kv.ldb = ldDv, kv.tri = Tri::ALower;
          as.K = F, as.A = A, as.lda = ldF, as.B = Sg, as.ldb = ldDv;
          cpu::gemm_sum(c, Dv, kv, as, O, ldDv, false);
        } else {
          gemm(c, Dv, F, A, ldF, Sg, ldDv, O, ldDv, false);  // O = A S
          if (normalize) std::fill(den, den + c, T(0));
        }
        if (normalize) {
          for (int64_t i = 0; i < c; ++i) den[i] += cpu::dot<W>(A + i * ldF, zg, F);
        }
        write_out(h, lo, c);
      }
      if (causal) update_state(c);
    }
    // Final state of every head of the group.
    for (int64_t g = 0; g < G; ++g) {
      const int64_t h = hk * G + g;
      const T *Sg, *zg;
      head_state(g, Sg, zg);
      for (int64_t f = 0; f < F; ++f) {
        T* dst = S_out.row(s, h, f);
        for (int64_t e = 0; e < Dv; ++e) dst[e * S_out.st[3]] = Sg[f * ldDv + e];
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
//      da = M B + r (U - t zᵀ) (without normalize: da = Do Sᵀ + M B in one gemm_sum); then
//      Sᵀ += Vᵀ B.  r_i, t_i are kept for pass 2 (2 scalars per token and head), and so are K
//      and M (2·c per token and head, when they fit Problem::keep_bytes; else pass 2 recomputes
//      them the same way, bit for bit).  FMAs per chunk and head: c²(F + Dv + F/2) + c·F·Dv
//      (+ c·F·Dv per kv head for the state).
//   2. reverse pass (dk, dv): per chunk and head  dv += Kᵀ G + B R, db += Mᵀ A + V Rᵀ + rz
//      (Kᵀ, Mᵀ read in place by gemm_tn's transposed tile, each sum in one pass over its output
//      tiles), then R += Aᵀ G, rz -= Aᵀ (r t) (G = r do).  FMAs per chunk and head:
//      c²(F + Dv)/2 + 3 c·F·Dv.  Both passes reload q, k (O(c·Dk)); pass 2 re-maps them only
//      when pass 1's φ(q), φ(k) are not kept (they are kept with K and M: (G + 1)·(F + 1)
//      elements per token more; the maps cost 4-11 % of the backward).
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
    const TaskDims d = P_.task_dims(task);
    const int64_t s = d.s, hk = d.hk, b = d.b, t0 = d.t0, L = d.L, C = d.C, F = d.F, Dk = d.Dk, Dv = d.Dv, G = d.G;
    const int64_t ldF = d.ldF, ldDv = d.ldDv, ldC = d.ldC, ldDk = d.ldDk, nchunks = d.nchunks;
    const bool has_state = d.has_state, shared = d.shared, causal = P_.causal, normalize = P_.normalize;
    const bool plain = P_.fm == FeatureMap::None;  // no feature map: dq / dk are da / db
    const bool rz_live = normalize || bool(gz);    // rz (the normaliser's accumulator) is not all 0
    const int64_t km_elems = G * nchunks * C * ldC;  // one of K, M for the whole sequence
    // With a feature map, pass 1 also keeps the mapped rows φ(q) (G heads), φ(k) and their aux
    // for pass 2, which then reloads only the raw rows its feature-map vjp reads.
    const int64_t phi_rows = plain ? 0 : (G + 1) * nchunks * C;
    const int64_t keep_elems = 2 * km_elems + phi_rows * (ldF + 1);
    const bool keep = causal && keep_elems * static_cast<int64_t>(sizeof(T)) <= P_.keep_bytes;
    const bool keep_phi = keep && !plain;

    cpu::ScratchArena<T> ar;
    const int64_t oXq = ar.reserve(C * ldDk), oXk = ar.reserve(C * ldDk), oAuxq = ar.reserve(C),
                  oAuxk = ar.reserve(C), oA = ar.reserve(C * ldF), oB = ar.reserve(C * ldF),
                  oBt = ar.reserve(causal ? F * ldC : 0), oV = ar.reserve(C * ldDv),
                  oVt = ar.reserve(causal ? Dv * ldC : 0), oDo = ar.reserve(C * ldDv),
                  oK = ar.reserve(causal && !keep ? C * ldC : 0), oW = ar.reserve(causal && !keep ? C * ldC : 0),
                  oKs = ar.reserve(keep ? km_elems : 0), oMs = ar.reserve(keep ? km_elems : 0),
                  oU = ar.reserve(C * ldF), oDA = ar.reserve(C * ldF), oDB = ar.reserve(C * ldF),
                  oDV = ar.reserve(C * ldDv), oDx = ar.reserve(ldDk), oDen = ar.reserve(C), oRT = ar.reserve(C),
                  oRTt = ar.reserve(C), oPt = ar.reserve(Dv * ldF), oPz = ar.reserve(F),
                  oSht = ar.reserve(Dv * ldF), oZh = ar.reserve(F), oS0t = ar.reserve((shared ? 0 : G) * Dv * ldF),
                  oZ0 = ar.reserve((shared ? 0 : G) * F), oR = ar.reserve(G * F * ldDv),
                  oRt = ar.reserve(G * Dv * ldF), oRz = ar.reserve(G * F),
                  oSave = ar.reserve(causal ? G * L * 2 : 0), oPhi = ar.reserve(keep_phi ? phi_rows * ldF : 0),
                  oPhiAux = ar.reserve(keep_phi ? phi_rows : 0);
    ar.allocate();
    T *Xq = ar.at(oXq), *Xk = ar.at(oXk), *auxq = ar.at(oAuxq), *auxk = ar.at(oAuxk), *A = ar.at(oA),
      *Bm = ar.at(oB), *Bt = ar.at(oBt), *V = ar.at(oV), *Vt = ar.at(oVt), *Do = ar.at(oDo), *K = ar.at(oK),
      *Wm = ar.at(oW), *Ks = ar.at(oKs), *Ms = ar.at(oMs), *U = ar.at(oU), *dA = ar.at(oDA), *dB = ar.at(oDB),
      *dV = ar.at(oDV), *dx = ar.at(oDx), *den = ar.at(oDen), *rr = ar.at(oRT), *tt = ar.at(oRTt),
      *Pt = ar.at(oPt), *pz = ar.at(oPz), *Sht = ar.at(oSht), *zh = ar.at(oZh), *S0t = ar.at(oS0t),
      *z0b = ar.at(oZ0), *R = ar.at(oR), *Rt = ar.at(oRt), *rz = ar.at(oRz), *saved = ar.at(oSave),
      *phi = ar.at(oPhi), *phi_aux = ar.at(oPhiAux);
    // Where K and M of chunk ci, head g live: the kept store, or the one-chunk scratch.
    auto k_of = [&](int64_t g, int64_t ci) KEXUE_LAMBDA_INLINE { return keep ? Ks + (g * nchunks + ci) * C * ldC : K; };
    auto m_of = [&](int64_t g, int64_t ci) KEXUE_LAMBDA_INLINE { return keep ? Ms + (g * nchunks + ci) * C * ldC : Wm; };
    // With keep_phi, A / auxq (slot g < G: head g's φ(q)) and Bm / auxk (slot G: φ(k)) of chunk ci
    // point into the kept store instead of the one-chunk scratch: pass 1 maps into it, pass 2 reads it.
    T *const A1 = A, *const B1 = Bm, *const auxq1 = auxq, *const auxk1 = auxk;
    auto phi_at = [&](int64_t slot, int64_t ci, T*& Y, T*& aux) KEXUE_LAMBDA_INLINE {
      const int64_t row = (slot * nchunks + ci) * C;
      Y = phi + row * ldF, aux = phi_aux + row;
    };
    auto use_q_slot = [&](int64_t g, int64_t ci) KEXUE_LAMBDA_INLINE {
      if (keep_phi) {
        phi_at(g, ci, A, auxq);
      } else {
        A = A1, auxq = auxq1;
      }
    };
    auto use_k_slot = [&](int64_t ci) KEXUE_LAMBDA_INLINE {
      if (keep_phi) {
        phi_at(G, ci, Bm, auxk);
      } else {
        Bm = B1, auxk = auxk1;
      }
    };

    // Pt = (kv prefix state)ᵀ, Dv x F (plus S0ᵀ when it is the only head's state).
    if (shared && has_state) {
      P_.load_initial(s, hk * G, Pt, ldF, true, pz);
    } else {
      for (int64_t e = 0; e < Dv; ++e) std::fill(Pt + e * ldF, Pt + e * ldF + F, T(0));
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
      for (int64_t e = 0; e < Dv; ++e)
        for (int64_t f = 0; f < F; ++f) Sht[e * ldF + f] = s0[e * ldF + f] + Pt[e * ldF + f];
      for (int64_t f = 0; f < F; ++f) zh[f] = z0b[g * F + f] + pz[f];
      Sg = Sht, zg = zh;
    };
    // Reverse accumulators start at the gradient of the final state.
    for (int64_t g = 0; g < G; ++g) {
      const int64_t h = hk * G + g;
      T* Rg = R + g * F * ldDv;
      for (int64_t f = 0; f < F; ++f) {
        const T* src = gS ? gS.row(s, h, f) : nullptr;
        for (int64_t e = 0; e < Dv; ++e) Rg[f * ldDv + e] = src ? src[e * gS.st[3]] : T(0);
        rz[g * F + f] = gz ? gz.row(s, h)[f * gz.st[2]] : T(0);
      }
    }
    auto load_k = [&](int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      P_.template load_mapped<W>(P_.k, b, hk, t0 + lo, c, Xk, ldDk, Bm, ldF, auxk, true);
    };
    auto load_k_raw = [&](int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {  // Xk only (φ(k) is kept)
      load_rows(P_.k.row(b, hk, t0 + lo), P_.k.st[2], P_.k.st[3], c, Dk, Xk, ldDk);
    };
    auto load_v = [&](int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      load_rows(P_.v.row(b, hk, t0 + lo), P_.v.st[2], P_.v.st[3], c, Dv, V, ldDv);
    };
    auto load_q = [&](int64_t h, int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      P_.template load_mapped<W>(P_.q, b, h, t0 + lo, c, Xq, ldDk, A, ldF, auxq, false);
    };
    auto load_q_raw = [&](int64_t h, int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {  // Xq only (φ(q) is kept)
      load_rows(P_.q.row(b, h, t0 + lo), P_.q.st[2], P_.q.st[3], c, Dk, Xq, ldDk);
    };
    auto load_do = [&](int64_t h, int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      load_rows(go.row(b, h, t0 + lo), go.st[2], go.st[3], c, Dv, Do, ldDv);
    };
    // Prefetches of the chunk at lo (if in the sequence): its k, v rows (and dk, dv, to be
    // written) and its q, do rows (and dq) of head g (every head of the group: g < 0).
    const int64_t ahead = kPrefetchChunks * C;  // prefetch distance in tokens
    auto prefetch_kv = [&](int64_t lo, bool grads) KEXUE_LAMBDA_INLINE {
      if (lo < 0 || lo >= L) return;
      const int64_t c = std::min(C, L - lo);
      prefetch_rows(P_.k, b, hk, t0 + lo, c, Dk, false);
      prefetch_rows(P_.v, b, hk, t0 + lo, c, Dv, false);
      if (grads) {
        prefetch_rows(dk, b, hk, t0 + lo, c, Dk, true);
        prefetch_rows(dv, b, hk, t0 + lo, c, Dv, true);
      }
    };
    auto prefetch_q = [&](int64_t g, int64_t lo, bool grads) KEXUE_LAMBDA_INLINE {
      if (lo < 0 || lo >= L) return;
      const int64_t c = std::min(C, L - lo);
      for (int64_t h = g < 0 ? hk * G : hk * G + g; h < (g < 0 ? hk * G + G : hk * G + g + 1); ++h) {
        prefetch_rows(P_.q, b, h, t0 + lo, c, Dk, false);
        prefetch_rows(go, b, h, t0 + lo, c, Dv, false);
        if (grads) prefetch_rows(dq, b, h, t0 + lo, c, Dk, true);
      }
    };
    auto update_state = [&](int64_t c) KEXUE_LAMBDA_INLINE {  // Pᵀ += Vᵀ B, pz += Bᵀ 1
      gemm_tn(Dv, F, c, V, ldDv, Bm, ldF, Pt, ldF, true);
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
    // Causal chunk products of head g's rows (A, Do loaded; Bᵀ, Vᵀ of the chunk): Kg = tril(A Bᵀ)
    // (den = its row sums when given), Wg = tril(Do Vᵀ).
    auto chunk_products = [&](int64_t c, T* Kg, T* Wg, T* den_or_null) KEXUE_LAMBDA_INLINE {
      gemm(c, c, F, A, ldF, Bt, ldC, Kg, ldC, false, Tri::OutLower);
      causal_mask<W>(Kg, ldC, c, den_or_null);
      gemm(c, c, Dv, Do, ldDv, Vt, ldC, Wg, ldC, false, Tri::OutLower);
    };
    // Wg <- M = r (W - t) on and below the diagonal, 0 above (r = 1, t = 0 without normalize).
    auto to_m = [&](int64_t c, T* Wg) KEXUE_LAMBDA_INLINE {
      for (int64_t i = 0; i < c; ++i) {
        T* wr = Wg + i * ldC;
        if (normalize) {
          for (int64_t j = 0; j <= i; ++j) wr[j] = rr[i] * (wr[j] - tt[i]);
        }
        std::fill(wr + i + 1, wr + c, T(0));
      }
    };
    // dq rows of head h from dA (F columns): the feature-map vjp.
    auto write_dq = [&](int64_t h, int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      if (plain) {
        store_rows(dA, ldF, c, Dk, dq.row(b, h, t0 + lo), dq.st[2], dq.st[3]);
        return;
      }
      for (int64_t i = 0; i < c; ++i) {
        feature_map_vjp_row<W>(P_.fm, Xq + i * ldDk, A + i * ldF, auxq[i], dA + i * ldF, Dk, dx);
        store_rows(dx, ldDk, 1, Dk, dq.row(b, h, t0 + lo + i), 0, dq.st[3]);
      }
    };
    // dk, dv rows of the group from dB, dV (padded keys get 0).
    auto write_dkdv = [&](int64_t lo, int64_t c) KEXUE_LAMBDA_INLINE {
      if (plain) {
        if (P_.mask != nullptr) {
          for (int64_t i = 0; i < c; ++i) {
            if (!P_.masked(b, t0 + lo + i)) continue;
            std::fill(dB + i * ldF, dB + i * ldF + F, T(0));
            std::fill(dV + i * ldDv, dV + i * ldDv + Dv, T(0));
          }
        }
        store_rows(dB, ldF, c, Dk, dk.row(b, hk, t0 + lo), dk.st[2], dk.st[3]);
      } else {
        for (int64_t i = 0; i < c; ++i) {
          if (P_.masked(b, t0 + lo + i)) {
            std::fill(dx, dx + Dk, T(0));
            std::fill(dV + i * ldDv, dV + i * ldDv + Dv, T(0));
          } else {
            feature_map_vjp_row<W>(P_.fm, Xk + i * ldDk, Bm + i * ldF, auxk[i], dB + i * ldF, Dk, dx);
          }
          store_rows(dx, ldDk, 1, Dk, dk.row(b, hk, t0 + lo + i), 0, dk.st[3]);
        }
      }
      store_rows(dV, ldDv, c, Dv, dv.row(b, hk, t0 + lo), dv.st[2], dv.st[3]);
    };
    // Do <- G = r ⊙ Do (the Dv columns of g'); the identity without normalize.
    auto scale_do = [&](int64_t c) KEXUE_LAMBDA_INLINE {
      if (!normalize) return;
      for (int64_t i = 0; i < c; ++i)
        for (int64_t e = 0; e < Dv; ++e) Do[i * ldDv + e] *= rr[i];
    };
    // R_g += Aᵀ G (G in Do), rz_g -= Aᵀ (r t); refreshes Rt_g = R_gᵀ if asked.
    auto accumulate_R = [&](int64_t g, int64_t c, bool refresh_t) KEXUE_LAMBDA_INLINE {
      T* Rg = R + g * F * ldDv;
      gemm_tn(F, Dv, c, A, ldF, Do, ldDv, Rg, ldDv, true);
      if (normalize) {
        for (int64_t i = 0; i < c; ++i) {
          const T w = -rr[i] * tt[i];
          for (int64_t f = 0; f < F; ++f) rz[g * F + f] += A[i * ldF + f] * w;
        }
      }
      if (refresh_t) transpose(F, Dv, Rg, ldDv, Rt + g * Dv * ldF, ldF);
    };
    // dB += rz_g on every row.
    auto add_rz = [&](int64_t g, int64_t c) KEXUE_LAMBDA_INLINE {
      if (!rz_live) return;
      for (int64_t j = 0; j < c; ++j)
        for (int64_t f = 0; f < F; ++f) dB[j * ldF + f] += rz[g * F + f];
    };

    // dS0 / dz0 = the reverse accumulators after the whole sequence.
    auto write_initial_grads = [&]() KEXUE_LAMBDA_INLINE {
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = hk * G + g;
        for (int64_t f = 0; f < F; ++f) {
          if (dS0) {
            T* dst = dS0.row(s, h, f);
            for (int64_t e = 0; e < Dv; ++e) dst[e * dS0.st[3]] = R[(g * F + f) * ldDv + e];
          }
          if (dz0) dz0.row(s, h)[f * dz0.st[2]] = rz[g * F + f];
        }
      }
    };

    if (causal) {
      // Pass 1: forward over chunks, dq.
      for (int64_t ci = 0; ci < nchunks; ++ci) {
        const int64_t lo = ci * C, c = std::min(C, L - lo);
        prefetch_kv(lo + ahead, false);
        prefetch_q(-1, lo + ahead, true);
        use_k_slot(ci);
        load_k(lo, c);
        transpose(c, F, Bm, ldF, Bt, ldC);
        load_v(lo, c);
        transpose(c, Dv, V, ldDv, Vt, ldC);
        for (int64_t g = 0; g < G; ++g) {
          const int64_t h = hk * G + g;
          const T *Sg, *zg;
          head_state(g, Sg, zg);
          use_q_slot(g, ci);
          load_q(h, lo, c);
          load_do(h, lo, c);
          T *Kg = k_of(g, ci), *Mg = m_of(g, ci);
          chunk_products(c, Kg, Mg, normalize ? den : nullptr);  // Kg = tril(A Bᵀ), Mg = tril(Do Vᵀ)
          if (normalize) {
            for (int64_t i = 0; i < c; ++i) den[i] += cpu::dot<W>(A + i * ldF, zg, F);
            gemm(c, F, Dv, Do, ldDv, Sg, ldF, U, ldF, false);  // U = Do Sᵀ
            for (int64_t i = 0; i < c; ++i)  // do_i·num_i = Σ_{j<=i} K_ij W_ij + a_i·U_i
              tt[i] = cpu::dot<W>(Kg + i * ldC, Mg + i * ldC, i + 1) + cpu::dot<W>(A + i * ldF, U + i * ldF, F);
            finish_rt(c, tt);
            to_m(c, Mg);
            for (int64_t i = 0; i < c; ++i) {  // dA = r (U - t zᵀ) + M B
              T* da = dA + i * ldF;
              const T* u = U + i * ldF;
              for (int64_t f = 0; f < F; ++f) da[f] = rr[i] * (u[f] - tt[i] * zg[f]);
            }
            gemm(c, F, c, Mg, ldC, Bm, ldF, dA, ldF, true, Tri::ALower);
          } else {
            finish_rt(c, tt);
            to_m(c, Mg);
            cpu::GemmTerm<T> ds, mb;  // dA = Do Sᵀ + M B
            ds.K = Dv, ds.A = Do, ds.lda = ldDv, ds.B = Sg, ds.ldb = ldF;
            mb.K = c, mb.A = Mg, mb.lda = ldC, mb.B = Bm, mb.ldb = ldF, mb.tri = Tri::ALower;
            cpu::gemm_sum(c, F, ds, mb, dA, ldF, false);
          }
          write_dq(h, lo, c);
          T* sv = saved + (g * L + lo) * 2;
          for (int64_t i = 0; i < c; ++i) sv[2 * i] = rr[i], sv[2 * i + 1] = tt[i];
        }
        update_state(c);
      }
      // Pass 2: reverse over chunks, dk and dv.
      for (int64_t g = 0; g < G; ++g) transpose(F, Dv, R + g * F * ldDv, ldDv, Rt + g * Dv * ldF, ldF);
      for (int64_t ci = nchunks - 1; ci >= 0; --ci) {
        const int64_t lo = ci * C, c = std::min(C, L - lo);
        prefetch_kv(lo - ahead, true);
        prefetch_q(-1, lo - ahead, false);
        use_k_slot(ci);
        if (keep_phi) {
          load_k_raw(lo, c);
        } else {
          load_k(lo, c);
        }
        load_v(lo, c);
        if (!keep) {
          transpose(c, F, Bm, ldF, Bt, ldC);
          transpose(c, Dv, V, ldDv, Vt, ldC);
        }
        for (int64_t g = 0; g < G; ++g) {
          const int64_t h = hk * G + g;
          const T* sv = saved + (g * L + lo) * 2;
          for (int64_t i = 0; i < c; ++i) rr[i] = sv[2 * i], tt[i] = sv[2 * i + 1];
          use_q_slot(g, ci);
          if (keep_phi) {
            load_q_raw(h, lo, c);
          } else {
            load_q(h, lo, c);
          }
          load_do(h, lo, c);
          T *Kg = k_of(g, ci), *Mg = m_of(g, ci);
          if (!keep) {  // as in pass 1, bit for bit
            chunk_products(c, Kg, Mg, nullptr);
            to_m(c, Mg);
          }
          scale_do(c);
          const T* Rg = R + g * F * ldDv;
          const bool first = g == 0;
          cpu::GemmTerm<T> kg, br, ma, vr;
          kg.K = c, kg.A = Kg, kg.lda = ldC, kg.B = Do, kg.ldb = ldDv, kg.transposed = true, kg.tri = Tri::AUpper;
          br.K = F, br.A = Bm, br.lda = ldF, br.B = Rg, br.ldb = ldDv;
          cpu::gemm_sum(c, Dv, kg, br, dV, ldDv, !first);  // dv (+)= Kᵀ G + B R
          ma.K = c, ma.A = Mg, ma.lda = ldC, ma.B = A, ma.ldb = ldF, ma.transposed = true, ma.tri = Tri::AUpper;
          vr.K = Dv, vr.A = V, vr.lda = ldDv, vr.B = Rt + g * Dv * ldF, vr.ldb = ldF;
          cpu::gemm_sum(c, F, ma, vr, dB, ldF, !first);  // db (+)= Mᵀ A + V Rᵀ
          add_rz(g, c);
          accumulate_R(g, c, true);
        }
        write_dkdv(lo, c);
      }
      write_initial_grads();
    } else {
      // Pass 1: the kv state.
      for (int64_t lo = 0; lo < L; lo += C) {
        const int64_t c = std::min(C, L - lo);
        prefetch_kv(lo + ahead, false);
        load_k(lo, c);
        load_v(lo, c);
        update_state(c);
      }
      // Pass 2: per head, dq and the accumulator R_h = Σ_i a_i g_iᵀ + grad_S.
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = hk * G + g;
        const T *Sg, *zg;
        head_state(g, Sg, zg);
        for (int64_t lo = 0; lo < L; lo += C) {
          const int64_t c = std::min(C, L - lo);
          prefetch_q(g, lo + ahead, true);
          load_q(h, lo, c);
          load_do(h, lo, c);
          if (normalize) {
            gemm(c, F, Dv, Do, ldDv, Sg, ldF, U, ldF, false);  // U = Do Sᵀ
            for (int64_t i = 0; i < c; ++i) {
              den[i] = cpu::dot<W>(A + i * ldF, zg, F);
              tt[i] = cpu::dot<W>(A + i * ldF, U + i * ldF, F);
            }
            finish_rt(c, tt);
            for (int64_t i = 0; i < c; ++i) {  // dA = r (U - t zᵀ)
              T* da = dA + i * ldF;
              const T* u = U + i * ldF;
              for (int64_t f = 0; f < F; ++f) da[f] = rr[i] * (u[f] - tt[i] * zg[f]);
            }
          } else {
            gemm(c, F, Dv, Do, ldDv, Sg, ldF, dA, ldF, false);  // dA = Do Sᵀ
            finish_rt(c, tt);
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
          for (int64_t e = 0; e < Dv; ++e) Rs[f * ldDv + e] += R[(g * F + f) * ldDv + e];
          rz[f] += rz[g * F + f];
        }
      }
      transpose(F, Dv, Rs, ldDv, Rt, ldF);
      for (int64_t lo = 0; lo < L; lo += C) {
        const int64_t c = std::min(C, L - lo);
        prefetch_kv(lo + ahead, true);
        load_k(lo, c);
        load_v(lo, c);
        gemm(c, Dv, F, Bm, ldF, Rs, ldDv, dV, ldDv, false);  // dv = B R
        gemm(c, F, Dv, V, ldDv, Rt, ldF, dB, ldF, false);    // db = V Rᵀ + rz
        add_rz(0, c);
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
