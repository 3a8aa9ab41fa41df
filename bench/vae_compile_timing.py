"""Does torch.compile pay for the VAE's elementwise work on the CPU?  Eager against compiled, side by side.

    python bench/vae_compile_timing.py [--repeats 30] [--threads 1] [--quick]

Timed functions (forward + backward, float32):

* ``kl+reparam``: ``z = reparameterize(mu, logvar)``, ``loss = gaussian_kl(mu, logvar).sum() + z.square().sum()``:
  the elementwise part that torch.compile fuses into one loop (eager: ~8 elementwise kernels each way).
* ``train step``: one full ``-elbo`` loss + backward of ``kexue.vae.mlp_vae`` (784-400-20, batch 128), where the
  matmuls dominate.

Each case runs eager and ``torch.compile(fullgraph=True)`` in turns (kexue.benchmarking.time_in_turns),
medians reported with the ratio eager / compiled; the compile time itself is reported once.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from kexue import vae
from kexue.benchmarking import time_in_turns


def kl_reparam(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    z = vae.reparameterize(mu, logvar)
    return vae.gaussian_kl(mu, logvar) + z.square().sum()


def cases(quick: bool):
    shapes = [(128, 20), (4096, 256)] if not quick else [(16, 4)]
    for b, d in shapes:
        mu = torch.randn(b, d, requires_grad=True)
        lv = torch.randn(b, d, requires_grad=True)
        yield f"kl+reparam B={b} d={d}", kl_reparam, (mu, lv)
    torch.manual_seed(0)
    model = vae.mlp_vae(20) if not quick else vae.mlp_vae(2, image_shape=(1, 8, 8), hidden=(8,))
    x = torch.rand(128, *((1, 28, 28) if not quick else (1, 8, 8))).round()

    def step(xx):
        return model.loss(xx)

    yield "train step mlp_vae 784-400-20 B=128" if not quick else "train step (tiny)", step, (x,)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, fn, inputs in cases(args.quick):
        compiled = torch.compile(fn, fullgraph=True, dynamic=False)

        def run(f, inputs=inputs):
            return lambda: f(*inputs).backward()

        t0 = time.perf_counter()
        run(compiled)()
        compile_s = time.perf_counter() - t0
        times = time_in_turns({"eager": run(fn), "compiled": run(compiled)}, repeats=args.repeats, warmup=2)
        e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
        rows.append(f"| {name} | {e * 1e6:.0f} | {c * 1e6:.0f} | {e / c:.2f} | {compile_s:.1f} |")
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s), "
          f"{args.repeats} rounds in turns, medians")
    print("| case | eager µs | compiled µs | eager / compiled | first compile s |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
