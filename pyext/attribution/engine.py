"""The integration engine shared by :func:`integrated_gradients` and :func:`token_attributions`.

An *integrand* is ``evaluate(ex, alphas) -> (grads, values)``: for M (example, α) rows it
returns the gradients of the target output at the points x'_ex + α(x_ex − x'_ex), one tensor
(M, *feature shape) per input, and the target outputs F there (M,).  The engine packs rows
into forwards of at most ``rows`` rows, step-major like Captum, and either sums one fixed rule
(:func:`integrate_fixed`) or refines nested Romberg levels per example until completeness holds
(:func:`integrate_auto`); examples that have converged leave the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .quadrature import level_points, new_point_indices, romberg_row

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

    integrals: Grads  # R_{k,k} per example, float64
    previous: Grads  # R_{k-1,k-1}
    steps: torch.Tensor  # (B,) points evaluated
    f_input: torch.Tensor  # (B,) F(x)
    f_baseline: torch.Tensor  # (B,) F(x')
    converged: torch.Tensor  # (B,) bool


def integrate_auto(evaluate: Integrand, feature_shapes: Sequence[torch.Size], n_examples: int,
                   diffs: Callable[[torch.Tensor], Grads], tol: torch.Tensor, max_level: int, min_level: int,
                   rows: int | None, device: torch.device) -> AutoState:
    """Romberg levels min_level.. until |Σ attr − (F(x) − F(x'))| ≤ tol·|F(x) − F(x')| per example.

    ``diffs(ex)`` gives (x − x') for the examples ``ex``; attributions are R_{k,k} · (x − x').
    Level 0 evaluates α ∈ {0, 1} (F(x'), F(x) and their gradients); each further level adds the
    midpoints.  Levels below ``min_level`` are refined without testing; after it, converged
    examples stop and only the others evaluate the next level's new points."""
    B = n_examples
    f64 = torch.float64
    table: list[list[torch.Tensor]] = [[] for _ in feature_shapes]  # Romberg row per input: k+1 × (B, *s)
    trap = [torch.zeros((B, *s), dtype=f64, device=device) for s in feature_shapes]
    integrals = [torch.zeros((B, *s), dtype=f64, device=device) for s in feature_shapes]
    previous = [torch.zeros((B, *s), dtype=f64, device=device) for s in feature_shapes]
    steps = torch.zeros(B, dtype=torch.long)
    f_in = torch.zeros(B, dtype=f64)
    f_base = torch.zeros(B, dtype=f64)
    converged = torch.zeros(B, dtype=torch.bool)
    active = torch.arange(B)
    for level in range(max_level + 1):
        pts = level_points(level)
        new = new_point_indices(level)
        n_new, A = len(new), len(active)
        step = torch.arange(n_new).repeat_interleave(A)
        ex_local = torch.arange(A).repeat(n_new)
        sums = [torch.zeros((A, *s), dtype=f64, device=device) for s in feature_shapes]
        for sl in _chunks(n_new * A, rows):
            alphas = pts[new[step[sl]]]
            w = torch.ones(len(alphas), dtype=f64, device=device)
            if level == 0:  # the trapezoid's end weights
                w = w * 0.5
            if hasattr(evaluate, "weighted"):  # Σ_rows w·g per example, formed by the integrand
                uniq, wsums, values = evaluate.weighted(active[ex_local[sl]].to(device), alphas.to(device), w)
                local = torch.searchsorted(active.to(device), uniq)  # active is sorted
            else:
                grads, values = evaluate(active[ex_local[sl]].to(device), alphas.to(device))
            if level == 0:
                at_end = alphas.to(device) == 1.0
                idx = active[ex_local[sl]]
                vals = values.detach().to(f64).cpu()
                f_in[idx[at_end.cpu()]] = vals[at_end.cpu()]
                f_base[idx[~at_end.cpu()]] = vals[~at_end.cpu()]
            if hasattr(evaluate, "weighted"):
                for s, ws in zip(sums, wsums, strict=True):
                    s.index_add_(0, local, ws.to(f64))
                continue
            for s, g in zip(sums, grads, strict=True):
                s.index_add_(0, ex_local[sl].to(device), g.to(f64) * w.view(-1, *([1] * (g.dim() - 1))))
        h = 1.0 / 2**level
        steps[active] += n_new
        act = active.to(device)
        for i in range(len(feature_shapes)):
            t = sums[i] * h if level == 0 else trap[i][act] / 2 + h * sums[i]
            trap[i][act] = t
            row = romberg_row([r[act] for r in table[i]], t)
            table[i].append(torch.zeros_like(trap[i]))
            for r, v in zip(table[i], row, strict=True):
                r[act] = v
            previous[i][act] = integrals[i][act] if level else row[-1]
            integrals[i][act] = row[-1]
        if level < min_level:
            continue
        ex_dev = active.to(device)
        d = diffs(ex_dev)
        total = sum((integrals[i][ex_dev] * d[i].to(f64)).flatten(1).sum(1) for i in range(len(d))).cpu()
        df = f_in[active] - f_base[active]
        ok = (total - df).abs() <= tol[active] * df.abs()
        converged[active[ok]] = True
        active = active[~ok]
        if len(active) == 0:
            break
    return AutoState(tuple(integrals), tuple(previous), steps, f_in, f_base, converged)


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
