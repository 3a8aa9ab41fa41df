// Host launchers of linear attention (declared in params.h): argument validation, choice of
// kernel, backward workspace layout, and a checked launch of every kernel.  Torch-free.
#include <algorithm>

#include "linear_attention/aux_kernels.cuh"
#include "linear_attention/chunk_kernel.cuh"
#include "linear_attention/params.h"

namespace kexue {
namespace la {
namespace detail {

#define KEXUE_LA_EXTERN(T, ROLE) extern template cudaError_t run_chunk_role<T, ROLE>(const CoreArgs&, cudaStream_t);
KEXUE_LA_CHUNK_INSTANCES(KEXUE_LA_EXTERN)
#undef KEXUE_LA_EXTERN

namespace {

#define KEXUE_LA_RETURN_IF_ERROR(...)       \
  do {                                      \
    const cudaError_t err_ = (__VA_ARGS__); \
    if (err_ != cudaSuccess) return err_;   \
  } while (0)

bool valid(const LinearAttentionParams& p) {
  if (p.B < 0 || p.H < 1 || p.Hkv < 1 || p.H % p.Hkv != 0 || p.N < 0 || p.nseq < 0) return false;
  if (p.Dk < 1 || p.Dk > kMaxHeadDim || p.Dv < 1 || p.Dv > kMaxHeadDim) return false;
  if (p.F != p.Dk + (p.feature_map == FeatureMap::kTaylor ? 1 : 0)) return false;
  if (p.cu_seqlens != nullptr && p.B != 1) return false;
  if (p.cu_seqlens == nullptr && p.nseq != p.B) return false;
  if ((p.S0 == nullptr) != (p.z0 == nullptr)) return false;
  return p.nseq <= 0x7fffffff && p.H <= 65535;  // grid.x = sequences, grid.y = heads
}

template <typename T>
cudaError_t fwd_typed(const LinearAttentionParams& p, cudaStream_t stream) {
  if (p.N == 1 && p.cu_seqlens == nullptr) {
    const dim3 grid(p.B, p.H, (p.Dv + kStepThreads - 1) / kStepThreads);
    KEXUE_LAUNCH(grid, kStepThreads, 0, stream, la_step_kernel<T>)(p);
    return cudaGetLastError();
  }
  CoreArgs a;
  a.p = p;
  a.xdim = p.F;
  a.wdim = p.Dv;
  return run_chunk_role<T, kFwd>(a, stream);
}

// Workspace layout, float32, each buffer starting at a multiple of 4 floats (16 bytes).
struct WsLayout {
  int64_t rden = 0, part = 0, dA = 0, dB = 0, dV = 0, total = 0;
  int nparts = 0;
};

int64_t align4(int64_t x) { return (x + 3) / 4 * 4; }

WsLayout ws_layout(const LinearAttentionParams& p) {
  WsLayout w;
  const int64_t rows_h = static_cast<int64_t>(p.B) * p.H * p.N;
  const int64_t rows_kv = static_cast<int64_t>(p.B) * p.Hkv * p.N;
  int64_t off = 0;
  if (p.normalize) {
    const int wb = chunk_wb(p, p.F);  // the kPrep pass has xdim = F and slices Dv by this width
    w.nparts = (p.Dv + wb - 1) / wb;
    w.rden = off;
    off += align4(rows_h);
    w.part = off;
    off += align4(rows_h * w.nparts);
  }
  w.dA = off;
  off += align4(rows_h * p.F);
  w.dB = off;
  off += align4(rows_kv * p.F);
  w.dV = off;
  off += align4(rows_kv * p.Dv);
  w.total = off;
  return w;
}

int vjp_blocks(int64_t rows) {
  const int64_t warps_per_block = 256 / 32;
  return static_cast<int>(std::min<int64_t>((rows + warps_per_block - 1) / warps_per_block, 65535 * 8));
}

template <typename T>
cudaError_t bwd_typed(const LinearAttentionParams& p, float* base, cudaStream_t stream) {
  const WsLayout w = ws_layout(p);
  CoreArgs a;
  a.p = p;
  if (w.total > 0) {
    a.ws.rden = p.normalize ? base + w.rden : nullptr;
    a.ws.part = p.normalize ? base + w.part : nullptr;
    a.ws.nparts = w.nparts;
    a.ws.dA = base + w.dA;
    a.ws.dB = base + w.dB;
    a.ws.dV = base + w.dV;
  }
  if (p.normalize && p.N > 0) {  // r = 1/(den + eps) and do·out, by a forward recomputation
    a.xdim = p.F;
    a.wdim = p.Dv;
    KEXUE_LA_RETURN_IF_ERROR(run_chunk_role<T, kPrep>(a, stream));
  }
  if (p.N > 0) {
    a.xdim = p.Dv + 1;
    a.wdim = p.F;
    KEXUE_LA_RETURN_IF_ERROR(run_chunk_role<T, kDq>(a, stream));
    a.xdim = p.F;
    a.wdim = p.Dv;
    KEXUE_LA_RETURN_IF_ERROR(run_chunk_role<T, kDv>(a, stream));
  }
  // kDk also produces dS0 / dz0 (its final state), so it runs for N == 0 too.
  if (p.N > 0 || p.dS0 != nullptr) {
    a.xdim = p.Dv + 1;
    a.wdim = p.F;
    KEXUE_LA_RETURN_IF_ERROR(run_chunk_role<T, kDk>(a, stream));
  }
  if (p.N == 0) return cudaSuccess;
  const int64_t rows_h = static_cast<int64_t>(p.B) * p.H * p.N;
  const int64_t rows_kv = static_cast<int64_t>(p.B) * p.Hkv * p.N;
  KEXUE_LAUNCH(vjp_blocks(rows_h), 256, 0, stream, la_vjp_rows_kernel<T>)(
      static_cast<const T*>(p.q), p.q_stride, a.ws.dA, static_cast<T*>(p.dq), p.dq_stride, p.H, p.N, p.Dk, p.F,
      p.feature_map, nullptr, 0, 0, rows_h);
  KEXUE_LA_RETURN_IF_ERROR(cudaGetLastError());
  KEXUE_LAUNCH(vjp_blocks(rows_kv), 256, 0, stream, la_vjp_rows_kernel<T>)(
      static_cast<const T*>(p.k), p.k_stride, a.ws.dB, static_cast<T*>(p.dk), p.dk_stride, p.Hkv, p.N, p.Dk, p.F,
      p.feature_map, p.mask, p.mask_stride_b, p.mask_stride_n, rows_kv);
  KEXUE_LA_RETURN_IF_ERROR(cudaGetLastError());
  KEXUE_LAUNCH(vjp_blocks(rows_kv), 256, 0, stream, la_vjp_rows_kernel<T>)(
      nullptr, Strides4{}, a.ws.dV, static_cast<T*>(p.dv), p.dv_stride, p.Hkv, p.N, p.Dv, p.Dv, p.feature_map,
      nullptr, 0, 0, rows_kv);
  return cudaGetLastError();
}

}  // namespace
}  // namespace detail

const char* linear_attention_unsupported_reason(const LinearAttentionParams& p) {
  using namespace detail;
  const size_t limit = device_smem_optin();
  if (limit == 0) return "the current device's shared-memory limit could not be queried";
  // the X widths of the passes: F (forward, kPrep, kDv) and Dv + 1 (kDq, kDk)
  if (chunk_config(p, p.F, limit) == kNoConfig || chunk_config(p, p.Dv + 1, limit) == kNoConfig) {
    return "the chunked kernels need more shared memory per block than this GPU allows (GPUs with 99 KiB per "
           "block, sm_86 / sm_89, run feature dims F <= 132 and Dv <= 131, i.e. head dims up to 128; larger ones "
           "need 113 KiB: an A100 or H100, or backend='triton')";
  }
  return nullptr;
}

cudaError_t launch_linear_attention_fwd(const LinearAttentionParams& p, cudaStream_t stream) {
  using namespace detail;
  if (!valid(p)) return cudaErrorInvalidValue;
  if (p.nseq == 0) return cudaSuccess;
  switch (p.dtype) {
    case DType::kFloat32:
      return fwd_typed<float>(p, stream);
    case DType::kFloat16:
      return fwd_typed<__half>(p, stream);
    case DType::kBFloat16:
      return fwd_typed<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

size_t linear_attention_bwd_workspace_bytes(const LinearAttentionParams& p) {
  return static_cast<size_t>(detail::ws_layout(p).total) * sizeof(float);
}

cudaError_t launch_linear_attention_bwd(const LinearAttentionParams& p, void* workspace, size_t workspace_bytes,
                                        cudaStream_t stream) {
  using namespace detail;
  if (!valid(p)) return cudaErrorInvalidValue;
  if (workspace_bytes < linear_attention_bwd_workspace_bytes(p)) return cudaErrorInvalidValue;
  if (p.nseq == 0) return cudaSuccess;
  float* base = static_cast<float*>(workspace);
  switch (p.dtype) {
    case DType::kFloat32:
      return bwd_typed<float>(p, base, stream);
    case DType::kFloat16:
      return bwd_typed<__half>(p, base, stream);
    case DType::kBFloat16:
      return bwd_typed<__nv_bfloat16>(p, base, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace la
}  // namespace kexue
