// Host emulation of the CUDA linear-attention kernels for machines without a GPU: the real
// launchers (csrc/linear_attention/linear_attention_api.cu: launch_linear_attention_fwd / _bwd,
// linear_attention_bwd_workspace_bytes) and the kernels they launch (chunk_kernel.cuh in every
// role, the decoding step and the vjp pass of aux_kernels.cuh), compiled by g++ on the CUDA
// stand-ins of cuda_host_emu.h.  Each case runs the forward and the backward and compares out,
// the final state (S, z), dq, dk, dv and the gradient of the initial state (dS0, dz0) with a
// float64 reference written here from the definition (pyext/linear_attention/reference.py):
//     a = φ(q_t), b_j = φ(k_j) (0 where key_padding_mask), A(t) = {j <= t} or all j,
//     num_t = Σ_{j∈A(t)} (a_t·b_j) v_j + a_t S0,  den_t = Σ_{j∈A(t)} a_t·b_j + a_t·z0,
//     out_t = num_t / (den_t + eps) (or num_t),   S = S0 + Σ_j b_j v_jᵀ,  z = z0 + Σ_j b_j,
// query head h reads kv head h / (H / Hkv), each cu_seqlens sequence runs on its own state;
// the gradients of L = Σ dout·out + Σ dS·S + Σ dz·z in closed form (checked against central
// differences in float64 on the first cases).  float16 / bfloat16 cases compare with the
// reference on the same rounded inputs and run twice, on the tensor-core kernel (chunk_tc.cuh,
// Math::kAuto) and on the float32 one (Math::kFloat32).  Tolerance per element: the output
// rounding of the dtype (2^-11 |ref| for float16, 2^-8 |ref| for bfloat16) plus a float32 term of
// tol32 · (row scale), row scale = the larger of max |ref| over the row (the (sequence, head)
// block for the states) and Σ |terms| behind the row's values (out, dv, dq, dk: where sums or the
// softmax vjp cancel; per entry for the states), with a floor of 1e-3 · the tensor's max; on
// tensor cores tol32 is 4× the unit roundoff of the operands (two or three of them rounded per
// term): 2^-7 for bfloat16, 2^-10 for float16.  The "range" cases feed float16 inputs whose P
// tiles and state exceed 65504 and whose g' = do/den rows fall below float16's smallest normal:
// they pass only with the float16 kernel's power-of-two tile scales; the last two cases feed
// float16 features below 2^-14 (a peaked softmax), exact only with the φ rows scaled too.
// Built and run by tests/test_linear_attention_cuda_emulation.py; exit status 1 on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda_host_emu.h"
#include "linear_attention/linear_attention_api.cu"
#include "linear_attention/la_chunk_fwd_f32.cu"
#include "linear_attention/la_chunk_fwd_f16.cu"
#include "linear_attention/la_chunk_fwd_bf16.cu"
#include "linear_attention/la_chunk_dq_f32.cu"
#include "linear_attention/la_chunk_dq_f16.cu"
#include "linear_attention/la_chunk_dq_bf16.cu"
#include "linear_attention/la_chunk_dkdv_f32.cu"
#include "linear_attention/la_chunk_dkdv_f16.cu"
#include "linear_attention/la_chunk_dkdv_bf16.cu"

using namespace kexue::la;
using kexue_emu::fromf;
using kexue_emu::tof;

using Vec = std::vector<double>;

// ---- the float64 reference ------------------------------------------------------------------
struct Prob {
  int B = 1, H = 1, Hkv = 1, Dk = 1, Dv = 1, F = 1;
  int64_t N = 0;
  FeatureMap fm = FeatureMap::kElu;
  bool causal = false, normalize = true;
  double eps = 1e-6;
  std::vector<int64_t> cu;  // empty: B sequences of N tokens
  int nseq() const { return cu.empty() ? B : static_cast<int>(cu.size()) - 1; }
};

// inputs as float64, contiguous: q (B,H,N,Dk), k (B,Hkv,N,Dk), v (B,Hkv,N,Dv), mask (B,N),
// S0 (nseq,H,F,Dv), z0 (nseq,H,F), dout (B,H,N,Dv), dS, dz (final-state shapes); empty = absent
struct Data {
  Vec q, k, v, S0, z0, dout, dS, dz;
  std::vector<uint8_t> mask;
};
struct Result {
  Vec out, S, z, dq, dk, dv, dS0, dz0;
  // per row of dq / dk: the magnitude of the float32 terms behind it (max_f Σ|terms of the
  // cotangent of φ| times the largest Jacobian entry of φ): the scale of the kernels' rounding
  // where the vjp cancels (softmax: y ⊙ (g - y·g))
  Vec dq_scale, dk_scale;
  Vec out_scale, dv_scale;  // the same for out and dv: Σ |terms| per row
  Vec S_scale, z_scale, dS0_scale, dz0_scale;  // Σ |terms| per entry of the states
};

constexpr double kTaylorEps = 1e-12;

Vec phi(const double* x, int Dk, FeatureMap fm) {
  Vec y(fm == FeatureMap::kTaylor ? Dk + 1 : Dk);
  switch (fm) {
    case FeatureMap::kNone: for (int d = 0; d < Dk; ++d) y[d] = x[d]; break;
    case FeatureMap::kElu: for (int d = 0; d < Dk; ++d) y[d] = x[d] > 0 ? x[d] + 1 : std::exp(x[d]); break;
    case FeatureMap::kRelu: for (int d = 0; d < Dk; ++d) y[d] = x[d] > 0 ? x[d] : 0; break;
    case FeatureMap::kSoftmax: {
      double m = -INFINITY, s = 0;
      for (int d = 0; d < Dk; ++d) m = std::max(m, x[d]);
      for (int d = 0; d < Dk; ++d) s += (y[d] = std::exp(x[d] - m));
      for (int d = 0; d < Dk; ++d) y[d] /= s;
      break;
    }
    case FeatureMap::kTaylor: {
      double n = 0;
      for (int d = 0; d < Dk; ++d) n += x[d] * x[d];
      n = std::max(std::sqrt(n), kTaylorEps);
      y[0] = 1;
      for (int d = 0; d < Dk; ++d) y[d + 1] = x[d] / n;
      break;
    }
  }
  return y;
}

// largest |∂φ_f/∂x_d| at x (elu, relu, none: 1; softmax: max y; taylor: 1 / max(‖x‖, 1e-12))
double phi_jmax(const double* x, int Dk, FeatureMap fm) {
  if (fm == FeatureMap::kSoftmax) {
    const Vec y = phi(x, Dk, fm);
    return *std::max_element(y.begin(), y.end());
  }
  if (fm == FeatureMap::kTaylor) {
    double n = 0;
    for (int d = 0; d < Dk; ++d) n += x[d] * x[d];
    return 1 / std::max(std::sqrt(n), kTaylorEps);
  }
  return 1;
}

