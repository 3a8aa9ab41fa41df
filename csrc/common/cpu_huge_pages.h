// Transparent huge pages for large, freshly allocated CPU outputs.
//
// A fresh N×C gradient (500 MiB at N4096 C32000 float32) comes from mmap and is faulted in page
// by page on its first write: 128k faults of 4 KiB, each a kernel entry plus zeroing, cost more
// than the kernel's own arithmetic.  madvise(MADV_HUGEPAGE) on the buffer before its first touch
// lets Linux fault it in 2 MiB pages (512× fewer faults) wherever transparent huge pages are
// "always" or "madvise" (the distributions' default); "never" makes it a no-op.  It is what torch
// does for every allocation under THP_MEM_ALLOC_ENABLE=1 (read once, at torch's start), done here
// only for the buffers our kernels write whole.  Only the 2 MiB-aligned interior is advised (the
// allocator aligns to 64 bytes); the memory stays an ordinary c10 CPU allocation.
// Opt-in, KEXUE_HUGE_PAGES=1: measured on this project's machine (a Firecracker VM, AMD EPYC,
// shared), the 2 MiB pages cut the faults 170-fold but made the call slower, not faster (a guess,
// not checked: the host backs fresh guest huge pages 4 KiB at a time); bench/ce_cpu_timing.py measures
// both on any machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace kexue::cpu {

constexpr std::size_t kHugePageBytes = std::size_t(2) << 20;     // x86-64 / arm64 PMD page
constexpr std::size_t kHugePageMinBytes = 4 * kHugePageBytes;    // smaller buffers: few faults anyway

// Read at every call (only buffers of kHugePageMinBytes or more ask), so a process can compare.
inline bool huge_pages_enabled() {
  const char* env = std::getenv("KEXUE_HUGE_PAGES");
  return env != nullptr && std::strcmp(env, "1") == 0;
}

// Advises huge pages for [ptr, ptr + bytes) before its first write; a hint, never an error.
inline void advise_huge_pages(void* ptr, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (ptr == nullptr || bytes < kHugePageMinBytes || !huge_pages_enabled()) return;
  const auto start = reinterpret_cast<std::uintptr_t>(ptr);
  const std::uintptr_t lo = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const std::uintptr_t hi = (start + bytes) & ~(kHugePageBytes - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)ptr;
  (void)bytes;
#endif
}

}  // namespace kexue::cpu
