"""Linear attention on the CPU against the machine's measured float32 GEMM rate (issue 16).

The raw kernel (``feature_map=None``, ``normalize=False``: the bare causal / non-causal product
that fast-transformers' ``causal_dot_product`` computes), forward + backward, float32, B2 H4
N4096, D = Dk = Dv in ``--dims``.  Its rate counts the FLOPs of the recurrent definition,
12·B·H·N·D² per forward + backward (forward: S += k vᵀ and o = q S; backward: dq = do Sᵀ and
the reverse state's dk, dv, each D² FMAs per token), the count behind the issue's "62 GFLOP/s"
figure; the chunked algorithm itself does ~1.5× more at D64.  The ceiling is a 2048³ float32
product through torch.mm and oneDNN (``kexue.benchmarking.cpu_gemm_providers``), the faster of
the two, timed in the same turns as the kernels, so a change of load on a shared machine hits
all alike.  fast-transformers' ``causal_dot_product`` (+ its backward) is timed beside the causal
cases when it is installed.  CPU time (``time.process_time``), medians over the turns.

    python bench/la_cpu_roofline.py [--threads 1 --repeats 5 --dims 64,128 --chunks 16,32,64] [--quick]

``--chunks`` repeats the kexue rows at each chunk size (``KEXUE_LA_CPU_CHUNK``), for tuning.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

import kexue
from kexue.benchmarking import cpu_gemm_providers, cpu_model, spread, time_in_turns

try:
    from fast_transformers.causal_product import causal_dot_product
except ImportError:  # optional peer
    causal_dot_product = None


def fwd_bwd(fn: Callable, q, k, v, go) -> Callable[[], object]:
    def run():
        return torch.autograd.grad(fn(q, k, v), (q, k, v), go)
    return run


def with_chunk(chunk: int | None, fn: Callable[[], object]) -> Callable[[], object]:
    if chunk is None:
        return fn

    def run():
        old = os.environ.get("KEXUE_LA_CPU_CHUNK")
        os.environ["KEXUE_LA_CPU_CHUNK"] = str(chunk)
        try:
            return fn()
        finally:
            if old is None:
                del os.environ["KEXUE_LA_CPU_CHUNK"]
            else:
                os.environ["KEXUE_LA_CPU_CHUNK"] = old
    return run


def cases(B: int, H: int, N: int, dims: list[int], chunks: list[int | None], seed: int):
    """{row name: (fn, FLOPs of the recurrent definition)} for every D, causal or not, provider."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, tuple[Callable[[], object], int]] = {}
    for D in dims:
        q, k, v = (torch.randn(B, H, N, D, generator=g).requires_grad_() for _ in range(3))
        go = torch.randn(B, H, N, D, generator=g)
        flops = 12 * B * H * N * D * D
        for causal in (True, False):
            def la(q, k, v, causal=causal):
                return kexue.linear_attention(q, k, v, causal=causal, feature_map=None, normalize=False,
                                              backend="cpu")
            tag = f"D{D} {'causal' if causal else 'non-causal'}"
            for chunk in chunks:
                name = f"{tag} kexue" + ("" if chunk is None else f" c{chunk}")
                out[name] = (with_chunk(chunk, fwd_bwd(la, q, k, v, go)), flops)
            if causal and causal_dot_product is not None:
                out[f"{tag} fast-transformers"] = (fwd_bwd(causal_dot_product, q, k, v, go), flops)
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunks", default="", help="comma list of chunk sizes to sweep (KEXUE_LA_CPU_CHUNK)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="N256, D16, a 256³ ceiling, 2 repeats (a smoke test)")
    a = ap.parse_args(argv)
    gemm_size = 2048
    if a.quick:
        a.n, a.dims, a.repeats, gemm_size = 256, "16", 2, 256
    torch.set_num_threads(a.threads)
    dims = [int(d) for d in a.dims.split(",")]
    chunks: list[int | None] = [int(c) for c in a.chunks.split(",")] if a.chunks else [None]
    gemm, gemm_flops = cpu_gemm_providers(gemm_size)
    rows = cases(a.batch, a.heads, a.n, dims, chunks, a.seed)
    fns = {**gemm, **{name: fn for name, (fn, _) in rows.items()}}
    times = time_in_turns(fns, a.repeats, clock=time.process_time)
    med = {name: statistics.median(v) for name, v in times.items()}
    ceiling = max(gemm_flops / med[name] / 1e9 for name in gemm)
    print(f"{cpu_model()}, {a.threads} thread(s), torch {torch.__version__}, kexue CPU path {kexue._ext.cpu_isa()}; "
          f"B{a.batch} H{a.heads} N{a.n} float32 fwd+bwd, feature_map=None, normalize=False; "
          f"CPU time, medians of {a.repeats} turns, seed {a.seed}")
    print(f"{'row':<34} {'median ms':>10} {'spread':>7} {'GFLOP/s':>8} {'% GEMM':>7} {'x f-t':>6}")
    for name in gemm:
        rate = gemm_flops / med[name] / 1e9
        print(f"{name + f' {gemm_size}^3':<34} {med[name] * 1e3:10.1f} {spread(times[name]):7.0%} {rate:8.1f} "
              f"{rate / ceiling:7.0%} {'':>6}")
    for name, (_, flops) in rows.items():
        rate = flops / med[name] / 1e9
        peer = name.split(" kexue")[0] + " fast-transformers"
        vs = f"{med[peer] / med[name]:6.2f}" if " kexue" in name and peer in med else f"{'':>6}"
        print(f"{name:<34} {med[name] * 1e3:10.1f} {spread(times[name]):7.0%} {rate:8.1f} {rate / ceiling:7.0%} {vs}")
    return {"ceiling_GFLOPs": ceiling, **{name: med[name] for name in rows}}


if __name__ == "__main__":
    main()
