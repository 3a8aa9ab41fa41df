"""Benchmark cases of kexue.vae for `python -m kexue bench`: the ELBO against torch.distributions.

"torch" (the reference): ``Independent(Bernoulli(logits), 1).log_prob(x) - kl_divergence(Independent(Normal), ...)``
after ``Normal.rsample``; "kexue": ``reparameterize`` + ``elbo`` (closed-form KL, BCE-with-logits).
Shapes: the MLP-VAE's, batch B, 784 pixels, d latent units; float32; forward and forward+backward.
"""

from __future__ import annotations

import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from ..benchmarking import BenchCase
from .functional import elbo, reparameterize


def _torch_elbo(logits_of, x, mu, logvar):
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    z = q.rsample()
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    return Independent(Bernoulli(logits=logits_of(z)), 1).log_prob(x) - kl_divergence(q, p)


def _kexue_elbo(logits_of, x, mu, logvar):
    return elbo(logits_of(reparameterize(mu, logvar)), x, mu, logvar)


def _setup(fn, B: int, D: int, d: int, device, mode: str):
    def setup():
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(B, D, generator=g, device=device).round()
        mu = torch.randn(B, d, generator=g, device=device, requires_grad=mode != "fwd")
        logvar = torch.randn(B, d, generator=g, device=device, requires_grad=mode != "fwd")
        w = torch.randn(d, D, generator=g, device=device) / d ** 0.5

        def logits_of(z):
            return z @ w

        def fwd():
            with torch.no_grad():
                return fn(logits_of, x, mu, logvar)

        def fwd_bwd():
            return torch.autograd.grad(fn(logits_of, x, mu, logvar).mean(), (mu, logvar))

        return fwd if mode == "fwd" else fwd_bwd

    return setup


def cases(device: torch.device, quick: bool = False) -> list[BenchCase]:
    grid = [(64, 784, 20)] if quick else [(128, 784, 20), (4096, 784, 64)]
    out = []
    for B, D, d in grid:
        for mode in ("fwd", "fwd+bwd"):
            providers = {"torch": _setup(_torch_elbo, B, D, d, device, mode),
                         "kexue": _setup(_kexue_elbo, B, D, d, device, mode)}
            out.append(BenchCase("vae_elbo", f"B{B} D{D} d{d} float32", mode, providers,
                                 input_bytes=4 * (B * D + 2 * B * d + d * D), output_bytes=4 * B))
    return out
