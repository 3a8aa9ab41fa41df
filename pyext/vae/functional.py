"""The VAE's losses as functions: Gaussian KL, reparameterisation, reconstruction log-likelihood, ELBO.

Conventions (the same for every function here):

* ``mu`` and ``logvar`` have shape ``(*batch, d)``: the last axis is the latent, every other axis
  indexes examples.  ``x`` and the decoder output have shape ``(*batch, *event)``.
* Everything is in **nats per example**: sums over the latent axis and over the pixels (event axes).
  This is the convention of pytorch/examples ``vae/main.py`` (BCE and KLD summed) and of the papers
  that report log-likelihoods (Kingma & Welling 2014, Burda et al. 2016), so an ELBO here is a bound on
  ``log p(x)`` of one example and β = 1 is the true ELBO.  A batch is then averaged (``reduction="mean"``,
  or ``-elbo(...).mean()`` as the training loss), which only rescales the step size.  Averaging over
  pixels as well, as AntixK/PyTorch-VAE does (MSE with mean reduction + ``kld_weight`` · KL), silently
  multiplies β by the number of pixels (784 on MNIST); kexue does not do that.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from .._validate import is_int, is_real

Reduction = Literal["sum", "mean", "none"]
Likelihood = Literal["bernoulli", "gaussian"]
REDUCTIONS = ("sum", "mean", "none")
LIKELIHOODS = ("bernoulli", "gaussian")
LOG_2PI = math.log(2 * math.pi)


def _check_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _tracing(*tensors: torch.Tensor) -> bool:
    """True under torch.compile / torch.func transforms: the value checks (finite, in range), which
    read tensor data, are skipped there so the graph has no break; shapes and dtypes are still checked."""
    if torch.compiler.is_compiling():
        return True
    return any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def check_mu_logvar(mu: torch.Tensor, logvar: torch.Tensor) -> None:
    """Raise a clear error unless ``mu`` and ``logvar`` are finite floating tensors of one shape ``(*batch, d)``."""
    _check_tensor(mu, "mu")
    _check_tensor(logvar, "logvar")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got mu {tuple(mu.shape)} and logvar "
                         f"{tuple(logvar.shape)}")
    if mu.dim() == 0:
        raise ValueError("mu and logvar must have at least one axis (the latent axis, last)")
    if mu.dtype != logvar.dtype:
        raise TypeError(f"mu and logvar must have the same dtype, got {mu.dtype} and {logvar.dtype}")
    if _tracing(mu, logvar):
        return
    if not _all_finite(*_value_range(logvar)):
        raise ValueError("logvar has non-finite values (inf or nan): a variance of 0 or inf is not a Gaussian; "
                         "for sigma = 0 use kexue.vae.AE")
    if not _all_finite(*_value_range(mu)):
        raise ValueError("mu has non-finite values (inf or nan)")


def _value_range(t: torch.Tensor) -> tuple[float, float]:
    """(min, max) of ``t``'s values in one pass and one device sync, for the value checks (a nan
    anywhere makes both nan; an empty tensor gives (0, 0)).  Three separate reductions (isfinite,
    < 0, > 1) took a third of an ELBO's time at B = 4096."""
    if t.numel() == 0:
        return 0.0, 0.0
    lo, hi = torch.stack(torch.aminmax(t.detach())).tolist()
    return lo, hi


def _all_finite(lo: float, hi: float) -> bool:
    return math.isfinite(lo) and math.isfinite(hi)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_example
    return per_example.sum() if reduction == "sum" else per_example.mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, *, reduction: Reduction = "sum",
                free_bits: float = 0.0) -> torch.Tensor:
    r"""KL( N(mu, diag exp(logvar)) || N(0, I) ) in nats, the VAE's regulariser.

    .. math::  \mathrm{KL}_i = \tfrac12 \sum_{j=1}^{d} \big(\mu_{ij}^2 + \sigma_{ij}^2 - 1 - \log\sigma_{ij}^2\big)

    Geometrically: ``mu²`` pulls every example's ball toward the origin, ``σ² − 1 − log σ²`` (≥ 0,
    zero at σ = 1) keeps it from shrinking to a point.  Equal to ``torch.distributions.kl_divergence``
    of ``Independent(Normal(mu, σ), 1)`` and ``Independent(Normal(0, 1), 1)`` (to float64 rounding).

    Args:
        mu, logvar: ``(*batch, d)``, finite, same shape and dtype.
        reduction: ``"none"``: one value per example, shape ``(*batch)``; ``"sum"``: summed over the
            examples; ``"mean"``: averaged over the examples (never over the latent axis).
        free_bits: λ ≥ 0, "free bits" (Kingma et al. 2016), applied per example and latent unit: each
            term ``KL_ij`` becomes ``max(KL_ij, λ)`` (no gradient pushes a unit below λ nats).  The
            paper clamps the minibatch mean of each group instead, ``Σ_j max(λ, mean_i KL_ij)``; the
            per-example form is stricter (an example's unit under λ gets no KL gradient even when the
            batch mean is above λ) and does not depend on the batch.

    Example::

        >>> mu, logvar = torch.zeros(4, 2), torch.zeros(4, 2)
        >>> gaussian_kl(mu, logvar, reduction="none")
        tensor([0., 0., 0., 0.])
    """
    check_mu_logvar(mu, logvar)
    _check_reduction(reduction)
    if not is_real(free_bits) or not math.isfinite(free_bits) or free_bits < 0:
        raise ValueError(f"free_bits must be a finite number >= 0, got {free_bits!r}")
    return _reduce(_kl_per_example(mu, logvar, free_bits), reduction)


