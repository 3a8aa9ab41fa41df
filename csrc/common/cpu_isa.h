// Portable ISA dispatch for the CPU kernels.
//
// Wheels must run on any x86-64 CPU, so nothing is built with -march=native.  Each kernel entry
// point is instead compiled once per path from one template, with the SIMD width as a template
// argument:
//   * an AVX-512 version (64-byte vectors; F, VL, DQ, BW) marked KEXUE_TARGET_AVX512,
//   * an AVX2 + FMA version (32-byte vectors) marked KEXUE_TARGET_AVX2, and
//   * a baseline version (16-byte vectors: SSE2 on x86-64, NEON on arm64),
// and the entry picks one at run time with cpu_isa() (cpuid, read once).  Everything the entry
// calls is always inlined into it (KEXUE_ALWAYS_INLINE), so it is compiled for the entry's ISA.
// The width is a template argument rather than GCC's target_clones because one source with
// 32-byte vector types compiles to spill-heavy code for SSE2 (measured 25x slower); each ISA
// needs its own register-tile width.  AVX-512 pays on CPUs with full-width units (AMD Zen 4/5,
// Intel server parts): linear attention on this project's AMD EPYC, 1 thread, N=4096, D=64:
// forward 1.46-1.51x, forward+backward 1.33-1.39x the AVX2 path (bench/RESULTS.md).
//
// -DKEXUE_CPU_NO_AVX2 builds the baseline path only, -DKEXUE_CPU_NO_AVX512 no AVX-512 path;
// at run time KEXUE_CPU_ISA=base|avx2 caps the path (read once; for tests and A/B timings).
#pragma once

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KEXUE_CPU_NO_AVX2)
#define KEXUE_CPU_HAS_AVX2_PATH 1
#define KEXUE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define KEXUE_CPU_HAS_AVX2_PATH 0
#define KEXUE_TARGET_AVX2
#endif

#if KEXUE_CPU_HAS_AVX2_PATH && !defined(KEXUE_CPU_NO_AVX512)
#define KEXUE_CPU_HAS_AVX512_PATH 1
#define KEXUE_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#else
#define KEXUE_CPU_HAS_AVX512_PATH 0
#define KEXUE_TARGET_AVX512
#endif

// Forces inlining into the caller (and so compilation for the caller's ISA).  The lambda form goes
// after a lambda's parameter list.
#if defined(__GNUC__) || defined(__clang__)
#define KEXUE_ALWAYS_INLINE inline __attribute__((always_inline))
#define KEXUE_LAMBDA_INLINE __attribute__((always_inline))
#else
#define KEXUE_ALWAYS_INLINE inline
#define KEXUE_LAMBDA_INLINE
#endif

namespace kexue::cpu {

// SIMD widths (bytes) of the code paths.
constexpr int kAvx512Bytes = 64;
constexpr int kAvx2Bytes = 32;
constexpr int kBaseBytes = 16;

enum class Isa : int { kBase = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest path that was built and that this CPU (and OS) runs, capped by KEXUE_CPU_ISA.
inline Isa cpu_isa() {
  static const Isa isa = [] {
    Isa best = Isa::kBase;
#if KEXUE_CPU_HAS_AVX2_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
#if KEXUE_CPU_HAS_AVX512_PATH
    if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      best = Isa::kAvx512;
#endif
#endif
    const char* cap = std::getenv("KEXUE_CPU_ISA");
    if (cap != nullptr && std::strcmp(cap, "base") == 0) best = Isa::kBase;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && best == Isa::kAvx512) best = Isa::kAvx2;
    return best;
  }();
  return isa;
}

}  // namespace kexue::cpu

// Per-ISA entry points from one body.  KEXUE_CPU_ENTRIES(NAME, PARAMS, BODY) defines
//   void NAME_avx512 PARAMS { BODY(kexue::cpu::kAvx512Bytes) }   (where that path is built)
//   void NAME_avx2 PARAMS   { BODY(kexue::cpu::kAvx2Bytes) }     (likewise)
//   void NAME_base PARAMS   { BODY(kexue::cpu::kBaseBytes) }
// each with its target attribute; BODY(W) is a macro that inlines the work for vector width W.
// KEXUE_CPU_DISPATCH(ISA, NAME, ARGS) returns the call of the entry ISA (a cpu::Isa) selects.
#if KEXUE_CPU_HAS_AVX512_PATH
#define KEXUE_CPU_ENTRY_AVX512(NAME, PARAMS, BODY) \
  KEXUE_TARGET_AVX512 void NAME##_avx512 PARAMS { BODY(kexue::cpu::kAvx512Bytes) }
#define KEXUE_CPU_CALL_AVX512(ISA, NAME, ARGS) \
  if ((ISA) == ::kexue::cpu::Isa::kAvx512) return NAME##_avx512 ARGS;
#define KEXUE_CPU_DECLARE_AVX512(NAME, PARAMS) KEXUE_TARGET_AVX512 void NAME##_avx512 PARAMS;
#else
#define KEXUE_CPU_DECLARE_AVX512(NAME, PARAMS)
#define KEXUE_CPU_ENTRY_AVX512(NAME, PARAMS, BODY)
#define KEXUE_CPU_CALL_AVX512(ISA, NAME, ARGS)
#endif
#if KEXUE_CPU_HAS_AVX2_PATH
#define KEXUE_CPU_ENTRY_AVX2(NAME, PARAMS, BODY) \
  KEXUE_TARGET_AVX2 void NAME##_avx2 PARAMS { BODY(kexue::cpu::kAvx2Bytes) }
#define KEXUE_CPU_CALL_AVX2(ISA, NAME, ARGS) \
  if ((ISA) == ::kexue::cpu::Isa::kAvx2) return NAME##_avx2 ARGS;
#define KEXUE_CPU_DECLARE_AVX2(NAME, PARAMS) KEXUE_TARGET_AVX2 void NAME##_avx2 PARAMS;
#else
#define KEXUE_CPU_DECLARE_AVX2(NAME, PARAMS)
#define KEXUE_CPU_ENTRY_AVX2(NAME, PARAMS, BODY)
#define KEXUE_CPU_CALL_AVX2(ISA, NAME, ARGS)
#endif
#define KEXUE_CPU_ENTRIES(NAME, PARAMS, BODY)  \
  KEXUE_CPU_ENTRY_AVX512(NAME, PARAMS, BODY)   \
  KEXUE_CPU_ENTRY_AVX2(NAME, PARAMS, BODY)     \
  void NAME##_base PARAMS { BODY(kexue::cpu::kBaseBytes) }
// KEXUE_CPU_DECLARE_ENTRIES(NAME, PARAMS) declares those entries (with the same target attributes),
// for a caller in another translation unit than the one that defines them.
#define KEXUE_CPU_DECLARE_ENTRIES(NAME, PARAMS) \
  KEXUE_CPU_DECLARE_AVX512(NAME, PARAMS)        \
  KEXUE_CPU_DECLARE_AVX2(NAME, PARAMS)          \
  void NAME##_base PARAMS;
#define KEXUE_CPU_DISPATCH(ISA, NAME, ARGS) \
  do {                                      \
    KEXUE_CPU_CALL_AVX512(ISA, NAME, ARGS)  \
    KEXUE_CPU_CALL_AVX2(ISA, NAME, ARGS)    \
    return NAME##_base ARGS;                \
  } while (0)
