"""cross_entropy on the CPU, float32, forward + backward with the gradient allocated as usual
(not inplace_backward): kexue's "cpu" backend (its default: the gradient from the CPU buffer
cache, whose pages an earlier call faulted in), the same with the cache off (a fresh gradient,
KEXUE_CPU_CACHE_MB=0) and also advised into transparent huge pages (KEXUE_HUGE_PAGES=1), and
F.cross_entropy; then the issue's
logit-adjusted, flooded loss against its torch composite, F.cross_entropy(x + log π) with batch
flooding |ℓ − b| + b.  Providers take turns in every repeat; medians, spread = (max - min) /
median, and the minor page faults per call (getrusage) that show where the time of a fresh
500 MiB gradient goes.

    python bench/ce_cpu_timing.py [--n 4096 --classes 32000 --threads 2 --repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import kexue
from kexue.benchmarking import cpu_model, time_in_turns


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def with_env(name: str, value: str, fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old
    return run


def thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().strip()
    except OSError:
        return "n/a"


def providers(x: torch.Tensor, t: torch.Tensor, prior: torch.Tensor, flood: float) -> dict[str, Callable]:
    def grad(loss):
        return torch.autograd.grad(loss, x)[0]

    def kexue_plain():
        return grad(kexue.cross_entropy(x, t, backend="cpu"))

    def kexue_adjusted():
        return grad(kexue.cross_entropy(x, t, backend="cpu", prior=prior, tau=1.0, flood=flood))

    def torch_adjusted():
        loss = F.cross_entropy(x + (prior / prior.sum()).log(), t)
        return grad((loss - flood).abs() + flood)

    def fresh(fn):  # the gradient a fresh mapping every call: the buffer cache off
        return with_env("KEXUE_CPU_CACHE_MB", "0", fn)

    return {
        "F.cross_entropy": lambda: grad(F.cross_entropy(x, t)),
        "kexue cpu": kexue_plain,
        "kexue cpu, no cache": fresh(kexue_plain),
        "kexue cpu, no cache, THP": fresh(with_env("KEXUE_HUGE_PAGES", "1", kexue_plain)),
        "torch LA+flood": torch_adjusted,
        "kexue LA+flood": kexue_adjusted,
        "kexue LA+flood, no cache": fresh(kexue_adjusted),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: time.process_time (CPU seconds of the process, robust to preemption)")
    ap.add_argument("--quick", action="store_true", help="N256 C4000, 2 repeats (a smoke test)")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.classes, a.repeats = 256, 4000, 2
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(a.seed)
    x = torch.randn(a.n, a.classes, generator=g).requires_grad_()
    t = torch.randint(0, a.classes, (a.n,), generator=g)
    prior = torch.rand(a.classes, generator=g).pow(3) * 100 + 0.01
    fns = providers(x, t, prior, flood=0.5)

    faults = {}
    for name, fn in fns.items():  # page faults of one call each, after a warm-up call
        fn()
        f0 = minor_faults()
        fn()
        faults[name] = minor_faults() - f0
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    times = time_in_turns(fns, a.repeats, clock=clock)
    print(f"{cpu_model()}, {a.threads} threads, torch {torch.__version__}, THP: {thp_mode()}; "
          f"N{a.n} C{a.classes} float32 fwd+bwd, {a.repeats} turns, seed {a.seed}")
    print(f"clock: {a.clock} (cpu = process CPU time); medians over the turns")
    print(f"{'provider':<24} {'median ms':>10} {'spread':>7} {'faults/call':>12} {'x F.ce':>7} {'x torch LA':>10}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, v in times.items():
        spread = (max(v) - min(v)) / med[name]
        print(f"{name:<24} {med[name] * 1e3:10.1f} {spread:7.0%} {faults[name]:12d} "
              f"{med['F.cross_entropy'] / med[name]:7.2f} {med['torch LA+flood'] / med[name]:10.2f}")
    return med


if __name__ == "__main__":
    main()
