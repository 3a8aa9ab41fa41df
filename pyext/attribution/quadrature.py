"""Quadrature rules on [0, 1] for the path integral of integrated gradients.

* Captum's rules (``riemann_left|right|middle|trapezoid``, ``gausslegendre``): the same points
  and weights as Captum 0.9 (``captum/attr/_utils/approximation_methods.py``), in float64.
  Captum itself rounds the weights to float32 (``torch.tensor(step_sizes).float()``) and builds
  the Riemann points with ``torch.linspace`` in the default dtype; kexue keeps both in float64,
  so in float64 the two differ by that rounding only (relative 2⁻²⁴ per weight).
  ``riemann_trapezoid``'s weights sum to (n−1)/n, as Captum's do (each weight is 1/n, both
  ends halved), so it is not the textbook trapezoid rule.
* Nested rules for ``n_steps="auto"``: Romberg integration.  Level k evaluates the 2ᵏ + 1
  equally spaced points j/2ᵏ (both ends included, so F(x') and F(x) come free with the
  gradients); the points of level k are all points of level k + 1, so refining one level costs
  only the 2ᵏ⁻¹ new points.  The trapezoid sums T_k = T_{k−1}/2 + 2⁻ᵏ Σ_new g are extrapolated,
  R_{k,m} = R_{k,m−1} + (R_{k,m−1} − R_{k−1,m−1})/(4ᵐ − 1), so a level keeps only one row of
  the table (k + 1 sums of the size of the input), never the gradients of every point.  R_{k,k}
  integrates polynomials of degree 2k + 1 exactly, and its error falls as h^{2k+2} for smooth
  integrands (Euler–Maclaurin); |R_{k,k} − R_{k−1,k−1}| estimates the error of R_{k−1,k−1} and
  is the usual (conservative) error estimate of R_{k,k}.
"""

from __future__ import annotations

import numpy as np
import torch

RIEMANN_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
METHODS = (*RIEMANN_METHODS, "gausslegendre")


def rule(method: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(alphas, weights), float64 tensors of length ``n``, of one of Captum's methods."""
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return torch.from_numpy(0.5 * (1 + x)), torch.from_numpy(0.5 * w)
    if method not in RIEMANN_METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if n < 2:
        raise ValueError(f"n_steps must be at least 2 for the Riemann methods (as in Captum), got {n}")
    k = torch.arange(n, dtype=torch.float64)
    alphas = {"riemann_left": k / n, "riemann_right": (k + 1) / n, "riemann_middle": (k + 0.5) / n,
              "riemann_trapezoid": k / (n - 1)}[method]
    weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
    return alphas, weights


def level_points(level: int) -> torch.Tensor:
    """The 2^level + 1 equally spaced points j / 2^level of Romberg level ``level`` (float64)."""
    return torch.arange(2**level + 1, dtype=torch.float64) / 2**level


def new_point_indices(level: int) -> torch.Tensor:
    """Indices, among level ``level``'s points, of those not already in level − 1 (all at level 0)."""
    n = 2**level
    if level == 0:
        return torch.arange(n + 1)
    return torch.arange(1, n, 2)


def romberg_row(prev_row: list[torch.Tensor], trapezoid: torch.Tensor) -> list[torch.Tensor]:
    """Row k of the Romberg table from row k − 1 and the trapezoid sum T_k (any tensors)."""
    row = [trapezoid]
    for m, prev in enumerate(prev_row, start=1):
        row.append(row[-1] + (row[-1] - prev) / (4**m - 1))
    return row


def romberg_weights(level: int) -> torch.Tensor:
    """The weights that R_{level,level} gives to :func:`level_points` (float64; for tests and
    documentation: the engine never forms them)."""
    row: list[torch.Tensor] = []
    for k in range(level + 1):
        n = 2**k
        t = torch.zeros(2**level + 1, dtype=torch.float64)
        stride = 2 ** (level - k)
        t[::stride] = 1.0 / n
        t[0] = t[-1] = 0.5 / n
        row = romberg_row(row, t)
    return row[-1]