def _kl_per_example(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float = 0.0) -> torch.Tensor:
    """gaussian_kl(reduction="none") on checked arguments."""
    per_unit = 0.5 * (mu.square() + torch.expm1(logvar) - logvar)  # expm1: exp(l) - 1 - l without cancellation
    if free_bits > 0:
        per_unit = per_unit.clamp(min=free_bits)
    return per_unit.sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    r"""A differentiable draw ``z = mu + exp(logvar / 2) · ε``, ε ~ N(0, I): a random point of the example's ball.

    Example::

        >>> z = reparameterize(torch.zeros(3, 2), torch.zeros(3, 2), generator=torch.Generator().manual_seed(0))
        >>> z.shape
        torch.Size([3, 2])
    """
    check_mu_logvar(mu, logvar)
    if generator is None:
        eps = torch.randn_like(mu, memory_format=torch.contiguous_format)  # traceable with symbolic shapes
    else:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def _check_likelihood(likelihood: str) -> None:
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def reconstruction_log_likelihood(recon: torch.Tensor, x: torch.Tensor, *, likelihood: Likelihood = "bernoulli",
                                  batch_dims: int = 1, obs_logvar: float = 0.0) -> torch.Tensor:
    r"""log p(x | z) in nats, summed over the event axes (all but the first ``batch_dims`` axes).

    * ``"bernoulli"``: ``recon`` holds logits ℓ; ``Σ x·log σ(ℓ) + (1 − x)·log(1 − σ(ℓ))`` (= −BCE-with-logits,
      summed). ``x`` must lie in [0, 1]; it is a normalised likelihood only for binary ``x``.
    * ``"gaussian"``: ``recon`` holds the mean m; ``−½ Σ ((x − m)² / s² + log s² + log 2π)`` with
      ``log s² = obs_logvar`` (a fixed observation variance, default 1).
    """
    _check_tensor(recon, "recon")
    _check_tensor(x, "x")
    _check_likelihood(likelihood)
    if recon.shape != x.shape:
        raise ValueError(f"the decoder output and x must have the same shape, got {tuple(recon.shape)} and "
                         f"{tuple(x.shape)}")
    if not is_int(batch_dims) or batch_dims < 0:
        raise ValueError(f"batch_dims must be an int >= 0, got {batch_dims!r}")
    batch_dims = int(batch_dims)
    if x.dim() < batch_dims:
        raise ValueError(f"x has {x.dim()} axes, fewer than its {batch_dims} batch axes")
    lo, hi = (0.0, 0.0) if _tracing(x) else _value_range(x)
    if not _all_finite(lo, hi):
        raise ValueError("x has non-finite values (inf or nan)")
    event = tuple(range(batch_dims, x.dim()))
    if likelihood == "bernoulli":
        if lo < 0 or hi > 1:
            raise ValueError("x must lie in [0, 1] for the bernoulli likelihood (scale the pixels, e.g. x / 255)")
        ll = -F.binary_cross_entropy_with_logits(recon, x, reduction="none")
    else:
        if not math.isfinite(obs_logvar):
            raise ValueError(f"obs_logvar must be finite, got {obs_logvar!r}")
        ll = -0.5 * ((x - recon).square() * math.exp(-obs_logvar) + obs_logvar + LOG_2PI)
    return ll.sum(event) if event else ll


def elbo(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *,
         likelihood: Likelihood = "bernoulli", beta: float = 1.0, obs_logvar: float = 0.0) -> torch.Tensor:
    r"""The evidence lower bound of each example, in nats: ``log p(x | z) − β · KL(q(z | x) || N(0, I))``.

    .. math::  \mathrm{ELBO}_i = \sum_{\text{pixels}} \log p(x_i \mid z_i) - \beta\,\tfrac12 \sum_j
               (\mu_{ij}^2 + \sigma_{ij}^2 - 1 - \log\sigma_{ij}^2), \qquad z_i = \mu_i + \sigma_i \epsilon_i

    ``recon`` is the decoder's output at a reparameterised draw ``z`` (logits for ``"bernoulli"``, means
    for ``"gaussian"``), of ``x``'s shape ``(*batch, *event)``; ``mu``/``logvar`` are ``(*batch, d)``.
    Returns shape ``(*batch)``: per example, summed over pixels and latent units, never averaged
    (see the module docstring for why); a training loss is ``-elbo(...).mean()``.  At β = 1 it is a
    single-sample unbiased estimate of a lower bound on ``log p(x)``.

    Example::

        >>> x = torch.rand(8, 784).round()
        >>> mu, logvar = torch.zeros(8, 20), torch.zeros(8, 20)
        >>> elbo(torch.zeros(8, 784), x, mu, logvar).shape  # logits 0: p = 1/2 per pixel
        torch.Size([8])
    """
    check_mu_logvar(mu, logvar)
    if not is_real(beta) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    batch_dims = mu.dim() - 1
    _check_tensor(x, "x")
    if tuple(x.shape[:batch_dims]) != tuple(mu.shape[:-1]):
        raise ValueError(f"x's batch axes {tuple(x.shape[:batch_dims])} differ from mu's {tuple(mu.shape[:-1])}")
    ll = reconstruction_log_likelihood(recon, x, likelihood=likelihood, batch_dims=batch_dims, obs_logvar=obs_logvar)
    return ll - beta * _kl_per_example(mu, logvar)  # mu, logvar checked above
