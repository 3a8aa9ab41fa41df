// Portable ISA dispatch for the CPU kernels.
//
// Wheels must run on any x86-64 CPU, so nothing is built with -march=native.  Hot functions
// are instead compiled twice with GCC function multi-versioning: a clone for x86-64-v3
// (AVX2 + FMA, Haswell / Zen and later) and the baseline ("default", SSE2); the dynamic
// loader's ifunc resolver picks one per process from cpuid.  Code that such a function
// inlines (the always_inline micro-kernels of cpu_gemm.cpp) is compiled for the clone's ISA.
// Elsewhere (other compilers, other architectures, non-ELF) the macro is empty and the code is
// built for the compiler's default target.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && (__GNUC__ >= 11) && defined(__linux__)
#define KEXUE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define KEXUE_CPU_HAS_CLONES 1
#else
#define KEXUE_CPU_CLONES
#define KEXUE_CPU_HAS_CLONES 0
#endif

// Forces inlining into the caller (and so compilation for the caller's ISA clone).  The lambda
// form goes after a lambda's parameter list.
#if defined(__GNUC__) || defined(__clang__)
#define KEXUE_ALWAYS_INLINE inline __attribute__((always_inline))
#define KEXUE_LAMBDA_INLINE __attribute__((always_inline))
#else
#define KEXUE_ALWAYS_INLINE inline
#define KEXUE_LAMBDA_INLINE
#endif
