"""Scores of the perturbed-masking probe: attachment scores and segmentation P/R/F1.

Heads are CoNLL-U style, one entry per word: ``heads[i]`` is the 1-based head of word ``i + 1``,
0 = root (``Sentence.heads``, :func:`kexue.probe.parse_dependency`, or ``eisner(...)[1:]``).
Every function takes one sentence (a sequence of ints / 1-D tensor) or a corpus (a sequence of
sentences); corpus scores are micro-averages over words (total correct / total counted), as
is standard and as the published evaluation does.

Protocol of the published code (``dependency/evaluation.py``, LividWo/Perturbed-Masking)
---------------------------------------------------------------------------------------
* The gold edges are ``(word, head)`` for *every* word: punctuation is counted (the
  ``no_punc_evaluation`` call is commented out and not defined) and so is the root word's
  edge to 0 (the gold-root setting gets that one right almost always).  Denominator = number
  of words.
* UAS: predicted ``(d, h)`` is correct when ``h`` is the gold head of ``d``.
* UUAS: correct when ``{d, h}`` is a gold edge in either direction: ``h == gold[d]`` or ``h >= 1``
  and ``gold[h] == d``; the root edge ``(d, 0)`` counts only as ``gold[d] == 0``.  (Hewitt &
  Manning's UUAS, which drops the root edge and divides by ``W - 1``, differs.)
* NED: also correct when ``h`` is the gold grandparent of ``d`` (0 included when the gold head
  is the root word).
* :func:`punct_mask` gives the other common protocol (punctuation excluded, UPOS ``PUNCT``);
  pass it as ``mask`` to score without punctuation.  Default: no mask, as the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "PRF",
    "attachment_counts",
    "ned",
    "punct_mask",
    "segmentation_prf",
    "uas",
    "uuas",
    "word_prf",
]

Heads = Sequence[int] | torch.Tensor


class PRF(NamedTuple):
    """Precision, recall and F1 (in [0, 1])."""

    precision: float
    recall: float
    f1: float


def _is_scalar(x) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() == 0
    return isinstance(x, (int, bool)) or hasattr(x, "__index__")


def _as_corpus(x, name: str) -> list[list[int]]:
    """One sentence -> [sentence]; a corpus -> list of sentences; each as a list of ints."""
    if isinstance(x, torch.Tensor):
        if x.dim() == 1:
            return [[int(v) for v in x.tolist()]]
        if x.dim() == 2:
            return [[int(v) for v in row] for row in x.tolist()]
        raise ValueError(f"kexue.probe.{name}: a heads tensor must be 1-D (one sentence) or 2-D, got {x.dim()}-D")
    seq = list(x)
    for v in seq:
        if isinstance(v, (float, np.floating)) or (isinstance(v, torch.Tensor) and v.is_floating_point()):
            raise TypeError(f"kexue.probe.{name}: heads must be integers, got {v!r}")
    if not seq or all(_is_scalar(v) for v in seq):
        return [[int(v) for v in seq]]
    return [[int(v) for v in (s.tolist() if isinstance(s, torch.Tensor) else s)] for s in seq]


def _mask_corpus(mask, corpus_len: list[int], name: str) -> list[list[bool]]:
    if mask is None:
        return [[True] * n for n in corpus_len]
    if isinstance(mask, torch.Tensor):
        rows = [mask.tolist()] if mask.dim() == 1 else mask.tolist()
    else:
        m = list(mask)
        rows = [m] if (not m or all(_is_scalar(v) for v in m)) else [list(r) for r in m]
    if len(rows) != len(corpus_len) or any(len(r) != n for r, n in zip(rows, corpus_len, strict=True)):
        raise ValueError(f"kexue.probe.{name}: mask must have one entry per word of each sentence")
    return [[bool(v) for v in r] for r in rows]


def attachment_counts(pred: Heads | Sequence[Heads], gold: Heads | Sequence[Heads], mask=None, *,
                      kind: str = "uas") -> tuple[int, int]:
    """(correct, counted) words of one sentence or a corpus; ``kind`` = "uas", "uuas" or "ned".

    See the module docstring for when a predicted arc counts as correct.  ``mask`` (same shape
    as the heads, True = counted) excludes words from both numbers.

    Example:
        >>> attachment_counts([2, 0, 2], [2, 0, 1])
        (2, 3)
    """
    name = kind
    if kind not in ("uas", "uuas", "ned"):
        raise ValueError(f"kexue.probe.attachment_counts: kind must be 'uas', 'uuas' or 'ned', got {kind!r}")
    P, G = _as_corpus(pred, name), _as_corpus(gold, name)
    if len(P) != len(G):
        raise ValueError(f"kexue.probe.{name}: {len(P)} predicted sentences but {len(G)} gold ones")
    for i, (p, g) in enumerate(zip(P, G, strict=True)):
        if len(p) != len(g):
            raise ValueError(f"kexue.probe.{name}: sentence {i}: {len(p)} predicted heads but {len(g)} gold heads")
        n = len(g)
        if any(not 0 <= h <= n for h in g):
            raise ValueError(f"kexue.probe.{name}: sentence {i}: gold heads must be in [0, {n}]")
    M = _mask_corpus(mask, [len(g) for g in G], name)
    correct = total = 0
    for p, g, m in zip(P, G, M, strict=True):
        n = len(g)
        for d in range(1, n + 1):
            if not m[d - 1]:
                continue
            total += 1
            h, gh = p[d - 1], g[d - 1]
            ok = h == gh
            if not ok and kind != "uas" and 1 <= h <= n:
                ok = g[h - 1] == d
            if not ok and kind == "ned" and gh >= 1:
                ok = h == g[gh - 1]
            correct += ok
    return correct, total


def _ratio(c: int, t: int) -> float:
    return c / t if t else float("nan")


def uas(pred: Heads | Sequence[Heads], gold: Heads | Sequence[Heads], mask=None) -> float:
    """Unlabelled attachment score: fraction of words whose predicted head is the gold head.

    Micro-average over the words of a corpus; NaN when nothing is counted.

    Example:
        >>> uas([2, 0, 2], [2, 0, 1]), uas([[2, 0], [0]], [[2, 0], [0]])
        (0.6666666666666666, 1.0)
    """
    return _ratio(*attachment_counts(pred, gold, mask, kind="uas"))


def uuas(pred: Heads | Sequence[Heads], gold: Heads | Sequence[Heads], mask=None) -> float:
    """Undirected UAS as the paper: ``(d, h)`` is correct when ``{d, h}`` is a gold edge.

    Example:
        >>> uuas([2, 0, 2], [2, 0, 1])      # (3 -> 2) is wrong, (1 -> 2) right, root right
        0.6666666666666666
        >>> uuas([0, 1], [2, 0])            # 1 <-> 2 undirected is right, the root edge is not
        0.5
    """
    return _ratio(*attachment_counts(pred, gold, mask, kind="uuas"))


def ned(pred: Heads | Sequence[Heads], gold: Heads | Sequence[Heads], mask=None) -> float:
    """Neutral edge direction score (UUAS plus grandparent arcs), as the published ``ned_standard``.

    Example:
        >>> ned([3, 3, 0], [2, 3, 0]), uuas([3, 3, 0], [2, 3, 0])   # 3 is word 1's grandparent
        (1.0, 0.6666666666666666)
    """
    return _ratio(*attachment_counts(pred, gold, mask, kind="ned"))


def punct_mask(upos: Sequence[str] | Sequence[Sequence[str]]) -> list[bool] | list[list[bool]]:
    """True for the words to score when punctuation is excluded: UPOS other than ``PUNCT``.

    The paper's numbers count punctuation (no mask); this is for the other common protocol.
    Takes one sentence's tags or a corpus of them.

    Example:
        >>> punct_mask(["PRON", "VERB", "PUNCT"])
        [True, True, False]
    """
    seq = list(upos)
    if seq and not isinstance(seq[0], str):
        return [[u != "PUNCT" for u in s] for s in seq]
    return [u != "PUNCT" for u in seq]


def _prf(tp: int, n_pred: int, n_gold: int) -> PRF:
    p = tp / n_pred if n_pred else (1.0 if n_gold == 0 else 0.0)
    r = tp / n_gold if n_gold else (1.0 if n_pred == 0 else 0.0)
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return PRF(p, r, f)


def _seg_corpus(pred_words, gold_words, name: str) -> list[tuple[list[str], list[str]]]:
    def is_sentence(x) -> bool:
        x = list(x)
        return all(isinstance(w, str) for w in x)

    if isinstance(pred_words, str) or isinstance(gold_words, str):
        raise TypeError(f"kexue.probe.{name}: pass lists of words (or lists of such lists), not a string")
    P, G = list(pred_words), list(gold_words)
    if is_sentence(P) and is_sentence(G):
        pairs = [(P, G)]
    else:
        if len(P) != len(G):
            raise ValueError(f"kexue.probe.{name}: {len(P)} predicted sentences but {len(G)} gold ones")
        pairs = [(list(p), list(g)) for p, g in zip(P, G, strict=True)]
    for i, (p, g) in enumerate(pairs):
        if "".join(p) != "".join(g):
            raise ValueError(f"kexue.probe.{name}: sentence {i}: the predicted words do not spell the gold text "
                             f"({''.join(p)!r} vs {''.join(g)!r})")
    return pairs


def _ends(words: list[str]) -> list[int]:
    ends, pos = [], 0
    for w in words:
        pos += len(w)
        ends.append(pos)
    return ends


def segmentation_prf(pred_words: Sequence[str] | Sequence[Sequence[str]],
                     gold_words: Sequence[str] | Sequence[Sequence[str]]) -> PRF:
    r"""Boundary precision / recall / F1 of a word segmentation.

    A boundary is a position ``p`` in ``1 .. L-1`` (between characters ``p-1`` and ``p`` of the
    concatenated text of length ``L``) where a word ends; the end of the string is not a
    boundary (it is given).  With ``B_pred``, ``B_gold`` these sets:
    :math:`P = |B_p \cap B_g| / |B_p|`, :math:`R = |B_p \cap B_g| / |B_g|`, :math:`F_1 = 2PR/(P+R)`
    (0 when ``P + R = 0``).  A ratio with an empty denominator is 1 when both sets are empty (a
    one-word text left as one word is perfect) and 0 otherwise.  A corpus sums the counts over
    sentences (micro-average).
    Empty-string words are ignored; the two segmentations must spell the same text.

    Example:
        >>> segmentation_prf(["ab", "c", "d"], ["ab", "cd"])   # boundaries {2, 3} vs {2}
        PRF(precision=0.5, recall=1.0, f1=0.6666666666666666)
    """
    tp = n_pred = n_gold = 0
    for p, g in _seg_corpus(pred_words, gold_words, "segmentation_prf"):
        bp, bg = set(_ends(p)[:-1]) - {0}, set(_ends(g)[:-1]) - {0}
        L = len("".join(g))
        bp.discard(L)
        bg.discard(L)
        tp += len(bp & bg)
        n_pred += len(bp)
        n_gold += len(bg)
    return _prf(tp, n_pred, n_gold)


def word_prf(pred_words: Sequence[str] | Sequence[Sequence[str]],
             gold_words: Sequence[str] | Sequence[Sequence[str]]) -> PRF:
    """Word-level precision / recall / F1 (the usual Chinese word segmentation score).

    A predicted word is correct when a gold word covers exactly the same character span;
    ``P = correct / #predicted words``, ``R = correct / #gold words``; micro over a corpus.

    Example:
        >>> word_prf(["ab", "c", "d"], ["ab", "cd"])
        PRF(precision=0.3333333333333333, recall=0.5, f1=0.4)
    """
    tp = n_pred = n_gold = 0
    for p, g in _seg_corpus(pred_words, gold_words, "word_prf"):
        p = [w for w in p if w]
        g = [w for w in g if w]
        sp = {(e - len(w), e) for w, e in zip(p, _ends(p), strict=True)}
        sg = {(e - len(w), e) for w, e in zip(g, _ends(g), strict=True)}
        tp += len(sp & sg)
        n_pred += len(sp)
        n_gold += len(sg)
    return _prf(tp, n_pred, n_gold)
