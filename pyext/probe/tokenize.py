"""Words → subword token ids with the span of every word, and the checks every probe needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class EncodedSentence:
    """One sentence as the encoder sees it: ``ids`` = [CLS] + subwords of each word + [SEP].

    Word ``w`` covers token positions ``starts[w] <= p < ends[w]`` (every word has at least one
    subword; the special tokens belong to no word).
    """

    words: list[str]
    ids: list[int]
    starts: list[int]
    ends: list[int]

    @property
    def num_words(self) -> int:
        return len(self.words)

    @property
    def num_tokens(self) -> int:
        return len(self.ids)


def as_words(sentence: str | Sequence[str], *, name: str = "words") -> list[str]:
    """A list of words: a string is split on whitespace."""
    if isinstance(sentence, str):
        words = sentence.split()
    elif isinstance(sentence, Sequence) and all(isinstance(w, str) for w in sentence):
        words = list(sentence)
    else:
        raise TypeError(f"{name} must be a string or a list of strings, got {type(sentence).__name__}")
    if not words:
        raise ValueError(f"{name} is empty: a probe needs at least one word")
    if any(not w or w.isspace() for w in words):
        raise ValueError(f"{name} contains an empty word")
    return words


def mask_token_id(tokenizer) -> int:
    mid = getattr(tokenizer, "mask_token_id", None)
    if mid is None:
        raise ValueError(
            f"the tokenizer ({type(tokenizer).__name__}) has no mask token: perturbed masking needs a masked-LM "
            "tokenizer (BERT, RoBERTa, ELECTRA, MiniLM, ...)")
    return int(mid)


def pad_token_id(tokenizer) -> int:
    pid = getattr(tokenizer, "pad_token_id", None)
    return int(pid) if pid is not None else 0


def max_length(model, tokenizer) -> int:
    """The longest sequence the model accepts (its position table, or the tokenizer's limit)."""
    limits = []
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        limits.append(n)
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and 0 < n < 1_000_000:
        limits.append(n)
    return min(limits) if limits else 1 << 30


def encode_words(tokenizer, words: Sequence[str], *, limit: int | None = None) -> EncodedSentence:
    """Tokenises pre-split words, keeping which subwords belong to which word.

    A fast tokenizer gives ``word_ids()``; otherwise each word is tokenised on its own and the
    sentence is wrapped in the tokenizer's special tokens.
    """
    words = as_words(words)
    enc = tokenizer(list(words), is_split_into_words=True, add_special_tokens=True)
    ids = list(enc["input_ids"])
    starts = [-1] * len(words)
    ends = [-1] * len(words)
    word_ids = enc.word_ids() if hasattr(enc, "word_ids") and getattr(enc, "is_fast", True) else None
    if word_ids is not None:
        for p, w in enumerate(word_ids):
            if w is None:
                continue
            if starts[w] < 0:
                starts[w] = p
            elif ends[w] != p:
                raise ValueError(f"word {w} ({words[w]!r}) is split into non-adjacent tokens")
            ends[w] = p + 1
    else:  # a slow tokenizer: per-word tokenisation
        pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
        body = [t for p in pieces for t in p]
        ids = list(tokenizer.build_inputs_with_special_tokens(body))
        first = next(p for p in range(len(ids) - len(body) + 1) if ids[p:p + len(body)] == body)
        pos = first
        for w, p in enumerate(pieces):
            if p:
                starts[w], ends[w] = pos, pos + len(p)
            pos += len(p)
    for w, s in enumerate(starts):
        if s < 0:
            raise ValueError(f"word {w} ({words[w]!r}) has no subword token: the tokenizer drops it")
    if limit is not None and len(ids) > limit:
        raise ValueError(
            f"the sentence has {len(ids)} tokens (with special tokens), more than the model's maximum of {limit}: "
            f"{' '.join(words[:8])} ...")
    return EncodedSentence(list(words), ids, starts, ends)


def pack(sentences: Sequence[EncodedSentence], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The packed int64 tensors the masked_batch op takes (tokens, tok_offsets, word_start,
    word_end, word_offsets)."""
    tok_off, word_off = [0], [0]
    for s in sentences:
        tok_off.append(tok_off[-1] + s.num_tokens)
        word_off.append(word_off[-1] + s.num_words)

    def t(x):
        return torch.tensor(x, dtype=torch.long, device=device)

    return {
        "tokens": t([i for s in sentences for i in s.ids]),
        "tok_offsets": t(tok_off),
        "word_start": t([i for s in sentences for i in s.starts]),
        "word_end": t([i for s in sentences for i in s.ends]),
        "word_offsets": t(word_off),
    }
