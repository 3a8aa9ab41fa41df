"""CPU timing of kexue.sample against Hugging Face's warpers, the providers taking turns.

    python bench/sample_cpu_timing.py [--repeats 7] [--threads 2] [--clock wall|cpu] [--quick]

Providers (float32 logits ~ N(0, 3²), one token per row):
  * hf   TopKLogitsWarper + TopPLogitsWarper + softmax + torch.multinomial (what generate does)
  * cpu  kexue.sample(backend="cpu"): the sort-free C++ kernel
Grid: B in {1, 32, 128} x V in {32 000, 128 256}, with top_k=50 + top_p=0.9 and top_p=0.9 alone
(issue 13's target: >= 5x at B >= 32).  Within each repeat the providers take turns, so a change
of load on a shared machine hits both; ``--clock cpu`` times process CPU time (robust to
preemption).  Prints the median of each provider, the spread ((max - min) / median) and hf / cpu.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import kexue
from kexue.benchmarking import time_in_turns
from kexue.decoding.bench import FILTERS, hf_sample


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--quick", action="store_true", help="B=4, V=1000, 2 repeats (a smoke test)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    grid = [(4, 1000)] if args.quick else [(B, V) for V in (32000, 128256) for B in (1, 32, 128)]
    repeats = 2 if args.quick else args.repeats
    rows = []
    print(f"torch {torch.__version__}, {args.threads} threads, clock={args.clock}, repeats={repeats}, "
          f"CPU kernels: {kexue._ext.cpu_isa()} path")
    print(f"{'B':>4} {'V':>7} {'filters':<9} {'hf ms':>9} {'spread':>7} {'cpu ms':>8} {'spread':>7} {'hf/cpu':>7}")
    for B, V in grid:
        x = torch.randn(B, V, generator=torch.Generator().manual_seed(0)) * 3
        for tag, kw in FILTERS.items():
            fns = {"hf": lambda kw=kw, x=x: hf_sample(x, **kw),
                   "cpu": lambda kw=kw, x=x: kexue.sample(x, backend="cpu", **kw)}
            with torch.no_grad():
                t = time_in_turns(fns, repeats, clock=clock)
            med = {k: statistics.median(v) for k, v in t.items()}
            spread = {k: (max(v) - min(v)) / med[k] for k, v in t.items()}
            row = dict(B=B, V=V, filters=tag, hf=med["hf"], cpu=med["cpu"], ratio=med["hf"] / med["cpu"])
            rows.append(row)
            print(f"{B:>4} {V:>7} {tag:<9} {med['hf'] * 1e3:9.3f} {spread['hf']:7.0%} {med['cpu'] * 1e3:8.3f} "
                  f"{spread['cpu']:7.0%} {row['ratio']:7.1f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
