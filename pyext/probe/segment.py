"""Unsupervised segmentation by perturbed masking: adjacent units whose mutual impact is high
belong to one word.

The units are the tokenizer's (characters for Chinese models, wordpieces otherwise).  For
adjacent units u, u+1 the score is ``(f(u, u+1) + f(u+1, u)) / 2`` with f the impact of the
definition in :mod:`kexue.probe.engine` (units as one-token words); only the adjacent pairs are
computed: U single-masked and U−1 pair-masked sequences (2U − 1, not U²).  Units whose score is
at least the threshold are merged.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .._validate import as_float
from . import encoder as enc
from .engine import _check_options, pair_impacts
from .tokenize import EncodedSentence, mask_token_id, max_length, pad_token_id


@dataclass
class Units:
    """A text cut into the tokenizer's units: ``spans[u] = (start, end)`` character offsets."""

    text: str
    encoded: EncodedSentence
    spans: list[tuple[int, int]]


def _encode(tokenizer, text: str):
    try:
        return tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True)
    except NotImplementedError as exc:
        raise ValueError("segment needs a fast tokenizer (character offsets of the units)") from exc


def _wordpiece_limit(tokenizer) -> int | None:
    """WordPiece's ``max_input_chars_per_word`` (100 in BERT): a longer word becomes one [UNK]."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    limit = getattr(model, "max_input_chars_per_word", None)
    return limit if isinstance(limit, int) else None


def _has_overlong_unk(tokenizer, encoded) -> bool:
    limit, unk = _wordpiece_limit(tokenizer), getattr(tokenizer, "unk_token_id", None)
    if limit is None or unk is None:
        return False
    return any(i == unk and b - a > limit for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"],
                                                                strict=True))


_UNLIMITED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _without_word_limit(tokenizer):
    """A copy of a WordPiece tokenizer without the per-word length limit (cached per tokenizer):
    the same pieces for every word up to the limit, and the greedy longest-match pieces for longer
    ones, where the original gives one [UNK] that no segmentation could split."""
    try:
        return _UNLIMITED[tokenizer]
    except (KeyError, TypeError):
        pass
    tok = copy.deepcopy(tokenizer)
    tok.backend_tokenizer.model.max_input_chars_per_word = 1 << 30
    try:
        _UNLIMITED[tokenizer] = tok
    except TypeError:  # not weak-referenceable: no cache
        pass
    return tok


def text_units(tokenizer, text: str, *, limit: int | None = None) -> Units:
    """The tokenizer's units of ``text`` with their character spans (needs a fast tokenizer).

    A WordPiece tokenizer turns a run of more than ``max_input_chars_per_word`` (100) characters
    into one [UNK], which would leave the run unsegmented: such a text is cut into units by a copy
    of the tokenizer without that limit (greedy longest-match pieces, as for shorter words)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty")
    enc_ = _encode(tokenizer, text)
    if _has_overlong_unk(tokenizer, enc_):  # WordPiece made a run longer than its limit one [UNK]
        enc_ = _encode(_without_word_limit(tokenizer), text)
    ids, offsets = list(enc_["input_ids"]), list(enc_["offset_mapping"])
    # the added special tokens ([CLS], [SEP]) are no units; an unknown piece ([UNK]) is one
    special = list(enc_["special_tokens_mask"])
    positions = [p for p, (s, (a, b)) in enumerate(zip(special, offsets, strict=True)) if not s and b > a]
    if not positions:
        raise ValueError(f"the tokenizer finds no units in {text[:40]!r}")
    if limit is not None and len(ids) > limit:
        raise ValueError(f"the text has {len(ids)} tokens (with special tokens), more than the model's maximum of "
                         f"{limit}")
    spans = [tuple(offsets[p]) for p in positions]
    e = EncodedSentence([text[a:b] for a, b in spans], ids, positions, [p + 1 for p in positions])
    return Units(text, e, spans)


def adjacent_scores(model, tokenizer, texts: Sequence[str], *, layer: int | Sequence[int] = -1, metric: str = "dist",
                    batch_size: int | None = None, dtype: torch.dtype | None = None, progress: bool | None = None,
                    backend: str = "auto") -> list[tuple[Units, torch.Tensor]]:
    """For each text: its units and the scores ``(f(u, u+1) + f(u+1, u)) / 2``, (U−1,) for an int
    ``layer`` or (len(layer), U−1) for a list of layers (one pass serves all of them)."""
    _check_options(metric, "avg", batch_size)
    layer = enc.layer_argument(layer)
    layers = enc.normalize_layers(model, layer)
    limit = max_length(model, tokenizer)
    units = [text_units(tokenizer, t, limit=limit) for t in texts]
    pairs = [torch.stack([torch.arange(len(u.spans) - 1), torch.arange(1, len(u.spans))], 1) for u in units]
    vals = pair_impacts(model, [u.encoded for u in units], pairs, layers=layers, metric=metric, subword="avg",
                        batch_size=batch_size, mask_id=mask_token_id(tokenizer), pad_id=pad_token_id(tokenizer),
                        dtype=dtype, progress=progress, backend=backend)
    many = not isinstance(layer, int)
    return [(u, v.mean(-1) if many else v[0].mean(-1)) for u, v in zip(units, vals, strict=True)]


def merge_units(units: Units, scores: torch.Tensor, threshold: float) -> list[str]:
    """Words from units: a boundary between u and u+1 unless ``scores[u] >= threshold``.  The
    words are slices of the text between boundaries (characters no unit covers stay with the
    unit before them), so they concatenate back to the text (surrounding whitespace stripped)."""
    cuts = [units.spans[u + 1][0] for u in range(len(units.spans) - 1) if float(scores[u]) < threshold]
    bounds = [units.spans[0][0], *cuts, units.spans[-1][1]]
    return [units.text[a:b].strip() for a, b in zip(bounds[:-1], bounds[1:], strict=True) if units.text[a:b].strip()]


def default_threshold(scores: torch.Tensor) -> float:
    """threshold=None: the mean adjacent score of the text (a scale-free default)."""
    return float(scores.mean()) if scores.numel() else 0.0


def segment(model, tokenizer, text: str, threshold: float | None = None, *, layer: int = -1, metric: str = "dist",
            dtype: torch.dtype | None = None, backend: str = "auto") -> list[str]:
    """Segments ``text`` into words by merging adjacent units with high mutual impact.

    ``threshold=None`` uses the mean adjacent score of this text (:func:`default_threshold`);
    :func:`kexue.probe.evaluate_segmentation` reports F1 over a range of thresholds.

    Example::

        >>> import kexue.probe as kp
        >>> model, tok = kp.default_model()                              # doctest: +SKIP
        >>> kp.segment(model, tok, "thequickbrownfoxjumpsoverthelazydog")  # doctest: +SKIP
    """
    [(units, scores)] = adjacent_scores(model, tokenizer, [text], layer=layer, metric=metric, dtype=dtype,
                                        progress=False, backend=backend)
    t = default_threshold(scores) if threshold is None else as_float("threshold", threshold, finite=False)
    return merge_units(units, scores, t)
