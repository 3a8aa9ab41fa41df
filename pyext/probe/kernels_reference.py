r"""Plain-PyTorch definitions of the probe's two fused ops: what every kernel is tested against.

**masked_batch.**  Sentences are packed end to end: sentence s is
``tokens[tok_offsets[s]:tok_offsets[s+1]]`` (its full token list, [CLS] and [SEP] included),
n_s tokens long.  Its words are token spans relative to the sentence start: word w of s is
``[word_start[o + w], word_end[o + w])`` with o = word_offsets[s], for w < W_s =
word_offsets[s+1] − o.  A row (s, i, j) of ``seqs`` asks for sentence s with every token of word
i and of word j replaced by ``mask_id``; −1 in either slot means "no word there" (so j = −1 masks
word i only, and i = j = −1 masks nothing).  Output row k, column t < length::

    input_ids[k, t]      = mask_id        if t < n_s and t lies in the span of word i or word j
                         = tokens[tok_offsets[s] + t]   if t < n_s otherwise
                         = pad_id         if t >= n_s
    attention_mask[k, t] = 1 if t < n_s else 0

Valid input: 0 <= s < n_sentences, −1 <= i, j < W_s, the referenced offsets ranges inside
``tokens`` / ``word_start`` and increasing, the referenced spans inside their sentence
(0 <= start <= end <= n_s), and n_s <= length.  Anything else is an error (see
:func:`masked_batch_problems`).

**segment_distance.**  For pairs k = 0..K−1 with a = h[rows[k]], b = ref[ref_rows[k]]::

    d_k = ‖a − b‖₂                               (metric "dist")
    d_k = 1 − a·b / max(‖a‖ ‖b‖, 1e−8)           (metric "cos")
    out[s] = mean over {k : seg[k] = s} of d_k   (0 for a segment with no k)

computed in float32 (float64 for float64 inputs); ``out`` has that dtype.  The gradients with
respect to h and ref are those of this composite (:func:`segment_distance_backward` writes them
out for the kernels' autograd: ∂‖a−b‖/∂a = (a−b)/‖a−b‖, 0 at a = b, as torch's norm; for "cos",
∂c/∂a = b/p − c·a/‖a‖² with p = ‖a‖‖b‖ >= 1e−8, and b/1e−8 below the clamp).
"""

from __future__ import annotations

import torch

COS_EPS = 1e-8  # clamp of ‖a‖‖b‖ in the cosine
METRICS = ("dist", "cos")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------
# masked_batch
# ---------------------------------------------------------------------------------------------

