"""Plain references for perturbed masking: the definition computed the slow, obvious way.

* :func:`impact_matrix_reference`: one full forward per masked sequence (x\\{i} and x\\{i,j}
  for every ordered pair), no batching, no early stop, distances with torch.  The tests hold
  the engine to it.
* :func:`impact_matrix_published_scheme`: the batching of the published code (Wu et al. 2020),
  reimplemented as the benchmark's baseline: for each of the S+2 token positions p, one batch
  of S+2 sequences (sequence q masks the word of p and the word of q; special tokens belong to
  no word), the full model with every hidden state kept, distances in Python loops, then the
  mean over the subwords of each word.  (S+2)² sequences for S subwords; it yields the same
  matrix as the definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import encoder as enc
from .tokenize import encode_words, mask_token_id, max_length


def _distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    a, b = a.double(), b.double()
    if metric == "dist":
        return (a - b).norm(dim=-1)
    return 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-8)


def _masked(ids: list[int], spans: Sequence[tuple[int, int]], mask_id: int) -> list[int]:
    out = list(ids)
    for a, b in spans:
        out[a:b] = [mask_id] * (b - a)
    return out


def impact_matrix_reference(model, tokenizer, words, *, layer: int = -1, metric: str = "dist",
                            subword: str = "avg") -> torch.Tensor:
    """The (W, W) impact matrix by the definition, one unbatched forward per sequence (float64)."""
    e = encode_words(tokenizer, words, limit=max_length(model, tokenizer))
    [l] = enc.normalize_layers(model, layer)
    mid = mask_token_id(tokenizer)
    device = next(model.parameters()).device
    spans = list(zip(e.starts, e.ends, strict=True))

    def hidden(masked_words):
        ids = _masked(e.ids, [spans[w] for w in masked_words], mid)
        out = model(input_ids=torch.tensor([ids], device=device), output_hidden_states=True)
        return out.hidden_states[l][0]

    W = e.num_words
    M = torch.zeros(W, W, dtype=torch.float64)
    with torch.inference_mode(), enc.eval_mode(model):
        for i in range(W):
            a, b = spans[i]
            P = [a] if subword == "first" else list(range(a, b))
            base = hidden([i])[P]
            for j in range(W):
                if j != i:
                    M[i, j] = _distance(base, hidden([i, j])[P], metric).mean()
    return M


def impact_matrix_published_scheme(model, tokenizer, words, *, layer: int = -1, metric: str = "dist",
                                   subword: str = "avg") -> torch.Tensor:
    """The same matrix with the published code's batching (the benchmark baseline, float32)."""
    e = encode_words(tokenizer, words, limit=max_length(model, tokenizer))
    [l] = enc.normalize_layers(model, layer)
    mid = mask_token_id(tokenizer)
    device = next(model.parameters()).device
    T = e.num_tokens
    word_of = [-1] * T
    for w, (a, b) in enumerate(zip(e.starts, e.ends, strict=True)):
        for p in range(a, b):
            word_of[p] = w
    spans = list(zip(e.starts, e.ends, strict=True))

    def spans_of(*positions):
        return [spans[word_of[p]] for p in positions if word_of[p] >= 0]

    # token-level f[p][q] = d(H_p(x\{word p}), H_p(x\{word p, word q})), as the published loops
    f = [[0.0] * T for _ in range(T)]
    with torch.inference_mode(), enc.eval_mode(model):
        for p in range(T):
            batch = [_masked(e.ids, spans_of(p) if q == p else spans_of(p, q), mid) for q in range(T)]
            out = model(input_ids=torch.tensor(batch, device=device), output_hidden_states=True)
            h = out.hidden_states[l]                       # every hidden state of the batch is kept
            base = h[p, p]
            for q in range(T):                               # distances in a Python loop
                if q != p:
                    f[p][q] = float(_distance(base, h[q, p], metric))
    W = e.num_words
    M = torch.zeros(W, W)
    for i in range(W):
        a, b = spans[i]
        P = [a] if subword == "first" else list(range(a, b))
        for j in range(W):
            if j != i:
                q = spans[j][0]
                M[i, j] = sum(f[p][q] for p in P) / len(P)
    return M
