"""Self-checking GPU run of the "cuda" linear-attention backend (run on a machine with a GPU).

    python bench/gpu_check_linear_attention.py            # correctness table, then timings
    python bench/gpu_check_linear_attention.py --no-bench # correctness only
    python bench/gpu_check_linear_attention.py --quick    # fewer cases, N <= 4096 timings

1. Correctness: the "cuda" backend against the float64 N×N definition
   (linear_attention_quadratic) on awkward shapes, every option and dtype, forward (out, S, z)
   and backward (dq, dk, dv, dS0, dz0).  Rule (flash-attention's): the kernel's error is at most
   2× the error of the plain-PyTorch composite run in the same dtype (16-bit: φ, scores, state
   and numerator rounded to 16 bits, gradients too: linear_attention_quadratic(compute_dtype=)),
   plus a floor: float32 rounding, and for 16-bit dtypes flash-attention's atol (2 × the
   rounding of ref + 0.3 - 0.3 in that dtype), at least one ulp of the largest value.  A torch
   model of the tensor-core kernels' rounding (forward and autograd backward) stays at or below
   0.46 of this bound.
   Uninitialised memory is poisoned (NaN), so an unwritten output element fails.
2. Timings (CUDA events, median of repeats) of the torch / cuda / triton backends (cuda:
   16-bit dtypes on tensor cores; cuda_fp32: the same backend with KEXUE_LA_CUDA_MATH=fp32,
   float32 CUDA cores) and flash-linear-attention when installed at bf16, B=8, H=16, N in {1024, 4096, 16384},
   D in {64, 128}: forward and forward+backward, causal and not.

Exit status 1 when any correctness case fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import sys
import traceback
from unittest import mock

import torch

import kexue
from kexue.benchmarking import time_fn
from kexue.linear_attention import feature_dim, linear_attention_chunked, linear_attention_quadratic
from kexue.linear_attention.api import BACKENDS

torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True  # torch.empty → NaN: unwritten outputs fail

DEV = torch.device("cuda")
FLOOR = {torch.float32: 2e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}


def err(x, ref):
    d = (x.double() - ref.double()).abs()
    if d.numel() == 0:
        return 0.0
    return float("nan") if torch.isnan(d).any() else float(d.max())


def inputs(B, H, Hkv, N, Dk, Dv, dtype, noncontig, fmap):
    g = torch.Generator(device="cpu").manual_seed(B * 1000003 + H * 1009 + N * 31 + Dk * 7 + Dv)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(DEV, dtype)

    if noncontig:  # (B, N, H, D) storage seen as (B, H, N, D); v a column slice: strided, no copy
        q = rnd(B, N, H, Dk).transpose(1, 2)
        k = rnd(B, N, Hkv, Dk).transpose(1, 2)
        v = rnd(B, N, Hkv, Dv + 3)[..., 1 : Dv + 1].transpose(1, 2)
    else:
        q, k, v = rnd(B, H, N, Dk), rnd(B, Hkv, N, Dk), rnd(B, Hkv, N, Dv)
    if fmap == "none":  # already-mapped inputs must be positive for a sane normaliser
        q, k = q.abs() + 0.1, k.abs() + 0.1
    return q, k, v


def run(backend, q, k, v, S0, z0, kw, go, gS, gz, grad):
    """out, S, z (+ dq, dk, dv, dS0, dz0) of one backend, or of the float64 'oracle' / the 'plain' baseline."""
    leaves = [q, k, v] + ([S0, z0] if S0 is not None else [])
    leaves = [t.detach().clone().requires_grad_(grad) for t in leaves]
    state = tuple(leaves[3:]) if S0 is not None else None
    if backend == "oracle":
        o, (S, z) = linear_attention_quadratic(*leaves[:3], initial_state=state, **kw)
    elif backend == "plain":  # the composite in q's dtype: 16-bit products rounded to 16 bits
        cdt = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else None
        o, (S, z) = linear_attention_quadratic(*leaves[:3], initial_state=state, compute_dtype=cdt, **kw)
    else:
        o, (S, z) = kexue.linear_attention(*leaves[:3], initial_state=state, return_state=True, backend=backend, **kw)
    res = {"out": o.detach(), "S": S.detach(), "z": z.detach()}
    if grad:
        gs = torch.autograd.grad([o, S, z], leaves, [go.to(o.dtype), gS.to(S.dtype), gz.to(z.dtype)],
                                 allow_unused=True)
        for name, t in zip(["dq", "dk", "dv", "dS0", "dz0"], gs, strict=False):
            res[name] = t
    return res


def check_case(shape, dtype, causal, fmap, normalize, masked, with_state, noncontig, packed, grad, backend):
    B, H, Hkv, N, Dk, Dv = shape
    q, k, v = inputs(B, H, Hkv, N, Dk, Dv, dtype, noncontig, fmap)
    F = feature_dim(fmap, Dk)
    kw = dict(causal=causal, feature_map=fmap, normalize=normalize)
    g = torch.Generator(device="cpu").manual_seed(7)
    nseq = B
    if packed:  # B = 1, random split of N into sequences (some empty)
        cuts = sorted(torch.randint(0, N + 1, (3,), generator=g).tolist())
        cu = torch.tensor([0, *cuts, N], dtype=torch.int32 if N % 2 else torch.int64, device=DEV)
        kw["cu_seqlens"] = cu
        nseq = cu.numel() - 1
    if masked:
        m = torch.rand(B, N, generator=g) < 0.3
        if B > 1:
            m[-1] = True  # a batch row with every key padded
        kw["key_padding_mask"] = m.to(DEV)
    S0 = z0 = None
    if with_state:
        # the state 16 earlier tokens leave: one the keys can make, so φ(q)·z0 >= 0 as in use.  (A
        # random z0 lets the "taylor" normaliser 1·z0[0] + q̂·z0[1:] cross zero: outputs of 1e4
        # and more, ill-conditioned in any precision; two taylor cases failed so on the CPU.)
        qp, kp, vp = inputs(nseq, H, Hkv, 16, Dk, Dv, torch.float64, False, fmap)
        _, (S0, z0) = linear_attention_quadratic(qp, kp, vp, feature_map=fmap)
        S0, z0 = S0.float(), z0.float()
    go = torch.randn(B, H, N, Dv, generator=g).to(DEV)
    gS = torch.randn(nseq, H, F, Dv, generator=g).to(DEV)
    gz = torch.randn(nseq, H, F, generator=g).to(DEV)

    got = run(backend, q, k, v, S0, z0, kw, go, gS, gz, grad)
    low = run("plain", q, k, v, S0, z0, kw, go, gS, gz, grad)
    def to64(t):
        return None if t is None else t.double()

    ref = run("oracle", to64(q), to64(k), to64(v), to64(S0), to64(z0), kw, go.double(), gS.double(), gz.double(),
              grad)
    worst, why = 0.0, ""
    for name, r in ref.items():
        if r is None:
            continue
        x = got.get(name)
        if x is None or x.shape != r.shape:
            return False, f"{name}: missing or shape {None if x is None else tuple(x.shape)} != {tuple(r.shape)}"
        if name in ("out", "dq", "dk", "dv") and x.dtype != q.dtype:
            return False, f"{name}: dtype {x.dtype} != {q.dtype}"
        e, base = err(x, r), err(low[name], r)
        scale = max(1.0, float(r.abs().max())) if r.numel() else 1.0
        floor = FLOOR[dtype] * scale * (1 if normalize else 20)
        if dtype != torch.float32:  # flash-attention's atol: 2 × the dtype's rounding at the values' size,
            # and at least one unit in the last place of the largest value: on a tensor of a few
            # entries both that atol and the composite's error can be 0 by luck, and then one
            # more rounding of a correct kernel fails (the 1-token fp16 case did so on the CPU)
            r16 = r.to(dtype)
            ulp = torch.finfo(dtype).eps * float(r.abs().max()) if r.numel() else 0.0
            floor = max(floor, 2 * err((r16 + 0.3) - 0.3, r16), ulp)
        bound = 2 * base + floor
        if not e <= bound:  # NaN fails too
            return False, f"{name}: err {e:.3g} > 2×{base:.3g} + {floor:.2g}"
        if bound > 0 and e / bound > worst:
            worst, why = e / bound, name
    return True, f"worst {why} at {worst:.2f} of bound"


SHAPES = [  # (B, H, Hkv, N, Dk, Dv)
    (1, 1, 1, 1, 1, 1),  # decode-step kernel (N == 1)
    (3, 4, 2, 1, 64, 64),  # decode step with GQA
    (2, 3, 3, 67, 17, 23),
    (2, 4, 2, 130, 32, 48),
    (1, 2, 1, 64, 64, 64),  # exactly one chunk (C = 64)
    (1, 1, 1, 200, 5, 3),
    (2, 6, 2, 97, 59, 111),
    (1, 2, 2, 257, 128, 128),  # xdim 129 (backward) → 3rd tile configuration
    (1, 2, 1, 100, 256, 256),  # largest head dims (taylor: F = 257)
    (1, 2, 1, 300, 96, 130),
    (2, 2, 2, 0, 8, 8),  # empty sequence
]


def correctness(quick: bool, backend: str = "cuda") -> bool:
    print(f"\ncorrectness of backend={backend!r} against the float64 definition")
    rows, failed = [], 0
    fmaps = ["elu", "relu", "softmax", "taylor", "none"]
    for si, shape in enumerate(SHAPES[:6] if quick else SHAPES):
        for dtype, causal in itertools.product((torch.float32, torch.float16, torch.bfloat16), (False, True)):
            for variant in range(2 if quick else 3):
                i = si * 7 + variant * 3 + int(causal)
                fmap = fmaps[i % len(fmaps)]
                normalize = variant != 1
                masked = variant >= 1
                with_state = variant != 0 or si % 2 == 0
                noncontig = (i % 2) == 1
                packed = variant == 2 and shape[0] == 1 and shape[3] > 1
                grad = True
                opts = (f"{'causal' if causal else 'full'} {fmap} norm={int(normalize)} mask={int(masked)} "
                        f"state={int(with_state)} strided={int(noncontig)} packed={int(packed)}")
                try:
                    ok, msg = check_case(shape, dtype, causal, fmap, normalize, masked, with_state, noncontig,
                                         packed, grad, backend)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    ok, msg = False, f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
                    traceback.print_exc(limit=2)
                failed += not ok
                rows.append((("PASS" if ok else "FAIL"), "x".join(map(str, shape)),
                             str(dtype).removeprefix("torch."), opts, msg))
    if backend == "cuda":  # float64 must be a clear error (the Triton kernels take it)
        q = torch.randn(1, 1, 4, 4, dtype=torch.float64, device=DEV)
        try:
            kexue.linear_attention(q, q, q, backend="cuda")
            rows.append(("FAIL", "1x1x1x4x4x4", "float64", "must raise", "no error raised"))
            failed += 1
        except Exception as exc:  # noqa: BLE001
            ok = "float64" in str(exc)
            rows.append(("PASS" if ok else "FAIL", "1x1x1x4x4x4", "float64", "must raise",
                         str(exc).splitlines()[0][:80]))
            failed += not ok
    # decoding steps against the whole causal sequence
    qq, kk, vv = (torch.randn(2, 4, 40, 32, device=DEV) for _ in range(3))
    whole = kexue.linear_attention(qq, kk, vv, causal=True, backend=backend)
    _, st = kexue.linear_attention(qq[:, :, :37], kk[:, :, :37], vv[:, :, :37], causal=True, return_state=True,
                                   backend=backend)
    e = 0.0
    for t in range(37, 40):
        o_t, st = kexue.linear_attention_step(qq[:, :, t], kk[:, :, t], vv[:, :, t], st, backend=backend)
        e = max(e, err(o_t, whole[:, :, t]))
    ok = e < 1e-5
    failed += not ok
    rows.append(("PASS" if ok else "FAIL", "2x4x4x40x32x32", "float32", "step × 3 vs whole", f"err {e:.3g}"))

    w = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        print("  ".join(r[c].ljust(w[c]) for c in range(4)) + "  " + r[4])
    print(f"\n{len(rows) - failed}/{len(rows)} passed")
    return failed == 0


def time_ms(fn, repeats=20, warmup=3):
    """Median milliseconds, CUDA events (kexue.benchmarking.time_fn, as `kexue bench` times)."""
    return time_fn(fn, torch.device("cuda"), repeats, warmup)[0] * 1e3


# ---- timings: providers -------------------------------------------------------------------
# Every provider gets bf16 (B, H, N, D) q, k, v and, for "fwd+bwd", the output gradient, and
# returns a zero-argument callable that runs the work once.  Linear-attention providers apply
# the elu+1 feature map (kexue fuses it; for flash-linear-attention it is two torch ops in the
# timed region, as its layers do) and normalise unless the name ends in "/nonorm".

def kexue_fn(backend, q, k, v, go, mode, causal, normalize=True):
    if backend == "cuda_fp32":  # the CUDA backend with 16-bit dtypes on float32 CUDA cores, not tensor cores
        inner = kexue_fn("cuda", q, k, v, go, mode, causal, normalize)

        def fp32():
            with mock.patch.dict(os.environ, {"KEXUE_LA_CUDA_MATH": "fp32"}):
                return inner()

        return fp32

    def fn():
        if mode == "fwd":
            with torch.no_grad():
                return kexue.linear_attention(q, k, v, causal=causal, normalize=normalize, backend=backend)
        o = kexue.linear_attention(q, k, v, causal=causal, normalize=normalize, backend=backend)
        return torch.autograd.grad(o, (q, k, v), go)

    return fn


def fla_fn(kind, q, k, v, go, mode, normalize):
    """flash-linear-attention 0.6 ``chunk_linear_attn`` / ``fused_chunk_linear_attn`` (causal only;
    (B, N, H, D) layout: the transposes are done once, outside the timed region)."""
    import fla.ops.linear_attn as fla_la

    op = fla_la.chunk_linear_attn if kind == "chunk" else fla_la.fused_chunk_linear_attn
    qf, kf, vf = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
    gf = go.transpose(1, 2).contiguous()

    def run():
        fq, fk = torch.nn.functional.elu(qf) + 1, torch.nn.functional.elu(kf) + 1
        o = op(fq, fk, vf, scale=1.0, normalize=normalize)
        return o[0] if isinstance(o, tuple) else o

    def fn():
        if mode == "fwd":
            with torch.no_grad():
                return run()
        return torch.autograd.grad(run(), (qf, kf, vf), gf)

    return fn


def sdpa_fn(q, k, v, go, mode, causal):
    """torch's softmax attention (FlashAttention kernels for bf16), the layer linear attention replaces."""
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def fn():
        if mode == "fwd":
            with torch.no_grad():
                return sdpa(q, k, v, is_causal=causal)
        return torch.autograd.grad(sdpa(q, k, v, is_causal=causal), (q, k, v), go)

    return fn


