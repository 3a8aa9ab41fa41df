"""Evaluation of the probe on treebanks: dependency UAS/UUAS and segmentation P/R/F1.

Dependency protocol (the published code's, see :mod:`kexue.probe.metrics` and
:func:`kexue.probe.parse_dependency` for the details):

* the words are the CoNLL-U syntactic words (multiword-token lines and empty nodes skipped);
* the impact matrix M of each sentence (:func:`kexue.probe.impact_matrices`, every requested
  layer in one pass) is bordered with the [CLS] row (impact of each word on the [CLS] state,
  ``cls_row=True``) and decoded by Eisner (or Chu-Liu-Edmonds) after the paper's transform;
* ``root="gold"``: the gold root word gets the paper's root edit (the setting of its reported
  figures); ``root=None`` decodes without it;
* every word counts, punctuation and the root edge included (``punct=False`` excludes the
  words whose UPOS is PUNCT); corpus scores are micro-averages over words;
* the right-chain baseline (each word headed by the next, the gold root attached to 0) is
  scored on the same words.

Segmentation protocol: the text of each sentence is its words joined with no spaces; the
tokenizer's units of that text are merged by :mod:`kexue.probe.segment`; a predicted boundary is
a character offset where a predicted word ends (the text end excluded); precision, recall and
F1 of those boundaries against the gold words' (micro-averaged), for several thresholds, next
to the trivial baselines (every unit a word; the whole text one word; every character a word).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .._validate import as_float, as_int
from .conllu import Sentence, read_conllu
from .encoder import layer_argument as enc_layer_argument
from .engine import impact_matrices, pair_impacts
from .metrics import punct_mask, segmentation_prf, uas, uuas
from .parsers import gold_root, parse_dependency, right_chain
from .segment import adjacent_scores, default_threshold, merge_units


def _sentences(source: str | os.PathLike | Sequence[Sentence], max_sentences: int | None) -> list[Sentence]:
    if max_sentences is not None:  # checked before reading: -1 would otherwise slice off the last sentence
        max_sentences = as_int("max_sentences", max_sentences, minimum=1)
    if isinstance(source, (str, os.PathLike)):
        sents = read_conllu(source)
    elif isinstance(source, Sequence) and all(isinstance(s, Sentence) for s in source):
        sents = list(source)
    else:
        raise TypeError(f"conllu must be a path or a list of kexue.probe.Sentence, got {type(source).__name__}")
    if max_sentences is not None:
        sents = sents[:max_sentences]
    if not sents:
        raise ValueError("no sentences to evaluate")
    return sents


def _scores(pred: list, gold: list, mask) -> dict[str, float]:
    return {"uas": 100 * uas(pred, gold, mask), "uuas": 100 * uuas(pred, gold, mask)}


def cls_impacts(model, tokenizer, sentences: Sequence[Sequence[str]], *, layers: Sequence[int], metric: str,
                dtype=None, backend="auto") -> list[torch.Tensor]:
    """The [CLS] row of the published matrix: ``c[j] = d(H_0(x), H_0(x\\{j}))`` (masking [CLS] is
    a no-op there), per sentence (len(layers), W): W+1 extra sequences per sentence, whole
    sentences packed into batches of about ``token_budget(device)`` tokens."""
    from . import encoder as enc
    from .engine import _encode_all, _model_device, token_budget
    from .kernels import masked_batch
    from .tokenize import mask_token_id, pack, pad_token_id

    layers = enc.normalize_layers(model, list(layers))  # -1 = last layer, as everywhere
    encoded = _encode_all(model, tokenizer, sentences)
    device = _model_device(model)
    packed = pack(encoded, device)
    order = sorted(range(len(encoded)), key=lambda n: -encoded[n].num_tokens)
    groups, cur, cur_tokens = [], [], 0
    for n in order:
        cost = (encoded[n].num_words + 1) * encoded[n].num_tokens
        if cur and cur_tokens + cost > token_budget(device):
            groups.append(cur)
            cur, cur_tokens = [], 0
        cur.append(n)
        cur_tokens += cost
    if cur:
        groups.append(cur)
    out: list[torch.Tensor | None] = [None] * len(encoded)
    ctx = (torch.autocast(device.type, dtype=dtype) if dtype not in (None, torch.float32)
           else torch.autocast(device.type, enabled=False))
    with torch.inference_mode(), enc.eval_mode(model), ctx:
        for g in groups:
            seqs = torch.tensor([[n, i, -1] for n in g for i in range(-1, encoded[n].num_words)], device=device)
            T = max(encoded[n].num_tokens for n in g)
            ids, am = masked_batch(packed["tokens"], packed["tok_offsets"], packed["word_start"],
                                   packed["word_end"], packed["word_offsets"], seqs, mask_token_id(tokenizer),
                                   pad_token_id(tokenizer), T, backend=backend)
            pos = torch.zeros(len(seqs), 1, dtype=torch.long, device=device)
            rows = [h[:, 0].double() for h in enc.read_hidden_rows(model, ids, am, pos, layers)]
            start = 0
            for n in g:
                W = encoded[n].num_words
                vals = []
                for h in rows:
                    base, masked = h[start], h[start + 1:start + 1 + W]
                    if metric == "dist":
                        vals.append((masked - base).norm(dim=-1))
                    else:
                        vals.append(1 - torch.nn.functional.cosine_similarity(masked, base[None], dim=-1, eps=1e-8))
                out[n] = torch.stack(vals).float().cpu()
                start += W + 1
    return out


def evaluate_dependency(conllu: str | os.PathLike | Sequence[Sentence], model, tokenizer, *,
                        layer: int | Sequence[int] = -1, metric: str = "dist", subword: str = "avg",
                        decoder: str = "eisner", root: str | None = "gold", punct: bool = True,
                        cls_row: bool = True, transform: str = "paper", max_sentences: int | None = None,
                        dtype: torch.dtype | None = None, batch_size: int | None = None,
                        progress: bool | None = None, backend: str = "auto") -> dict:
    """UAS and UUAS (percent) of perturbed-masking trees on a CoNLL-U treebank, per layer.

    Returns ``{"layers": {l: {"uas", "uuas"}}, "right_chain": {"uas", "uuas"},
    "right_chain_published": {...}, "sentences": n, "words": n}`` (``l`` as given;
    ``right_chain_published`` is the published baseline, whose last word gets a head that does
    not exist).  One engine pass serves every layer of ``layer``.  The
    protocol is in the module docstring.

    Example::

        >>> import kexue.probe as kp
        >>> model, tok = kp.default_model()                                            # doctest: +SKIP
        >>> kp.evaluate_dependency("en_pud-ud-test.conllu", model, tok, layer=[1, 6])  # doctest: +SKIP
    """
    if root not in ("gold", None):
        raise ValueError(f"root must be 'gold' or None, got {root!r}")
    sents = _sentences(conllu, max_sentences)
    layer = enc_layer_argument(layer)
    layers = [layer] if isinstance(layer, int) else list(layer)
    words = [s.words for s in sents]
    Ms = impact_matrices(model, tokenizer, words, layer=layers, metric=metric, subword=subword, batch_size=batch_size,
                         dtype=dtype, progress=progress, backend=backend)
    if Ms is None:  # a non-zero rank under torch.distributed
        return {}
    cls = cls_impacts(model, tokenizer, words, layers=layers, metric=metric, dtype=dtype,
                      backend=backend) if cls_row else None
    return score_dependency(sents, Ms, cls, layers, decoder=decoder, root=root, punct=punct, transform=transform)


def score_dependency(sents: Sequence[Sentence], matrices: Sequence[torch.Tensor],
                     cls: Sequence[torch.Tensor] | None, layers: Sequence[int], *, decoder: str = "eisner",
                     root: str | None = "gold", punct: bool = True, transform: str = "paper") -> dict:
    """The scoring half of :func:`evaluate_dependency`, for matrices computed once and decoded
    under several settings: ``matrices[n]`` is ``(len(layers), W, W)`` (or ``(W, W)`` for one
    layer), ``cls[n]`` the [CLS] row ``(len(layers), W)`` or None."""
    if root not in ("gold", None):
        raise ValueError(f"root must be 'gold' or None, got {root!r}")
    if len(matrices) != len(sents) or (cls is not None and len(cls) != len(sents)):
        raise ValueError(f"matrices (and cls) must hold one entry per sentence ({len(sents)})")
    gold = [s.heads for s in sents]
    mask = None if punct else punct_mask([s.upos for s in sents])  # True = scored
    result: dict = {"layers": {}, "sentences": len(sents), "words": sum(len(s.words) for s in sents)}
    for li, l in enumerate(layers):
        pred = []
        for n, s in enumerate(sents):
            r = gold_root(s.heads) if root == "gold" else None
            M = matrices[n] if matrices[n].dim() == 3 else matrices[n][None]
            c = None if cls is None else (cls[n] if cls[n].dim() == 2 else cls[n][None])[li]
            pred.append(parse_dependency(M[li], decoder=decoder, root=r, transform=transform, cls_impact=c).tolist())
        result["layers"][l] = _scores(pred, gold, mask)
    chain = [right_chain(len(s.words), gold_root(s.heads)).tolist() for s in sents]
    result["right_chain"] = _scores(chain, gold, mask)
    chain = [right_chain(len(s.words), gold_root(s.heads), paper_compat=True).tolist() for s in sents]
    result["right_chain_published"] = _scores(chain, gold, mask)
    return result


def evaluate_segmentation(conllu: str | os.PathLike | Sequence[Sentence], model, tokenizer, *,
                          layer: int | Sequence[int] = -1, metric: str = "dist",
                          thresholds: Sequence[float] | None = None, max_sentences: int | None = None,
                          dtype: torch.dtype | None = None, batch_size: int | None = None,
                          progress: bool | None = None, backend: str = "auto") -> dict:
    """Boundary precision/recall/F1 (percent) of perturbed-masking segmentation of each
    sentence's text with the spaces removed, against its gold words.

    Returns ``{"default": PRF (per-text mean threshold), "thresholds": {t: PRF},
    "best": (t, PRF) (the threshold with the highest F1: an oracle, for reference),
    "baselines": {"units": PRF, "one_word": PRF, "characters": PRF}, "sentences": n}``, each
    PRF a dict of percentages; the thresholds default to the deciles 10..90 of all adjacent
    scores.  A list ``layer`` gives ``{"layers": {l: {"default", "thresholds", "best"}},
    "baselines", "sentences"}`` from one engine pass.
    """
    if thresholds is not None:
        thresholds = [as_float(f"thresholds[{i}]", t, finite=False) for i, t in enumerate(thresholds)]
        if not thresholds:
            raise ValueError("thresholds must hold at least one value (or be None for the deciles)")
    sents = _sentences(conllu, max_sentences)
    texts = ["".join(s.words) for s in sents]
    gold = [list(s.words) for s in sents]
    layer = enc_layer_argument(layer)
    many = not isinstance(layer, int)
    layers = list(layer) if many else [layer]
    scored = adjacent_scores(model, tokenizer, texts, layer=layers, metric=metric, batch_size=batch_size,
                             dtype=dtype, progress=progress, backend=backend)

    def prf(pred):
        p = segmentation_prf(pred, gold)
        return {"precision": 100 * p.precision, "recall": 100 * p.recall, "f1": 100 * p.f1}

    def one_layer(li: int) -> dict:
        sc = [(u, s[li]) for u, s in scored]
        ts = thresholds
        if ts is None:
            allv = torch.cat([s for _, s in sc if s.numel()]) if any(s.numel() for _, s in sc) else torch.zeros(1)
            ts = [float(x) for x in torch.quantile(allv.double(), torch.linspace(0.1, 0.9, 9, dtype=torch.float64))]
        by_t = {t: prf([merge_units(u, s, t) for u, s in sc]) for t in ts}
        best = max(by_t.items(), key=lambda kv: kv[1]["f1"])
        return {"default": prf([merge_units(u, s, default_threshold(s)) for u, s in sc]), "thresholds": by_t,
                "best": best}

    out = {"layers": {l: one_layer(li) for li, l in enumerate(layers)}} if many else one_layer(0)
    out["baselines"] = {
        "units": prf([merge_units(u, s[0], float("inf")) for u, s in scored]),
        "one_word": prf([[t] for t in texts]),
        "characters": prf([list(t) for t in texts]),
    }
    out["sentences"] = len(sents)
    return out


__all__ = ["cls_impacts", "evaluate_dependency", "evaluate_segmentation", "pair_impacts", "score_dependency"]
