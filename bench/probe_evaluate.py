"""Perturbed masking on UD English-PUD: dependency UAS/UUAS per layer and segmentation F1.

    HF_HUB_OFFLINE=1 python bench/probe_evaluate.py [--sentences 1000] [--layers 1,2,3,4,5,6]
        [--model PATH] [--dtype float32|bfloat16] [--threads 2] [--out table.md]
        [--skip-dependency | --skip-segmentation]

One engine pass computes every sentence's impact matrices for all the layers (and the [CLS] row
of the published matrix); they are then decoded under several settings
(:func:`kexue.probe.evaluate.score_dependency`):

* ``eisner, gold root``: the published protocol behind its README's figure (41.7 UAS on PUD with
  BERT-base): Eisner on the paper's transform, the gold root word's row edited, punctuation
  counted (see :mod:`kexue.probe.evaluate` and :func:`kexue.probe.parse_dependency`);
* ``eisner, gold root, no punct``: the same, punctuation words not scored;
* ``eisner, no root``: no gold information at all;
* ``cle, gold root``: Chu-Liu-Edmonds (non-projective) on the published score;
* baselines on the same words: right chain with the gold root (the last word attached to the
  root word) and the published right chain (the last word's head does not exist).

Segmentation (:func:`kexue.probe.evaluate_segmentation`): each sentence's words joined with no
spaces, the model's wordpiece units merged where the adjacent impact score reaches the
threshold; boundary P/R/F1 with the per-text mean threshold (no tuning), the best of the score
deciles (an oracle, for reference), and the trivial baselines (every unit a word, every character
a word, the whole text one word).  Model: the bundled all-MiniLM-L6-v2 unless ``--model``.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import kexue
import kexue.probe as kp
from kexue.probe.evaluate import cls_impacts, score_dependency

DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=None, help="first N sentences (default: all 1000)")
    ap.add_argument("--layers", default="1,2,3,4,5,6", help="hidden_states indices (0 = embeddings)")
    ap.add_argument("--model", default=None, help="local HF encoder folder (default: bundled all-MiniLM-L6-v2)")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-segmentation", action="store_true")
    ap.add_argument("--skip-dependency", action="store_true", help="segmentation table only")
    ap.add_argument("--out", help="also write the tables as markdown here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = [int(x) for x in args.layers.split(",")]
    model, tok = kp.load_model(args.model)
    sents = kp.read_conllu(kp.pud_path())[: args.sentences]
    words = [s.words for s in sents]
    dtype = DTYPES[args.dtype]
    lines = [f"UD English-PUD, {len(sents)} sentences, {sum(len(w) for w in words)} words; model "
             f"{args.model or 'all-MiniLM-L6-v2 (bundled)'}; metric dist, subword avg, {args.dtype}; "
             f"torch {torch.__version__}, kexue {kexue.__version__}, {torch.get_num_threads()} threads, "
             f"{platform.machine()}", ""]

    if not args.skip_dependency:
        t0 = time.perf_counter()
        Ms = kp.impact_matrices(model, tok, words, layer=layers, dtype=dtype, progress=True)
        cls = cls_impacts(model, tok, words, layers=layers, metric="dist", dtype=dtype)
        t_dep = time.perf_counter() - t0
        settings = {
            "eisner, gold root": dict(decoder="eisner", root="gold"),
            "eisner, gold root, no punct": dict(decoder="eisner", root="gold", punct=False),
            "eisner, no root": dict(decoder="eisner", root=None),
            "cle, gold root": dict(decoder="cle", root="gold"),
        }
        res = {name: score_dependency(sents, Ms, cls, layers, **kw) for name, kw in settings.items()}
        lines += ["Dependency (UAS / UUAS, %):", "",
                  "| setting | " + " | ".join(f"layer {l}" for l in layers)
                  + " | right chain | published right chain |",
                  "|---" * (len(layers) + 3) + "|"]
        for name, r in res.items():
            cells = [f"{r['layers'][l]['uas']:.1f} / {r['layers'][l]['uuas']:.1f}" for l in layers]
            rc, rp = r["right_chain"], r["right_chain_published"]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {rc['uas']:.1f} / {rc['uuas']:.1f} | "
                         f"{rp['uas']:.1f} / {rp['uuas']:.1f} |")
        lines += ["", f"impact matrices + [CLS] rows for all layers: {t_dep:.0f} s "
                  f"({len(sents) / t_dep:.2f} sentences/s)", ""]
        print("\n".join(lines), flush=True)

    if not args.skip_segmentation:
        t0 = time.perf_counter()
        seg = kp.evaluate_segmentation(sents, model, tok, layer=layers, dtype=dtype, progress=True)
        t_seg = time.perf_counter() - t0

        def f(p):
            return f"{p['precision']:.1f} / {p['recall']:.1f} / {p['f1']:.1f}"

        seg_lines = ["Segmentation of the texts with the spaces removed (boundary P / R / F1, %):", "",
                     "| layer | mean threshold per text | best decile threshold (oracle) |", "|---|---|---|"]
        for l in layers:
            r = seg["layers"][l]
            seg_lines.append(f"| {l} | {f(r['default'])} | {f(r['best'][1])} (t = {r['best'][0]:.3g}) |")
        b = seg["baselines"]
        seg_lines += ["", f"baselines: every wordpiece a word {f(b['units'])}; every character a word "
                      f"{f(b['characters'])}; the text one word {f(b['one_word'])}", "",
                      f"segmentation, all layers: {t_seg:.0f} s", ""]
        print("\n".join(seg_lines), flush=True)
        lines += seg_lines
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
