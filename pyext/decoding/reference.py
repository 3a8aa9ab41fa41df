"""Plain-PyTorch consistent top-k / nucleus sampling: the definition every backend is tested against.

Per row, with logits ``x`` (V,), temperature T, top_k k, top_p p and keep ids E (Hugging Face's
``TemperatureLogitsWarper`` → ``TopKLogitsWarper`` → ``TopPLogitsWarper`` in that order, then the
consistent-sampling step of Welleck et al. 2020)::

    a   = x / T
    C   = {i : a_i >= θ_k}            θ_k = the k-th largest a (ties with it kept; all tokens if k ≥ V)
    w_i = exp(a_i − max a)           Z = Σ_{i∈C} w_i
    τ   = max{v : Σ_{i∈C, w_i ≥ v} w_i ≥ p·Z}                   (no top-p when p = 1: τ = 0)
    K   = {i ∈ C : w_i ≥ τ} ∪ E
    q_i = w_i / Σ_{j∈K} w_j  on K, 0 elsewhere

K is the smallest prefix of C by descending probability whose mass reaches p, with the crossing
token kept (HF removes a token when the ascending cumulative mass is ≤ 1 − p, i.e. when the mass
strictly above it is ≥ p), and at least one token (the largest). On ties HF's result depends on its
sort order; here every token tied with the crossing token (or with θ_k) is kept, which is
well defined and the same on every backend. The keep ids come back with their own weight
exp(a_i − max a), as ``indices_to_remove[:, eos] = False`` does in the authors' code
(uralik/consistency-lm). A logit of −inf is a masked token (weight 0); a NaN or +inf, or a row
that is all −inf, is an error.

A draw with uniform u ∈ [0, 1) is the inverse CDF in token order: the first i with
Σ_{j∈K, j≤i} q_j > u. Every backend draws this way, so the same u gives the same token (up to
rounding at a boundary).

Every backend evaluates this the same way, so that no temperature > 0 overflows: θ_k is taken on x
itself (dividing by T > 0 keeps the order, and rounding x / T could only add ties), and
a_i − max a = (x_i − m) / T with m = max x, computed as (x_i − m) / T, and as x_i / T − m / T
where x_i − m overflows and T ≥ 1 (for T < 1 an overflowing x_i − m means a scaled gap below
−3.4e38 anyway, and e^gap = 0; the quotients are used nowhere else: each rounds by |x| / T
units).  A tiny temperature is then the greedy limit, not x / T = ±inf; a masked token keeps gap
−inf also where a temperature above float32's range rounds to inf in the kernels.

Everything here runs in float64 (the kernels in float32, float64 for float64 logits).
"""

from __future__ import annotations

import torch


def row_params(B: int, temperature, top_k, top_p, keep, device) -> tuple[torch.Tensor, ...]:
    """(temperature (B,) float64, top_k (B,) int64 with 0 = none, top_p (B,) float64, keep (B, K) int64
    with −1 = none) from scalars, None, sequences or tensors (no checks: see api.check_sampling_args)."""
    def per_row(v, none, dtype):
        if v is None:
            v = none
        t = torch.as_tensor(v, dtype=dtype, device=device)
        return t.expand(B).contiguous() if t.dim() == 0 else t.to(dtype).contiguous()

    T = per_row(temperature, 1.0, torch.float64)
    k = per_row(top_k, 0, torch.int64)
    p = per_row(top_p, 1.0, torch.float64)
    if keep is None:
        E = torch.empty((B, 0), dtype=torch.int64, device=device)
    else:
        E = torch.as_tensor(keep, dtype=torch.int64, device=device)
        if E.dim() == 0:
            E = E.reshape(1)
        if E.dim() == 1:
            E = E.unsqueeze(0).expand(B, -1)
        E = E.contiguous()
    return T, k, p, E


def scaled_gap(x: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """(x − max x) / T per row without overflow: (x − m) / T, except x / T − m / T where x − m
    overflows and T ≥ 1 (the quotients round by |x| / T units: only where needed), and exactly 0 at
    the max (T may round to 0 in float32: the other gaps are then −inf, the greedy limit).

    Differentiable as x / T: q is invariant under a shift of the row, so the max carries no gradient
    (detached), and the max's own gap, 0 by value, keeps its derivative 1 / T (a constant 0 there
    sent the max's share to one of several tied tokens, through the gradient of the row max)."""
    m = x.max(dim=1, keepdim=True).values.detach()
    d = x - m
    at_max = d / torch.where(T > 0, T, torch.ones_like(T))  # 0 by value at x = m, derivative 1 / T
    quotients = torch.isneginf(d) & torch.isfinite(x) & (T >= 1)  # x − m overflowed
    return torch.where(quotients, x / T - m / T, torch.where(x == m, at_max, d / T))


def kept_weights(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                 keep: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """w_i on K and 0 elsewhere, (B, V) in ``dtype`` (per-row parameters as :func:`row_params` returns
    them; float64 defines the semantics, float32 is the tests' same-precision baseline)."""
    x = logits.to(dtype)
    B, V = x.shape
    w_all = torch.exp(scaled_gap(x, temperature.to(dtype)[:, None]))  # own weights (keep ids), 0 for −inf
    # top-k: the k-th largest value (of x: the same order as x / T), ties kept
    k = torch.where((top_k <= 0) | (top_k >= V), torch.full_like(top_k, V), top_k)
    sorted_x = x.sort(dim=1, descending=True).values
    theta = sorted_x.gather(1, (k - 1)[:, None])
    in_c = x >= theta
    w = torch.where(in_c, w_all, torch.zeros_like(w_all))
    # top-p: τ = the value at the first descending position whose inclusive cumulative mass reaches p·Z
    Z = w.sum(dim=1, keepdim=True)
    ws = w.sort(dim=1, descending=True).values
    # (counted, not an argmax over a mask: when sum and cumsum round apart so that no prefix reaches a
    # p next to 1, the crossing is the last position, τ = the smallest weight, not the largest)
    cross = (ws.cumsum(dim=1) < top_p.to(dtype)[:, None] * Z).sum(dim=1, keepdim=True).clamp(max=V - 1)
    tau = ws.gather(1, cross)
    tau = torch.where(top_p[:, None] >= 1.0, torch.zeros_like(tau), tau)
    kept = in_c & (w >= tau)
    if keep.shape[1] > 0:
        ids = torch.where(keep >= 0, keep, V)  # −1 (none) goes to a spare column, never onto token 0
        is_keep = torch.zeros((B, V + 1), dtype=torch.bool, device=kept.device).scatter_(1, ids, True)
        kept = kept | is_keep[:, :V]
    return torch.where(kept, w_all, torch.zeros_like(w_all))


def sampling_probs_reference(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                             top_p: torch.Tensor, keep: torch.Tensor,
                             dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """q (B, V) in ``dtype`` (float64: the definition): the distribution every backend samples from."""
    w = kept_weights(logits, temperature, top_k, top_p, keep, dtype)
    return w / w.sum(dim=1, keepdim=True)


def sample_reference(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                     keep: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """(B,) int64: the inverse-CDF draw in token order at ``uniform`` (B,) ∈ [0, 1)."""
    w = kept_weights(logits, temperature, top_k, top_p, keep)
    cdf = w.cumsum(dim=1)
    target = uniform.double()[:, None] * cdf[:, -1:]
    tok = torch.searchsorted(cdf, target, right=True).squeeze(1)
    last = (w > 0).long().cumsum(dim=1).argmax(dim=1)  # last positive weight (rounding at the top)
    return torch.minimum(tok, last)
