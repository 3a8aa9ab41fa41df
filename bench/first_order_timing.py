"""First-order fwd+bwd CPU timing of the kernel backends (the path that higher-order autograd
must not slow down): linear_attention, cross_entropy and linear_cross_entropy, "cpu" backend.

    python bench/first_order_timing.py [--repeats 7]

CPU-time medians (time.process_time, 1 thread; robust to preemption on a shared machine).
Run it with PYTHONPATH pointing at two trees, alternately, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import kexue
from kexue.benchmarking import time_in_turns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1024, 64, requires_grad=True) for _ in range(3))
    x, t = torch.randn(2048, 8000, requires_grad=True), torch.randint(0, 8000, (2048,))
    h, w = torch.randn(1024, 256, requires_grad=True), torch.randn(8000, 256, requires_grad=True)
    fns = {
        "la_cpu_fwd_bwd": lambda: kexue.linear_attention(q, k, v, causal=True, backend="cpu").sum().backward(),
        "ce_cpu_fwd_bwd": lambda: kexue.cross_entropy(x, t, backend="cpu", label_smoothing=0.1).backward(),
        "lce_cpu_fwd_bwd": lambda: kexue.linear_cross_entropy(h, w, t[:1024], backend="cpu").backward(),
    }
    times = time_in_turns(fns, repeats=a.repeats, warmup=2, clock=time.process_time)
    print(kexue.__file__, {n: round(statistics.median(v) * 1e3, 2) for n, v in times.items()}, "ms")


if __name__ == "__main__":
    main()
