"""kexue.vae: KL, reparameterisation, ELBO, IW bound, AE = VAE at sigma = 0, active units, fit, bad input.

The IW tests use a linear-Gaussian VAE whose log p(x) is known in closed form:
p(z) = N(0, I), p(x | z) = N(Wz + b, s² I)  =>  p(x) = N(b, W Wᵀ + s² I).
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from kexue import vae
from kexue.vae import functional, metrics, models, training

SHAPES = [(1, 1), (5, 3), (2, 3, 7), (4, 20), (1, 129)]


def kl_reference(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    return kl_divergence(q, p)


# ------------------------------------------------------------------------------------------------ KL
@pytest.mark.parametrize("shape", SHAPES)
def test_kl_equals_torch_distributions(shape):
    mu, logvar = torch.randn(shape, dtype=torch.float64) * 2, torch.randn(shape, dtype=torch.float64) * 3
    ref = kl_reference(mu, logvar)
    out = vae.gaussian_kl(mu, logvar, reduction="none")
    assert out.shape == shape[:-1]
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(vae.gaussian_kl(mu, logvar), ref.sum(), rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(vae.gaussian_kl(mu, logvar, reduction="mean"), ref.mean(), rtol=1e-13, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=6), st.lists(st.floats(-8, 8), min_size=1, max_size=6))
def test_kl_property_nonnegative_and_exact(mus, logvars):
    n = min(len(mus), len(logvars))
    mu = torch.tensor(mus[:n], dtype=torch.float64)
    lv = torch.tensor(logvars[:n], dtype=torch.float64)
    out = vae.gaussian_kl(mu, lv, reduction="none")
    assert float(out) >= 0
    torch.testing.assert_close(out, kl_reference(mu, lv), rtol=1e-12, atol=1e-14)


def test_kl_float32_near_the_minimum():
    """At sigma ~ 1 the terms sigma^2 - 1 - log sigma^2 cancel; expm1 keeps float32 close to float64."""
    lv64 = torch.linspace(-1e-3, 1e-3, 101, dtype=torch.float64).unsqueeze(-1)
    mu64 = torch.zeros_like(lv64)
    ref = kl_reference(mu64, lv64)
    out = vae.gaussian_kl(mu64.float(), lv64.float(), reduction="none").double()
    naive = (0.5 * (lv64.float().exp() - 1 - lv64.float())).squeeze(-1).double()
    assert (out - ref).abs().max() <= 1e-3 * ref.abs().max()
    assert (out - ref).abs().max() < (naive - ref).abs().max()  # the plain formula is worse


def test_kl_free_bits():
    mu = torch.tensor([[0.0, 3.0]], dtype=torch.float64)
    lv = torch.zeros_like(mu, requires_grad=True)
    out = vae.gaussian_kl(mu, lv, reduction="none", free_bits=0.5)
    torch.testing.assert_close(out, torch.tensor([0.5 + 4.5], dtype=torch.float64))
    out.sum().backward()
    assert lv.grad.abs().sum() == 0  # unit 0 sits below lambda; unit 1's d/dlogvar is 0 at logvar = 0
    assert vae.gaussian_kl(mu, lv.detach(), free_bits=0.0) == pytest.approx(4.5)


# ------------------------------------------------------------------------------------ reparameterize
def test_reparameterize_statistics_and_generator():
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64).expand(200_000, 2)
    lv = torch.tensor([0.0, math.log(4.0)], dtype=torch.float64).expand(200_000, 2)
    z = vae.reparameterize(mu, lv, generator=torch.Generator().manual_seed(1))
    # 200k draws: the standard error of the mean is sd/447, of the std about sd/632; 5 sigma bounds
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0], dtype=torch.float64), atol=5 * 2 / 447, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 2.0], dtype=torch.float64), atol=5 * 2 / 632, rtol=0)
    again = vae.reparameterize(mu, lv, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z, again)


def test_reparameterize_gradient():
    mu = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = vae.reparameterize(mu, lv, generator=torch.Generator().manual_seed(5))
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(lv.grad, 0.5 * torch.exp(0.5 * lv.detach()) * eps)


def test_reparameterize_noncontiguous():
    base_mu, base_lv = torch.randn(6, 8), torch.randn(6, 8)
    mu, lv = base_mu.t(), base_lv.t()
    z = vae.reparameterize(mu, lv, generator=torch.Generator().manual_seed(0))
    z2 = vae.reparameterize(mu.contiguous(), lv.contiguous(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z2)


# ----------------------------------------------------------------------------------------------- ELBO
def test_elbo_bernoulli_and_gaussian_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 5, 5, generator=g, dtype=torch.float64).round()
    logits = torch.randn(4, 1, 5, 5, generator=g, dtype=torch.float64)
    mu, lv = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    p = torch.sigmoid(logits)
    ll = (x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3))
    kl = kl_reference(mu, lv)
    torch.testing.assert_close(vae.elbo(logits, x, mu, lv), ll - kl)
    torch.testing.assert_close(vae.elbo(logits, x, mu, lv, beta=4.0), ll - 4 * kl)
    mean = torch.randn(4, 1, 5, 5, generator=g, dtype=torch.float64)
    ref = Independent(Normal(mean, math.exp(0.5 * 0.3)), 3).log_prob(x)
    torch.testing.assert_close(vae.elbo(mean, x, mu, lv, likelihood="gaussian", obs_logvar=0.3), ref - kl)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_elbo_gradcheck(likelihood):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 7, generator=g, dtype=torch.float64)
    recon = torch.randn(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True)

    def f(r, m, v):
        return vae.elbo(r, x, m, v, likelihood=likelihood, beta=0.7)

    assert torch.autograd.gradcheck(f, (recon, mu, lv))
    assert torch.autograd.gradgradcheck(f, (recon, mu, lv))


def test_elbo_gradcheck_through_reparameterize():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 5, generator=g, dtype=torch.float64).round()
    dec = nn.Linear(3, 5).double()
    mu = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def f(m, v):
        z = vae.reparameterize(m, v, generator=torch.Generator().manual_seed(9))  # the same eps every call
        return vae.elbo(dec(z), x, m, v)

    assert torch.autograd.gradcheck(f, (mu, lv))


def test_elbo_torch_func_grad_and_vmap():
    x = torch.rand(4, 6, dtype=torch.float64).round()
    recon, mu, lv = (torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64),
                     torch.randn(4, 2, dtype=torch.float64))
    grad_mu = torch.func.grad(lambda m: vae.gaussian_kl(m, lv))(mu)
    torch.testing.assert_close(grad_mu, mu)  # d/dmu of 1/2 mu^2
    per = torch.func.vmap(vae.elbo)(recon, x, mu, lv)  # per example: mu (d,), x (6,); value checks skipped
    torch.testing.assert_close(per, vae.elbo(recon, x, mu, lv))
    grads = torch.func.vmap(torch.func.grad(lambda m, v: vae.gaussian_kl(m, v)), in_dims=(0, 0))(mu, lv)
    torch.testing.assert_close(grads, mu)


# ------------------------------------------------------------------------------------- IW likelihood
class _PairEncoder(nn.Module):
    """x -> (A x + c, fixed logvar): a linear Gaussian encoder with a constant diagonal variance."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor, logvar: torch.Tensor):
        super().__init__()
        self.a, self.c, self.logvar = nn.Parameter(a), nn.Parameter(c), nn.Parameter(logvar)

    def forward(self, x):
        mu = x @ self.a.T + self.c
        return mu, self.logvar.expand_as(mu)