// (∂φ/∂x)ᵀ g
Vec phi_vjp(const double* x, const double* g, int Dk, FeatureMap fm) {
  Vec dx(Dk);
  const Vec y = phi(x, Dk, fm);
  switch (fm) {
    case FeatureMap::kNone: for (int d = 0; d < Dk; ++d) dx[d] = g[d]; break;
    case FeatureMap::kElu: for (int d = 0; d < Dk; ++d) dx[d] = x[d] > 0 ? g[d] : g[d] * std::exp(x[d]); break;
    case FeatureMap::kRelu: for (int d = 0; d < Dk; ++d) dx[d] = x[d] > 0 ? g[d] : 0; break;
    case FeatureMap::kSoftmax: {
      double s = 0;
      for (int d = 0; d < Dk; ++d) s += y[d] * g[d];
      for (int d = 0; d < Dk; ++d) dx[d] = y[d] * (g[d] - s);
      break;
    }
    case FeatureMap::kTaylor: {
      double n = 0, s = 0;
      for (int d = 0; d < Dk; ++d) n += x[d] * x[d];
      n = std::sqrt(n);
      if (n >= kTaylorEps) {
        for (int d = 0; d < Dk; ++d) s += y[d + 1] * g[d + 1];
        for (int d = 0; d < Dk; ++d) dx[d] = (g[d + 1] - y[d + 1] * s) / n;
      } else {
        for (int d = 0; d < Dk; ++d) dx[d] = g[d + 1] / kTaylorEps;
      }
      break;
    }
  }
  return dx;
}

// One (sequence, head) block of a state and its normaliser column, with Σ|terms| per entry:
//   S[f][d] = S_init(f, d) + Σ_j x_j[f] w_j[d],   z[f] = z_init(f) + Σ_j x_j[f] c_j
// (|c_j| taken as c_abs[j]: the scale of c_j's error where c_j itself cancels).  The forward's
// final state is (x, w, c) = (φ(k), v, 1); the gradient of the initial state (φ(q), g, e).
template <class Sinit, class Zinit>
void state_sums(Sinit S_init, Zinit z_init, const std::vector<Vec>& x, const std::vector<Vec>& w, const Vec& c,
                const Vec& c_abs, int F, int Dv, size_t sh, Vec& S, Vec& S_scale, Vec& z, Vec& z_scale) {
  for (int f = 0; f < F; ++f) {
    double zz = z_init(f), za = std::fabs(z_init(f));
    for (size_t j = 0; j < x.size(); ++j) zz += x[j][f] * c[j], za += std::fabs(x[j][f]) * c_abs[j];
    z[sh * F + f] = zz;
    z_scale[sh * F + f] = za;
    for (int d = 0; d < Dv; ++d) {
      double ss = S_init(f, d), sa = std::fabs(S_init(f, d));
      for (size_t j = 0; j < x.size(); ++j) ss += x[j][f] * w[j][d], sa += std::fabs(x[j][f] * w[j][d]);
      S[(sh * F + f) * Dv + d] = ss;
      S_scale[(sh * F + f) * Dv + d] = sa;
    }
  }
}

