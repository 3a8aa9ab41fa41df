// The CPU buffer cache of cpu_buffer_cache.h: a c10::Allocator whose deleter returns blocks to a
// mutex-guarded list instead of freeing them.  O(blocks) per request; blocks are few and large.
#include "common/cpu_buffer_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <pthread.h>

#include <cstdlib>
#include <list>
#include <mutex>

namespace kexue::cpu {
namespace {

constexpr std::int64_t kDefaultLimitMiB = 2048;

std::int64_t limit_bytes() {
  const char* env = std::getenv("KEXUE_CPU_CACHE_MB");
  std::int64_t mib = kDefaultLimitMiB;
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    TORCH_CHECK(end != env && *end == '\0' && v >= 0,
                "KEXUE_CPU_CACHE_MB must be a non-negative integer (MiB), got '", env, "'");
    mib = v;
  }
  return mib << 20;
}

struct Block {
  void* ptr;
  std::int64_t bytes;
};

class CachingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    const auto bytes = static_cast<std::int64_t>(n);
    Block* b = take(bytes);
    if (b == nullptr) b = new Block{c10::alloc_cpu(n), bytes};
    report(b->ptr, b->bytes);
    return {b->ptr, b, &CachingAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  std::int64_t clear() {
    std::list<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop.swap(free_);
      cached_ = 0;
    }
    std::int64_t released = 0;
    for (Block* b : drop) {
      released += b->bytes;
      destroy(b);
    }
    return released;
  }

  std::int64_t cached() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

  static CachingAllocator& get() {
    static auto* instance = [] {
      auto* a = new CachingAllocator();  // never destroyed: tensors may outlive statics
      // fork() (DataLoader workers) while another thread holds the lock would leave the child's copy
      // locked forever: the forking thread takes the lock first and both sides release it after.
      pthread_atfork([] { get().mu_.lock(); }, [] { get().mu_.unlock(); }, [] { get().mu_.unlock(); });
      return a;
    }();
    return *instance;
  }

 private:
  // Best-fit cached block for a request of `bytes`, or null after making room for a fresh one.
  Block* take(std::int64_t bytes) {
    const std::int64_t limit = limit_bytes();
    std::list<Block*> drop;
    Block* found = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        const std::int64_t s = (*it)->bytes;
        if (s >= bytes && s <= bytes + bytes / 4 && (best == free_.end() || s < (*best)->bytes)) best = it;
      }
      if (best != free_.end()) {
        found = *best;
        cached_ -= found->bytes;
        free_.erase(best);
      } else {
        while (!free_.empty() && cached_ + bytes > limit) {  // the oldest go first
          cached_ -= free_.front()->bytes;
          drop.push_back(free_.front());
          free_.pop_front();
        }
      }
    }
    for (Block* b : drop) destroy(b);
    return found;
  }

  static void release(void* ctx) {
    auto* b = static_cast<Block*>(ctx);
    report(b->ptr, -b->bytes);
    get().give_back(b);
  }

  void give_back(Block* b) {
    const std::int64_t limit = limit_bytes();
    std::list<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (b->bytes > limit) {
        drop.push_back(b);
      } else {
        while (!free_.empty() && cached_ + b->bytes > limit) {
          cached_ -= free_.front()->bytes;
          drop.push_back(free_.front());
          free_.pop_front();
        }
        free_.push_back(b);
        cached_ += b->bytes;
      }
    }
    for (Block* d : drop) destroy(d);
  }

  static void destroy(Block* b) {
    c10::free_cpu(b->ptr);
    delete b;
  }

  // An allocation (+) or a free (-) as torch's profiler sees those of its own CPU allocator.
  static void report(void* ptr, std::int64_t delta) {
    if (c10::memoryProfilingEnabled()) {
      c10::reportMemoryUsageToProfiler(ptr, delta, 0, 0, c10::Device(c10::DeviceType::CPU));
    }
  }

  std::mutex mu_;
  std::list<Block*> free_;  // oldest first
  std::int64_t cached_ = 0;
};

}  // namespace

at::Tensor empty_cached(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_CHECK(options.device().is_cpu(), "empty_cached: CPU tensors only");
  const auto dtype = c10::typeMetaToScalarType(options.dtype());
  std::int64_t numel = 1;
  for (auto s : sizes) numel *= s;
  if (numel * static_cast<std::int64_t>(c10::elementSize(dtype)) < kBufferCacheMinBytes || limit_bytes() == 0) {
    return at::empty(sizes, options);
  }
  return at::detail::empty_generic(sizes, &CachingAllocator::get(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   dtype, c10::MemoryFormat::Contiguous);
}

std::int64_t release_cached_buffers() { return CachingAllocator::get().clear(); }

std::int64_t cached_buffer_bytes() { return CachingAllocator::get().cached(); }

}  // namespace kexue::cpu
