"""``python -m kexue attribute "TEXT"``: which tokens moved the model's output, by integrated gradients.

Prints the tokens with their scores, the words with theirs, F(x), F(x'), the completeness error
and the steps used; ``--png``/``--html`` write the picture of :func:`kexue.attribution.render`.
The default model is the movie-review sentiment classifier of the study (all-MiniLM-L6-v2
fine-tuned on the vaderSentiment snippets; trained on first use and cached); ``--model PATH``
takes a local Hugging Face sequence classifier or causal LM instead.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the text to explain")
    p.add_argument("--model", default=None, help="local Hugging Face sequence classifier or causal LM folder "
                   "(default: the fine-tuned MiniLM sentiment classifier, trained and cached on first use)")
    p.add_argument("--target", default=None, help="class index (classifier), token id (causal LM), or for a causal "
                   "LM a continuation string; default: the predicted class / token")
    p.add_argument("--baseline", choices=("pad", "mask", "zero"), default="pad")
    p.add_argument("--n-steps", default="auto", help="'auto' (adaptive, default) or a number of Gauss-Legendre steps")
    p.add_argument("--tol", type=float, default=1e-2, help="relative completeness error for --n-steps auto")
    p.add_argument("--png", metavar="PNG", help="write the tokens coloured by score as a PNG")
    p.add_argument("--html", metavar="HTML", help="write the same as an HTML page")


def load(path: str | None):
    """(model, tokenizer): a local folder (classifier, else causal LM), or the default classifier."""
    if path is None:
        from ..text_classifier import sentiment_classifier

        return sentiment_classifier(cache=True)
    import os

    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"model: no such folder {path!r} (a local Hugging Face model folder)")
    cfg = AutoConfig.from_pretrained(path)
    archs = " ".join(getattr(cfg, "architectures", None) or [])
    cls = AutoModelForCausalLM if ("CausalLM" in archs or "LMHead" in archs) else AutoModelForSequenceClassification
    return cls.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _target(t: str | None):
    if t is None:
        return None
    try:
        return int(t)
    except ValueError:
        return t  # a continuation


def run(args: argparse.Namespace) -> int:
    """Runs the command; bad input is one line on stderr and exit status 2, not a traceback."""
    try:
        return _run(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"kexue attribute: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from . import render, token_attributions

    if not args.text.strip():
        raise ValueError("text is empty")
    n_steps = args.n_steps if args.n_steps == "auto" else int(args.n_steps)
    model, tok = load(args.model)
    r = token_attributions(model, tok, args.text, target=_target(args.target), baseline=args.baseline,
                           n_steps=n_steps, tol=args.tol)
    print(f"target {r.target}: F(x) = {r.f_input:.4f}, F(baseline) = {r.f_baseline:.4f}, "
          f"F(x) - F(baseline) = {r.f_input - r.f_baseline:.4f}")
    print(f"{'token':<16} {'score':>9}")
    for t, s in zip(r.tokens, r.scores.tolist(), strict=True):
        print(f"{t:<16} {s:+9.4f}")
    print("words: " + "  ".join(f"{w} {s:+.3f}" for w, s in zip(r.words, r.word_scores.tolist(), strict=True)))
    rel = r.error / max(abs(r.f_input - r.f_baseline), 1e-30)
    print(f"completeness error |sum - (F(x) - F(baseline))| = {r.error:.3g} ({rel:.2%} of the difference), "
          f"{r.steps} steps")
    for out in (args.png, args.html):
        if out:
            png, page = render(r, out)
            print(f"wrote {png if out.endswith('.png') else page}")
    return 0