Result reference(const Prob& P, const Data& X, bool grads) {
  const int B = P.B, H = P.H, Hkv = P.Hkv, Dk = P.Dk, Dv = P.Dv, F = P.F, G = H / Hkv, ns = P.nseq();
  const int64_t N = P.N;
  Result R;
  R.out.assign(size_t(B) * H * N * Dv, 0);
  R.out_scale.assign(size_t(B) * H * N, 0);
  R.dv_scale.assign(size_t(B) * Hkv * N, 0);
  R.S.assign(size_t(ns) * H * F * Dv, 0);
  R.z.assign(size_t(ns) * H * F, 0);
  R.S_scale.assign(R.S.size(), 0);
  R.z_scale.assign(R.z.size(), 0);
  Vec dBsum(size_t(B) * Hkv * N * F, 0), dBabs(size_t(B) * Hkv * N * F, 0);
  if (grads) {
    R.dq_scale.assign(size_t(B) * H * N, 0);
    R.dk_scale.assign(size_t(B) * Hkv * N, 0);
    R.dq.assign(size_t(B) * H * N * Dk, 0);
    R.dk.assign(size_t(B) * Hkv * N * Dk, 0);
    R.dv.assign(size_t(B) * Hkv * N * Dv, 0);
    R.dS0.assign(R.S.size(), 0);
    R.dz0.assign(R.z.size(), 0);
    R.dS0_scale.assign(R.S.size(), 0);
    R.dz0_scale.assign(R.z.size(), 0);
  }
  for (int s = 0; s < ns; ++s) {
    const int b = P.cu.empty() ? s : 0;
    const int64_t lo = P.cu.empty() ? 0 : P.cu[s], hi = P.cu.empty() ? N : P.cu[s + 1];
    for (int h = 0; h < H; ++h) {
      const int hk = h / G;
      const size_t sh = size_t(s) * H + h;
      auto S0 = [&](int f, int d) { return X.S0.empty() ? 0.0 : X.S0[(sh * F + f) * Dv + d]; };
      auto z0 = [&](int f) { return X.z0.empty() ? 0.0 : X.z0[sh * F + f]; };
      auto dS = [&](int f, int d) { return X.dS.empty() ? 0.0 : X.dS[(sh * F + f) * Dv + d]; };
      auto dz = [&](int f) { return X.dz.empty() ? 0.0 : X.dz[sh * F + f]; };
      const int64_t L = hi - lo;
      std::vector<Vec> a(L), bk(L), v(L), dout(L);
      for (int64_t i = 0; i < L; ++i) {
        const int64_t t = lo + i;
        a[i] = phi(&X.q[((size_t(b) * H + h) * N + t) * Dk], Dk, P.fm);
        bk[i] = phi(&X.k[((size_t(b) * Hkv + hk) * N + t) * Dk], Dk, P.fm);
        if (!X.mask.empty() && X.mask[size_t(b) * N + t]) std::fill(bk[i].begin(), bk[i].end(), 0.0);
        v[i].assign(&X.v[((size_t(b) * Hkv + hk) * N + t) * Dv], &X.v[((size_t(b) * Hkv + hk) * N + t) * Dv] + Dv);
        if (grads) dout[i].assign(&X.dout[((size_t(b) * H + h) * N + t) * Dv], &X.dout[((size_t(b) * H + h) * N + t) * Dv] + Dv);
      }
      auto dot = [](const Vec& x, const Vec& y) { double r = 0; for (size_t i = 0; i < x.size(); ++i) r += x[i] * y[i]; return r; };
      auto sees = [&](int64_t i, int64_t j) { return !P.causal || j <= i; };
      std::vector<Vec> outv(L, Vec(Dv)), g(L, Vec(Dv));
      Vec den(L), e(L, 0.0), e_abs(L, 0.0);  // e_abs: scale of e's error (out's, through do·out)
      for (int64_t i = 0; i < L; ++i) {
        Vec num(Dv, 0.0);
        double dn = 0, mag = 0;
        for (int64_t j = 0; j < L; ++j) {
          if (!sees(i, j)) continue;
          const double pij = dot(a[i], bk[j]);
          for (int d = 0; d < Dv; ++d) {
            num[d] += pij * v[j][d];
            mag = std::max(mag, std::fabs(v[j][d]));
          }
          dn += pij;
        }
        double mag_num = 0;
        for (int64_t j = 0; j < L; ++j)
          if (sees(i, j)) mag_num += std::fabs(dot(a[i], bk[j])) * mag;
        for (int f = 0; f < F; ++f) {
          for (int d = 0; d < Dv; ++d) {
            num[d] += a[i][f] * S0(f, d);
            mag_num += std::fabs(a[i][f] * S0(f, d));
          }
          dn += a[i][f] * z0(f);
        }
        den[i] = dn;
        R.out_scale[(size_t(b) * H + h) * N + lo + i] = P.normalize ? mag_num / std::fabs(dn + P.eps) : mag_num;
        for (int d = 0; d < Dv; ++d) outv[i][d] = P.normalize ? num[d] / (dn + P.eps) : num[d];
        for (int d = 0; d < Dv; ++d) R.out[((size_t(b) * H + h) * N + lo + i) * Dv + d] = outv[i][d];
      }
      const Vec ones(L, 1.0);
      state_sums(S0, z0, bk, v, ones, ones, F, Dv, sh, R.S, R.S_scale, R.z, R.z_scale);
      if (!grads) continue;
      for (int64_t i = 0; i < L; ++i) {
        const double r = P.normalize ? 1.0 / (den[i] + P.eps) : 1.0;
        for (int d = 0; d < Dv; ++d) g[i][d] = dout[i][d] * r;
        if (P.normalize) {
          e[i] = -dot(dout[i], outv[i]) * r;
          double da = 0;
          for (int d = 0; d < Dv; ++d) da += std::fabs(dout[i][d]) * std::max(std::fabs(outv[i][d]), R.out_scale[(size_t(b) * H + h) * N + lo + i]);
          e_abs[i] = da * r;
        }
      }
      for (int64_t i = 0; i < L; ++i) {  // dA_i and dq
        Vec dA(F, 0.0), dAabs(F, 0.0);
        for (int64_t j = 0; j < L; ++j) {
          if (!sees(i, j)) continue;
          const double c = dot(g[i], v[j]) + e[i];
          const double cabs = std::fabs(dot(g[i], v[j])) + e_abs[i];
          for (int f = 0; f < F; ++f) {
            dA[f] += bk[j][f] * c;
            dAabs[f] += std::fabs(bk[j][f]) * cabs;
          }
        }
        for (int f = 0; f < F; ++f) {
          double s2 = z0(f) * e[i], s2abs = std::fabs(z0(f)) * e_abs[i];
          for (int d = 0; d < Dv; ++d) {
            s2 += S0(f, d) * g[i][d];
            s2abs += std::fabs(S0(f, d) * g[i][d]);
          }
          dA[f] += s2;
          dAabs[f] += s2abs;
        }
        const size_t qrow = (size_t(b) * H + h) * N + lo + i;
        const Vec dx = phi_vjp(&X.q[qrow * Dk], dA.data(), Dk, P.fm);
        for (int d = 0; d < Dk; ++d) R.dq[qrow * Dk + d] = dx[d];
        R.dq_scale[qrow] = *std::max_element(dAabs.begin(), dAabs.end()) * phi_jmax(&X.q[qrow * Dk], Dk, P.fm);
      }
      for (int64_t j = 0; j < L; ++j) {  // dB_j, dv_j (summed over the group's heads)
        Vec dB(F, 0.0), dBa(F, 0.0), dvj(Dv, 0.0);
        for (int64_t i = 0; i < L; ++i) {
          if (!sees(i, j)) continue;
          const double c = dot(g[i], v[j]) + e[i];
          const double cabs = std::fabs(dot(g[i], v[j])) + e_abs[i];
          const double pij = dot(a[i], bk[j]);
          for (int f = 0; f < F; ++f) {
            dB[f] += a[i][f] * c;
            dBa[f] += std::fabs(a[i][f]) * cabs;
          }
          for (int d = 0; d < Dv; ++d) dvj[d] += pij * g[i][d];
          double gm = 0;
          for (int d = 0; d < Dv; ++d) gm = std::max(gm, std::fabs(g[i][d]));
          R.dv_scale[(size_t(b) * Hkv + hk) * N + lo + j] += std::fabs(pij) * gm;
        }
        for (int f = 0; f < F; ++f)
          for (int d = 0; d < Dv; ++d)
            R.dv_scale[(size_t(b) * Hkv + hk) * N + lo + j] += std::fabs(dS(f, d) * bk[j][f]);
        for (int f = 0; f < F; ++f) {
          double s2 = dz(f), s2abs = std::fabs(dz(f));
          for (int d = 0; d < Dv; ++d) {
            s2 += dS(f, d) * v[j][d];
            s2abs += std::fabs(dS(f, d) * v[j][d]);
            dvj[d] += dS(f, d) * bk[j][f];
          }
          dB[f] += s2;
          dBa[f] += s2abs;
        }
        const size_t row = (size_t(b) * Hkv + hk) * N + lo + j;
        for (int f = 0; f < F; ++f) {
          dBsum[row * F + f] += dB[f];
          dBabs[row * F + f] += dBa[f];
        }
        for (int d = 0; d < Dv; ++d) R.dv[row * Dv + d] += dvj[d];
      }
      state_sums(dS, dz, a, g, e, e_abs, F, Dv, sh, R.dS0, R.dS0_scale, R.dz0, R.dz0_scale);
    }
  }
  if (grads) {
    for (int b = 0; b < B; ++b)
      for (int hk = 0; hk < Hkv; ++hk)
        for (int64_t t = 0; t < N; ++t) {
          const size_t row = (size_t(b) * Hkv + hk) * N + t;
          if (!X.mask.empty() && X.mask[size_t(b) * N + t]) continue;  // stays 0
          const Vec dx = phi_vjp(&X.k[row * Dk], &dBsum[row * F], Dk, P.fm);
          for (int d = 0; d < Dk; ++d) R.dk[row * Dk + d] = dx[d];
          R.dk_scale[row] = *std::max_element(&dBabs[row * F], &dBabs[row * F] + F) * phi_jmax(&X.k[row * Dk], Dk, P.fm);
        }
  }
  return R;
}