def providers_for(names, causal):
    """(name, factory(q, k, v, go, mode)) of the providers that apply (FLA is causal only)."""
    out = []
    for name in names:
        base, _, flag = name.partition("/")
        norm = flag != "nonorm"
        if base in ("torch", "cuda", "cuda_fp32", "triton"):
            out.append((name, lambda q, k, v, go, m, b=base, n=norm: kexue_fn(b, q, k, v, go, m, causal, n)))
        elif base in ("fla_chunk", "fla_fused") and causal:
            kind = base.removeprefix("fla_")
            out.append((name, lambda q, k, v, go, m, c=kind, n=norm: fla_fn(c, q, k, v, go, m, n)))
        elif base == "sdpa":
            out.append((name, lambda q, k, v, go, m: sdpa_fn(q, k, v, go, m, causal)))
    return out


def _empty_cache() -> None:
    if DEV.type == "cuda":
        torch.cuda.empty_cache()


def _device_name() -> str:
    return torch.cuda.get_device_name(DEV) if DEV.type == "cuda" else DEV.type


def floor_ms(B, H, N, D, mode, causal, ceilings, chunk=64):
    """max(bytes / copy bandwidth, FLOPs / bf16 matmul rate) in ms.  Bytes: q, k, v read and o
    written once (fwd); the backward adds q, k, v, do read and dq, dk, dv written.  FLOPs of the
    chunked algorithm per token and head: 4·D² for the state (φ(k)ᵀv and φ(q)·S) plus, causal,
    4·C·D for the masked C×C tile and its product with v; the backward about twice the forward."""
    elems = B * H * N * D
    nbytes = 2 * elems * (4 if mode == "fwd" else 4 + 7)
    flops = B * H * N * (4 * D * D + (4 * chunk * D if causal else 0)) * (1 if mode == "fwd" else 3)
    return max(nbytes / (ceilings["copy_GBps"] * 1e9), flops / (ceilings["bf16_TFLOPs"] * 1e12)) * 1e3


