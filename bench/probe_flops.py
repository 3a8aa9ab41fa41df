"""Perturbed masking on a CPU: how much float32 arithmetic each scheme must do, and how fast this
CPU does float32 matrix products, to tell what speed-up exact float32 can reach at best.

For an encoder of L layers, hidden D, FFN 4D, a sequence of T tokens costs per layer
24·T·D² FLOPs in its matrix products (query, key, value and output projections 4·2·D², the FFN
2·2·4·D², per token) plus 4·T²·D in attention.  The published scheme runs (S+2)² sequences of
T = S+2 tokens per sentence through every layer.  kexue runs W + W(W−1)/2 sequences and computes
the last layer only for the R rows it reads (keys and values for all T tokens: 4·T·D² + 20·R·D²
+ 4·R·T·D), and the first layer's query/key/value projections once per distinct (token,
position), about 2·T rows per sentence.  The ratio of the two counts bounds the float32 speed-up
when both run their matrix products at the same rate.  The float32 GEMM rate at the engine's
shapes is measured for both libraries torch ships: its default BLAS (MKL: what the published
scheme's model runs on) and oneDNN (what kexue routes the model's linear layers through on the
CPU, kexue.cpu_linear); against each scheme's FLOPs over its measured time, it shows how close
each runs to its GEMM's rate.

    python bench/probe_flops.py --sentences 100 --threads 2 [--published-s 276.5 --kexue-s 94.9]
"""

from __future__ import annotations

import argparse
import time

import torch

from kexue import cpu_linear
from kexue.probe.bench import pud_sentences


def scheme_flops(T: int, W: int, R: list[int], L: int, D: int) -> tuple[float, float]:
    """(published, kexue) FLOPs for one sentence of T tokens (with [CLS]/[SEP]) and W words, R[i]
    the subword count of word i."""
    per_seq_full = L * (24 * T * D * D + 4 * T * T * D)
    published = T * T * per_seq_full
    last_full = 24 * T * D * D + 4 * T * T * D

    def restricted(rows: int) -> float:
        return (L - 1) * last_full + 4 * T * D * D + 20 * rows * D * D + 4 * rows * T * D

    kexue = sum(restricted(R[i]) for i in range(W))
    kexue += sum(restricted(R[i] + R[j]) for i in range(W) for j in range(i + 1, W))
    # the first layer's query/key/value projections: once per distinct (token, position), about
    # 2·T rows per sentence (each position unmasked and masked), not once per sequence and token
    n_seq = W + W * (W - 1) // 2
    kexue -= 6 * D * D * T * (n_seq - 2) if n_seq > 2 else 0
    return published, kexue


def gemm_gflops(M: int, K: int, N: int, lib: str, repeats: int = 20) -> float:
    """GFLOP/s of x Wᵀ, x (M, K), W (N, K), as a linear layer does it: lib "torch" (F.linear on the
    default BLAS) or "onednn" (kexue.cpu_linear.linear)."""
    a, w = torch.randn(M, K), torch.randn(N, K)
    f = (lambda: torch.nn.functional.linear(a, w)) if lib == "torch" else (lambda: cpu_linear.linear(a, w))
    for _ in range(3):
        f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return 2 * M * K * N / ts[len(ts) // 2] / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--published-s", type=float, default=None, help="measured time of the published scheme")
    ap.add_argument("--kexue-s", type=float, default=None, help="measured time of kexue (float32)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import kexue.probe as kp

    _, tok = kp.default_model()
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(kp.models.default_model_path())
    L, D = cfg.num_hidden_layers, cfg.hidden_size
    pub = kex = 0.0
    for words in pud_sentences(args.sentences):
        pieces = [len(tok.tokenize(w)) or 1 for w in words]
        T = sum(pieces) + 2
        p, k = scheme_flops(T, len(words), pieces, L, D)
        pub, kex = pub + p, kex + k
    print(f"{args.sentences} PUD sentences, L={L} D={D}: published {pub / 1e12:.2f} TFLOP, kexue {kex / 1e12:.2f} "
          f"TFLOP, ratio {pub / kex:.2f} (the float32 speed-up at equal GEMM rates)")
    shapes = {"QKV (2048x384 @ 384x384)": (2048, 384, 384), "FFN up (2048x384 @ 384x1536)": (2048, 384, 1536),
              "FFN down (2048x1536 @ 1536x384)": (2048, 1536, 384)}
    libs = ["torch"] + (["onednn"] if cpu_linear.onednn_available() else [])
    rates = {lib: {name: gemm_gflops(*s, lib) for name, s in shapes.items()} for lib in libs}
    for lib in libs:
        for name, r in rates[lib].items():
            print(f"  {lib:<6} float32 GEMM {name}: {r:.0f} GFLOP/s ({args.threads} threads)")
    if args.published_s and args.kexue_s:
        print(f"  achieved: published {pub / args.published_s / 1e9:.0f} GFLOP/s, kexue {kex / args.kexue_s / 1e9:.0f} "
              f"GFLOP/s (all work, not only GEMMs); speed-up {args.published_s / args.kexue_s:.2f}")
        for lib in libs:
            best = max(rates[lib].values())
            print(f"  kexue with every FLOP at {lib}'s best GEMM rate: {kex / best / 1e9:.1f} s, i.e. at most "
                  f"{args.published_s / (kex / best / 1e9):.2f}x the published scheme's measured time")


if __name__ == "__main__":
    main()
