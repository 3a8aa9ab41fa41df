// A small cache of large CPU output buffers, reused across calls instead of returned to the OS.
//
// Why: a large fresh buffer (a 500 MiB cross-entropy gradient at N4096 C32000 float32) comes from
// mmap and is faulted in 4 KiB page by page on its first write: 128k page faults, each a kernel
// entry plus zeroing, cost more than the kernel's arithmetic (bench/RESULTS.md, issue 16).  torch's
// CPU allocator caches nothing, so a training loop pays them at every step.  Here a buffer of
// kMinBytes or more, once freed, is kept (up to a byte limit) and handed to the next request of
// about its size: the same pages, already mapped.  The CUDA caching allocator does the same for
// device memory.
//
// Policy: best fit among cached blocks whose size is in [n, n + n/4]; on a miss, cached blocks are
// freed (oldest first) until the cache plus the new block fit the limit, then a fresh block is
// allocated.  A freed block is kept if it fits the limit (older blocks make room), else freed.
// Limit: KEXUE_CPU_CACHE_MB (default 2048; 0 disables the cache), read at every large request.
// The tensors are ordinary CPU tensors (resizable, seen by torch's memory profiler as an
// allocation and a free, like any other); the memory a cached block holds is released by
// release_cached_buffers() (kexue.empty_cpu_cache()) or by setting the limit to 0.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace kexue::cpu {

constexpr std::int64_t kBufferCacheMinBytes = std::int64_t(16) << 20;  // smaller ones: few faults

// An uninitialised contiguous tensor, from the cache when its size is kBufferCacheMinBytes or more.
at::Tensor empty_cached(at::IntArrayRef sizes, const at::TensorOptions& options);

// Frees every cached block now; returns the bytes released.
std::int64_t release_cached_buffers();

// Bytes held by the cache (blocks not in use).
std::int64_t cached_buffer_bytes();

}  // namespace kexue::cpu
