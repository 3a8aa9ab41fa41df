"""Integrated gradients on any differentiable forward, with Captum's semantics, adaptive steps and
memory-bounded batching.

IG_i(x) = (x_i − x'_i) · ∫₀¹ ∂F(x' + α(x − x'))/∂x_i dα  (Sundararajan et al., ICML 2017), and
completeness, Σ_i IG_i = F(x) − F(x'), is what makes it checkable: the *delta*
Σ_i IG_i − (F(x) − F(x')) is the quadrature's error seen through the sum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._autograd import functorch_active
from .._validate import as_float, is_int, is_real
from .engine import AutoState, integrate_auto, integrate_fixed, rows_for_memory
from .quadrature import METHODS, rule

GRADIENT_METHODS = ("gradient", "gradient_x_input")
TensorOrTuple = torch.Tensor | tuple[torch.Tensor, ...]
TargetType = None | int | tuple | Sequence | torch.Tensor


@dataclass
class IGResult:
    """What ``n_steps="auto"`` returns.

    ``attributions`` have the inputs' shapes (a tuple when the inputs were a tuple); per example:
    ``steps`` the points evaluated (forward+backward rows), ``delta`` the signed completeness error
    Σ IG − (F(x) − F(x')), ``error`` = |delta|, ``error_estimate`` max_i |IG_i − IG_i at the
    previous level| (the nested rules' estimate of the attributions' own error), ``f_input`` and
    ``f_baseline`` F(x) and F(x'), ``converged`` whether |delta| ≤ tol·|F(x) − F(x')| was met
    before ``max_steps``."""

    attributions: TensorOrTuple
    steps: torch.Tensor
    delta: torch.Tensor
    error: torch.Tensor
    error_estimate: torch.Tensor
    f_input: torch.Tensor
    f_baseline: torch.Tensor
    converged: torch.Tensor


# ---------------------------------------------------------------------------------------------
# argument checks


def as_tuple(x: Any, name: str) -> tuple[torch.Tensor, ...]:
    t = x if isinstance(x, tuple) else (x,)
    if len(t) == 0:
        raise ValueError(f"{name} must be a tensor or a non-empty tuple of tensors")
    for i, v in enumerate(t):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(v).__name__}")
    return t


def check_inputs(inputs: tuple[torch.Tensor, ...]) -> int:
    B = None
    for i, x in enumerate(inputs):
        if not x.is_floating_point():
            raise TypeError(f"inputs[{i}] has dtype {x.dtype}: integrated gradients needs floating-point inputs "
                            "(for token ids, integrate over an embedding layer: kexue.attribution.token_attributions"
                            "(..., layer='embeddings'))")
        if x.dim() == 0:
            raise ValueError(f"inputs[{i}] must have a batch dimension first, got a 0-d tensor")
        if B is None:
            B = x.shape[0]
        elif x.shape[0] != B:
            raise ValueError(f"inputs[{i}] has batch size {x.shape[0]}, inputs[0] has {B}: all inputs must share "
                             "the first (batch) dimension")
    if not B:
        raise ValueError("inputs must hold at least one example (the batch dimension is 0)")
    return int(B)


def format_baselines(baselines: Any, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Captum's baselines: None (zeros), a number, or a tensor broadcastable to the input (per
    input when the inputs are a tuple); returned expanded to the inputs' shapes."""
    if baselines is None:
        return tuple(torch.zeros_like(x) for x in inputs)
    bt = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(bt) != len(inputs):
        raise ValueError(f"baselines has {len(bt)} entries for {len(inputs)} inputs")
    out = []
    for i, (b, x) in enumerate(zip(bt, inputs, strict=True)):
        if is_real(b):
            out.append(torch.full_like(x, as_float(f"baselines[{i}]", b)))  # (NaN/inf: a ValueError)
            continue
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"baselines[{i}] must be a number or a tensor, got {type(b).__name__}")
        try:
            out.append(torch.broadcast_to(b.to(device=x.device, dtype=x.dtype), x.shape))
        except RuntimeError:
            raise ValueError(f"baselines[{i}] has shape {tuple(b.shape)}, which does not broadcast to the shape "
                             f"{tuple(x.shape)} of inputs[{i}]") from None
    return tuple(out)


def format_targets(target: TargetType, B: int) -> torch.Tensor | None:
    """Captum's targets as a (B, d) long tensor of output indices per example (d = 0..), or None."""
    if target is None:
        return None
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must hold integer indices, got dtype {target.dtype}")
        if target.numel() == 1:
            return target.reshape(1, 1).long().expand(B, 1).cpu()
        if target.dim() == 1 and target.shape[0] == B:
            return target.long().view(B, 1).cpu()
        raise ValueError(f"target has shape {tuple(target.shape)}: give one index, or one per example ({B})")
    if isinstance(target, bool):
        raise TypeError("target must be an int, a tuple, a list or a tensor of indices, got a bool")
    if is_int(target):
        return torch.full((B, 1), int(target), dtype=torch.long)
    if isinstance(target, tuple):
        return torch.tensor(target, dtype=torch.long).view(1, -1).expand(B, -1)
    if isinstance(target, list):
        if len(target) != B:
            raise ValueError(f"target is a list of {len(target)} entries for {B} examples")
        rows = [list(t) if isinstance(t, tuple) else [int(t)] for t in target]
        if len({len(r) for r in rows}) != 1:
            raise ValueError("target: every example's index must have the same length")
        return torch.tensor(rows, dtype=torch.long)
    raise TypeError(f"target must be an int, a tuple, a list or a tensor of indices, got {type(target).__name__}")


def select_targets(out: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """The scalar per row that is attributed: out[m, *idx[m]] (or out itself when it is scalar)."""
    M = out.shape[0] if out.dim() else 0
    if idx is None:
        if out.dim() == 0 or out.numel() != M:
            raise ValueError(f"the forward returned shape {tuple(out.shape)}, not one scalar per example: pass a "
                             "target (the output index to attribute)")
        return out.reshape(M)
    d = idx.shape[1]
    if out.dim() != 1 + d:
        raise ValueError(f"target has {d} index(es) per example but the forward's output has shape "
                         f"{tuple(out.shape)} ({out.dim() - 1} dimension(s) after the batch)")
    for j in range(d):
        size = out.shape[1 + j]
        col = idx[:, j]
        if bool(((col >= size) | (col < -size)).any()):
            bad = int(col[(col >= size) | (col < -size)][0])
            raise ValueError(f"target {bad} is out of range for the forward's output of shape {tuple(out.shape)}")
    idx = idx.to(out.device)
    return out[(torch.arange(M, device=out.device), *idx.unbind(1))]


def refuse_transforms(name: str) -> None:
    """Attribution is not differentiable: inside a torch.func transform, a clear error."""
    if functorch_active():
        raise RuntimeError(f"{name} is not differentiable and cannot run inside a torch.func transform "
                           "(grad, vmap, jvp, ...): it detaches its inputs and returns tensors with no graph")


def check_steps(n_steps: int | str, method: str, tol: float | torch.Tensor, max_steps: int) -> None:
    if method not in METHODS + GRADIENT_METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS + GRADIENT_METHODS)}, got {method!r}")
    if isinstance(n_steps, str):
        if n_steps != "auto":
            raise ValueError(f"n_steps must be a positive int or 'auto', got {n_steps!r}")
        t = torch.as_tensor(tol, dtype=torch.float64)
        if t.numel() == 0 or not bool((t > 0).all()) or not bool(torch.isfinite(t).all()):
            raise ValueError(f"tol must be > 0 (and finite), got {tol}")
        if not is_int(max_steps) or max_steps < 3:
            raise ValueError(f"max_steps must be an int ≥ 3, got {max_steps!r}")
        return
    if not is_int(n_steps):
        raise TypeError(f"n_steps must be a positive int or 'auto', got {type(n_steps).__name__}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    if n_steps < 2 and method.startswith("riemann"):
        raise ValueError(f"n_steps must be at least 2 for {method} (as in Captum), got {n_steps}")


def rows_per_forward(internal_batch_size: int | None, max_memory: int | None,
                     measure: Callable[[int], int]) -> int | None:
    if internal_batch_size is not None and max_memory is not None:
        raise ValueError("give internal_batch_size or max_memory, not both")
    if internal_batch_size is not None:
        if not is_int(internal_batch_size) \
                or internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be a positive int, got {internal_batch_size!r}")
        return internal_batch_size
    if max_memory is not None:
        if not is_int(max_memory) or max_memory < 1:
            raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
        return measure(max_memory)
    return None


def max_level_for(max_steps: int) -> int:
    """The deepest Clenshaw–Curtis level whose 2^k + 1 points fit in ``max_steps``."""
    k = 0
    while 2 ** (k + 1) + 1 <= max_steps:
        k += 1
    return k


# ---------------------------------------------------------------------------------------------
# the integrand of a plain forward


def make_integrand(forward: Callable, inputs: tuple[torch.Tensor, ...], baselines: tuple[torch.Tensor, ...],
                   targets: torch.Tensor | None, args: tuple, B: int) -> Callable:
    def expand_args(ex: torch.Tensor) -> tuple:  # per-example tensors follow the rows; 0-d ones pass as they are
        return tuple(a[ex] if isinstance(a, torch.Tensor) and a.dim() else a for a in args)

    def evaluate(ex: torch.Tensor, alphas: torch.Tensor):
        scaled = []
        for x, b in zip(inputs, baselines, strict=True):
            a = alphas.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
            xb, bb = x[ex].detach(), b[ex].detach()
            scaled.append((bb + a * (xb - bb)).requires_grad_())
        with torch.enable_grad():
            out = forward(*scaled, *expand_args(ex))
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"forward must return a tensor, got {type(out).__name__}")
            sel = select_targets(out, None if targets is None else targets[ex.cpu()])
            grads = torch.autograd.grad(sel, scaled, grad_outputs=torch.ones_like(sel), allow_unused=True)
        grads = tuple(torch.zeros_like(s) if g is None else g for g, s in zip(grads, scaled, strict=True))
        return grads, sel.detach()

    return evaluate