// L = Σ dout·out + Σ dS·S + Σ dz·z
double loss(const Prob& P, const Data& X) {
  const Result R = reference(P, X, false);
  double l = 0;
  for (size_t i = 0; i < R.out.size(); ++i) l += X.dout[i] * R.out[i];
  for (size_t i = 0; i < X.dS.size(); ++i) l += X.dS[i] * R.S[i];
  for (size_t i = 0; i < X.dz.size(); ++i) l += X.dz[i] * R.z[i];
  return l;
}

// Central differences on a few entries of every input against the closed-form gradients.
bool check_reference_grads(const Prob& P, const Data& X, std::mt19937& rng) {
  const Result R = reference(P, X, true);
  bool ok = true;
  auto probe = [&](Vec Data::*field, const Vec& grad, const char* name) {
    if ((X.*field).empty()) return;
    for (int rep = 0; rep < 6; ++rep) {
      const size_t i = std::uniform_int_distribution<size_t>(0, (X.*field).size() - 1)(rng);
      const double h = 1e-5 * std::max(1.0, std::fabs((X.*field)[i]));
      Data Xp = X, Xm = X;
      (Xp.*field)[i] += h;
      (Xm.*field)[i] -= h;
      const double fd = (loss(P, Xp) - loss(P, Xm)) / (2 * h);
      if (!(std::fabs(fd - grad[i]) <= 1e-6 * std::max(1.0, std::fabs(fd)))) {
        printf("FAIL reference gradient %s[%zu]: closed form %.10g, central difference %.10g\n", name, i, grad[i], fd);
        ok = false;
      }
    }
  };
  probe(&Data::q, R.dq, "dq");
  probe(&Data::k, R.dk, "dk");
  probe(&Data::v, R.dv, "dv");
  probe(&Data::S0, R.dS0, "dS0");
  probe(&Data::z0, R.dz0, "dz0");
  return ok;
}

// ---- tensors in the storage dtype ---------------------------------------------------------------
// (d0, d1, n, d) tensor; layout 0: contiguous; layout 1: stored as (d0, n, d1, 2·d) with the
// values at even positions and the base one element in (non-contiguous, every stride odd-sized);
// the gaps hold a sentinel that must survive.
template <class T>
struct Tensor4 {
  int d0 = 0, d1 = 0, d3 = 0;
  int64_t n = 0;
  Strides4 st;
  int64_t off = 0;
  std::vector<T> buf;
  std::vector<uint8_t> used;
  Tensor4(int a, int b, int64_t nn, int dd, int layout) : d0(a), d1(b), d3(dd), n(nn) {
    if (layout == 0) {
      st = Strides4{int64_t(b) * nn * dd, nn * dd, dd, 1};
      off = 0;
    } else {
      st = Strides4{nn * b * 2 * dd, 2 * int64_t(dd), int64_t(b) * 2 * dd, 2};
      off = 1;
    }
    const size_t total = size_t(off + std::max<int64_t>(int64_t(a) * st.b, 1) + 8);
    buf.assign(total, fromf<T>(-777.f));
    used.assign(total, 0);
    for (int i = 0; i < a; ++i)
      for (int j = 0; j < b; ++j)
        for (int64_t t = 0; t < nn; ++t)
          for (int d = 0; d < dd; ++d) used[idx(i, j, t, d)] = 1;
  }
  size_t idx(int i, int j, int64_t t, int d) const { return size_t(off + i * st.b + j * st.h + t * st.n + d * st.d); }
  T* data() { return buf.data() + off; }
  const T* data() const { return buf.data() + off; }
  double get(int i, int j, int64_t t, int d) const { return tof(buf[idx(i, j, t, d)]); }
  // fill with values rounded to T; returns them contiguous as float64
  Vec fill(std::mt19937& rng, double sd, double mean = 0) {
    std::normal_distribution<double> nd(mean, sd);
    Vec out;
    for (int i = 0; i < d0; ++i)
      for (int j = 0; j < d1; ++j)
        for (int64_t t = 0; t < n; ++t)
          for (int d = 0; d < d3; ++d) {
            buf[idx(i, j, t, d)] = fromf<T>(static_cast<float>(nd(rng)));
            out.push_back(get(i, j, t, d));
          }
    return out;
  }
  void set_row_zero(int i, int j, int64_t t, Vec& mirror) {
    for (int d = 0; d < d3; ++d) {
      buf[idx(i, j, t, d)] = fromf<T>(0.f);
      mirror[((size_t(i) * d1 + j) * n + t) * d3 + d] = 0;
    }
  }
  bool gaps_intact() const {
    const T s = fromf<T>(-777.f);
    for (size_t i = 0; i < buf.size(); ++i)
      if (!used[i] && memcmp(&buf[i], &s, sizeof(T)) != 0) return false;
    return true;
  }
};

// ---- comparison -------------------------------------------------------------------------------
struct Checker {
  bool ok = true;
  double worst = 0;  // largest error / allowed
  char why[300] = "";
  // got(i) vs ref[i] for rows of width w; rel: output rounding of the dtype; tol32: float32 term
  // (times the row scale, or an entry's own scale where given and larger)
  template <class Get>
  void check(const char* name, const Vec& ref, int w, Get got, double rel, double tol32, double sub = 0,
             const Vec* row_scale = nullptr, const Vec* entry_scale = nullptr) {
    double tmax = 0;
    for (double r : ref) tmax = std::max(tmax, std::fabs(r));
    for (size_t row = 0; row * w < ref.size(); ++row) {
      double rmax = 1e-3 * tmax;
      for (int c = 0; c < w; ++c) rmax = std::max(rmax, std::fabs(ref[row * w + c]));
      if (row_scale) rmax = std::max(rmax, (*row_scale)[row]);
      for (int c = 0; c < w; ++c) {
        const size_t i = row * w + c;
        const double gv = got(i), r = ref[i];
        const double scale = entry_scale ? std::max(rmax, (*entry_scale)[i]) : rmax;
        const double allowed = rel * std::fabs(r) + tol32 * scale + sub + 1e-30;
        const double e = std::fabs(gv - r);
        worst = std::max(worst, std::isnan(e) ? INFINITY : e / allowed);
        if (!(e <= allowed)) {
          if (ok) snprintf(why, sizeof why, "%s[%zu] (row %zu col %d): got %.9g, reference %.9g", name, i, row, c, gv, r);
          ok = false;
        }
      }
    }
  }
};

