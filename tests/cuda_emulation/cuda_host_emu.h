// Host stand-ins for the CUDA runtime, shared by the emulators of the CUDA kernels
// (ce_kernels_emu.cpp, la_kernels_emu.cpp, probe_kernels_emu.cpp): the real kernel source and
// host launchers, compiled by g++, run on the CPU.
//
//   * every CUDA thread of a CTA is a fiber (ucontext; own stack with a guard page), all on one
//     OS thread; CTAs run one after another.  A fiber runs until it reaches a synchronisation
//     point (__syncthreads, a warp shuffle) or returns; then the scheduler resumes a runnable
//     fiber picked at random (seeded): each barrier phase runs the threads in a different order,
//     so a missing __syncthreads shows up as wrong results, as on a GPU.
//   * __syncthreads waits for the CTA's live threads (threads that returned no longer count);
//     a warp shuffle for the warp's live lanes.  When nothing can run but threads are still
//     waiting (a barrier in divergent code), the run stops with "deadlock".  A shuffle that reads
//     a lane that has returned, and launch configurations a GPU would refuse (block > 1024
//     threads, grid.y/z > 65535, an empty grid, dynamic shared memory above 48 KiB without
//     cudaFuncSetAttribute or above the device's opt-in limit: 163 KiB, an sm_80's) are reported as errors.
//   * kernels launch through KEXUE_LAUNCH(grid, block, smem, stream, kernel)(args...) and declare
//     dynamic shared memory with KEXUE_DYNAMIC_SMEM(T, name) (csrc/common/cuda_common.cuh); here
//     the first runs the grid on the host, the second is a per-launch buffer filled with NaN
//     bytes before every CTA (reads of unwritten shared memory show up).  Static __shared__
//     arrays are function statics (one CTA at a time).
//   * cudaFuncSetAttribute, cudaGetLastError, cudaPeekAtLastError, cudaMemsetAsync, cudaGetDevice,
//     cudaDeviceGetAttribute (one A100-like device whose shared-memory opt-in limit a test may
//     lower to an sm_86's: g_smem_optin) and the atomics are host functions (one OS thread:
//     atomics are plain read-modify-writes).
// What this checks: the algorithm, the indexing, the barrier structure and the launch
// configuration; not the GPU memory model, timing or resource limits other than those above.
#pragma once

#include <ucontext.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <vector_types.h>

// CUDA's host_defines.h gives these device meanings; here they are plain host C++.
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

