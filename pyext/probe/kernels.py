"""TEMPORARY placeholder (replaced by the probe-kernels branch): plain-torch masked_batch / segment_distance."""

from __future__ import annotations

import torch


def masked_batch(tokens, tok_offsets, word_start, word_end, word_offsets, seqs, mask_id, pad_id, length,
                 backend="auto"):
    K = seqs.shape[0]
    s, i, j = seqs[:, 0], seqs[:, 1], seqs[:, 2]
    t = torch.arange(length, device=tokens.device)
    start = tok_offsets[s]
    n = tok_offsets[s + 1] - start
    valid = t[None, :] < n[:, None]
    idx = (start[:, None] + t[None, :]).clamp(max=max(tokens.numel() - 1, 0))
    ids = torch.where(valid, tokens[idx], torch.full((K, length), pad_id, dtype=torch.long, device=tokens.device))
    for w in (i, j):
        g = word_offsets[s] + w.clamp(min=0)
        a, b = word_start[g], word_end[g]
        m = (w[:, None] >= 0) & (t[None, :] >= a[:, None]) & (t[None, :] < b[:, None])
        ids = torch.where(m, torch.full_like(ids, mask_id), ids)
    return ids, valid.long()


def segment_distance(h, rows, ref, ref_rows, seg, num_segments, metric="dist", backend="auto"):
    acc = torch.float64 if h.dtype == torch.float64 else torch.float32
    a, b = h[rows].to(acc), ref[ref_rows].to(acc)
    if metric == "dist":
        d = (a - b).norm(dim=-1)
    else:
        d = 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-8)
    out = torch.zeros(num_segments, dtype=acc, device=h.device).index_add_(0, seg, d)
    cnt = torch.zeros(num_segments, dtype=acc, device=h.device).index_add_(0, seg, torch.ones_like(d))
    return out / cnt.clamp_min(1)