// ---- one case -----------------------------------------------------------------------------------
struct Case {
  const char* dtype;  // "f32", "f16", "bf16"
  FeatureMap fm;
  bool causal, normalize;
  int B, H, Hkv;
  int64_t N;
  int Dk, Dv;
  bool mask, state;
  int dstate;   // 0 none, 1 dS and dz, 2 dS only, 3 dz only
  int layout;   // 0 contiguous, 1 strided (also the outputs)
  int cu;       // 0 none, 32 / 64: cu_seqlens of that int width (B = 1)
  std::vector<int64_t> seqlens;  // with cu
  bool zero_row;  // a q row and a k row of zeros (taylor's clamp)
  // value ranges: q, k ~ N(0, qk_sd²), v ~ N(v_mean, v_sd²), dout ~ N(0, do_sd²)
  double qk_sd = 1, v_mean = 0, v_sd = 1, do_sd = 1;
};

int g_fail = 0, g_cases = 0;
double g_worst = 0;

const char* fm_name(FeatureMap fm) {
  switch (fm) {
    case FeatureMap::kNone: return "none";
    case FeatureMap::kElu: return "elu";
    case FeatureMap::kRelu: return "relu";
    case FeatureMap::kSoftmax: return "softmax";
    case FeatureMap::kTaylor: return "taylor";
  }
  return "?";
}

