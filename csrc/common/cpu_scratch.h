// Per-task scratch memory of the CPU kernels.
#pragma once

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cstdint>

namespace kexue::cpu {

// One allocation holding all scratch matrices of a kernel task (allocated once per task, never
// per chunk):  off = arena.reserve(n) for each block, arena.allocate(), then arena.at(off).
// Memory comes from c10's CPU allocator (64-byte aligned, and visible to the profiler's memory
// accounting); each block starts on a cache line.
template <typename T>
class ScratchArena {
 public:
  static constexpr int64_t kAlign = 64;  // bytes: a cache line, and the widest vector load

  // Reserves n elements; returns the block's offset (resolve it with at() after allocate()).
  int64_t reserve(int64_t n) {
    const int64_t per_line = kAlign / static_cast<int64_t>(sizeof(T));
    const int64_t off = size_;
    size_ += (n + per_line - 1) / per_line * per_line;
    return off;
  }
  void allocate() {
    data_ = c10::GetCPUAllocator()->allocate(static_cast<size_t>(size_ > 0 ? size_ : 1) * sizeof(T));
    base_ = static_cast<T*>(data_.get());
  }
  T* at(int64_t offset) const { return base_ + offset; }

 private:
  c10::DataPtr data_;
  T* base_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace kexue::cpu
