"""Self-checking GPU run of the "cuda" (and "triton") cross-entropy backends (needs a GPU).

Nothing in this script can run without a CUDA device; it was written on a machine without one.

    python bench/gpu_check_cross_entropy.py            # correctness table, then timings
    python bench/gpu_check_cross_entropy.py --no-bench # correctness only
    python bench/gpu_check_cross_entropy.py --quick    # fewer cases, smaller timings

1. Correctness: loss and gradient of kexue.cross_entropy(backend="cuda" / "triton") against the
   float64 composite (cross_entropy_reference), on awkward shapes up to C=128256 (bf16), every
   dtype, option combinations (prior, weight, label smoothing, z-loss, ignore_index, flooding,
   reductions), strided and misaligned logits, in-place backward, the few-rows launch shape
   (C=256000, N=2), out-of-range targets (NaN row without synchronisation; a clear error with
   KEXUE_SYNC_CHECKS=1) and one N·C > 2^31 case (64-bit indexing).  Rule (flash-attention's):
   error <= 2 x the error of the torch composite run in the same dtype + a float32 floor.
   torch.empty is poisoned with NaN, so an unwritten output element fails.
2. Timings (CUDA events, median) at bf16 N=8192, C=128256: forward and forward+backward of the
   torch composite, the compiled composite, F.cross_entropy, kexue cuda (and in place), kexue
   triton, and Liger-Kernel's LigerCrossEntropyLoss when importable; plus the peak extra memory
   of forward+backward over the logits and target.

Exit status 1 when any correctness case fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback

import torch
import torch.nn.functional as F

import kexue
from kexue.benchmarking import peak_memory, time_fn
from kexue.cross_entropy import cross_entropy_reference
from kexue.cross_entropy.api import BACKENDS

torch.utils.deterministic.fill_uninitialized_memory = True  # torch.empty → NaN: unwritten outputs fail
torch.use_deterministic_algorithms(True, warn_only=True)

DEV = torch.device("cuda")
FLOOR = {torch.float32: 2e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}


def err(x, ref):
    d = (x.double() - ref.double()).abs()
    if d.numel() == 0:
        return 0.0
    return float("nan") if torch.isnan(d).any() else float(d.max())


def make_logits(N, C, dtype, layout, g, scale=3.0):
    """(N, C) logits: "contig", "strided" (every other column, transposed storage) or "offset"
    (contiguous rows starting one element past a 16-byte boundary: the scalar-head path)."""
    if layout == "strided":
        x = torch.randn(2 * C, N, generator=g) * scale
        return x.to(DEV, dtype).t()[:, ::2]
    if layout == "offset":
        x = torch.randn(N, C + 1, generator=g) * scale
        return x.to(DEV, dtype)[:, 1:]
    return (torch.randn(N, C, generator=g) * scale).to(DEV, dtype)


def loss_and_grad(fn, logits, target, go, inplace=False, **kw):
    x = logits.detach().clone().requires_grad_()
    h = x * 1.0 if inplace else x
    out = fn(h, target, **kw)
    (gx,) = torch.autograd.grad(out, x, go.to(out.dtype))
    return out.detach(), gx


def check_case(backend, N, C, dtype, layout, opts, inplace=False, seed=0):
    g = torch.Generator().manual_seed(seed * 7919 + N * 31 + C)
    logits = make_logits(N, C, dtype, layout, g)
    target = torch.randint(0, C, (N,), generator=g)
    target[torch.rand(N, generator=g) < 0.2] = opts.get("ignore_index", -100)
    target = target.to(DEV)
    kw = dict(opts)
    if kw.pop("prior", False):
        kw["prior"] = (torch.rand(C, generator=g).pow(3) * 100 + 0.01).to(DEV)
    if kw.pop("weight", False):
        kw["weight"] = (torch.rand(C, generator=g) + 0.5).to(DEV)
    red = kw.get("reduction", "mean")
    go = torch.randn(N, generator=g, dtype=torch.float64).to(DEV) if red == "none" else torch.tensor(
        1.0, dtype=torch.float64, device=DEV)
    kw64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}

    def ours(x, t, **k):
        return kexue.cross_entropy(x, t, backend=backend, inplace_backward=inplace, **k)

    out, gx = loss_and_grad(ours, logits, target, go, inplace=inplace, **kw)
    out64, g64 = loss_and_grad(cross_entropy_reference, logits.double(), target, go, **kw64)
    low, glow = loss_and_grad(cross_entropy_reference, logits, target, go, **kw)
    if out.dtype != dtype or gx.dtype != dtype or gx.shape != logits.shape:
        return False, f"dtype/shape: loss {out.dtype}, grad {gx.dtype} {tuple(gx.shape)}"
    msgs, ok = [], True
    for name, a, r, lo in (("loss", out, out64, low), ("grad", gx, g64, glow)):
        e, base = err(a, r), err(lo, r)
        bound = 2 * base + FLOOR[dtype]
        ok &= e <= bound  # NaN fails
        msgs.append(f"{name} {e:.2g}/{bound:.2g}")
    return ok, "  ".join(msgs)


OPTION_SETS = {
    "plain": {},
    "prior": {"prior": True, "tau": 1.0},
    "ls+w+z": {"label_smoothing": 0.1, "weight": True, "z_loss": 1e-4},
    "all+flood": {"prior": True, "label_smoothing": 0.2, "weight": True, "z_loss": 1e-3, "flood": 10.0},
    "none+sample": {"reduction": "none", "flood": 0.5, "flood_mode": "sample", "label_smoothing": 0.05},
    "sum+ii=3": {"reduction": "sum", "ignore_index": 3, "prior": True},
}

SHAPES = [(1, 1), (3, 2), (67, 129), (40, 1000), (5, 4099), (33, 32000), (16, 128256), (2, 256000)]


def correctness(backends, quick):
    rows, failed = [], 0

    def record(ok, *cols):
        nonlocal failed
        failed += not ok
        rows.append(("PASS" if ok else "FAIL", *cols))

    shapes = SHAPES[:5] + SHAPES[-2:-1] if quick else SHAPES
    for backend in backends:
        for si, (N, C) in enumerate(shapes):
            for di, dtype in enumerate((torch.float32, torch.float16, torch.bfloat16)):
                for oi, (oname, opts) in enumerate(OPTION_SETS.items()):
                    if quick and (oi + si + di) % 2:
                        continue
                    layout = ("contig", "offset", "strided")[(si + oi + di) % 3]
                    inplace = (si + oi) % 4 == 1 and layout != "strided"
                    try:
                        ok, msg = check_case(backend, N, C, dtype, layout, opts, inplace=inplace, seed=oi)
                    except Exception as exc:  # noqa: BLE001 - report and go on
                        ok, msg = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
                        traceback.print_exc(limit=2)
                    record(ok, backend, f"{N}x{C}", str(dtype).removeprefix("torch."),
                           f"{oname} {layout}{' inplace' if inplace else ''}", msg)
        # huge and -inf logits
        g = torch.Generator().manual_seed(1)
        x = torch.randn(33, 257, generator=g).to(DEV)
        x = x.sign() * 1e4 + x
        t = torch.randint(0, 257, (33,), generator=g).to(DEV)
        a, ga = loss_and_grad(lambda x_, t_, b_=backend: kexue.cross_entropy(x_, t_, backend=b_), x, t,
                              torch.tensor(1.0, device=DEV))
        r, gr = loss_and_grad(cross_entropy_reference, x.double(), t, torch.tensor(1.0, device=DEV))
        lo, glo = loss_and_grad(cross_entropy_reference, x, t, torch.tensor(1.0, device=DEV))
        ok = err(a, r) <= 2 * err(lo, r) + 2e-5 and err(ga, gr) <= 2 * err(glo, gr) + 2e-5
        record(ok, backend, "33x257", "float32", "logits ±1e4", f"loss {err(a, r):.2g} grad {err(ga, gr):.2g}")
        m = torch.rand(16, 50, generator=g).to(DEV) < 0.5
        t = torch.randint(0, 50, (16,), generator=g).to(DEV)
        m[torch.arange(16), t] = False
        x = torch.randn(16, 50, generator=g).to(DEV).masked_fill(m, float("-inf"))
        a, ga = loss_and_grad(lambda x_, t_, b_=backend: kexue.cross_entropy(x_, t_, backend=b_), x, t,
                              torch.tensor(1.0, device=DEV))
        r, gr = loss_and_grad(cross_entropy_reference, x.double(), t, torch.tensor(1.0, device=DEV))
        ok = bool(torch.isfinite(a)) and bool((ga[m] == 0).all()) and err(a, r) < 1e-5 and err(ga, gr) < 1e-5
        record(ok, backend, "16x50", "float32", "-inf logits", f"loss {err(a, r):.2g} grad {err(ga, gr):.2g}")
        # out-of-range target: on the GPU a NaN row, other rows unchanged, no synchronisation; on
        # CPU tensors (--cpu) a clear error at the call
        x = torch.randn(8, 5, device=DEV)
        t = torch.randint(0, 5, (8,), device=DEV)
        t_bad = t.clone()
        t_bad[3] = 5
        if DEV.type == "cpu":
            try:
                kexue.cross_entropy(x, t_bad, backend=backend, reduction="none")
                ok, msg = False, "no error raised"
            except (RuntimeError, ValueError) as exc:
                msg = str(exc).splitlines()[0]
                ok = "out of range" in msg
            record(ok, backend, "8x5", "float32", "target out of range", msg[:80])
        else:
            good = kexue.cross_entropy(x, t, backend=backend, reduction="none")
            bad = kexue.cross_entropy(x, t_bad, backend=backend, reduction="none")
            others = torch.arange(8, device=DEV) != 3
            ok = bool(torch.isnan(bad[3])) and torch.equal(bad[others], good[others])
            record(ok, backend, "8x5", "float32", "target out of range", "NaN row" if ok else f"{bad.tolist()}")

    if "cuda" in backends:
        os.environ["KEXUE_SYNC_CHECKS"] = "1"
        try:
            x = torch.randn(8, 5, device=DEV)
            t = torch.randint(0, 5, (8,), device=DEV)
            t[6] = -7
            try:
                kexue.cross_entropy(x, t, backend="cuda")
                record(False, "cuda", "8x5", "float32", "KEXUE_SYNC_CHECKS=1", "no error raised")
            except RuntimeError as exc:
                msg = str(exc).splitlines()[0]
                record("target[6] = -7 is out of range" in msg, "cuda", "8x5", "float32", "KEXUE_SYNC_CHECKS=1",
                       msg[:90])
            t[6] = 1  # the error word was reset: a good call passes
            kexue.cross_entropy(x, t, backend="cuda")
        finally:
            del os.environ["KEXUE_SYNC_CHECKS"]
        # 64-bit indexing: N·C > 2^31 elements (bf16, 4.3 GB of logits + the same for the gradient)
        N, C = 16800, 128256
        try:
            x = torch.randn(N, C, device=DEV, dtype=torch.bfloat16)
            t = torch.randint(0, C, (N,), device=DEV)
            loss = kexue.cross_entropy(x, t, backend="cuda", reduction="none")
            rows_ = torch.tensor([0, N // 2, N - 2, N - 1], device=DEV)
            ref = cross_entropy_reference(x[rows_].double(), t[rows_], reduction="none")
            low = cross_entropy_reference(x[rows_], t[rows_], reduction="none")
            e, base = err(loss[rows_], ref), err(low, ref)
            (gx,) = torch.autograd.grad(kexue.cross_entropy(x.requires_grad_(), t, backend="cuda", reduction="sum"),
                                        x)
            xr = x[rows_].detach().double().requires_grad_()
            (gr,) = torch.autograd.grad(cross_entropy_reference(xr, t[rows_], reduction="sum"), xr)
            eg = err(gx[rows_], gr)
            ok = e <= 2 * base + 1e-4 and eg <= 1e-2
            record(ok, "cuda", f"{N}x{C}", "bfloat16", "N*C > 2^31", f"loss {e:.2g} grad(last rows) {eg:.2g}")
            del x, gx
        except torch.OutOfMemoryError:
            rows.append(("SKIP", "cuda", f"{N}x{C}", "bfloat16", "N*C > 2^31", "out of memory"))
        torch.cuda.empty_cache()

    w = [max(len(r[c]) for r in rows) for c in range(5)]
    for r in rows:
        print("  ".join(r[c].ljust(w[c]) for c in range(5)) + "  " + r[5])
    print(f"\n{sum(r[0] == 'PASS' for r in rows)}/{len(rows)} passed, {failed} failed")
    return failed == 0


def time_ms(fn, repeats=20, warmup=3):
    """Median milliseconds, CUDA events (kexue.benchmarking.time_fn, as `kexue bench` times)."""
    return time_fn(fn, torch.device("cuda"), repeats, warmup)[0] * 1e3


def peak_extra_mb(fn):
    """Peak memory allocated during fn() above what was allocated before, in MiB."""
    return peak_memory(fn, torch.device("cuda")) / 2**20


def timing_cells(name, fwd, fwd_bwd) -> list[str]:
    """Table cells: forward ms, forward+backward ms, peak MiB of forward+backward; "err" for a
    provider that fails (reported on stderr, the table goes on)."""
    cells = []
    for f in (fwd, fwd_bwd):
        try:
            cells.append(f"{time_ms(f):9.3f}")
        except Exception as exc:  # noqa: BLE001
            print(f"  {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}", file=sys.stderr)
            cells.append(f"{'err':>9}")
    try:
        cells.append(f"{peak_extra_mb(fwd_bwd):9.0f}")
    except Exception:  # noqa: BLE001
        cells.append(f"{'err':>9}")
    return cells


def benchmark(backends, quick):
    dtype = torch.bfloat16
    N, C = (2048, 128256) if quick else (8192, 128256)
    x = torch.randn(N, C, device=DEV, dtype=dtype)
    t = torch.randint(0, C, (N,), device=DEV)
    prior = torch.rand(C, device=DEV) + 0.01
    providers = {"torch": cross_entropy_reference, "torch_compile": torch.compile(cross_entropy_reference),
                 "torch_F": F.cross_entropy}
    for b in backends:
        providers[b] = (lambda b_: lambda x_, t_, **k: kexue.cross_entropy(x_, t_, backend=b_, **k))(b)
    if "cuda" in backends:
        providers["cuda_inplace"] = lambda x_, t_, **k: kexue.cross_entropy(x_, t_, backend="cuda",
                                                                            inplace_backward=True, **k)
    if importlib.util.find_spec("liger_kernel") is not None:
        try:
            from liger_kernel.transformers import LigerCrossEntropyLoss

            liger = LigerCrossEntropyLoss()
            providers["liger"] = lambda x_, t_, **k: liger(x_, t_)
        except Exception as exc:  # noqa: BLE001
            print(f"liger_kernel does not import: {exc}", file=sys.stderr)
    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}  bf16 N={N} C={C}  (ms, median of 20; "
          "peak MiB above logits+target for fwd+bwd)")
    print(f"{'provider':>14} {'variant':>8} {'fwd':>9} {'fwd+bwd':>9} {'peak MiB':>9}")
    for variant, kw in (("plain", {}), ("la+ls", {"prior": prior, "label_smoothing": 0.1})):
        for name, fn in providers.items():
            if variant != "plain" and name in ("torch_F", "liger"):
                continue  # (no logit adjustment there)
            inplace = name == "cuda_inplace"
            leaf = x.detach().clone().requires_grad_()

            def fwd(fn=fn, kw=kw):
                with torch.no_grad():
                    return fn(x, t, **kw)

            def fwd_bwd(fn=fn, leaf=leaf, inplace=inplace, kw=kw):
                h = leaf * 1.0 if inplace else leaf  # in place needs a non-leaf buffer to overwrite
                return torch.autograd.grad(fn(h, t, **kw), leaf)

            print(f"{name:>14} {variant:>8} " + " ".join(timing_cells(name, fwd, fwd_bwd)), flush=True)
            del leaf
            torch.cuda.empty_cache()
    print(f"(one logits-sized bf16 buffer = {N * C * 2 / 2**20:.0f} MiB; the in-place leaf copy x*1.0 counts one)")


def benchmark_linear(backends, quick):
    """lm_head matmul + loss: kexue.linear_cross_entropy (cuda / triton) against the unfused
    composite (logits = h Wᵀ, then the torch loss), its compiled form, and Liger-Kernel's
    LigerFusedLinearCrossEntropyLoss; bf16 hidden H=4096, C=128256.  Peak MiB above the inputs
    (hidden, weight, target) during forward+backward; the unfused logits alone are N·C·2 bytes."""
    dtype, H, C = torch.bfloat16, 4096, 128256
    N = 2048 if quick else 8192
    g = torch.Generator(device="cpu").manual_seed(0)
    h0 = (torch.randn(N, H, generator=g) / H**0.5).to(DEV, dtype)
    W0 = torch.randn(C, H, generator=g).to(DEV, dtype)
    t = torch.randint(0, C, (N,), generator=g).to(DEV)

    def unfused(h, W, t_):
        return cross_entropy_reference(h @ W.t(), t_)

    providers = {"torch": unfused, "torch_compile": torch.compile(unfused)}
    for b in backends:
        providers[b] = (lambda b_: lambda h, W, t_: kexue.linear_cross_entropy(h, W, t_, backend=b_))(b)
    if importlib.util.find_spec("liger_kernel") is not None:
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            liger = LigerFusedLinearCrossEntropyLoss()
            providers["liger"] = lambda h, W, t_: liger(W, h, t_)
        except Exception as exc:  # noqa: BLE001
            print(f"liger_kernel does not import: {exc}", file=sys.stderr)
    print(f"\nlinear_cross_entropy  bf16 N={N} H={H} C={C}  (ms, median of 20; peak MiB above the inputs, "
          f"fwd+bwd; the logits alone would be {N * C * 2 / 2**20:.0f} MiB)")
    print(f"{'provider':>14} {'fwd':>9} {'fwd+bwd':>9} {'peak MiB':>9}")
    for name, fn in providers.items():
        h = h0.clone().requires_grad_()
        W = W0.clone().requires_grad_()

        def fwd(fn=fn, h=h, W=W):
            with torch.no_grad():
                return fn(h, W, t)

        def fwd_bwd(fn=fn, h=h, W=W):
            return torch.autograd.grad(fn(h, W, t), (h, W))

        print(f"{name:>14} " + " ".join(timing_cells(name, fwd, fwd_bwd)), flush=True)
        del h, W
        torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="timings only")
    ap.add_argument("--cpu", action="store_true",
                    help="the correctness table on CPU tensors for the cpu and triton backends, no timings (for "
                         "Triton set TRITON_INTERPRET=1): the GPU run's checks previewed without a GPU")
    args = ap.parse_args()
    global DEV
    if args.cpu:
        DEV = torch.device("cpu")
        backends = [b for b in ("cpu", "triton") if BACKENDS.availability(b, DEV)[0]]
        print(f"backends checked on cpu: {', '.join(backends)}")
        return 0 if correctness(backends, args.quick) else 1
    if not torch.cuda.is_available():
        print("no CUDA device: this script only runs on a GPU machine", file=sys.stderr)
        return 2
    backends = []
    for b in ("cuda", "triton"):
        ok, why = BACKENDS.availability(b, DEV)
        print(f"backend {b}: {'available' if ok else 'NOT available: ' + why}")
        if ok:
            backends.append(b)
    if "cuda" not in backends:
        return 2
    passed = True if args.no_check else correctness(backends, args.quick)
    if not args.no_bench:
        # timings without the NaN poisoning of torch.empty (it would add a fill to every allocation)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.use_deterministic_algorithms(False)
        benchmark(backends, args.quick)
        benchmark_linear(backends, args.quick)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