template <class T>
void run_case(const Case& c, unsigned seed, bool fd_check, Math math) {
  std::mt19937 rng(seed);
  Prob P;
  P.B = c.B; P.H = c.H; P.Hkv = c.Hkv; P.N = c.N; P.Dk = c.Dk; P.Dv = c.Dv;
  P.F = c.Dk + (c.fm == FeatureMap::kTaylor ? 1 : 0);
  P.fm = c.fm; P.causal = c.causal; P.normalize = c.normalize; P.eps = 1e-6;
  std::vector<int32_t> cu32;
  std::vector<int64_t> cu64;
  if (c.cu) {
    P.cu.push_back(0);
    for (int64_t l : c.seqlens) P.cu.push_back(P.cu.back() + l);
    P.N = P.cu.back();
    P.B = 1;
    for (int64_t x : P.cu) { cu32.push_back(static_cast<int32_t>(x)); cu64.push_back(x); }
  }
  const int B = P.B, H = P.H, Hkv = P.Hkv, Dk = P.Dk, Dv = P.Dv, F = P.F, ns = P.nseq();
  const int64_t N = P.N;
  Tensor4<T> q(B, H, N, Dk, c.layout), k(B, Hkv, N, Dk, c.layout), v(B, Hkv, N, Dv, c.layout);
  Tensor4<T> dout(B, H, N, Dv, c.layout), out(B, H, N, Dv, c.layout);
  Tensor4<T> dq(B, H, N, Dk, c.layout), dk(B, Hkv, N, Dk, c.layout), dv(B, Hkv, N, Dv, c.layout);
  Data X;
  X.q = q.fill(rng, c.qk_sd);
  X.k = k.fill(rng, c.qk_sd);
  X.v = v.fill(rng, c.v_sd, c.v_mean);
  X.dout = dout.fill(rng, c.do_sd);
  if (c.zero_row && N > 2) {
    q.set_row_zero(0, H - 1, N - 1, X.q);
    k.set_row_zero(B - 1, 0, 1, X.k);
  }
  // mask (B, N) stored with stride 2 along N (and B stride 2N + 1)
  const int64_t msn = 2, msb = 2 * N + 1;
  std::vector<uint8_t> maskbuf(size_t(B * msb + 4), 7);
  if (c.mask) {
    X.mask.assign(size_t(B) * N, 0);
    for (int b = 0; b < B; ++b)
      for (int64_t t = 0; t < N; ++t) {
        const bool m = std::uniform_int_distribution<int>(0, 3)(rng) == 0 || (N > 5 && t == N - 1);
        X.mask[size_t(b) * N + t] = m;
        maskbuf[b * msb + t * msn] = m;
      }
  }
  std::uniform_real_distribution<double> ud(0.2, 1.5);
  std::normal_distribution<double> nd(0, 1);
  std::vector<float> S0f, z0f, dSf, dzf;
  if (c.state) {
    for (int i = 0; i < ns * H * F * Dv; ++i) { S0f.push_back(static_cast<float>(nd(rng))); X.S0.push_back(S0f.back()); }
    // z0 > 0 for the positive maps: den > 0.  taylor's φ(q) has negative entries: z0 as a sum of
    // φ(k) would be, with z0[0] (the count of keys) >= Σ|z0[1:]|
    for (int sh = 0; sh < ns * H; ++sh) {
      std::vector<float> zr(F);
      double sum = 0;
      for (int f = 0; f < F; ++f) sum += std::fabs(zr[f] = static_cast<float>(c.fm == FeatureMap::kNone ? nd(rng) : ud(rng)));
      if (c.fm == FeatureMap::kTaylor) zr[0] = static_cast<float>(sum);
      for (float zz : zr) { z0f.push_back(zz); X.z0.push_back(zz); }
    }
  }
  if (c.dstate == 1 || c.dstate == 2)
    for (int i = 0; i < ns * H * F * Dv; ++i) { dSf.push_back(static_cast<float>(nd(rng))); X.dS.push_back(dSf.back()); }
  if (c.dstate == 1 || c.dstate == 3)
    for (int i = 0; i < ns * H * F; ++i) { dzf.push_back(static_cast<float>(nd(rng))); X.dz.push_back(dzf.back()); }

  bool ok = true;
  char why[400] = "";
  if (fd_check && !check_reference_grads(P, X, rng)) {
    ok = false;
    snprintf(why, sizeof why, "reference gradients disagree with central differences");
  }
  const Result R = reference(P, X, true);

  // ---- the kernels, through the real launchers ----
  LinearAttentionParams p;
  p.B = B; p.H = H; p.Hkv = Hkv; p.N = N; p.Dk = Dk; p.Dv = Dv; p.F = F; p.nseq = ns;
  p.feature_map = c.fm;
  p.dtype = std::is_same_v<T, float> ? DType::kFloat32 : std::is_same_v<T, __half> ? DType::kFloat16 : DType::kBFloat16;
  p.causal = c.causal; p.normalize = c.normalize; p.eps = static_cast<float>(P.eps);
  p.math = math;
  p.q = q.data(); p.k = k.data(); p.v = v.data();
  p.q_stride = q.st; p.k_stride = k.st; p.v_stride = v.st;
  if (c.mask) { p.mask = maskbuf.data(); p.mask_stride_b = msb; p.mask_stride_n = msn; }
  if (c.state) { p.S0 = S0f.data(); p.z0 = z0f.data(); }
  if (c.cu == 32) { p.cu_seqlens = cu32.data(); p.cu_seqlens_int64 = false; }
  if (c.cu == 64) { p.cu_seqlens = cu64.data(); p.cu_seqlens_int64 = true; }
  std::vector<float> S(R.S.size(), NAN), z(R.z.size(), NAN);
  p.out = out.data(); p.out_stride = out.st; p.S = S.data(); p.z = z.data();
  const cudaError_t ef = launch_linear_attention_fwd(p, nullptr);
  p.dout = dout.data(); p.dout_stride = dout.st;
  p.dS = dSf.empty() ? nullptr : dSf.data();
  p.dz = dzf.empty() ? nullptr : dzf.data();
  p.dq = dq.data(); p.dk = dk.data(); p.dv = dv.data();
  p.dq_stride = dq.st; p.dk_stride = dk.st; p.dv_stride = dv.st;
  std::vector<float> dS0(R.dS0.size(), NAN), dz0(R.dz0.size(), NAN);
  if (c.state) { p.dS0 = dS0.data(); p.dz0 = dz0.data(); }
  const size_t wsb = linear_attention_bwd_workspace_bytes(p);
  std::vector<float> ws(wsb / sizeof(float) + 1, NAN);
  const cudaError_t eb = launch_linear_attention_bwd(p, ws.data(), wsb, nullptr);
  if (ef != cudaSuccess || eb != cudaSuccess) {
    ok = false;
    snprintf(why, sizeof why, "launch error fwd %d bwd %d", (int)ef, (int)eb);
  }

  // ---- compare ----
  const bool f32 = std::is_same_v<T, float>;
  const double rel = f32 ? 0 : std::is_same_v<T, __half> ? 1.01 / 2048 : 1.01 / 256;
  const double sub = std::is_same_v<T, __half> ? 6e-8 : 0;
  // float32 accumulation (observed: <= 3.2e-6); on tensor cores each operand of a product is
  // rounded to 16 bits (unit roundoff 2^-9 bfloat16, 2^-12 float16), two or three of them per
  // term: 4 units of the row scale
  const bool tc = !f32 && math != Math::kFloat32;
  const double tol32 = !tc ? 1e-5 : std::is_same_v<T, __half> ? 1.0 / 1024 : 1.0 / 128;
  Checker ck;
  auto at = [](const Tensor4<T>& t) {
    return [&t](size_t i) {
      const int64_t d = i % t.d3;
      const int64_t r = i / t.d3;
      const int64_t n = r % t.n, j = (r / t.n) % t.d1, b = r / t.n / t.d1;
      return t.get(static_cast<int>(b), static_cast<int>(j), n, static_cast<int>(d));
    };
  };
  ck.check("out", R.out, Dv, at(out), rel, tol32, sub, &R.out_scale);
  // states: the scale is that of the (sequence, head) block
  ck.check("S", R.S, F * Dv, [&](size_t i) { return (double)S[i]; }, 0, tol32, 0, nullptr, &R.S_scale);
  ck.check("z", R.z, F, [&](size_t i) { return (double)z[i]; }, 0, tol32, 0, nullptr, &R.z_scale);
  ck.check("dq", R.dq, Dk, at(dq), rel, tol32, sub, &R.dq_scale);
  ck.check("dk", R.dk, Dk, at(dk), rel, tol32, sub, &R.dk_scale);
  ck.check("dv", R.dv, Dv, at(dv), rel, tol32, sub, &R.dv_scale);
  if (c.state) {
    ck.check("dS0", R.dS0, F * Dv, [&](size_t i) { return (double)dS0[i]; }, 0, tol32, 0, nullptr, &R.dS0_scale);
    ck.check("dz0", R.dz0, F, [&](size_t i) { return (double)dz0[i]; }, 0, tol32, 0, nullptr, &R.dz0_scale);
  }
  if (!ck.ok && ok) { ok = false; snprintf(why, sizeof why, "%s", ck.why); }
  for (auto* t : {&out, &dq, &dk, &dv})
    if (!t->gaps_intact() && ok) { ok = false; snprintf(why, sizeof why, "a write outside the tensor's elements"); }
  g_worst = std::max(g_worst, ck.worst);
  ++g_cases;
  g_fail += !ok;
  std::string seqs;
  for (int64_t l : c.seqlens) seqs += std::to_string(l) + ",";
  printf("%s %s%s %s causal=%d norm=%d B=%d H=%d Hkv=%d N=%ld%s%s Dk=%d Dv=%d mask=%d state=%d dstate=%d layout=%d%s "
         "worst=%.2g %s\n",
         ok ? "PASS" : "FAIL", kexue_emu::dtype_name<T>(), tc ? "-tc" : "", fm_name(c.fm), c.causal, c.normalize, B, H, Hkv, (long)N,
         c.cu ? (c.cu == 32 ? " cu32=" : " cu64=") : "", seqs.c_str(), Dk, Dv, c.mask, c.state, c.dstate, c.layout,
         c.zero_row ? " zero-rows" : "", ck.worst, why);
  fflush(stdout);
}

