// Portable ISA dispatch for the CPU kernels.
//
// Wheels must run on any x86-64 CPU, so nothing is built with -march=native.  Each kernel entry
// point is instead compiled twice from one template, with the SIMD width as a template argument:
//   * an AVX2 + FMA version (32-byte vectors) marked KEXUE_TARGET_AVX2, and
//   * a baseline version (16-byte vectors: SSE2 on x86-64, NEON on arm64),
// and the entry picks one at run time with cpu_has_avx2_fma() (cpuid, read once).  Everything the
// entry calls is always inlined into it (KEXUE_ALWAYS_INLINE), so it is compiled for the entry's
// ISA.  The width is a template argument rather than GCC's target_clones because one source with
// 32-byte vector types compiles to spill-heavy code for SSE2 (measured 25x slower); each ISA
// needs its own register-tile width.
//
// -DKEXUE_CPU_NO_AVX2 builds the baseline path only (to test the fallback on an AVX2 machine).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KEXUE_CPU_NO_AVX2)
#define KEXUE_CPU_HAS_AVX2_PATH 1
#define KEXUE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define KEXUE_CPU_HAS_AVX2_PATH 0
#define KEXUE_TARGET_AVX2
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

// SIMD widths (bytes) of the two code paths.
constexpr int kAvx2Bytes = 32;
constexpr int kBaseBytes = 16;

// True when the AVX2 + FMA path was built and this CPU runs it.
inline bool cpu_has_avx2_fma() {
#if KEXUE_CPU_HAS_AVX2_PATH
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
#else
  return false;
#endif
}

}  // namespace kexue::cpu