DEFAULT_PROVIDERS = ["cuda", "cuda_fp32", "triton", "fla_chunk", "fla_fused", "sdpa", "torch",
                     "cuda/nonorm", "triton/nonorm", "fla_chunk/nonorm", "fla_fused/nonorm"]


def benchmark(ns, ds, names, repeats, json_path=None) -> None:
    import json

    from kexue.benchmarking import measure_ceilings, peak_memory

    dtype, B, H = torch.bfloat16, 8, 16
    avail = {b: BACKENDS.availability(b, DEV)[0] for b in ("torch", "cuda", "triton")}
    has_fla = importlib.util.find_spec("fla") is not None
    names = [n for n in names if (n.split("/")[0] not in avail or avail[n.split("/")[0]])
             and (has_fla or not n.startswith("fla"))]
    ceilings = measure_ceilings(DEV)
    print(f"\n{_device_name()}  torch {torch.__version__}  bf16 B={B} H={H} elu+1; "
          f"ceilings: copy {ceilings['copy_GBps']:.0f} GB/s, bf16 matmul {ceilings['bf16_TFLOPs']:.0f} TFLOP/s")
    print("ms = median of", repeats, "(CUDA events); MiB = peak allocated above the inputs; x floor = ms / floor")
    records = []
    for N, D in itertools.product(ns, ds):
        q, k, v = (torch.randn(B, H, N, D, dtype=dtype, device=DEV, requires_grad=True) for _ in range(3))
        go = torch.randn_like(q)
        for mode, causal in itertools.product(("fwd", "fwd+bwd"), (True, False)):
            fl = floor_ms(B, H, N, D, mode, causal, ceilings)
            print(f"-- N={N} D={D} {mode} {'causal' if causal else 'non-causal'}  floor {fl:.3f} ms")
            for name, factory in providers_for(names, causal):
                rec = {"N": N, "D": D, "mode": mode, "causal": causal, "provider": name, "floor_ms": fl}
                try:
                    fn = factory(q, k, v, go, mode)
                    rec["ms"] = time_ms(fn, repeats=repeats)
                    rec["peak_MiB"] = peak_memory(fn, DEV) / 2**20
                    print(f"   {name:>18} {rec['ms']:9.3f} ms {rec['peak_MiB']:9.0f} MiB  "
                          f"x floor {rec['ms'] / fl:6.2f}", flush=True)
                except Exception as exc:  # noqa: BLE001 - a failing provider is reported, the table goes on
                    rec["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    print(f"   {name:>18} error {rec['error']}", flush=True)
                records.append(rec)
                _empty_cache()
        del q, k, v, go
        _empty_cache()
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"device": _device_name(), "torch": torch.__version__, "ceilings": ceilings,
                       "records": records}, f, indent=1)
    _targets(records)


