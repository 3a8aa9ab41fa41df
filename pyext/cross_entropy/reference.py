"""Plain-PyTorch flooding + logit-adjusted cross-entropy: the definition every kernel is tested against.

With adjusted logits ``a = logits + tau·log(π)`` (π the normalised ``prior``; no prior: a = logits),
``lse_i = logsumexp_c a_{i,c}``, class weights w (all 1 without ``weight``), ε = label_smoothing
and y_i the target, the per-row loss is (torch's definition of weights and label smoothing)::

    ℓ_i = (1−ε)·w_{y_i}·(lse_i − a_{i,y_i}) + (ε/C)·Σ_c w_c·(lse_i − a_{i,c}) + z_loss·lse_i²

which without weights is ``(1−ε)(lse − a_y) + ε(lse − mean_c a_c) + z_loss·lse²``.  Rows with
``target == ignore_index`` give 0.  Then, with flood level b::

    flood_mode="sample":  ℓ_i ← |ℓ_i − b| + b       (valid rows only; iFlood)
    reduction:            "none" → ℓ,  "sum" → Σ ℓ_i,  "mean" → Σ ℓ_i / D
    flood_mode="batch":   L ← |L − b| + b           (Ishida et al. 2020; not with "none")

D = Σ_{valid i} w_{y_i} (the number of valid rows without weights), as in torch; when D = 0
(every row ignored, an empty batch, or class weights summing to 0 over the valid rows) the mean
is NaN, as torch's (0/0), with torch's gradients (0 for ignored rows, NaN for weighted-out ones).  The result has
the logits' dtype; everything is computed in float32 (float64 for float64 logits).  ``prior``
and ``weight`` are constants (no gradient), as ``weight`` is in torch.

The split into :func:`row_losses` (the N×C work: per-row ℓ_i and lse_i) and :func:`reduce_rows`
(the O(N) tail: flooding and reduction) is the split the kernels use: every backend computes
the per-row part its own way and shares :func:`reduce_rows`, so the flood sign and the mean's
divisor are tensor operations on the device (no host synchronisation).
"""

from __future__ import annotations

import torch


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def log_prior_bias(prior: torch.Tensor, tau: float, dtype: torch.dtype) -> torch.Tensor:
    """tau·log(prior / Σ prior) in ``dtype`` (the additive logit adjustment, shape (C,)).

    Computed in log space, log p − logsumexp(log p): counts whose sum overflows the dtype (1e38 in
    float32, 7e4 in float16) give the same result as small ones."""
    lp = torch.log(prior.to(dtype))
    return tau * (lp - torch.logsumexp(lp, 0))


def row_losses(
    logits: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    weight: torch.Tensor | None,
    label_smoothing: float,
    z_loss: float,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ℓ (N,), lse (N,)) in the accumulation dtype; ``bias`` (C,) is added to the logits.

    Ignored rows give ℓ = 0 and a zero gradient whatever their logits (all −inf included: their
    lse is −inf, still that of the row, and no NaN of the row's softmax reaches the gradient,
    as in every kernel)."""
    acc = accumulation_dtype(logits.dtype)
    a = logits.to(acc)
    if bias is not None:
        a = a + bias.to(acc)
    C = a.shape[-1]
    valid = target != ignore_index
    if a.requires_grad:  # ignored rows: no path back to the logits (where's backward drops them)
        a = torch.where(valid[:, None], a, a.detach())
    lse = torch.logsumexp(a, dim=-1)
    t = torch.where(valid, target, torch.zeros_like(target))
    a_y = a.gather(1, t[:, None])[:, 0]
    nll = lse - a_y
    if weight is not None:
        nll = weight.to(acc)[t] * nll
    loss = nll if label_smoothing == 0 else (1 - label_smoothing) * nll
    if label_smoothing != 0:
        gap = lse[:, None] - a
        smooth = (gap * weight.to(acc)).sum(-1) if weight is not None else gap.sum(-1)
        loss = loss + (label_smoothing / C) * smooth
    if z_loss != 0:
        loss = loss + z_loss * lse.square()
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss, lse


def flood(x: torch.Tensor, level: float) -> torch.Tensor:
    """|x − b| + b: the identity above the flood level b, a reflection (gradient sign flip) below."""
    return (x - level).abs() + level


def reduce_rows(
    loss: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    flood_level: float | None,
    flood_mode: str,
    ignore_index: int,
    reduction: str,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """The O(N) tail shared by every backend: sample flooding, reduction, batch flooding."""
    valid = target != ignore_index
    if flood_level is not None and flood_mode == "sample":
        loss = torch.where(valid, flood(loss, flood_level), torch.zeros_like(loss))
    if reduction == "none":
        return loss.to(out_dtype)
    total = loss.sum()
    if reduction == "mean":
        if weight is None:
            denom = valid.sum().to(loss.dtype)
        else:
            t = torch.where(valid, target, torch.zeros_like(target))
            denom = torch.where(valid, weight.to(loss.dtype)[t], torch.zeros_like(loss)).sum()
        total = total / denom  # D = 0 (every row ignored, or weights summing to 0) gives NaN, as torch
        # ... also with label smoothing, whose part alone would be x/0 = inf (torch's NLL part is 0/0);
        # added, not selected, so the gradients stay torch's (NaN for weighted-out rows)
        total = total + torch.where(denom == 0, torch.full_like(total, float("nan")), torch.zeros_like(total))
    if flood_level is not None and flood_mode == "batch":
        total = flood(total, flood_level)
    return total.to(out_dtype)


def cross_entropy_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    prior: torch.Tensor | None = None,
    tau: float = 1.0,
    flood: float | None = None,
    flood_mode: str = "batch",
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss: float = 0.0,
) -> torch.Tensor:
    """The whole composite in plain torch (the "torch" backend; differentiable by autograd)."""
    acc = accumulation_dtype(logits.dtype)
    bias = None if prior is None else log_prior_bias(prior, tau, acc)
    loss, _ = row_losses(logits, target, bias, weight, label_smoothing, z_loss, ignore_index)
    return reduce_rows(loss, target, weight, flood_level=flood, flood_mode=flood_mode, ignore_index=ignore_index,
                       reduction=reduction, out_dtype=logits.dtype)