namespace kexue_emu {

// ---- errors ---------------------------------------------------------------------------------
inline int g_errors = 0;  // emulation errors (deadlock, bad launch, shuffle from exited lane)
inline void emu_error(const char* what) {
  if (g_errors < 20) fprintf(stdout, "EMU-ERROR %s\n", what);
  ++g_errors;
}
inline cudaError_t g_last_error = cudaSuccess;

// ---- built-in variables ---------------------------------------------------------------------
inline uint3 g_threadIdx, g_blockIdx;
inline dim3 g_blockDim, g_gridDim;

// ---- fibers -----------------------------------------------------------------------------------
constexpr size_t kStackBytes = 256 * 1024;

struct Fiber {
  ucontext_t ctx;
  void* stack = nullptr;  // mmap'ed, lowest page a guard page
  unsigned tid = 0;
  bool done = false;
};

struct Barrier {
  int expected = 0;  // live members
  int count = 0;     // arrived in this phase
  std::vector<int> waiters;
};

struct Cta {
  std::vector<Fiber> fibers;
  std::vector<int> runnable;
  Barrier cta;
  std::vector<Barrier> warps;
  std::vector<int64_t> shfl_count;  // per thread: shuffles done
  ucontext_t main_ctx;
  int current = -1;
  int live = 0;
  int nthreads = 0;
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  const std::function<void()>* body = nullptr;
};
inline Cta g_cta;
inline std::vector<float> g_shfl_slots[2];  // double-buffered by shuffle parity

inline uint64_t next_rand() {
  uint64_t x = g_cta.rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return g_cta.rng = x;
}

inline void set_seed(uint64_t seed) { g_cta.rng = seed * 0x9e3779b97f4a7c15ull + 1; }

inline void release(Barrier& b) {
  for (int w : b.waiters) g_cta.runnable.push_back(w);
  b.waiters.clear();
  b.count = 0;
}

// The running fiber stops here until b's phase completes (then it is runnable again).
inline void arrive_and_wait(Barrier& b) {
  Fiber& f = g_cta.fibers[g_cta.current];
  b.waiters.push_back(g_cta.current);
  if (++b.count >= b.expected) release(b);
  swapcontext(&f.ctx, &g_cta.main_ctx);
  g_threadIdx.x = f.tid;  // resumed
}

inline void fiber_entry(unsigned lo, unsigned hi) {
  (void)lo;
  (void)hi;
  (*g_cta.body)();
  Fiber& f = g_cta.fibers[g_cta.current];
  f.done = true;
  --g_cta.live;
  // a returned thread no longer takes part in __syncthreads or its warp's shuffles
  --g_cta.cta.expected;
  if (g_cta.cta.count > 0 && g_cta.cta.count >= g_cta.cta.expected) release(g_cta.cta);
  Barrier& w = g_cta.warps[f.tid / 32];
  --w.expected;
  if (w.count > 0 && w.count >= w.expected) release(w);
  swapcontext(&f.ctx, &g_cta.main_ctx);  // never resumed
}

inline void ensure_fibers(int n) {
  auto& fs = g_cta.fibers;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  while (static_cast<int>(fs.size()) < n) {
    Fiber f;
    f.stack = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (f.stack == MAP_FAILED) {
      perror("mmap");
      exit(3);
    }
    mprotect(f.stack, page, PROT_NONE);  // guard page: a stack overflow faults
    fs.push_back(f);
  }
}

// Runs one CTA (g_blockIdx set) of nthreads threads executing body.
inline void run_cta(int nthreads, const std::function<void()>& body) {
  ensure_fibers(nthreads);
  Cta& c = g_cta;
  c.body = &body;
  c.nthreads = nthreads;
  c.runnable.clear();
  c.cta = Barrier{};
  c.cta.expected = nthreads;
  c.warps.assign((nthreads + 31) / 32, Barrier{});
  for (int w = 0; w < static_cast<int>(c.warps.size()); ++w) c.warps[w].expected = std::min(32, nthreads - 32 * w);
  c.shfl_count.assign(nthreads, 0);
  for (int t = 0; t < nthreads; ++t) {
    Fiber& f = c.fibers[t];
    f.tid = t;
    f.done = false;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_entry), 2, 0u, 0u);
    c.runnable.push_back(t);
  }
  c.live = nthreads;
  while (c.live > 0) {
    if (c.runnable.empty()) {
      char msg[160];
      snprintf(msg, sizeof msg, "deadlock in block (%u,%u,%u): %d threads wait at a barrier that cannot complete",
               g_blockIdx.x, g_blockIdx.y, g_blockIdx.z, c.live);
      emu_error(msg);
      fflush(stdout);
      exit(3);  // the fibers' state cannot be unwound
    }
    const size_t i = next_rand() % c.runnable.size();
    c.current = c.runnable[i];
    c.runnable[i] = c.runnable.back();
    c.runnable.pop_back();
    g_threadIdx = uint3{c.fibers[c.current].tid, 0, 0};
    swapcontext(&c.main_ctx, &c.fibers[c.current].ctx);
  }
  c.current = -1;
}

// ---- launches ---------------------------------------------------------------------------------
constexpr size_t kDefaultSmem = 48 * 1024;
constexpr size_t kMaxSmemOptin = 166912;  // sm_80: 163 KiB per block (sm_90: 227 KiB)
constexpr size_t kSmemOptinSm86 = 101376;  // sm_86 / sm_89 (RTX 30xx / 40xx, A10, L4, L40): 99 KiB
// The emulated device's opt-in limit (cudaDevAttrMaxSharedMemoryPerBlockOptin, checked by
// cudaFuncSetAttribute and at launch): an sm_80 by default; tests set kSmemOptinSm86.
inline size_t g_smem_optin = kMaxSmemOptin;
inline std::map<const void*, int> g_max_dyn_smem;  // cudaFuncAttributeMaxDynamicSharedMemorySize
inline std::vector<float4> g_dyn_smem;
inline int g_launches = 0;

// Runs grid × block threads of body (blockIdx, threadIdx, blockDim, gridDim set), CTAs in
// order x fastest; checks the configuration first (sets the error cudaGetLastError returns).
inline void run_grid(dim3 grid, dim3 block, size_t smem, const void* kernel, const std::function<void()>& body) {
  ++g_launches;
  const size_t nthreads = static_cast<size_t>(block.x) * block.y * block.z;
  char msg[200] = "";
  if (block.y != 1 || block.z != 1) snprintf(msg, sizeof msg, "launch: only 1-D blocks are emulated");
  if (nthreads == 0 || nthreads > 1024) snprintf(msg, sizeof msg, "launch: block of %zu threads", nthreads);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    snprintf(msg, sizeof msg, "launch: grid (%u, %u, %u)", grid.x, grid.y, grid.z);
  if (smem > kDefaultSmem) {
    auto it = g_max_dyn_smem.find(kernel);
    if (it == g_max_dyn_smem.end() || static_cast<size_t>(it->second) < smem)
      snprintf(msg, sizeof msg, "launch: %zu bytes of dynamic shared memory without cudaFuncSetAttribute", smem);
  }
  if (smem > g_smem_optin) snprintf(msg, sizeof msg, "launch: %zu bytes of dynamic shared memory", smem);
  if (msg[0]) {
    emu_error(msg);
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  g_dyn_smem.assign((smem + 15) / 16 + 8, float4{});  // (+128 bytes: the window starts 128-byte aligned)
  g_gridDim = grid;
  g_blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        g_blockIdx = uint3{x, y, z};
        if (smem) memset(g_dyn_smem.data(), 0xff, g_dyn_smem.size() * 16);  // NaN
        run_cta(static_cast<int>(nthreads), body);
      }
}