def _targets(records) -> None:
    """The issue's targets, read off the records (printed last: the reply carries the end)."""
    def ms(N, D, mode, causal, name):
        for r in records:
            if (r["N"], r["D"], r["mode"], r["causal"], r["provider"]) == (N, D, mode, causal, name) and "ms" in r:
                return r["ms"], r["floor_ms"]
        return None, None

    def best(N, D, mode, causal, providers):
        """(fastest ms among providers or None, floor ms)."""
        times = [ms(N, D, mode, causal, p) for p in providers]
        found = [t for t, _ in times if t]
        return (min(found) if found else None), next((f for t, f in times if t), None)

    print("\ntargets")
    for norm in ("", "/nonorm"):
        ours, _ = best(4096, 128, "fwd+bwd", True, ["cuda" + norm, "triton" + norm])
        fla, _ = best(4096, 128, "fwd+bwd", True, ["fla_chunk" + norm, "fla_fused" + norm])
        if ours and fla:
            print(f"  causal fwd+bwd N=4096 D=128{norm or ' (normalised)'}: kexue {ours:.3f} ms, FLA {fla:.3f} ms, "
                  f"{fla / ours:.2f}x (target >= 1.3x)")
    for N in sorted({r["N"] for r in records}):
        for D in sorted({r["D"] for r in records}):
            t, fl = best(N, D, "fwd", True, ["cuda", "triton"])
            if t and fl:
                print(f"  causal fwd N={N} D={D}: best kexue {t:.3f} ms = {t / fl:.2f}x floor (target <= 2x)")
            t, fl = best(N, D, "fwd", False, ["cuda", "triton"])
            if t and fl:
                print(f"  non-causal fwd N={N} D={D}: {100 * fl / t:.0f}% of the memory/compute floor "
                      "(target >= 70%)")
            sd, _ = best(N, D, "fwd+bwd", True, ["sdpa"])
            ours, _ = best(N, D, "fwd+bwd", True, ["cuda", "triton"])
            if sd and ours:
                print(f"  causal fwd+bwd N={N} D={D}: SDPA {sd:.3f} ms vs kexue {ours:.3f} ms "
                      f"({sd / ours:.2f}x; target: faster from N=2048)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer correctness cases")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="timings only")
    ap.add_argument("--backends", default="cuda,triton", help="backends checked for correctness")
    ap.add_argument("--ns", default="1024,4096,16384")
    ap.add_argument("--ds", default="64,128")
    ap.add_argument("--providers", default=",".join(DEFAULT_PROVIDERS))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default=None, help="write every timing record here")
    ap.add_argument("--cpu", action="store_true",
                    help="the correctness table on CPU tensors, no timings (--backends cpu,triton; for Triton "
                         "set TRITON_INTERPRET=1): the GPU run's checks previewed without a GPU")
    args = ap.parse_args()
    global DEV
    if args.cpu:
        DEV = torch.device("cpu")
        args.no_bench = True
    elif not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    else:
        ok, why = BACKENDS.availability("cuda", DEV)
        if not ok:
            print(f"the cuda backend is not available: {why}", file=sys.stderr)
            return 2
    passed = True
    if not args.no_check:
        backends = [b for b in args.backends.split(",") if BACKENDS.availability(b, DEV)[0]]
        print(f"backends checked on {DEV.type}: {', '.join(backends) or 'none available'}")
        passed = all([correctness(args.quick, b) for b in backends])
    # sanity: the chunked torch reference agrees with itself at another chunk size (harness check)
    q = torch.randn(1, 2, 70, 8, device=DEV)
    assert err(linear_attention_chunked(q, q, q, causal=True, chunk_size=16)[0],
               linear_attention_chunked(q, q, q, causal=True)[0]) < 1e-5
    if not args.no_bench:
        # timings without the NaN poisoning of torch.empty (it would add a fill to every allocation)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.use_deterministic_algorithms(False)
        benchmark([int(x) for x in args.ns.split(",")], [int(x) for x in args.ds.split(",")],
                  args.providers.split(","), args.repeats, args.json)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
