"""kexue.vae: the variational autoencoder seen geometrically.

A plain autoencoder maps each input to a point; a VAE maps it to a ball ``N(μ, diag σ²)`` and decodes
a random point of the ball.  The KL term ``½ Σ (μ² + σ² − 1 − log σ²)`` keeps each ball from shrinking
to a point (``−log σ²``) and pulls all balls toward the origin (``μ²``), so the balls cover a compact
region densely and decoding points between codes, or drawn from the prior, gives plausible data.

Conventions: nats per example, summed over pixels and latent units (pytorch/examples' convention);
batches are averaged.  See :mod:`kexue.vae.functional`.

Example::

    >>> import torch
    >>> from kexue import vae
    >>> model = vae.mlp_vae(latent_dim=2)
    >>> x = torch.rand(256, 1, 28, 28).round()
    >>> history = vae.fit(model, x, epochs=1, progress=False)
    >>> vae.iw_log_likelihood(model, x[:4], k=50).shape
    torch.Size([4])
"""

from .functional import elbo, gaussian_kl, reconstruction_log_likelihood, reparameterize
from .metrics import active_units, iw_log_likelihood, latent_activity
from .models import AE, VAE, VAEOutput, conv_ae, conv_networks, conv_vae, mlp_ae, mlp_networks, mlp_vae
from .training import fit

__all__ = [
    "AE",
    "VAE",
    "VAEOutput",
    "active_units",
    "conv_ae",
    "conv_networks",
    "conv_vae",
    "elbo",
    "fit",
    "gaussian_kl",
    "iw_log_likelihood",
    "latent_activity",
    "mlp_ae",
    "mlp_networks",
    "mlp_vae",
    "reconstruction_log_likelihood",
    "reparameterize",
]
