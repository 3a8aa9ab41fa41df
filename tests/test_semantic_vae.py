"""Valid inputs, right answers: the kexue.vae helpers against torch.distributions and formulas written
here: gaussian_kl == kl_divergence(Independent(Normal(μ, σ), 1), Independent(Normal(0, 1), 1));
reconstruction_log_likelihood == Bernoulli(logits).log_prob / Normal(m, s).log_prob summed over the
event axes; elbo == that minus β·KL; iw_log_likelihood (Burda et al. 2016) == a naive logsumexp loop
over the same k draws, and == the exact log p(x) of a linear-Gaussian model whose q is the true
posterior (every importance weight is then p(x), for any k, chunk and draw); active_units ==
#{u : sample variance over x of μ_u(x) > 0.01}; reparameterize == μ + σ·ε with the generator's ε.

Found clean (2026-12-06); kept as a compact regression check.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from kexue import vae

D64 = torch.float64


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (2, 4, 7), (3,)])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_gaussian_kl_is_torch_distributions_kl(shape, reduction):
    mu = torch.randn(*shape, dtype=D64) * 2
    logvar = torch.randn(*shape, dtype=D64) * 3  # σ from e^-4.5 to e^4.5
    ref = kl_divergence(Independent(Normal(mu, torch.exp(0.5 * logvar)), 1),
                        Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1))
    ref = {"none": ref, "sum": ref.sum(), "mean": ref.mean()}[reduction]
    got = vae.gaussian_kl(mu, logvar, reduction=reduction)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # gradients too
    m, lv = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    g = torch.autograd.grad(vae.gaussian_kl(m, lv, reduction="sum"), (m, lv))
    g_ref = torch.autograd.grad(kl_divergence(Normal(m, torch.exp(0.5 * lv)), Normal(0.0, 1.0)).sum(), (m, lv))
    for a, r in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_gaussian_kl_free_bits_clamps_each_example_and_unit():
    """The documented convention: max(KL_ij, λ) per example i and unit j, then the sum over j.
    (Kingma et al. 2016 clamp the minibatch mean of each group's KL instead; see the docstring.)"""
    mu, logvar = torch.randn(6, 4, dtype=D64) * 0.3, torch.randn(6, 4, dtype=D64) * 0.3
    per = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(vae.gaussian_kl(mu, logvar, reduction="none", free_bits=0.05),
                               per.clamp(min=0.05).sum(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_dims", [0, 1, 2])
def test_reconstruction_log_likelihood_is_distributions_log_prob(batch_dims):
    x_shape = (3, 2, 4, 5)
    logits = torch.randn(x_shape, dtype=D64) * 4
    xb = torch.rand(x_shape, dtype=D64).round()
    event = len(x_shape) - batch_dims
    ref = Independent(Bernoulli(logits=logits), event).log_prob(xb)
    got = vae.reconstruction_log_likelihood(logits, xb, likelihood="bernoulli", batch_dims=batch_dims)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-10)
    m, x = torch.randn(x_shape, dtype=D64), torch.randn(x_shape, dtype=D64)
    for obs_logvar in (0.0, -1.3, 2.0):
        ref = Independent(Normal(m, math.exp(0.5 * obs_logvar)), event).log_prob(x)
        got = vae.reconstruction_log_likelihood(m, x, likelihood="gaussian", batch_dims=batch_dims,
                                                obs_logvar=obs_logvar)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_elbo_is_log_likelihood_minus_beta_kl(likelihood):
    x = torch.rand(4, 1, 3, 3, dtype=D64).round()
    recon = torch.randn(4, 1, 3, 3, dtype=D64)
    mu, logvar = torch.randn(4, 2, dtype=D64), torch.randn(4, 2, dtype=D64)
    dist = (Bernoulli(logits=recon) if likelihood == "bernoulli" else Normal(recon, math.exp(0.5 * 0.7)))
    ll = Independent(dist, 3).log_prob(x)
    kl = kl_divergence(Independent(Normal(mu, torch.exp(0.5 * logvar)), 1),
                       Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1))
    for beta in (0.0, 1.0, 4.0):
        got = vae.elbo(recon, x, mu, logvar, likelihood=likelihood, beta=beta, obs_logvar=0.7)
        torch.testing.assert_close(got, ll - beta * kl, rtol=1e-12, atol=1e-10)


def test_reparameterize_is_mu_plus_sigma_eps():
    mu, logvar = torch.randn(5, 3, dtype=D64), torch.randn(5, 3, dtype=D64)
    eps = torch.randn(5, 3, dtype=D64, generator=torch.Generator().manual_seed(7))
    got = vae.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, mu + torch.exp(logvar) ** 0.5 * eps, rtol=1e-12, atol=1e-12)