def linear_gaussian(posterior: bool, s2: float = 0.25):
    """A VAE with decoder x = W z + b (+ N(0, s2 I)); W has orthogonal columns so the true posterior
    N(Σ Wᵀ (x - b) / s2, Σ), Σ = (I + Wᵀ W / s2)^-1, is diagonal.  ``posterior=False``: a worse encoder."""
    torch.manual_seed(0)
    d, n = 2, 5
    q, _ = torch.linalg.qr(torch.randn(n, d, dtype=torch.float64))
    w = q * torch.tensor([1.5, 0.7], dtype=torch.float64)
    b = torch.randn(n, dtype=torch.float64)
    dec = nn.Linear(d, n).double()
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
    sigma = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + w.T @ w / s2)
    a = sigma @ w.T / s2
    c = -a @ b
    lv = torch.diagonal(sigma).log()
    if not posterior:
        a, c, lv = a * 0.6, c + 0.3, lv + 0.8
    model = vae.VAE(_PairEncoder(a, c, lv), dec, likelihood="gaussian", obs_logvar=math.log(s2))
    x = torch.randn(4, n, dtype=torch.float64) * 1.5 + b
    cov = w @ w.T + s2 * torch.eye(n, dtype=torch.float64)
    log_px = torch.distributions.MultivariateNormal(b, cov).log_prob(x)
    return model, x, log_px


