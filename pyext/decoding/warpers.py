"""Consistent top-k / nucleus warpers: Hugging Face ``LogitsProcessor``s that always keep eos.

``ConsistentTopKLogitsWarper(top_k, eos_token_id)`` and ``ConsistentTopPLogitsWarper(top_p,
eos_token_id)`` filter as HF's ``TopKLogitsWarper`` / ``TopPLogitsWarper`` do (top-k ties kept;
top-p keeps the smallest prefix by descending probability whose mass reaches p, crossing token
included, at least ``min_tokens_to_keep``), then put the eos ids back with their own scores
(``indices_to_remove[:, eos] = False``, uralik/consistency-lm). On exact ties at the top-p
crossing, every tied token is kept (HF's choice there depends on its sort order), the rule of
:mod:`kexue.decoding.reference`. Usage::

    from transformers import LogitsProcessorList
    from kexue.decoding import ConsistentTopKLogitsWarper, ConsistentTopPLogitsWarper
    out = model.generate(ids, do_sample=True, top_k=0, top_p=1.0, logits_processor=LogitsProcessorList([
        ConsistentTopKLogitsWarper(50, eos_token_id=tok.eos_token_id),
        ConsistentTopPLogitsWarper(0.9, eos_token_id=tok.eos_token_id)]))

(``top_k=0, top_p=1.0`` turn HF's own warpers off, which would otherwise drop eos again.)

Where the top-p warper differs from HF's ``TopPLogitsWarper`` by definition (bench/fuzz_warp.py
counts each kind; every other difference is a bug): (1) ties with the crossing token, and with the
``min_tokens_to_keep``-th token, are all kept (HF keeps what its sort order puts first); (2) for
16-bit scores the softmax and its prefix sums run in float32 (HF's in the scores' dtype); (3) a
token whose prefix mass is within float32 rounding of p may fall either side (HF compares the
ascending sum with 1 − p, kexue the descending one with p).  The threshold is taken on the scores
(the crossing token's score): a probability that underflows float32 far below the max never
lowers it, and two tokens are tied only when their scores are equal.  ``kexue.sampling_probs``
decides ties on its float32 weights instead, so after a huge temperature (scores ~1e-6 apart) the
two may differ at tokens within float32 rounding of the crossing weight.  Scores of +inf (e.g.
HF's ``TemperatureLogitsWarper`` at a tiny temperature) make the top-p warper keep the +inf tokens
and the eos ids only, and a NaN keeps everything (HF's keeps everything in both cases);
``kexue.sample`` raises on either.

Chained top-k → top-p, as above, the top-p warper sees eos (put back by the top-k warper): this
is the authors' combined filter (uralik/consistency-lm's ``top_k_top_p_filtering`` unmasks eos
after each mask).  :func:`kexue.sample` (and so ``consistent_generate``) instead takes top-p over
the top-k set alone and adds eos last; the two differ when both are used and eos is outside the
top-k set (by up to 0.33 in a token's probability at k = 5, p = 0.5 on random logits).  Each warper alone, or
``kexue.sample`` with only one of top_k / top_p, gives the same distribution as the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from .._validate import is_int, is_real


def _eos_list(eos_token_id) -> list[int]:
    ids = [eos_token_id] if is_int(eos_token_id) else list(eos_token_id) if isinstance(
        eos_token_id, (Sequence, torch.Tensor)) else None
    if not ids or not all(isinstance(int(i), int) and not isinstance(i, bool) and int(i) >= 0 for i in ids):
        raise ValueError(f"eos_token_id must be a token id or a non-empty list of ids, got {eos_token_id!r}")
    return [int(i) for i in ids]


def _keep_eos(scores: torch.Tensor, processed: torch.Tensor, eos: list[int]) -> torch.Tensor:
    for e in eos:
        if not 0 <= e < scores.shape[-1]:
            raise ValueError(f"eos_token_id {e} is out of range for scores with {scores.shape[-1]} tokens")
    idx = torch.tensor(eos, device=scores.device)
    return processed.index_copy(-1, idx, scores.index_select(-1, idx))


class ConsistentTopKLogitsWarper(LogitsProcessor):
    """HF's top-k (ties with the k-th score kept) with the eos ids always kept."""

    def __init__(self, top_k: int, eos_token_id: int | Sequence[int], filter_value: float = -float("inf"),
                 min_tokens_to_keep: int = 1):
        if not is_int(top_k) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.eos = _eos_list(eos_token_id)
        self.filter_value = filter_value

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.top_k, scores.size(-1))
        remove = scores < torch.topk(scores, k)[0][..., -1, None]
        return _keep_eos(scores, scores.masked_fill(remove, self.filter_value), self.eos)


class ConsistentTopPLogitsWarper(LogitsProcessor):
    """HF's nucleus filter (crossing token kept, ties at the crossing kept) with the eos ids always kept."""

    def __init__(self, top_p: float, eos_token_id: int | Sequence[int], filter_value: float = -float("inf"),
                 min_tokens_to_keep: int = 1):
        if not is_real(top_p) or not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be a float in (0, 1], got {top_p!r}")
        if not is_int(min_tokens_to_keep) or min_tokens_to_keep < 1:
            raise ValueError(f"min_tokens_to_keep must be an int >= 1, got {min_tokens_to_keep!r}")
        self.top_p = float(top_p)
        self.eos = _eos_list(eos_token_id)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.top_p >= 1.0:
            return scores
        desc = scores.sort(dim=-1, descending=True).values
        # the crossing = the number of prefixes whose mass is still below p (no argmax over a mask:
        # when rounding leaves every prefix below a p next to 1, the crossing is the last token, not 0)
        cross = (desc.float().softmax(dim=-1).cumsum(dim=-1) < self.top_p).sum(dim=-1, keepdim=True)
        cross = cross.clamp(max=scores.shape[-1] - 1)
        cross = cross.clamp(min=min(self.min_tokens_to_keep, scores.shape[-1]) - 1)
        # the threshold on the scores, not on the float32 probabilities: those underflow to 0 far
        # below the max, and a threshold of 0 kept every token (softmax is monotone: same set)
        remove = scores < desc.gather(-1, cross)
        return _keep_eos(scores, scores.masked_fill(remove, self.filter_value), self.eos)
