"""Non-termination of incomplete decoding (Welleck et al. 2020) on textgenrnn's pretrained char LSTM.

    python bench/decoding_study.py [--prompts 50] [--max-len 500] [--seeds 0 1 2] [--quick]

Claim tested: consistent top-k / nucleus sampling (eos kept in the candidate set) drives r_L, the
fraction of sequences without eos within L tokens, to 0, where greedy, beam, top-k and nucleus
leave it above 0.  Model: kexue.datasets.load_textgenrnn (Reddit titles; eos = ``<s>``); prompts:
``<s>`` + the first 10 characters of held-out English sentences (kexue.datasets.movie_snippets,
test split).  Deterministic strategies run once; sampling ones once per seed (mean ± std).
Only this model is covered here (issue 13 part 5 also asks for SmolLM2-135M and Austen LSTMs).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from kexue import datasets
from kexue.datasets import textgenrnn as tg
from kexue.decoding import generate

STRATEGIES = [
    ("greedy", dict(strategy="greedy")),
    ("beam 2", dict(strategy="beam", beam_size=2)),
    ("beam 4", dict(strategy="beam", beam_size=4)),
    ("top-k 2", dict(strategy="sample", top_k=2)),
    ("top-k 4", dict(strategy="sample", top_k=4)),
    ("nucleus 0.2", dict(strategy="sample", top_p=0.2)),
    ("nucleus 0.4", dict(strategy="sample", top_p=0.4)),
    ("consistent top-k 2", dict(strategy="sample", top_k=2, consistent=True)),
    ("consistent top-k 4", dict(strategy="sample", top_k=4, consistent=True)),
    ("consistent nucleus 0.2", dict(strategy="sample", top_p=0.2, consistent=True)),
    ("consistent nucleus 0.4", dict(strategy="sample", top_p=0.4, consistent=True)),
]


def make_step_fn(model):
    def step_fn(ids, state):
        window = torch.zeros(ids.shape[0], tg.MAX_LENGTH, dtype=torch.long) if state is None else state
        window = torch.cat([window, ids], dim=1)[:, -tg.MAX_LENGTH:]
        with torch.no_grad():
            return model(window), window

    return step_fn


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--max-len", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)  # (a small LSTM: more threads only spin on a shared machine)
    ap.add_argument("--quick", action="store_true", help="4 prompts, L = 30, one seed (a smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.max_len, args.seeds = 4, 30, [0]
    torch.set_num_threads(args.threads)
    model, vocab = datasets.load_textgenrnn()
    eos = vocab[tg.META_TOKEN]
    texts = datasets.movie_snippets()["test"].texts[: args.prompts]
    prompts = [torch.tensor([eos] + tg.encode(t[:10], vocab)) for t in texts]
    step_fn = make_step_fn(model)
    print(f"textgenrnn, {len(prompts)} prompts, L = {args.max_len}, seeds {args.seeds}")
    print(f"{'strategy':<24} {'r_L':>14} {'mean length':>12}")
    rows = []
    for name, kw in STRATEGIES:
        kw = dict(kw)
        consistent = kw.pop("consistent", False)
        if consistent:
            kw["keep"] = eos
        seeds = args.seeds if kw["strategy"] == "sample" else [None]
        r, lengths = [], []
        for seed in seeds:
            g = torch.Generator().manual_seed(seed) if seed is not None else None
            out = generate(step_fn, prompts, eos_id=eos, max_len=args.max_len,
                           **({"generator": g} if g is not None else {}), **kw)
            r.append(out.non_termination_ratio())
            lengths.append(float(out.lengths.double().mean()))
        mean_r = statistics.mean(r)
        std_r = statistics.stdev(r) if len(r) > 1 else 0.0
        rows.append(dict(strategy=name, r_L=mean_r, r_L_std=std_r, length=statistics.mean(lengths)))
        rl = f"{mean_r:.3f} ± {std_r:.3f}" if len(r) > 1 else f"{mean_r:.3f}"
        print(f"{name:<24} {rl:>14} {statistics.mean(lengths):12.1f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