class _Flat(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.flatten(1))


def test_iw_log_likelihood_is_the_naive_loop_over_the_same_draws():
    torch.manual_seed(0)
    d, P, B, k = 3, 12, 4, 37
    model = vae.VAE(_Flat(nn.Linear(P, 2 * d)), nn.Sequential(nn.Linear(d, P), nn.Unflatten(1, (1, P)))).double()
    x = torch.rand(B, 1, P, dtype=D64).round()
    got = vae.iw_log_likelihood(model, x, k=k, chunk=10_000, generator=torch.Generator().manual_seed(3))
    eps = torch.randn((k, B, d), generator=torch.Generator().manual_seed(3), dtype=D64)  # the same draws
    with torch.no_grad():
        mu, logvar = model.encoder(x).chunk(2, -1)
        sigma = torch.exp(0.5 * logvar)
        ref = []
        for b in range(B):
            logw = []
            for i in range(k):
                z = mu[b] + sigma[b] * eps[i, b]
                log_px_z = Bernoulli(logits=model.decoder(z[None])[0]).log_prob(x[b]).sum()
                log_pz = Normal(0.0, 1.0).log_prob(z).sum()
                log_qz = Normal(mu[b], sigma[b]).log_prob(z).sum()
                logw.append(float(log_px_z + log_pz - log_qz))
            top = max(logw)
            ref.append(top + math.log(sum(math.exp(w - top) for w in logw) / k))
    torch.testing.assert_close(got, torch.tensor(ref, dtype=D64), rtol=1e-10, atol=1e-10)


class _ExactPosterior(nn.Module):
    """q(z|x) = p(z|x) of x = W z + b + s·n with orthogonal columns of W (a diagonal posterior)."""

    def __init__(self, W, b, s2):
        super().__init__()
        self.W, self.b, self.s2 = W, b, s2

    def forward(self, x):
        prec = 1 + (self.W ** 2).sum(0) / self.s2  # (d,)
        mu = ((x.flatten(1) - self.b) @ self.W) / self.s2 / prec
        return mu, (-torch.log(prec)).expand_as(mu)


@pytest.mark.parametrize("k,chunk", [(1, 4096), (7, 3), (64, 5)])
def test_iw_log_likelihood_is_exact_when_q_is_the_posterior(k, chunk):
    """Every importance weight is p(x) when q is the true posterior: the estimate equals the exact
    log N(x; b, s²I + W Wᵀ) for any k, chunk and draw."""
    torch.manual_seed(1)
    D, d, B, log_s2 = 6, 2, 5, -0.4
    W = torch.linalg.qr(torch.randn(D, d, dtype=D64))[0] * torch.tensor([2.0, 0.5], dtype=D64)
    b = torch.randn(D, dtype=D64)
    dec = nn.Linear(d, D).double()
    with torch.no_grad():
        dec.weight.copy_(W)
        dec.bias.copy_(b)
    model = vae.VAE(_ExactPosterior(W, b, math.exp(log_s2)), dec, likelihood="gaussian", obs_logvar=log_s2)
    x = torch.randn(B, D, dtype=D64) * 2
    exact = torch.distributions.MultivariateNormal(b, math.exp(log_s2) * torch.eye(D, dtype=D64) + W @ W.T).log_prob(x)
    got = vae.iw_log_likelihood(model, x, k=k, chunk=chunk)
    torch.testing.assert_close(got, exact, rtol=1e-10, atol=1e-10)


def test_active_units_counts_variance_of_the_mean_above_threshold():
    """Burda et al. 2016: unit u is active when Cov_x(E_q[z_u|x]) > 0.01 (sample variance here)."""
    scales = torch.tensor([0.0, 0.05, 0.099, 0.102, 1.0, 3.0], dtype=D64)

    class Enc(nn.Module):
        def forward(self, x):
            mu = x.flatten(1)[:, :6] * scales
            return mu, torch.zeros_like(mu)

    x = torch.randn(500, 8, dtype=D64)
    x = (x - x.mean(0)) / x.std(0)  # each column: sample variance exactly 1, so Var(μ_u) = scales_u²
    model = vae.VAE(Enc(), nn.Linear(6, 8).double())
    activity = vae.latent_activity(model, x, batch_size=64)
    torch.testing.assert_close(activity, scales ** 2, rtol=1e-10, atol=1e-12)
    assert vae.active_units(model, x, batch_size=37) == 3  # 0.102², 1, 9 > 0.01 ≥ 0.099²
    assert vae.active_units(model, x, threshold=0.0) == 5
