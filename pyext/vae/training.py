"""A short training loop for :class:`kexue.vae.VAE` and :class:`kexue.vae.AE` (Adam, progress bar)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .._validate import is_int, is_real
from .metrics import iter_batches
from .models import VAE


def fit(model: VAE, data: torch.Tensor | Iterable, epochs: int, *, batch_size: int = 128, lr: float = 1e-3,
        beta: float = 1.0, seed: int = 0, optimizer: torch.optim.Optimizer | None = None,
        progress: bool = True) -> list[float]:
    """Train ``model`` for ``epochs`` passes over ``data``; returns each epoch's mean training loss (nats/example).

    ``data``: a tensor (N, *event) (shuffled each epoch by a generator seeded ``seed``; the same
    generator draws the reparameterisation noise, so a run is reproducible) or an iterable of batches
    (a DataLoader: its own order).  The loss is ``model.loss`` (−ELBO with weight ``beta`` on the KL
    for a VAE, −log p(x | μ) for an AE).  Adam with learning rate ``lr`` unless ``optimizer`` is given.

    Example::

        >>> from kexue.vae import mlp_vae
        >>> model = mlp_vae(latent_dim=2)
        >>> history = fit(model, torch.rand(256, 1, 28, 28).round(), epochs=2, progress=False)
        >>> len(history)
        2
    """
    if not isinstance(model, VAE):
        raise TypeError(f"fit needs a kexue.vae.VAE or AE, got {type(model).__name__}")
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not is_real(lr) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not is_real(beta) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if isinstance(data, torch.Tensor) and (data.dim() == 0 or data.shape[0] == 0):
        raise ValueError(f"data must hold at least one example, got shape {tuple(data.shape)}")
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=lr)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=epochs, desc=type(model).__name__, unit="epoch")
        except ImportError:  # pragma: no cover - tqdm is optional
            bar = None
    history = []
    model.train()
    for _ in range(epochs):
        source = data[torch.randperm(data.shape[0], generator=gen)] if isinstance(data, torch.Tensor) else data
        total, count = 0.0, 0
        for x in iter_batches(source, batch_size):
            loss = model.loss(x, beta=beta, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * x.shape[0]
            count += x.shape[0]
        if count == 0:
            raise ValueError("data yielded no batches")
        history.append(total / count)
        if bar is not None:
            bar.set_postfix(loss=f"{history[-1]:.2f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    return history
