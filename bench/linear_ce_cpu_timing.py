"""linear_cross_entropy on the CPU, float32, forward + backward: kexue with its GEMMs on oneDNN
(the default), kexue on torch's default BLAS (KEXUE_CPU_LINEAR=torch), and the torch composite
(F.linear, then F.cross_entropy, the N×C logits whole).  Providers take turns in every repeat;
medians, spread = (max - min) / median.

    python bench/linear_ce_cpu_timing.py [--n 4096 --hidden 1024 --classes 32000 --threads 2 --repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
from unittest import mock

import torch
import torch.nn.functional as F

import kexue
from kexue.benchmarking import time_in_turns


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(a.n, a.hidden, generator=g) * 0.5).requires_grad_()
    W = (torch.randn(a.classes, a.hidden, generator=g) / a.hidden**0.5).requires_grad_()
    y = torch.randint(0, a.classes, (a.n,), generator=g)

    def kexue_run(lib: str):
        def run():
            with mock.patch.dict(os.environ, {"KEXUE_CPU_LINEAR": lib}):
                loss = kexue.linear_cross_entropy(h, W, y)
                return (loss, *torch.autograd.grad(loss, (h, W)))
        return run

    def composite():
        loss = F.cross_entropy(F.linear(h, W), y)
        return (loss, *torch.autograd.grad(loss, (h, W)))

    providers = {"kexue": kexue_run("onednn"), "kexue_torchgemm": kexue_run("torch"), "torch_composite": composite}
    results = {k: [t.detach() for t in f()] for k, f in providers.items()}  # warm-up; values compared below
    times = time_in_turns(providers, a.repeats, warmup=0)
    ref = results["torch_composite"]
    print(f"N={a.n} H={a.hidden} C={a.classes} float32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'provider':<16} {'median s':>9} {'spread':>7} {'x composite':>12} {'max rel diff':>13}")
    base = statistics.median(times["torch_composite"])
    for k, ts in times.items():
        med = statistics.median(ts)
        rel = max(float((x - r).abs().max() / r.abs().max()) for x, r in zip(results[k], ref, strict=True))
        print(f"{k:<16} {med:9.3f} {(max(ts) - min(ts)) / med:7.0%} {base / med:12.2f} {rel:13.1e}")


if __name__ == "__main__":
    main()
