"""Perturbed masking, float32 on a CPU: kexue against the published scheme at equal GEMM library,
as a fraction of the FLOP-ratio bound (issue 16).

At equal GEMM rates, exact float32 cannot beat the published scheme by more than the ratio of
the two schemes' FLOPs (``bench/probe_flops.py``'s count: 3.04 on the first 100 PUD sentences).
This script times both schemes on the same GEMM path, in turns, for each library torch ships:

  torch   the model's float32 linear layers on torch's default BLAS (MKL) on both sides
          (kexue with ``KEXUE_CPU_LINEAR=torch``)
  onednn  the linear layers on oneDNN on both sides (the published scheme's model wrapped in
          ``kexue.cpu_linear.onednn_linears``, kexue's default on the CPU)

and reports speed-up / FLOP ratio, the fraction of the bound attained (target: >= 95%), from the
medians and from the fastest turns (load from other jobs only adds time, so on a shared machine
the minima are the steadier estimate of each provider's own speed).  The
sentences are the issue's setting: ``--sentences`` UD English-PUD sentences of ``--min-words`` to
``--max-words`` words drawn at random (``--seed``); all-MiniLM-L6-v2, last layer, float32.
Process CPU time (``--clock cpu``, the default: robust to other jobs on a shared machine with
``--threads 1``) or wall time; medians over ``--repeats`` turns.

    HF_HUB_OFFLINE=1 python bench/probe_equal_gemm.py [--sentences 8 --threads 1 --repeats 5 --seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

import kexue
import kexue.probe as kp
from kexue.benchmarking import cpu_model, spread, time_in_turns
from kexue.cpu_linear import onednn_available, onednn_linears
from kexue.probe.bench import pud_sentences


def _scheme_flops() -> Callable:
    """``scheme_flops`` of bench/probe_flops.py (the one FLOP count of both schemes)."""
    spec = importlib.util.spec_from_file_location("probe_flops", Path(__file__).with_name("probe_flops.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.scheme_flops


def draw_sentences(n: int, min_words: int, max_words: int, seed: int) -> list[list[str]]:
    """``n`` PUD sentences of ``min_words``..``max_words`` words, drawn at random (``seed``)."""
    pool = pud_sentences(10**9, min_words=min_words, max_words=max_words)
    return random.Random(seed).sample(pool, min(n, len(pool)))


def flop_ratio(model, tok, sents: list[list[str]]) -> tuple[float, float]:
    """(published, kexue) float32 FLOPs of the sentences, by bench/probe_flops.py's count."""
    scheme_flops = _scheme_flops()
    L, D = model.config.num_hidden_layers, model.config.hidden_size
    pub = kex = 0.0
    for words in sents:
        pieces = [len(tok.tokenize(w)) or 1 for w in words]
        p, k = scheme_flops(sum(pieces) + 2, len(words), pieces, L, D)
        pub, kex = pub + p, kex + k
    return pub, kex


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=8)
    ap.add_argument("--min-words", type=int, default=8)
    ap.add_argument("--max-words", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="2 sentences of 3-6 words, 1 repeat (a smoke test)")
    a = ap.parse_args(argv)
    if a.quick:
        a.sentences, a.min_words, a.max_words, a.repeats = 2, 3, 6, 1
    torch.set_num_threads(a.threads)
    model, tok = kp.default_model()
    sents = draw_sentences(a.sentences, a.min_words, a.max_words, a.seed)
    pub_flops, kex_flops = flop_ratio(model, tok, sents)
    ratio = pub_flops / kex_flops

    def published() -> list[torch.Tensor]:
        return [kp.impact_matrix_published_scheme(model, tok, s) for s in sents]

    def published_onednn() -> list[torch.Tensor]:
        with onednn_linears(model):
            return published()

    def kexue_torchgemm() -> list[torch.Tensor]:
        with mock.patch.dict(os.environ, {"KEXUE_CPU_LINEAR": "torch"}):
            return kp.impact_matrices(model, tok, sents, progress=False)

    def kexue_default() -> list[torch.Tensor]:
        return kp.impact_matrices(model, tok, sents, progress=False)

    paths = {"torch": ("published", "kexue_torchgemm")}
    fns: dict[str, Callable[[], list[torch.Tensor]]] = {"published": published, "kexue_torchgemm": kexue_torchgemm}
    if onednn_available():
        paths["onednn"] = ("published_onednn", "kexue")
        fns.update(published_onednn=published_onednn, kexue=kexue_default)
    results = {name: fn() for name, fn in fns.items()}  # also the warm-up call of each
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    times = time_in_turns(fns, a.repeats, warmup=0, clock=clock)
    med = {name: statistics.median(v) for name, v in times.items()}

    words = [len(s) for s in sents]
    print(f"{cpu_model()}, {a.threads} thread(s), torch {torch.__version__}, kexue {kexue.__version__}; "
          f"{len(sents)} PUD sentences of {a.min_words}-{a.max_words} words (seed {a.seed}; {sum(words)} words, "
          f"W = {words}); {a.clock} time, medians of {a.repeats} turns")
    print(f"FLOPs (bench/probe_flops.py's count): published {pub_flops / 1e9:.1f} GFLOP, kexue {kex_flops / 1e9:.1f} "
          f"GFLOP, ratio {ratio:.2f}")
    print(f"{'GEMM path':<9} {'published s':>12} {'spread':>7} {'kexue s':>9} {'spread':>7} {'speed-up':>9} "
          f"{'of bound':>9} {'min: speed-up':>14} {'of bound':>9} {'rel diff':>9}")
    out: dict[str, float] = {"flop_ratio": ratio}
    for path, (pub, kex) in paths.items():
        speedup = med[pub] / med[kex]
        rel = max(float((x - y).abs().max() / y.abs().max())
                  for x, y in zip(results[kex], results[pub], strict=True))
        fastest = min(times[pub]) / min(times[kex])
        print(f"{path:<9} {med[pub]:12.3f} {spread(times[pub]):7.0%} {med[kex]:9.3f} {spread(times[kex]):7.0%} "
              f"{speedup:9.2f} {speedup / ratio:9.1%} {fastest:14.2f} {fastest / ratio:9.1%} {rel:9.1e}")
        out[f"{path}_speedup"], out[f"{path}_fraction"], out[f"{path}_rel"] = speedup, speedup / ratio, rel
        out[f"{path}_fraction_min"] = fastest / ratio
    return out


if __name__ == "__main__":
    main()