def _forward_values(forward: Callable, xs: tuple[torch.Tensor, ...], args: tuple, targets) -> torch.Tensor:
    with torch.no_grad():
        return select_targets(forward(*xs, *args), targets)


def integrated_gradients(forward: Callable[..., torch.Tensor], inputs: TensorOrTuple,
                         baselines: None | float | TensorOrTuple | tuple = None, *, target: TargetType = None,
                         additional_forward_args: Any = None, n_steps: int | str = 50,
                         method: str = "gausslegendre", internal_batch_size: int | None = None,
                         max_memory: int | None = None, return_convergence_delta: bool = False,
                         tol: float | torch.Tensor = 1e-2, max_steps: int = 257):
    r"""Integrated gradients of ``forward`` at ``inputs`` from ``baselines``, as Captum computes them.

    IG_i(x) = (x_i − x'_i) ∫₀¹ ∂F(x' + α(x − x'))/∂x_i dα ≈ (x_i − x'_i) Σ_k w_k ∂F(x' + α_k(x − x'))/∂x_i,
    with F the ``target`` output of ``forward(*inputs, *additional_forward_args)`` for each example.

    Arguments follow ``captum.attr.IntegratedGradients.attribute``: ``inputs`` a tensor or a
    tuple of tensors with the batch first; ``baselines`` None (zeros), a number, or tensors that
    broadcast to the inputs; ``target`` an int, a tuple, a list (one per example) or a tensor;
    ``additional_forward_args`` extra arguments (tensors are per example: their first dimension
    is the batch; 0-d tensors and non-tensors are passed unchanged, as Captum does); ``method``
    one of ``riemann_left|right|middle|trapezoid`` and ``gausslegendre``, with Captum's points and
    weights (kept in float64; Captum rounds its weights to float32, see
    :mod:`kexue.attribution.quadrature`).  ``method="gradient"`` returns
    ∂F/∂x at x and ``"gradient_x_input"`` x · ∂F/∂x, through the same call.

    Batching: all (step, example) rows go through one forward and one backward, unless
    ``internal_batch_size`` (rows per forward; Captum's knob) or ``max_memory`` (bytes: the
    rows per forward are this divided by the memory one row keeps for its backward, measured)
    bounds them (the memory a forward+backward keeps alive is measured on one and on two rows:
    the tensors autograd saves, plus the gradients).

    Not differentiable: the attributions are computed from detached inputs with first-order
    ``torch.autograd.grad`` and carry no graph (an attribution prior that needs ∂IG/∂x must
    differentiate its own formulation), and a call inside a torch.func transform raises.

    ``n_steps="auto"``: nested Clenshaw–Curtis rules (2ᵏ + 1 Chebyshev points, each level reusing
    every point of the last) are refined per example until |Σ IG − (F(x) − F(x'))| ≤
    ``tol``·|F(x) − F(x')| (``tol`` a number or one per example) or ``max_steps`` points; the
    examples that converged leave the batch.  F(x) and F(x') are the rule's own end points, so
    the delta costs nothing.  Returns an :class:`IGResult` (steps used and final error per
    example).  Otherwise returns the attributions (a tuple for tuple inputs), and with
    ``return_convergence_delta=True`` also the signed delta per example (two extra forwards).

    Example::

        >>> import torch
        >>> from kexue.attribution import integrated_gradients
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x = torch.randn(5, 3)
        >>> attr, delta = integrated_gradients(net, x, target=1, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-4)
        (torch.Size([5, 3]), True)
        >>> res = integrated_gradients(net, x, target=1, n_steps="auto", tol=1e-3)
        >>> bool((res.error <= 1e-3 * (res.f_input - res.f_baseline).abs()).all())
        True
    """
    refuse_transforms("kexue.attribution.integrated_gradients")
    check_steps(n_steps, method, tol, max_steps)
    is_tuple = isinstance(inputs, tuple)
    xs = as_tuple(inputs, "inputs")
    B = check_inputs(xs)
    bs = format_baselines(baselines, xs)
    targets = format_targets(target, B)
    args = additional_forward_args
    args = () if args is None else (args if isinstance(args, tuple) else (args,))
    for j, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] != B:
            raise ValueError(f"additional_forward_args[{j}] has shape {tuple(a.shape)}: tensors there are per "
                             f"example (first dimension {B}) or 0-d; pass others through a closure")
    device = xs[0].device
    evaluate = make_integrand(forward, xs, bs, targets, args, B)
    rows = rows_per_forward(internal_batch_size, max_memory, lambda m: rows_for_memory(evaluate, device, m))
    shapes = [x.shape[1:] for x in xs]
    dtypes = [x.dtype for x in xs]

    def pack(ts):
        return tuple(ts) if is_tuple else ts[0]

    if method in GRADIENT_METHODS:
        if return_convergence_delta or n_steps == "auto":
            raise ValueError(f"method={method!r} has no convergence delta and no steps: use return_convergence_delta="
                             "False and an int n_steps")
        g = integrate_fixed(evaluate, shapes, dtypes, B, torch.ones(1, dtype=torch.float64),
                            torch.ones(1, dtype=torch.float64), rows, device)
        attr = tuple(gi.to(x.dtype) * (x if method == "gradient_x_input" else 1) for gi, x in zip(g, xs, strict=True))
        return pack(attr)

    if n_steps == "auto":
        tol_t = torch.as_tensor(tol, dtype=torch.float64).cpu().expand(B)
        diffs = lambda ex: tuple(x[ex] - b[ex] for x, b in zip(xs, bs, strict=True))  # noqa: E731
        st: AutoState = integrate_auto(evaluate, shapes, B, diffs, tol_t, max_level_for(max_steps), 1, rows, device)
        attr64 = tuple(i * (x - b).to(torch.float64) for i, x, b in zip(st.integrals, xs, bs, strict=True))
        prev64 = tuple(i * (x - b).to(torch.float64) for i, x, b in zip(st.previous, xs, bs, strict=True))
        total = sum(a.flatten(1).sum(1) for a in attr64).cpu()
        delta = total - (st.f_input - st.f_baseline)
        est = torch.stack([(a - p).abs().flatten(1).amax(1).cpu() if a[0].numel() else torch.zeros(B, dtype=a.dtype)
                           for a, p in zip(attr64, prev64, strict=True)]).amax(0)
        attr = tuple(a.to(x.dtype) for a, x in zip(attr64, xs, strict=True))
        return IGResult(pack(attr), st.steps, delta, delta.abs(), est, st.f_input, st.f_baseline, st.converged)

    alphas, weights = rule(method, n_steps)
    total = integrate_fixed(evaluate, shapes, dtypes, B, alphas, weights, rows, device)
    attr = tuple((t * (x - b)).to(x.dtype) for t, x, b in zip(total, xs, bs, strict=True))
    if not return_convergence_delta:
        return pack(attr)
    f_x = _forward_values(forward, xs, args, targets)
    f_b = _forward_values(forward, bs, args, targets)
    s = sum(a.flatten(1).sum(1) for a in attr)
    delta = s.to(f_x.dtype) - (f_x - f_b)
    return pack(attr), delta.detach()