def test_iw_exact_with_the_true_posterior():
    model, x, log_px = linear_gaussian(posterior=True)
    for k in (1, 7, 50):
        out = vae.iw_log_likelihood(model, x, k=k, generator=torch.Generator().manual_seed(k))
        torch.testing.assert_close(out, log_px, rtol=1e-10, atol=1e-10)  # zero-variance weights


def test_iw_tightens_with_k_and_equals_elbo_at_k1():
    model, x, log_px = linear_gaussian(posterior=False)
    reps = 400
    g = torch.Generator().manual_seed(0)
    means = {}
    for k in (1, 5, 50):
        draws = torch.stack([vae.iw_log_likelihood(model, x, k=k, generator=g, chunk=64) for _ in range(reps)])
        means[k] = (draws.mean(0), draws.std(0) / math.sqrt(reps))
    # the exact ELBO of the linear-Gaussian model: E_q log N(x; Wz + b, s2) - KL
    with torch.no_grad():
        mu, lv = model.encode(x)
        w, b = model.decoder.weight, model.decoder.bias
        s2, n = math.exp(model.obs_logvar), x.shape[1]
        resid = x - mu @ w.T - b
        trace = (w.square() @ lv.exp().T).sum(0)
        exact_elbo = -0.5 * ((resid.square().sum(-1) + trace) / s2 + n * math.log(s2) + n * math.log(2 * math.pi))
        exact_elbo = exact_elbo - vae.gaussian_kl(mu, lv, reduction="none")
    m1, se1 = means[1]
    assert ((m1 - exact_elbo).abs() <= 4 * se1).all(), (m1, exact_elbo, se1)
    m5, se5 = means[5]
    m50, se50 = means[50]
    assert (m1 + 4 * se1 < m5).all() and (m5 + 4 * se5 < m50).all()  # tighter with k, well beyond the noise
    assert (m50 <= log_px + 4 * se50).all() and (log_px - m50 < log_px - m1).all()
    assert (exact_elbo < log_px).all()