// KEXUE_LAUNCH(grid, block, smem, stream, kernel)(args...): the kernel's arguments are copied
// once, as a launch does, and every thread calls kernel(args...).
template <class K>
struct Launch {
  dim3 grid, block;
  size_t smem;
  K kernel;
  template <class... A>
  void operator()(A... args) const {
    auto k = kernel;
    auto tup = std::make_tuple(args...);
    std::function<void()> body = [&] { std::apply(k, tup); };
    run_grid(grid, block, smem, reinterpret_cast<const void*>(kernel), body);
  }
};
template <class K>
Launch<K*> launch_of(dim3 grid, dim3 block, size_t smem, K* kernel) {
  return Launch<K*>{grid, block, smem, kernel};
}

template <class T>
T* dynamic_smem() {
  const uintptr_t a = reinterpret_cast<uintptr_t>(g_dyn_smem.data());
  return reinterpret_cast<T*>((a + 127) / 128 * 128);  // as a GPU's: aligned for any declared type
}

// ---- storage dtypes ---------------------------------------------------------------------------
template <class T> inline float tof(T x);
template <> inline float tof(float x) { return x; }
template <> inline float tof(__half x) { return __half2float(x); }
template <> inline float tof(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> inline T fromf(float x);
template <> inline float fromf(float x) { return x; }
template <> inline __half fromf(float x) { return __float2half_rn(x); }
template <> inline __nv_bfloat16 fromf(float x) { return __float2bfloat16_rn(x); }
template <class T> inline const char* dtype_name() {
  return std::is_same_v<T, float> ? "f32" : std::is_same_v<T, __half> ? "f16" : "bf16";
}

}  // namespace kexue_emu

#define threadIdx ::kexue_emu::g_threadIdx
#define blockIdx ::kexue_emu::g_blockIdx
#define blockDim ::kexue_emu::g_blockDim
#define gridDim ::kexue_emu::g_gridDim
#define KEXUE_LAUNCH(grid, block, smem, stream, ...) ::kexue_emu::launch_of(grid, block, smem, __VA_ARGS__)
#define KEXUE_DYNAMIC_SMEM(T, name) T* name = ::kexue_emu::dynamic_smem<T>()

// ---- device functions -------------------------------------------------------------------------
inline void __syncthreads() { kexue_emu::arrive_and_wait(kexue_emu::g_cta.cta); }
inline void __syncwarp(unsigned = 0xffffffffu) {
  kexue_emu::arrive_and_wait(kexue_emu::g_cta.warps[kexue_emu::g_threadIdx.x / 32]);
}

// Shuffles: write the value, wait for the warp, read the source lane's.  Slots alternate between
// two buffers by the thread's shuffle count, so no second barrier is needed (a lane can be at
// most one shuffle ahead of any other of its warp).
template <class V>
inline V emu_shfl(V v, int src_lane) {
  using namespace kexue_emu;
  static_assert(sizeof(V) <= sizeof(float) * 2, "shuffle of a 32/64-bit value");
  const int tid = static_cast<int>(g_threadIdx.x);
  const int64_t n = ++g_cta.shfl_count[tid];
  const int par = static_cast<int>(n & 1);
  auto& slots = g_shfl_slots[par];
  if (slots.size() < 2 * 1024) slots.resize(2 * 1024);
  memcpy(&slots[2 * tid], &v, sizeof(V));
  arrive_and_wait(g_cta.warps[tid / 32]);
  const int src = (tid & ~31) | (src_lane & 31);
  // (the source lane has written this shuffle's value unless it returned before reaching it)
  if (src >= g_cta.nthreads || g_cta.shfl_count[src] < n) emu_error("shuffle reads a lane that has returned");
  V r;
  memcpy(&r, &g_shfl_slots[par][2 * src], sizeof(V));
  return r;
}
template <class V> inline V __shfl_xor_sync(unsigned, V v, int o, int = 32) {
  return emu_shfl(v, static_cast<int>(kexue_emu::g_threadIdx.x & 31) ^ o);
}
template <class V> inline V __shfl_sync(unsigned, V v, int lane, int = 32) { return emu_shfl(v, lane); }
template <class V> inline V __shfl_down_sync(unsigned, V v, unsigned d, int = 32) {
  const int l = static_cast<int>(kexue_emu::g_threadIdx.x & 31) + static_cast<int>(d);
  return emu_shfl(v, l < 32 ? l : static_cast<int>(kexue_emu::g_threadIdx.x & 31));
}