// A GPU that lets a block opt into 99 KiB of shared memory (sm_86 / sm_89: RTX 30xx / 40xx, A10,
// L4, L40; they run the sm_80 code), where the tensor-core configuration of X width 144 (132 KiB)
// and every configuration of X width above 132 (105 / 113 KiB) do not fit.  16-bit inputs at
// D = 128 must run (on the float32 kernel, which fits) and match the reference; larger head dims
// must be refused before any launch, with a reason, on this device only.
void sm86_checks() {
  using FM = FeatureMap;
  kexue_emu::g_smem_optin = kexue_emu::kSmemOptinSm86;
  // dtype fm causal norm B H Hkv N Dk Dv mask state dstate layout cu seqlens zero_row
  const std::vector<Case> fit = {
      {"bf16", FM::kElu, true, true, 1, 2, 1, 70, 128, 128, true, true, 1, 0, 0, {}, false},
      {"f16", FM::kSoftmax, false, true, 1, 2, 2, 40, 100, 128, false, true, 1, 1, 0, {}, false},
      {"bf16", FM::kRelu, true, false, 1, 1, 1, 0, 128, 64, false, false, 1, 0, 32, {33, 0, 31}, false},
      {"f32", FM::kTaylor, true, true, 1, 2, 1, 40, 128, 131, false, true, 1, 0, 0, {}, false},
  };
  unsigned seed = 9001;
  for (const Case& c : fit) {
    kexue_emu::set_seed(seed);
    if (!strcmp(c.dtype, "f32")) {
      run_case<float>(c, seed, false, Math::kAuto);
    } else if (!strcmp(c.dtype, "f16")) {
      run_case<__half>(c, seed, false, Math::kAuto);
    } else {
      run_case<__nv_bfloat16>(c, seed, false, Math::kAuto);
    }
    ++seed;
  }
  // refused: nothing launched, a reason given; the same sizes have no reason on an sm_80
  struct Big {
    DType dtype;
    int Dk, Dv;
    bool fwd_refused;  // (the backward always is: its dq / dk passes have X width Dv + 1)
  };
  const Big bigs[] = {{DType::kBFloat16, 200, 64, true}, {DType::kFloat32, 64, 256, false},
                      {DType::kFloat16, 256, 256, true}, {DType::kFloat32, 133, 8, true}};
  for (const Big& bg : bigs) {
    LinearAttentionParams p;
    p.B = 1; p.H = 1; p.Hkv = 1; p.N = 40; p.Dk = bg.Dk; p.Dv = bg.Dv; p.F = bg.Dk; p.nseq = 1;
    p.dtype = bg.dtype;
    p.causal = true;
    const size_t elem = bg.dtype == DType::kFloat32 ? 4 : 2;
    std::vector<unsigned char> q(40 * bg.Dk * elem), v(40 * bg.Dv * elem), out(40 * bg.Dv * elem, 0xab);
    std::vector<float> S(size_t(bg.Dk) * bg.Dv), z(bg.Dk);
    p.q = q.data(); p.k = q.data(); p.v = v.data(); p.out = out.data();
    p.q_stride = p.k_stride = Strides4{40L * bg.Dk, 40L * bg.Dk, bg.Dk, 1};
    p.v_stride = p.out_stride = Strides4{40L * bg.Dv, 40L * bg.Dv, bg.Dv, 1};
    p.S = S.data(); p.z = z.data();
    const int launches = kexue_emu::g_launches;
    const cudaError_t e = launch_linear_attention_fwd(p, nullptr);
    const bool untouched = std::all_of(out.begin(), out.end(), [](unsigned char b) { return b == 0xab; });
    const char* why = linear_attention_unsupported_reason(p);
    bool ok = why != nullptr;
    if (bg.fwd_refused) ok = ok && e == cudaErrorInvalidValue && kexue_emu::g_launches == launches && untouched;
    else ok = ok && e == cudaSuccess;
    kexue_emu::g_smem_optin = kexue_emu::kMaxSmemOptin;
    ok = ok && linear_attention_unsupported_reason(p) == nullptr;
    kexue_emu::g_smem_optin = kexue_emu::kSmemOptinSm86;
    ++g_cases;
    g_fail += !ok;
    printf("%s sm86 %s Dk=%d Dv=%d: forward %s, reason: %s\n", ok ? "PASS" : "FAIL",
           bg.dtype == DType::kFloat32 ? "f32" : bg.dtype == DType::kFloat16 ? "f16" : "bf16", bg.Dk, bg.Dv,
           e == cudaSuccess ? "ran" : "refused", why ? why : "(none)");
  }
  kexue_emu::g_smem_optin = kexue_emu::kMaxSmemOptin;
}