def test_iw_chunking_does_not_change_the_value():
    model, x, _ = linear_gaussian(posterior=False)
    a = vae.iw_log_likelihood(model, x, k=30, chunk=10_000, generator=torch.Generator().manual_seed(2))
    b = vae.iw_log_likelihood(model, x, k=30, chunk=10_000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = vae.iw_log_likelihood(model, x, k=30, chunk=4, generator=torch.Generator().manual_seed(2))
    assert c.shape == a.shape and torch.isfinite(c).all()


# ----------------------------------------------------------------------------------- AE = VAE, sigma 0
class _TinyLogvar(nn.Module):
    """Wraps an encoder: its mu, with log sigma^2 = -200 (sigma = e^-100: zero to float64 rounding)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        mu, _ = self.inner(x).chunk(2, -1)
        return mu, torch.full_like(mu, -200.0)


def test_ae_is_a_vae_with_sigma_zero_and_no_kl():
    torch.manual_seed(0)
    ae = vae.mlp_ae(3, image_shape=(1, 4, 4), hidden=(8,)).double()
    vae_model = vae.VAE(_TinyLogvar(ae.encoder), ae.decoder)  # the very same weights
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64).round()
    out = ae(x)
    mu = ae.encode(x)[0]
    assert torch.equal(out.z, mu) and torch.isneginf(out.logvar).all()
    recon_only = -vae_model.elbo(x, beta=0.0).mean()
    torch.testing.assert_close(ae.loss(x), recon_only, rtol=1e-14, atol=1e-12)
    with_kl = -vae_model.elbo(x, beta=1.0).mean()
    assert with_kl > ae.loss(x) + 100  # the KL of a point mass is huge: the AE drops it
    with pytest.raises(TypeError, match="no ELBO"):
        ae.elbo(x)


def test_ae_and_vae_builders_share_the_initialisation():
    torch.manual_seed(3)
    a = vae.mlp_ae(2)
    torch.manual_seed(3)
    v = vae.mlp_vae(2)
    for pa, pv in zip(a.parameters(), v.parameters(), strict=True):
        assert torch.equal(pa, pv)


@pytest.mark.parametrize("builder", [vae.mlp_vae, vae.mlp_ae, vae.conv_vae, vae.conv_ae])
def test_builders_shapes(builder):
    model = builder(5, image_shape=(1, 8, 12)) if "conv" in builder.__name__ else builder(5, image_shape=(1, 8, 12))
    x = torch.rand(3, 1, 8, 12).round()
    out = model(x)
    assert out.recon.shape == x.shape and out.mu.shape == (3, 5) and model.loss(x).ndim == 0
    assert model.decode_mean(out.z).min() >= 0


# -------------------------------------------------------------------------------------- active units
def test_active_units_counts_variance_above_threshold():
    class Scaled(nn.Module):
        def forward(self, x):
            mu = x * torch.tensor([1.0, 0.05, 0.0, 1.0], dtype=x.dtype)
            return mu, torch.zeros_like(mu)

    model = vae.VAE(Scaled(), nn.Identity())
    data = torch.rand(2000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    act = vae.latent_activity(model, data, batch_size=300)
    torch.testing.assert_close(act, data.var(0) * torch.tensor([1.0, 0.0025, 0.0, 1.0], dtype=torch.float64))
    assert vae.active_units(model, data) == 2  # 1/12 > 1e-2; 0.0025/12 and 0 are not
    assert vae.active_units(model, data, threshold=1e-4) == 3
    assert vae.active_units(model, [(b, None) for b in data.split(500)]) == 2  # a loader of (x, y) batches


# ----------------------------------------------------------------------------------------------- fit
def test_fit_learns_and_is_reproducible():
    x = torch.rand(256, 1, 6, 6, generator=torch.Generator().manual_seed(0)).round()
    histories, states = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = vae.mlp_vae(2, image_shape=(1, 6, 6), hidden=(16,))
        histories.append(vae.fit(model, x, epochs=4, batch_size=32, lr=1e-2, progress=False))
        states.append([p.detach().clone() for p in model.parameters()])
    assert histories[0] == histories[1]
    assert all(torch.equal(a, b) for a, b in zip(*states, strict=True))
    assert histories[0][-1] < histories[0][0]
    torch.manual_seed(0)
    ae = vae.mlp_ae(2, image_shape=(1, 6, 6), hidden=(16,))
    ae_hist = vae.fit(ae, x, epochs=4, batch_size=32, lr=1e-2, progress=True)
    assert ae_hist[-1] < ae_hist[0] and not ae.training


# ----------------------------------------------------------------------------------------- bad input
M2, L2 = torch.zeros(2, 3), torch.zeros(2, 3)
X2 = torch.zeros(2, 4)
R2 = torch.zeros(2, 4)
TINY = vae.mlp_vae(2, image_shape=(4,), hidden=(3,))
TINY_AE = vae.mlp_ae(2, image_shape=(4,), hidden=(3,))

def _one(t: torch.Tensor, value: float) -> torch.Tensor:
    """A copy of t with its last element set to value."""
    out = t.clone()
    out.view(-1)[-1] = value
    return out


BAD = [
    ("gaussian_kl", lambda: vae.gaussian_kl(M2, torch.zeros(2, 4)), ValueError, "same shape"),
    ("gaussian_kl", lambda: vae.gaussian_kl(M2, torch.full((2, 3), math.inf)), ValueError, "non-finite"),
    ("gaussian_kl", lambda: vae.gaussian_kl(M2, torch.full((2, 3), math.nan)), ValueError, "logvar"),
    ("gaussian_kl", lambda: vae.gaussian_kl(torch.full((2, 3), math.nan), L2), ValueError, "mu has non-finite"),
    ("gaussian_kl", lambda: vae.gaussian_kl(M2, L2, reduction="avg"), ValueError, "reduction"),
    ("gaussian_kl", lambda: vae.gaussian_kl(M2, L2, free_bits=-1.0), ValueError, "free_bits"),
    ("gaussian_kl", lambda: vae.gaussian_kl(torch.zeros(2, 3, dtype=torch.long), L2), TypeError, "floating"),
    ("gaussian_kl", lambda: vae.gaussian_kl([0.0], L2), TypeError, "mu must be a torch.Tensor"),
    ("gaussian_kl", lambda: vae.gaussian_kl(torch.tensor(0.0), torch.tensor(0.0)), ValueError, "latent axis"),
    ("gaussian_kl", lambda: vae.gaussian_kl(M2, L2.double()), TypeError, "same dtype"),
    ("reparameterize", lambda: vae.reparameterize(M2, torch.zeros(3, 2)), ValueError, "same shape"),
    ("reparameterize", lambda: vae.reparameterize(M2, torch.full((2, 3), -math.inf)), ValueError, "non-finite"),
    ("elbo", lambda: vae.elbo(R2, X2, M2, L2, likelihood="poisson"), ValueError, "likelihood"),
    ("elbo", lambda: vae.elbo(R2, X2, M2, torch.zeros(2, 2)), ValueError, "same shape"),
    ("elbo", lambda: vae.elbo(R2, X2, M2, torch.full((2, 3), math.inf)), ValueError, "non-finite"),
    ("elbo", lambda: vae.elbo(torch.zeros(2, 5), X2, M2, L2), ValueError, "same shape"),
    ("elbo", lambda: vae.elbo(R2, torch.zeros(3, 4), M2, L2), ValueError, "batch axes"),
    ("elbo", lambda: vae.elbo(R2, X2 + 2, M2, L2), ValueError, "[0, 1]"),
    ("elbo", lambda: vae.elbo(R2, X2, M2, L2, beta=-1.0), ValueError, "beta"),
    ("elbo", lambda: vae.elbo(R2, torch.full((2, 4), math.nan), M2, L2), ValueError, "x has non-finite"),
    # one bad entry among good ones (the value checks are one min/max pass: nan must reach it), 16-bit too
    ("elbo", lambda: vae.elbo(R2, _one(X2, math.nan), M2, L2), ValueError, "x has non-finite"),
    ("elbo", lambda: vae.elbo(R2.half(), _one(X2, math.nan).half(), M2.half(), L2.half()), ValueError,
     "x has non-finite"),
    ("elbo", lambda: vae.elbo(R2, _one(X2, -0.5), M2, L2), ValueError, "[0, 1]"),
    ("elbo", lambda: vae.elbo(R2, X2, M2, _one(L2, math.nan)), ValueError, "logvar has non-finite"),
    ("gaussian_kl", lambda: vae.gaussian_kl(_one(M2, -math.inf).bfloat16(), L2.bfloat16()), ValueError,
     "mu has non-finite"),
    ("elbo", lambda: vae.elbo(R2, X2, M2, L2, likelihood="gaussian", obs_logvar=math.inf), ValueError,
     "obs_logvar"),
    ("reconstruction_log_likelihood", lambda: vae.reconstruction_log_likelihood(R2, X2, likelihood="l2"),
     ValueError, "likelihood"),
    ("iw_log_likelihood", lambda: vae.iw_log_likelihood(TINY, X2, k=0), ValueError, "k must be"),
    ("iw_log_likelihood", lambda: vae.iw_log_likelihood(TINY, X2, k=2.5), ValueError, "k must be"),
    ("iw_log_likelihood", lambda: vae.iw_log_likelihood(TINY, X2, chunk=0), ValueError, "chunk"),
    ("iw_log_likelihood", lambda: vae.iw_log_likelihood(TINY_AE, X2), TypeError, "AE"),
    ("iw_log_likelihood", lambda: vae.iw_log_likelihood(nn.Linear(4, 4), X2), TypeError, "kexue.vae.VAE"),
    ("iw_log_likelihood", lambda: vae.iw_log_likelihood(TINY, torch.zeros(0, 4)), ValueError, "B >= 1"),
    ("active_units", lambda: vae.active_units(TINY, X2, threshold=-1.0), ValueError, "threshold"),
    ("active_units", lambda: vae.active_units(TINY, X2[:1]), ValueError, "at least 2"),
    ("active_units", lambda: vae.active_units(TINY, X2, batch_size=0), ValueError, "batch_size"),
    ("active_units", lambda: vae.active_units("model", X2), TypeError, "kexue.vae.VAE"),
    ("fit", lambda: vae.fit(TINY, X2, epochs=0), ValueError, "epochs"),
    ("fit", lambda: vae.fit(TINY, X2, epochs=1, lr=0.0), ValueError, "lr"),
    ("fit", lambda: vae.fit(TINY, X2, epochs=1, beta=math.nan), ValueError, "beta"),
    ("fit", lambda: vae.fit(TINY, torch.zeros(0, 4), epochs=1), ValueError, "at least one example"),
    ("fit", lambda: vae.fit(TINY, [], epochs=1, progress=False), ValueError, "no batches"),
    ("fit", lambda: vae.fit(nn.Linear(2, 2), X2, epochs=1), TypeError, "VAE or AE"),
    ("VAE", lambda: vae.VAE(nn.Identity(), nn.Identity(), likelihood="laplace"), ValueError, "likelihood"),
    ("VAE", lambda: vae.VAE(lambda x: x, nn.Identity()), TypeError, "nn.Module"),
    ("VAE.encode", lambda: vae.VAE(nn.Linear(4, 3), nn.Identity()).encode(X2), ValueError, "(B, 2d)"),
    ("mlp_vae", lambda: vae.mlp_vae(0), ValueError, "latent_dim"),
    ("mlp_vae", lambda: vae.mlp_vae(2, hidden=(0,)), ValueError, "hidden"),
    ("mlp_ae", lambda: vae.mlp_ae(2, image_shape=()), ValueError, "image_shape"),
    ("conv_vae", lambda: vae.conv_vae(2, image_shape=(1, 30, 28)), ValueError, "multiples of 4"),
    ("conv_ae", lambda: vae.conv_ae(2, image_shape=(28, 28)), ValueError, "(C, H, W)"),
]


@pytest.mark.parametrize(("name", "call", "exc", "keyword"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input(name, call, exc, keyword):
    with pytest.raises(exc) as info:
        call()
    assert keyword in str(info.value), f"{name}: {info.value}"


def test_public_functions_all_have_bad_input_rows():
    names = {row[0].split(".")[0] for row in BAD}
    public_functions = {"gaussian_kl", "reparameterize", "elbo", "reconstruction_log_likelihood",
                        "iw_log_likelihood", "active_units", "fit", "VAE", "mlp_vae", "mlp_ae", "conv_vae", "conv_ae"}
    assert public_functions <= names


@pytest.mark.parametrize("module", [vae, functional, models, metrics, training])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.slow
def test_elbo_compiles_fullgraph():
    """torch.compile(fullgraph=True) traces the ELBO with no graph break (the value checks are skipped
    while tracing) and gives the eager value.  About 10 s of CPU for the inductor build."""
    mu, lv = torch.randn(5, 3), torch.randn(5, 3)
    x, recon = torch.rand(5, 7).round(), torch.randn(5, 7)
    compiled = torch.compile(lambda r, xx, m, v: vae.elbo(r, xx, m, v, beta=0.5), fullgraph=True)
    torch.testing.assert_close(compiled(recon, x, mu, lv), vae.elbo(recon, x, mu, lv, beta=0.5))
