"""VAE and AE modules of one architecture, and ready MLP and convolutional builders.

A :class:`VAE` maps each input to a ball (mean μ, log-variance log σ²) and decodes a random point of
it; an :class:`AE` is the *same network* with σ fixed to 0 (it decodes μ itself) and no KL term.
The AE's encoder still has the 2d outputs (its log σ² half is unused), so an AE and a VAE built
with one seed start from identical weights.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .._validate import is_int
from .functional import LIKELIHOODS, Likelihood, elbo, reconstruction_log_likelihood, reparameterize


class VAEOutput(NamedTuple):
    recon: torch.Tensor  # the decoder output at z (logits or means), x's shape
    mu: torch.Tensor  # (B, d)
    logvar: torch.Tensor  # (B, d); -inf for an AE (sigma = 0)
    z: torch.Tensor  # (B, d): the decoded latent point


class VAE(nn.Module):
    """A variational autoencoder ``q(z|x) = N(μ(x), diag σ²(x))``, ``p(z) = N(0, I)``, ``p(x|z)`` = ``likelihood``.

    Args:
        encoder: maps x ``(B, *event)`` to ``(B, 2d)`` (μ then log σ²) or to a pair ``(μ, log σ²)``.
        decoder: maps z ``(B, d)`` to x's shape (logits for ``"bernoulli"``, means for ``"gaussian"``).
        likelihood: ``"bernoulli"`` (x in [0, 1]) or ``"gaussian"`` (fixed variance ``exp(obs_logvar)``).

    Example::

        >>> model = mlp_vae(latent_dim=2)
        >>> x = torch.rand(5, 1, 28, 28)
        >>> model.loss(x).shape, model.elbo(x).shape
        (torch.Size([]), torch.Size([5]))
    """

    stochastic = True

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, likelihood: Likelihood = "bernoulli",
                 obs_logvar: float = 0.0) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module):
            raise TypeError("encoder and decoder must be torch.nn.Module instances")
        self.encoder, self.decoder = encoder, decoder
        self.likelihood, self.obs_logvar = likelihood, float(obs_logvar)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²), each (B, d)."""
        out = self.encoder(x)
        if isinstance(out, (tuple, list)):
            mu, logvar = out
        else:
            if out.dim() != 2 or out.shape[-1] % 2:
                raise ValueError("the encoder must return (B, 2d) or a pair (mu, logvar), got shape "
                                 f"{tuple(out.shape)}")
            mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder output: logits (bernoulli) or means (gaussian)."""
        return self.decoder(z)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z]: sigmoid of the logits (bernoulli) or the mean (gaussian), for pictures and classifiers."""
        out = self.decode(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator=generator)
        return VAEOutput(self.decode(z), mu, logvar, z)

    def elbo(self, x: torch.Tensor, *, beta: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-example ELBO in nats (one reparameterised draw), shape (B,); see :func:`kexue.vae.elbo`."""
        out = self(x, generator=generator)
        return elbo(out.recon, x, out.mu, out.logvar, likelihood=self.likelihood, beta=beta,
                    obs_logvar=self.obs_logvar)

    def loss(self, x: torch.Tensor, *, beta: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training loss: ``-elbo`` averaged over the batch (nats per example)."""
        return -self.elbo(x, beta=beta, generator=generator).mean()


class AE(VAE):
    """The plain autoencoder: the VAE's network with σ = 0 (z = μ, log σ² reported as −inf) and no KL term.

    ``loss`` is ``−log p(x | μ(x))`` averaged over the batch; ``elbo`` raises (an AE bounds nothing).
    """

    stochastic = False

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, _ = super().encode(x)
        return mu, torch.full_like(mu, -math.inf)

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> VAEOutput:
        mu, logvar = self.encode(x)
        return VAEOutput(self.decode(mu), mu, logvar, mu)

    def elbo(self, x: torch.Tensor, *, beta: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        raise TypeError("an AE has no ELBO (sigma = 0 makes the KL infinite); use loss() for its reconstruction term")

    def loss(self, x: torch.Tensor, *, beta: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``−log p(x | z = μ(x))`` averaged over the batch; ``beta`` is ignored (there is no KL)."""
        out = self(x)
        return -reconstruction_log_likelihood(out.recon, x, likelihood=self.likelihood,
                                              obs_logvar=self.obs_logvar).mean()


# ------------------------------------------------------------------------------------------- builders
def _check_builder(latent_dim: int, image_shape: tuple[int, ...]) -> None:
    if not is_int(latent_dim) or latent_dim < 1:
        raise ValueError(f"latent_dim must be an int >= 1, got {latent_dim!r}")
    if not image_shape or any(not is_int(s) or s < 1 for s in image_shape):
        raise ValueError(f"image_shape must be a tuple of positive ints, got {image_shape!r}")


def mlp_networks(latent_dim: int, *, image_shape: tuple[int, ...] = (1, 28, 28),
                 hidden: tuple[int, ...] = (400,)) -> tuple[nn.Module, nn.Module]:
    """Encoder ``D → hidden… → 2d`` and decoder ``d → …hidden → D`` (ReLU), D = prod(image_shape).

    The default is pytorch/examples' MLP, 784-400-20 (there with d = 20)."""
    _check_builder(latent_dim, image_shape)
    if any(not is_int(h) or h < 1 for h in hidden):
        raise ValueError(f"hidden must hold positive ints, got {hidden!r}")
    n = math.prod(image_shape)
    enc: list[nn.Module] = [nn.Flatten()]
    width = n
    for h in hidden:
        enc += [nn.Linear(width, h), nn.ReLU()]
        width = h
    enc.append(nn.Linear(width, 2 * latent_dim))
    dec: list[nn.Module] = []
    width = latent_dim
    for h in reversed(hidden):
        dec += [nn.Linear(width, h), nn.ReLU()]
        width = h
    dec += [nn.Linear(width, n), nn.Unflatten(1, tuple(image_shape))]
    return nn.Sequential(*enc), nn.Sequential(*dec)


def conv_networks(latent_dim: int, *, image_shape: tuple[int, int, int] = (1, 28, 28),
                  channels: tuple[int, int] = (32, 64)) -> tuple[nn.Module, nn.Module]:
    """Encoder: two 4x4 stride-2 convolutions (ReLU) and a linear layer to 2d; decoder: the mirror image
    (linear, two 4x4 stride-2 transposed convolutions).  H and W must be multiples of 4."""
    _check_builder(latent_dim, image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W) for a conv model, got {image_shape!r}")
    c, h, w = image_shape
    if h % 4 or w % 4:
        raise ValueError(f"image_shape's H and W must be multiples of 4 for two stride-2 layers, got {h}x{w}")
    c1, c2 = channels
    flat = c2 * (h // 4) * (w // 4)
    encoder = nn.Sequential(nn.Conv2d(c, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),
                            nn.Flatten(), nn.Linear(flat, 2 * latent_dim))
    decoder = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU(), nn.Unflatten(1, (c2, h // 4, w // 4)),
                            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(c1, c, 4, 2, 1))
    return encoder, decoder


def mlp_vae(latent_dim: int = 20, *, image_shape: tuple[int, ...] = (1, 28, 28), hidden: tuple[int, ...] = (400,),
            likelihood: Likelihood = "bernoulli") -> VAE:
    """A :class:`VAE` on :func:`mlp_networks`."""
    return VAE(*mlp_networks(latent_dim, image_shape=image_shape, hidden=hidden), likelihood=likelihood)


def mlp_ae(latent_dim: int = 20, *, image_shape: tuple[int, ...] = (1, 28, 28), hidden: tuple[int, ...] = (400,),
           likelihood: Likelihood = "bernoulli") -> AE:
    """An :class:`AE` on the same :func:`mlp_networks` as :func:`mlp_vae`."""
    return AE(*mlp_networks(latent_dim, image_shape=image_shape, hidden=hidden), likelihood=likelihood)


def conv_vae(latent_dim: int = 20, *, image_shape: tuple[int, int, int] = (1, 28, 28),
             channels: tuple[int, int] = (32, 64), likelihood: Likelihood = "bernoulli") -> VAE:
    """A :class:`VAE` on :func:`conv_networks`."""
    return VAE(*conv_networks(latent_dim, image_shape=image_shape, channels=channels), likelihood=likelihood)


def conv_ae(latent_dim: int = 20, *, image_shape: tuple[int, int, int] = (1, 28, 28),
            channels: tuple[int, int] = (32, 64), likelihood: Likelihood = "bernoulli") -> AE:
    """An :class:`AE` on the same :func:`conv_networks` as :func:`conv_vae`."""
    return AE(*conv_networks(latent_dim, image_shape=image_shape, channels=channels), likelihood=likelihood)