// ---- WMMA (nvcuda::wmma, 16×16×16 tiles of half / bfloat16 with float accumulators) -----------
// A fragment here holds the whole 16×16 tile in every lane (num_elements = 256): the kernel may
// only apply the same operation to every element of a fragment (the API leaves the lane layout
// unspecified, so code that relies on one is wrong on a GPU as well).  Each *_sync call first
// waits for the warp's live lanes, as the warp-collective operation does; a store writes lane l's
// share (elements e with e % 32 == l), so no lane overwrites what another wrote after the store.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "only 16x16x16 tiles are emulated");
  static constexpr int num_elements = 256;
  T x[256];  // [row][col] of the tile as the operand enters the product (A: m×k, B: k×n, C: m×n)
};

template <class Frag, class V>
inline void fill_fragment(Frag& f, V v) {
  for (auto& e : f.x) e = v;
}

template <class Use, class T, class Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  __syncwarp();
  const bool cm = std::is_same_v<Layout, col_major>;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = cm ? p[c * ldm + r] : p[r * ldm + c];
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  __syncwarp();
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  __syncwarp();
  const int lane = static_cast<int>(kexue_emu::g_threadIdx.x & 31);
  for (int e = lane; e < 256; e += 32) {
    const int r = e / 16, c = e % 16;
    (l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[e];
  }
}

// d = a b + c with float products of the 16-bit operands (exact) summed in float, k in order.
// Every lane holds the whole tile, so the 32 lanes of a warp compute the same product: the last
// operands and result are kept per warp and reused when a lane's operands are bitwise the same
// (a pure function of them: only the emulation's speed changes).
template <class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  __syncwarp();
  struct Memo {
    bool valid = false;
    T a[256], b[256];
    float c[256], d[256];
  };
  static Memo memo[32];  // per warp of the CTA (one CTA runs at a time)
  Memo& mm = memo[(kexue_emu::g_threadIdx.x / 32) % 32];
  if (mm.valid && !memcmp(mm.a, a.x, sizeof mm.a) && !memcmp(mm.b, b.x, sizeof mm.b) &&
      !memcmp(mm.c, c.x, sizeof mm.c)) {
    memcpy(d.x, mm.d, sizeof mm.d);
    return;
  }
  memcpy(mm.a, a.x, sizeof mm.a);
  memcpy(mm.b, b.x, sizeof mm.b);
  memcpy(mm.c, c.x, sizeof mm.c);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float s = mm.c[m * 16 + n];
      for (int k = 0; k < 16; ++k) s = fmaf(kexue_emu::tof(mm.a[m * 16 + k]), kexue_emu::tof(mm.b[k * 16 + n]), s);
      mm.d[m * 16 + n] = s;
    }
  mm.valid = true;
  memcpy(d.x, mm.d, sizeof mm.d);
}
}  // namespace wmma
}  // namespace nvcuda

inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline float __uint_as_float(unsigned x) { float f; memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
template <class T> inline T __ldg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }

// One OS thread and no preemption between synchronisation points: read-modify-writes are atomic.
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  const auto old = *p; if (v < old) *p = v; return old; }
inline float atomicAdd(float* p, float v) { const float old = *p; *p = old + v; return old; }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const auto old = *p; *p = old + v; return old; }
inline int atomicAdd(int* p, int v) { const int old = *p; *p = old + v; return old; }

// ---- runtime API ------------------------------------------------------------------------------
extern "C" {
cudaError_t CUDARTAPI cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > kexue_emu::g_smem_optin) return cudaErrorInvalidValue;
    kexue_emu::g_max_dyn_smem[func] = value;
  }
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
// One device, an A100 (108 SMs) with the opt-in shared-memory limit g_smem_optin.
cudaError_t CUDARTAPI cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(kexue_emu::g_smem_optin); break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(kexue_emu::kDefaultSmem); break;
    case cudaDevAttrMultiProcessorCount: *value = 108; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetLastError(void) {
  const cudaError_t e = kexue_emu::g_last_error;
  kexue_emu::g_last_error = cudaSuccess;
  return e;
}
cudaError_t CUDARTAPI cudaPeekAtLastError(void) { return kexue_emu::g_last_error; }
cudaError_t CUDARTAPI cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t) {
  memset(p, value, count);
  return cudaSuccess;
}
}
// (cuda_runtime.h's typed overload exists for nvcc only)
template <class T>
cudaError_t cudaFuncSetAttribute(T* func, enum cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(func), attr, value);
}
