"""IG at n_steps = 50 on the fine-tuned MiniLM classifier: kexue against Captum 0.9 LayerIG, timed alone.

The speed part of bench/attribution_study.py also times ``n_steps="auto"`` (several times slower at
Captum's own error), which makes a whole run long; this script times only the n = 50 providers, in
turns, wall and process CPU time, medians: Captum one sentence per call with internal_batch_size
25 and None (its best is the baseline), kexue's default path (oneDNN GEMMs where available), the same
with torch's BLAS GEMMs (``fast_linear=False``) and its autograd integrand.

``python bench/attribution_speed.py --threads 2 --sentences 64 --repeats 2`` (one warm-up round).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution_study import captum_layer_ig, classifier, cpu_name  # noqa: E402

from kexue.attribution import token_attributions  # noqa: E402
from kexue.benchmarking import spread, times_in_turns  # noqa: E402
from kexue.datasets import movie_snippets  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n-steps", type=int, default=50)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = classifier(torch.device("cpu"))
    texts = movie_snippets()["test"].texts[:args.sentences]
    n = args.n_steps
    fns = {"Captum LayerIG, internal_batch_size=25": lambda: captum_layer_ig(model, tok, texts, n, 25),
           "Captum LayerIG, internal_batch_size=None": lambda: captum_layer_ig(model, tok, texts, n, None),
           "kexue (default)": lambda: token_attributions(model, tok, texts, n_steps=n),
           "kexue, torch's BLAS GEMMs": lambda: token_attributions(model, tok, texts, n_steps=n, fast_linear=False),
           "kexue, autograd integrand": lambda: token_attributions(model, tok, texts, n_steps=n, fast_path=False)}
    times = times_in_turns(fns, args.repeats, 1, {"wall": time.perf_counter, "cpu": time.process_time})
    wall, cpu = times["wall"], times["cpu"]
    captum = [k for k in fns if k.startswith("Captum")]
    best_w = min(statistics.median(wall[k]) for k in captum)
    best_c = min(statistics.median(cpu[k]) for k in captum)
    lines = [f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}; {len(texts)} test sentences, "
             f"n_steps = {n}, medians of {args.repeats} rounds in turns", "",
             "| provider | median s | spread | best Captum / provider | median CPU-s | CPU ratio |",
             "|---|---|---|---|---|---|"]
    for k in fns:
        mw, mc = statistics.median(wall[k]), statistics.median(cpu[k])
        lines.append(f"| {k} | {mw:.2f} | {spread(wall[k]):.0%} | {best_w / mw:.2f} | {mc:.2f} | "
                     f"{best_c / mc:.2f} |")
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