def _gather(t: torch.Tensor, idx: torch.Tensor, ok: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """t[idx] where ok, ``fill`` elsewhere, without ever indexing out of range (no device assert)."""
    ext = torch.cat([t, t.new_full((1,), fill)])
    return ext[torch.where(ok, idx, t.shape[0])]


def masked_batch_problems(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, length
                          ) -> dict[str, torch.Tensor]:
    """Per-row (K,) bool tensors, one per way a row of ``seqs`` can be invalid (True = invalid).

    Pure tensor code on the inputs' device (no host synchronisation), never indexing out of
    range; the checks stop at the first failure of a row (later ones read as valid)."""
    n_sent = tok_offsets.shape[0] - 1
    L_total, W_total = tokens.shape[0], word_start.shape[0]
    s, wi, wj = seqs[:, 0], seqs[:, 1], seqs[:, 2]
    bad_s = (s < 0) | (s >= n_sent)
    ok = ~bad_s
    t0, t1 = _gather(tok_offsets, s, ok), _gather(tok_offsets, s + 1, ok)
    bad_tok = ok & ((t0 < 0) | (t0 > t1) | (t1 > L_total))
    ok = ok & ~bad_tok
    n = t1 - t0
    too_long = ok & (n > length)
    ok = ok & ~too_long
    w0, w1 = _gather(word_offsets, s, ok), _gather(word_offsets, s + 1, ok)
    bad_words = ok & ((w0 < 0) | (w0 > w1) | (w1 > W_total))
    ok = ok & ~bad_words
    out = {"s": bad_s, "tok_offsets": bad_tok, "length": too_long, "word_offsets": bad_words}
    for name, w in (("i", wi), ("j", wj)):
        bad_w = ok & ((w < -1) | (w >= w1 - w0))
        has = ok & ~bad_w & (w >= 0)
        a, b = _gather(word_start, w0 + w, has), _gather(word_end, w0 + w, has)
        bad_span = has & ((a < 0) | (a > b) | (b > n))
        out[name] = bad_w
        out[f"span_{name}"] = bad_span
    return out


def masked_batch_reference(tokens: torch.Tensor, tok_offsets: torch.Tensor, word_start: torch.Tensor,
                           word_end: torch.Tensor, word_offsets: torch.Tensor, seqs: torch.Tensor, mask_id: int,
                           pad_id: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (K, length) int64 (module docstring).  Invalid rows
    (:func:`masked_batch_problems`) come out as padding; the public function raises on them."""
    problems = masked_batch_problems(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, length)
    ok = ~torch.stack(list(problems.values())).any(0)
    s, wi, wj = seqs[:, 0], seqs[:, 1], seqs[:, 2]
    t0 = _gather(tok_offsets, s, ok)
    n = _gather(tok_offsets, s + 1, ok) - t0
    w0 = _gather(word_offsets, s, ok)
    t = torch.arange(length, device=seqs.device, dtype=torch.int64)[None, :]
    inside = ok[:, None] & (t < n[:, None])
    ids = _gather(tokens, t0[:, None] + t, inside)
    masked = torch.zeros_like(inside)
    for w in (wi, wj):
        has = ok & (w >= 0)
        a, b = _gather(word_start, w0 + w, has), _gather(word_end, w0 + w, has)
        masked |= has[:, None] & (t >= a[:, None]) & (t < b[:, None])
    ids = torch.where(inside, torch.where(masked, mask_id, ids), pad_id)
    return ids, inside.to(torch.int64)


# ---------------------------------------------------------------------------------------------
# segment_distance
# ---------------------------------------------------------------------------------------------

def pair_distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """d(a_k, b_k) for rows of a, b (K, D): ‖a − b‖ or 1 − cos (module docstring)."""
    if metric == "dist":
        return torch.linalg.vector_norm(a - b, dim=-1)
    denom = (torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)).clamp_min(COS_EPS)
    return 1 - (a * b).sum(-1) / denom


def segment_counts(seg: torch.Tensor, num_segments: int, dtype: torch.dtype) -> torch.Tensor:
    """Members per segment as ``dtype``, at least 1 (so an empty segment's mean is 0 / 1 = 0)."""
    ones = torch.ones(seg.shape, dtype=dtype, device=seg.device)
    return torch.zeros(num_segments, dtype=dtype, device=seg.device).index_add(0, seg, ones).clamp_min(1)


def segment_distance_reference(h: torch.Tensor, rows: torch.Tensor, ref: torch.Tensor, ref_rows: torch.Tensor,
                               seg: torch.Tensor, num_segments: int, metric: str = "dist") -> torch.Tensor:
    """out (num_segments,) in the accumulation dtype (module docstring); differentiable."""
    acc = accumulation_dtype(h.dtype)
    # (cast, then gather: the gather's backward sums each row's K terms in acc, rounded to h's dtype once)
    d = pair_distance(h.to(acc)[rows], ref.to(acc)[ref_rows], metric)
    sums = torch.zeros(num_segments, dtype=acc, device=h.device).index_add(0, seg, d)
    return sums / segment_counts(seg, num_segments, acc)


def segment_distance_backward(grad_out: torch.Tensor, h: torch.Tensor, rows: torch.Tensor, ref: torch.Tensor,
                              ref_rows: torch.Tensor, seg: torch.Tensor, num_segments: int, metric: str,
                              need_h: bool = True, need_ref: bool = True
                              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(∂L/∂h, ∂L/∂ref) for ∂L/∂out = grad_out: the composite's gradients written out in tensor
    ops (recomputes the K gathered row pairs: O(K·D) work and memory), in h's dtype."""
    acc = accumulation_dtype(h.dtype)
    a, b = h[rows].to(acc), ref[ref_rows].to(acc)
    w = (grad_out.to(acc) / segment_counts(seg, num_segments, acc))[seg]  # ∂L/∂d_k
    if metric == "dist":
        diff = a - b
        d = torch.linalg.vector_norm(diff, dim=-1)
        pos = d > 0
        coef = torch.where(pos, w / torch.where(pos, d, torch.ones_like(d)), torch.zeros_like(d))
        ga = coef[:, None] * diff
        gb = -ga
    else:
        na, nb = torch.linalg.vector_norm(a, dim=-1), torch.linalg.vector_norm(b, dim=-1)
        p = na * nb
        active = p >= COS_EPS  # the clamp passes the gradient of ‖a‖‖b‖ here (then ‖a‖, ‖b‖ > 0)
        pc = p.clamp_min(COS_EPS)
        c = (a * b).sum(-1) / pc
        one = torch.ones_like(p)
        ca = torch.where(active, c / torch.where(active, na * na, one), torch.zeros_like(p))
        cb = torch.where(active, c / torch.where(active, nb * nb, one), torch.zeros_like(p))
        ga = -w[:, None] * (b / pc[:, None] - ca[:, None] * a)  # ∂(1 − c)/∂a
        gb = -w[:, None] * (a / pc[:, None] - cb[:, None] * b)
    grad_h = grad_ref = None
    if need_h:
        grad_h = torch.zeros(h.shape, dtype=acc, device=h.device).index_add(0, rows, ga).to(h.dtype)
    if need_ref:
        grad_ref = torch.zeros(ref.shape, dtype=acc, device=ref.device).index_add(0, ref_rows, gb).to(ref.dtype)
    return grad_h, grad_ref
