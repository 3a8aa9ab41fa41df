"""``python -m kexue probe "The quick brown fox jumps over the lazy dog ."``: the dependency tree
that perturbed masking reads out of an encoder, printed, optionally drawn over the heatmap."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch

from .._cli import fail, resolve_device

DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sentence", help="the sentence (words split on whitespace)")
    p.add_argument("--model", default=None,
                   help="local Hugging Face encoder folder (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--layer", type=int, default=-1, help="hidden_states index (0 = embeddings, -1 = last)")
    p.add_argument("--metric", choices=("dist", "cos"), default="dist")
    p.add_argument("--subword", choices=("avg", "first"), default="avg")
    p.add_argument("--decoder", choices=("eisner", "cle"), default="eisner")
    p.add_argument("--root", type=int, default=None, help="1-based position of the root word, if known")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="autocast dtype of the encoder")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--plot", metavar="PNG", help="write the impact heatmap with the tree drawn over the words")
    p.add_argument("--matrix", action="store_true", help="also print the impact matrix")


def render_tree(words: Sequence[str], heads: Sequence[int]) -> str:
    """An indented drawing of a dependency tree (CoNLL-U heads: 1-based, 0 = root)."""
    children: dict[int, list[int]] = {i: [] for i in range(len(words) + 1)}
    for d, h in enumerate(heads, start=1):
        children[int(h)].append(d)
    lines: list[str] = []

    def walk(node: int, prefix: str, last: bool, top: bool) -> None:
        label = f"{words[node - 1]} ({node})"
        lines.append(label if top else prefix + ("└── " if last else "├── ") + label)
        kids = children[node]
        for n, c in enumerate(kids):
            walk(c, prefix if top else prefix + ("    " if last else "│   "), n == len(kids) - 1, False)

    for r in children[0]:
        walk(r, "", True, True)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Runs the command; bad input (an empty sentence, a missing model folder, a sentence longer
    than the model takes) is one line on stderr and exit status 2, not a traceback."""
    try:
        return _run(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        return fail("kexue probe", exc)


def _run(args: argparse.Namespace) -> int:
    from . import impact_matrix, load_model, parse_dependency
    from .tokenize import as_words

    words = as_words(args.sentence, name="sentence")
    device = resolve_device(args.device)
    if args.plot:
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise ValueError(f"--plot: no such folder {folder!r}")
    try:  # the weights' progress bar would be more lines on stderr
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    model, tok = load_model(args.model, device=device)
    M = impact_matrix(model, tok, words, layer=args.layer, metric=args.metric, subword=args.subword,
                      dtype=DTYPES[args.dtype])
    heads = parse_dependency(M, decoder=args.decoder, root=args.root, single_root=True).tolist()
    print(render_tree(words, heads))
    print()
    print(f"{'id':>3}  {'word':<16} {'head':>4}  head word")
    for d, (w, h) in enumerate(zip(words, heads, strict=True), start=1):
        print(f"{d:>3}  {w:<16} {h:>4}  {words[h - 1] if h else 'ROOT'}")
    if args.matrix:
        torch.set_printoptions(precision=3, linewidth=200)
        print(M)
    if args.plot:
        from .plot import plot_impact

        plot_impact(M, words, heads, args.plot, title=f"layer {args.layer}, {args.metric}, {args.decoder}")
        print(f"wrote {args.plot}")
    return 0
