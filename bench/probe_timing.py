"""Perturbed masking: sentences per second on UD English-PUD with all-MiniLM-L6-v2.

Providers, side by side in one run on the same sentences:
  published   the published code's batching, reimplemented (kexue.probe.impact_matrix_published_scheme):
              one batch of S+2 sequences per token position, every hidden state kept, distances in
              Python loops
  kexue       kexue.probe.impact_matrices, float32
  kexue_bf16  the same under bfloat16 autocast
and with --gemm-ab (CPU), to separate the engine's gain from the GEMM library's:
  published_onednn  the published scheme with the model's float32 linear layers on oneDNN
                    (kexue.cpu_linear.onednn_linears), as kexue runs them
  kexue_torchgemm   kexue with its linear layers on torch's default GEMM (KEXUE_CPU_LINEAR=torch)
Every provider's matrices are compared with the published scheme's (max abs difference).

    python bench/probe_timing.py --sentences 100 --threads 2 [--repeats 1] [--skip-published] [--gemm-ab]
    python bench/probe_timing.py --device cuda --model DIR --random-init   # a GPU machine: DIR holds
        only the config and tokenizer (weights drawn at random, seed 0: the speed is the model's
        shape's, and every provider runs the same weights)
On a GPU every provider first runs two sentences untimed (CUDA context, kernels, handles), and
float16 autocast is timed too.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from unittest import mock

import torch

import kexue
import kexue.probe as kp
from kexue.cpu_linear import onednn_linears
from kexue.probe.bench import pud_sentences


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-published", action="store_true")
    ap.add_argument("--gemm-ab", action="store_true", help="also time both schemes on the other GEMM library")
    ap.add_argument("--model", default=None, help="a local Hugging Face model folder (default: MiniLM)")
    ap.add_argument("--random-init", action="store_true", help="weights drawn at random from --model's config")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gemm_ab and args.device != "cpu":
        ap.error("--gemm-ab compares CPU GEMM libraries: --device cpu only")
    if args.random_init and args.model is None:
        ap.error("--random-init needs --model (a folder with config.json and the tokenizer)")
    model, tok = kp.load_model(args.model, device=args.device, random_weights=args.random_init)
    sents = pud_sentences(args.sentences)
    W = [len(s) for s in sents]
    S2 = [len(tok(s, is_split_into_words=True)["input_ids"]) for s in sents]
    print(f"{len(sents)} PUD sentences, {sum(W)} words (mean {sum(W) / len(W):.1f}), tokens with specials "
          f"mean {sum(S2) / len(S2):.1f}; sequences: published {sum(t * t for t in S2)}, "
          f"kexue {sum(kp.count_sequences(w) for w in W)}")
    print(f"torch {torch.__version__}, kexue {kexue.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, device {args.device}")

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    providers = {}
    if not args.skip_published:
        providers["published"] = lambda: [kp.impact_matrix_published_scheme(model, tok, s) for s in sents]
    if args.gemm_ab and not args.skip_published:
        def published_onednn():
            with onednn_linears(model):
                return [kp.impact_matrix_published_scheme(model, tok, s) for s in sents]
        providers["published_onednn"] = published_onednn
    if args.gemm_ab:
        def kexue_torchgemm():
            with mock.patch.dict(os.environ, {"KEXUE_CPU_LINEAR": "torch"}):
                return kp.impact_matrices(model, tok, sents, progress=False)
        providers["kexue_torchgemm"] = kexue_torchgemm
    providers["kexue"] = lambda: kp.impact_matrices(model, tok, sents, progress=False)
    providers["kexue_bf16"] = lambda: kp.impact_matrices(model, tok, sents, dtype=torch.bfloat16, progress=False)
    gpu = args.device.startswith("cuda")
    if gpu:
        providers["kexue_fp16"] = lambda: kp.impact_matrices(model, tok, sents, dtype=torch.float16, progress=False)
    warm = {"published": lambda: [kp.impact_matrix_published_scheme(model, tok, s) for s in sents[:2]],
            "kexue": lambda: kp.impact_matrices(model, tok, sents[:2], progress=False),
            "kexue_bf16": lambda: kp.impact_matrices(model, tok, sents[:2], dtype=torch.bfloat16, progress=False),
            "kexue_fp16": lambda: kp.impact_matrices(model, tok, sents[:2], dtype=torch.float16, progress=False)}
    results, times = {}, {}
    for name, fn in providers.items():
        if gpu:
            warm[name]()
        ts = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            results[name] = fn()
            sync()
            ts.append(time.perf_counter() - t0)
        times[name] = ts
        print(f"  {name:<16} {statistics.median(ts):8.2f} s", flush=True)
    ref_name = "published" if "published" in results else "kexue"
    ref = results[ref_name]
    base = statistics.median(times[ref_name])
    print(f"\n{'provider':<16} {'median s':>9} {'spread':>7} {'sent/s':>7} {'x ' + ref_name:>11} {'max|dM|':>9} "
          f"{'rel':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        spread = (max(ts) - min(ts)) / med
        diff = max(float((a - b).abs().max()) for a, b in zip(results[name], ref, strict=True))
        rel = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(results[name], ref, strict=True))
        print(f"{name:<16} {med:9.2f} {spread:7.0%} {len(sents) / med:7.2f} {base / med:11.2f} {diff:9.2e} {rel:8.1e}")


if __name__ == "__main__":
    main()