int main(int argc, char** argv) {
  using FM = FeatureMap;
  const FM elu = FM::kElu, relu = FM::kRelu, sm = FM::kSoftmax, tay = FM::kTaylor, none = FM::kNone;
  // dtype fm causal norm B H Hkv N Dk Dv mask state dstate layout cu seqlens zero_row
  const std::vector<Case> cases = {
      // small cases first: their reference gradients are also checked by central differences
      {"f32", elu, true, true, 2, 2, 1, 9, 5, 3, true, true, 1, 0, 0, {}, false},
      {"f32", tay, false, true, 1, 2, 2, 7, 4, 6, false, true, 1, 1, 0, {}, true},
      {"f32", sm, true, true, 1, 3, 1, 8, 3, 2, true, true, 1, 0, 0, {}, false},
      {"f32", none, true, false, 2, 2, 2, 6, 3, 4, false, true, 1, 1, 0, {}, false},
      {"f32", relu, false, false, 1, 2, 1, 7, 5, 4, true, true, 1, 0, 0, {}, false},
      // chunked path: N not a multiple of the chunk (64 / 32), odd D, GQA, strided, masks, states
      {"f32", elu, true, true, 2, 4, 2, 70, 20, 33, true, true, 1, 0, 0, {}, false},
      {"f32", elu, false, true, 2, 2, 1, 70, 33, 20, true, true, 2, 1, 0, {}, false},
      {"f32", sm, true, true, 1, 4, 2, 65, 16, 16, false, false, 2, 0, 0, {}, false},
      {"f32", tay, true, true, 1, 2, 1, 0, 20, 33, false, true, 1, 0, 32, {5, 0, 64, 1, 10}, true},
      {"f32", none, true, false, 1, 2, 2, 129, 7, 5, false, true, 3, 1, 0, {}, false},
      {"f32", relu, true, false, 1, 2, 1, 0, 9, 12, true, false, 1, 0, 64, {3, 70}, false},
      {"f32", elu, true, true, 1, 2, 1, 40, 100, 70, false, true, 1, 0, 0, {}, false},   // C = 32, WB = 64
      {"f32", tay, true, true, 1, 1, 1, 33, 256, 256, true, true, 1, 0, 0, {}, false},  // F = 257: the largest tiles
      {"f32", elu, false, true, 1, 1, 1, 20, 256, 131, false, true, 1, 1, 0, {}, false},
      // N == 0 (state only) and N == 1 (decoding-step kernel in the forward)
      {"f32", elu, true, true, 2, 2, 1, 0, 6, 5, false, true, 1, 0, 0, {}, false},
      {"f32", elu, true, true, 3, 4, 2, 1, 33, 20, true, true, 1, 1, 0, {}, false},
      {"f32", tay, false, true, 2, 2, 1, 1, 20, 200, true, true, 1, 0, 0, {}, false},  // step: 2 column slices
      {"f32", relu, true, false, 2, 2, 2, 1, 7, 3, false, false, 0, 0, 0, {}, false},
      {"f32", sm, true, true, 1, 2, 1, 0, 5, 4, false, true, 1, 0, 32, {1}, false},     // N == 1 via cu_seqlens
      // float16 / bfloat16
      {"f16", elu, true, true, 2, 4, 2, 70, 20, 33, true, true, 1, 1, 0, {}, false},
      {"bf16", elu, false, true, 1, 2, 1, 0, 24, 17, true, true, 1, 0, 64, {30, 40}, false},
      {"f16", sm, false, true, 2, 2, 2, 33, 33, 20, false, true, 2, 0, 0, {}, false},
      {"bf16", tay, true, true, 1, 2, 1, 67, 20, 8, true, true, 1, 1, 0, {}, true},
      {"f16", relu, true, false, 1, 2, 1, 50, 12, 9, true, false, 3, 1, 0, {}, false},
      {"bf16", none, false, false, 2, 2, 1, 21, 5, 7, false, true, 1, 0, 0, {}, false},
      {"f16", tay, true, true, 2, 2, 1, 1, 20, 33, true, true, 1, 0, 0, {}, false},
      {"bf16", elu, true, true, 2, 2, 2, 1, 33, 20, false, true, 0, 1, 0, {}, false},
      {"f16", elu, true, true, 1, 2, 1, 0, 140, 70, false, true, 1, 0, 32, {33, 7}, false},  // xdim 141: 260 tiles
      // bfloat16 at the tensor-core configurations' boundaries (X width rounded to 16: 64 / 144 /
      // 272; Dv + 1 is the X width of the dq and dk passes), several chunks, the last partial
      {"bf16", elu, true, true, 1, 4, 2, 130, 64, 128, true, true, 1, 1, 0, {}, false},
      {"bf16", sm, true, true, 1, 2, 1, 100, 144, 16, false, true, 2, 0, 0, {}, false},
      {"bf16", tay, true, true, 1, 1, 1, 70, 256, 40, true, true, 1, 0, 0, {}, false},
      {"bf16", relu, false, false, 2, 2, 2, 97, 65, 143, false, false, 3, 1, 0, {}, false},
      {"bf16", elu, true, true, 1, 2, 1, 0, 33, 65, true, true, 1, 0, 32, {64, 0, 65, 3}, false},
      // float16 range: P ≈ 64·(0.4·50)² ≈ 2.6e4 per entry (above 65504 at the top), the state
      // Σ φ(k) v ≈ 1e6, den ≈ 1e6 so g' = do/den ≈ 1e-8 (float16 subnormal): exact only scaled
      {"f16", elu, true, true, 1, 2, 1, 130, 64, 40, false, true, 1, 0, 0, {}, false, 50, 1000, 300, 1e-2},
      {"f16", elu, false, true, 1, 2, 2, 97, 64, 33, true, true, 1, 1, 0, {}, false, 50, 1000, 300, 1e-2},
      {"f16", relu, true, true, 1, 1, 1, 0, 40, 70, false, true, 1, 0, 32, {70, 0, 60}, false, 50, 1000, 300, 1e-2},
  };
  // a sweep: every dtype × feature map × causal, with sizes at the tile boundaries (xdim 68 / 69
  // = the 64- / 32-token configurations; Dv + 1 is the xdim of the dq and dk passes)
  std::vector<Case> all = cases;
  const FM fms[] = {elu, relu, sm, tay, none};
  const char* dts[] = {"f32", "f16", "bf16"};
  const int64_t Ns[] = {2, 31, 64, 65, 97, 1, 130};
  const int Dks[] = {1, 2, 17, 64, 65, 68, 31};
  const int Dvs[] = {1, 3, 67, 68, 16, 33, 5};
  const int Hs[][2] = {{1, 1}, {2, 1}, {3, 3}, {4, 2}, {6, 2}};
  int i = 0;
  for (const char* dt : dts)
    for (FM fm : fms)
      for (int causal = 0; causal < 2; ++causal, ++i) {
        Case c{dt, fm, causal == 1, fm != none && (i % 4 != 3), 1 + i % 2, Hs[i % 5][0], Hs[i % 5][1], Ns[i % 7],
               Dks[(i / 2) % 7], Dvs[(i / 3) % 7], i % 3 == 0, i % 4 != 1, i % 4, (i / 2) % 2, 0, {}, false};
        if (i % 5 == 4) {  // packed sequences, some empty
          c.cu = (i % 2) ? 64 : 32;
          c.B = 1;
          c.seqlens = {c.N / 3, 0, c.N - c.N / 3 - 1, 1};
        }
        all.push_back(c);
      }
  // float16 features far below float16's normal range (a peaked softmax over logits ~ N(0, 30²)):
  // exact only with the tensor-core kernel's power-of-two scale of the φ rows (without it, rows
  // whose attention mass is near eps came out wrong: out 0 for -0.021).  Appended last: the
  // seeds of the cases above are unchanged.
  all.push_back({"f16", sm, true, true, 1, 2, 1, 70, 16, 8, false, false, 0, 0, 0, {}, false, 30, 0, 1, 1});
  all.push_back({"f16", sm, false, true, 1, 2, 1, 70, 16, 8, false, false, 0, 0, 0, {}, false, 30, 0, 1, 1});
  // argument: the index of one case to run, or "sm86" for the 99 KiB device's checks alone
  const bool sm86_only = argc > 1 && !strcmp(argv[1], "sm86");
  const int only = argc > 1 && !sm86_only ? atoi(argv[1]) : -1;
  unsigned seed = 1;
  for (size_t i = 0; i < all.size(); ++i, ++seed) {
    if (sm86_only || (only >= 0 && static_cast<int>(i) != only)) continue;
    const Case& c = all[i];
    kexue_emu::set_seed(seed);
    const bool fd = i < 5;
    if (!strcmp(c.dtype, "f32")) {
      run_case<float>(c, seed, fd, Math::kAuto);
    } else if (!strcmp(c.dtype, "f16")) {  // the tensor-core kernel (the default) and the float32 one
      run_case<__half>(c, seed, fd, Math::kAuto);
      run_case<__half>(c, seed, fd, Math::kFloat32);
    } else {
      run_case<__nv_bfloat16>(c, seed, fd, Math::kAuto);
      run_case<__nv_bfloat16>(c, seed, fd, Math::kFloat32);
    }
  }
  if (only < 0) sm86_checks();  // (all cases, or "sm86")
  printf("%d cases, %d failed, worst %.3g (error / allowed), %d launches, %d emulation errors\n", g_cases, g_fail,
         g_worst, kexue_emu::g_launches, kexue_emu::g_errors);
  return g_fail != 0 || kexue_emu::g_errors != 0;
}
