"""The integration engine shared by :func:`integrated_gradients` and :func:`token_attributions`.

An *integrand* is ``evaluate(ex, alphas) -> (grads, values)``: for M (example, α) rows it
returns the gradients of the target output at the points x'_ex + α(x_ex − x'_ex), one tensor
(M, *feature shape) per input, and the target outputs F there (M,).  The engine packs rows
into forwards of at most ``rows`` rows, step-major like Captum, and either sums one fixed rule
(:func:`integrate_fixed`) or refines nested Clenshaw–Curtis levels per example until completeness holds
(:func:`integrate_auto`); examples that have converged leave the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .quadrature import level_points, level_weights, new_point_indices

Grads = tuple[torch.Tensor, ...]
Integrand = Callable[[torch.Tensor, torch.Tensor], tuple[Grads, torch.Tensor]]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 gradients are summed in float32; float32/float64 in their own dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _chunks(n: int, rows: int | None) -> list[slice]:
    size = n if rows is None else max(1, int(rows))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def integrate_fixed(evaluate: Integrand, feature_shapes: Sequence[torch.Size], dtypes: Sequence[torch.dtype],
                    n_examples: int, alphas: torch.Tensor, weights: torch.Tensor, rows: int | None,
                    device: torch.device) -> Grads:
    """Σ_k w_k ∇F(x' + α_k(x − x')) per example, rows taken step-major (k·B + b)."""
    B, n = n_examples, len(alphas)
    acc = [torch.zeros((B, *s), dtype=accumulation_dtype(d), device=device) for s, d in zip(feature_shapes, dtypes,
                                                                                         strict=True)]
    step = torch.arange(n).repeat_interleave(B)
    ex = torch.arange(B).repeat(n)
    for sl in _chunks(n * B, rows):
        w = weights[step[sl]].to(device)
        if hasattr(evaluate, "weighted"):
            idx, sums, _ = evaluate.weighted(ex[sl].to(device), alphas[step[sl]].to(device), w)
            for a, s in zip(acc, sums, strict=True):
                a.index_add_(0, idx, s.to(a.dtype))
            continue
        grads, _ = evaluate(ex[sl].to(device), alphas[step[sl]].to(device))
        for a, g in zip(acc, grads, strict=True):
            wg = g.to(a.dtype) * w.to(a.dtype).view(-1, *([1] * (g.dim() - 1)))
            a.index_add_(0, ex[sl].to(device), wg)
    return tuple(acc)


@dataclass
class AutoState:
    """Per-example results of :func:`integrate_auto`."""

    integrals: Grads  # the accepted level's Σ_j w_j ∇F(α_j) per example, float64
    previous: Grads  # the level before it
    steps: torch.Tensor  # (B,) points evaluated
    f_input: torch.Tensor  # (B,) F(x)
    f_baseline: torch.Tensor  # (B,) F(x')
    converged: torch.Tensor  # (B,) bool


def integrate_auto(evaluate: Integrand, feature_shapes: Sequence[torch.Size], n_examples: int,
                   diffs: Callable[[torch.Tensor], Grads], tol: torch.Tensor, max_level: int, min_level: int,
                   rows: int | None, device: torch.device) -> AutoState:
    """Clenshaw–Curtis levels until |Σ attr − (F(x) − F(x'))| ≤ tol·|F(x) − F(x')| per example.

    ``diffs(ex)`` gives (x − x') for the examples ``ex``; attributions are the level's integral ·
    (x − x').  Level 0 evaluates α ∈ {0, 1} (F(x'), F(x) and their gradients); each further level
    adds its new points.  A point's gradient goes, when it is evaluated, into the running sum of
    every level from its own to ``max_level``, with that level's weight (a level's weights differ
    from the one before's at the old points too): so no gradient is kept per point.  Levels
    below ``min_level`` are refined without testing; after it, converged examples stop and only
    the others evaluate the next level's new points."""
    B = n_examples
    f64 = torch.float64
    n_levels = max_level + 1
    # sums[i]: (B, levels, *s) running Σ_j w_j^(m) g_j over the points evaluated so far, per level m
    sums = [torch.zeros((B, n_levels, *s), dtype=f64, device=device) for s in feature_shapes]
    weights = [level_weights(m) for m in range(n_levels)]
    accepted = torch.full((B,), max_level, dtype=torch.long)
    steps = torch.zeros(B, dtype=torch.long)
    f_in = torch.zeros(B, dtype=f64)
    f_base = torch.zeros(B, dtype=f64)
    converged = torch.zeros(B, dtype=torch.bool)
    active = torch.arange(B)
    for level in range(n_levels):
        pts = level_points(level)
        new = new_point_indices(level)
        # the new points' weights at every level from this one on: index j of level k is j·2^(m−k) at level m
        w_new = torch.stack([weights[m][new * 2 ** (m - level)] for m in range(level, n_levels)], 1)
        n_new, A = len(new), len(active)
        step = torch.arange(n_new).repeat_interleave(A)
        ex_local = torch.arange(A).repeat(n_new)
        for sl in _chunks(n_new * A, rows):
            alphas = pts[new[step[sl]]]
            w = w_new[step[sl]].to(device)  # (rows, levels still ahead)
            ex_rows = active[ex_local[sl]]
            if hasattr(evaluate, "weighted"):  # Σ_rows w·g per example and level, formed by the integrand
                uniq, wsums, values = evaluate.weighted(ex_rows.to(device), alphas.to(device), w)
                for acc, ws in zip(sums, wsums, strict=True):
                    acc[uniq, level:] += ws.to(f64)
            else:
                grads, values = evaluate(ex_rows.to(device), alphas.to(device))
                idx = ex_rows.to(device)
                for acc, g in zip(sums, grads, strict=True):
                    g64 = g.to(f64)
                    for m in range(w.shape[1]):  # one level at a time: no (rows, levels, *s) temporary
                        acc[:, level + m].index_add_(0, idx, g64 * w[:, m].view(-1, *([1] * (g.dim() - 1))))
            if level == 0:
                at_end = (alphas == 1.0).cpu()
                vals = values.detach().to(f64).cpu()
                f_in[ex_rows[at_end]] = vals[at_end]
                f_base[ex_rows[~at_end]] = vals[~at_end]
        steps[active] += n_new
        if level < min_level:
            continue
        ex_dev = active.to(device)
        d = diffs(ex_dev)
        total = sum((acc[ex_dev, level] * di.to(f64)).flatten(1).sum(1)
                    for acc, di in zip(sums, d, strict=True)).cpu()
        df = f_in[active] - f_base[active]
        ok = (total - df).abs() <= tol[active] * df.abs()
        converged[active[ok]] = True
        accepted[active[ok]] = level
        active = active[~ok]
        if len(active) == 0:
            break
    at = torch.arange(B, device=device)
    acc_lv, prev_lv = accepted.to(device), (accepted - 1).clamp_min(0).to(device)
    integrals = tuple(acc[at, acc_lv] for acc in sums)
    previous = tuple(acc[at, prev_lv] for acc in sums)
    return AutoState(integrals, previous, steps, f_in, f_base, converged)


def _saved_bytes(evaluate: Integrand, n: int, device: torch.device) -> int:
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        grads, _ = evaluate(torch.zeros(n, dtype=torch.long, device=device),
                            torch.full((n,), 0.5, dtype=torch.float64, device=device))
    return sum(seen.values()) + sum(g.numel() * g.element_size() for g in grads)


def memory_model(evaluate: Integrand, device: torch.device) -> tuple[int, int]:
    """(fixed bytes, bytes per row) that a forward+backward keeps alive: the tensors autograd
    saves (each storage once; parameters and other shared tensors are the fixed part) plus the
    gradients, measured on one and on two rows at α = ½.  What ``max_memory`` is divided by."""
    one, two = _saved_bytes(evaluate, 1, device), _saved_bytes(evaluate, 2, device)
    per_row = max(1, two - one)
    return max(0, one - per_row), per_row


def rows_for_memory(evaluate: Integrand, device: torch.device, max_memory: int) -> int:
    """The most rows per forward whose measured memory fits in ``max_memory`` bytes (at least 1)."""
    fixed, per_row = memory_model(evaluate, device)
    return max(1, (max_memory - fixed) // per_row)
