"""Evaluation of a trained VAE: the importance-weighted log-likelihood and the active units."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch

from .._validate import is_int, is_real
from .functional import LOG_2PI, reconstruction_log_likelihood
from .models import VAE


def _check_model(model: object, what: str, *, stochastic: bool = True) -> None:
    if not isinstance(model, VAE):
        raise TypeError(f"{what} needs a kexue.vae.VAE, got {type(model).__name__}")
    if stochastic and not model.stochastic:
        raise TypeError(f"{what} needs a VAE: an AE (sigma = 0) has no q(z|x) density")


def iter_batches(data: torch.Tensor | Iterable, batch_size: int) -> Iterator[torch.Tensor]:
    """The input batches of ``data``: a tensor (split along axis 0) or an iterable of tensors / (x, ...) tuples."""
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise ValueError(f"data must hold at least one example, got shape {tuple(data.shape)}")
        yield from data.split(batch_size)
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


@torch.no_grad()
def iw_log_likelihood(model: VAE, x: torch.Tensor, k: int = 100, *, chunk: int = 4096,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The importance-weighted estimate of ``log p(x)`` per example, in nats (Burda et al. 2016).

    .. math::  \mathcal L_k(x) = \log \frac1k \sum_{i=1}^{k} \frac{p(x \mid z_i)\, p(z_i)}{q(z_i \mid x)},
               \qquad z_i \sim q(z \mid x)

    ``E[L_1]`` is the ELBO, ``E[L_k] ≤ E[L_{k+1}] ≤ log p(x)``, and ``L_k → log p(x)`` as k grows; the
    negative is the "IW-NLL" that papers report (k = 5000 in Burda et al.).  Runs under ``no_grad``.
    ``chunk`` bounds how many decoder inputs (samples × examples) one pass holds.  Returns shape (B,).

    Example::

        >>> from kexue.vae import mlp_vae
        >>> model = mlp_vae(latent_dim=2)
        >>> iw_log_likelihood(model, torch.rand(3, 1, 28, 28).round(), k=10).shape
        torch.Size([3])
    """
    _check_model(model, "iw_log_likelihood")
    if not is_int(k) or k < 1:
        raise ValueError(f"k must be an int >= 1 (the number of importance samples), got {k!r}")
    if not is_int(chunk) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    k, chunk = int(k), int(chunk)
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError("x must be a tensor (B, *event) with B >= 1")
    mu, logvar = model.encode(x)
    b = x.shape[0]
    per_pass = max(1, chunk // b)
    log_w = []
    for start in range(0, k, per_pass):
        s = min(per_pass, k - start)
        eps = torch.randn((s, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps  # (s, B, d)
        recon = model.decode(z.reshape(s * b, -1))
        xs = x.unsqueeze(0).expand(s, *x.shape).reshape(s * b, *x.shape[1:])
        ll = reconstruction_log_likelihood(recon, xs, likelihood=model.likelihood,
                                           obs_logvar=model.obs_logvar).reshape(s, b)
        log_pz = -0.5 * (z.square() + LOG_2PI).sum(-1)
        log_w.append(ll + log_pz - _log_normal(z, mu, logvar))
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)


@torch.no_grad()
def latent_activity(model: VAE, data: torch.Tensor | Iterable, *, batch_size: int = 1024) -> torch.Tensor:
    r"""``A_u = Cov_x(E_q[z_u | x])`` for each latent unit u (Burda et al. 2016): the variance over the data of μ_u(x).

    Sample variance (denominator N − 1), shape (d,), float64."""
    _check_model(model, "latent_activity", stochastic=False)
    mus = torch.cat([model.encode(batch)[0].double() for batch in iter_batches(data, batch_size)])
    if mus.shape[0] < 2:
        raise ValueError("latent_activity needs at least 2 examples")
    return mus.var(dim=0, correction=1)


def active_units(model: VAE, data: torch.Tensor | Iterable, threshold: float = 1e-2, *,
                 batch_size: int = 1024) -> int:
    """The number of active latent units: those with ``Cov_x(E_q[z_u | x]) > threshold`` (Burda et al.: 1e-2).

    Example::

        >>> from kexue.vae import mlp_vae
        >>> active_units(mlp_vae(latent_dim=5), torch.rand(64, 1, 28, 28)) <= 5
        True
    """
    if not is_real(threshold) or not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return int((latent_activity(model, data, batch_size=batch_size) > threshold).sum())
