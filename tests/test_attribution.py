"""kexue.attribution.integrated_gradients: against Captum 0.9 (float64), against the float64
reference integral, completeness, batching, torch.compile, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import kexue.attribution.api as api
import kexue.attribution.engine as engine
from kexue.attribution import METHODS, integrated_gradients, integrated_gradients_reference
from kexue.attribution.quadrature import level_points, level_weights, new_point_indices, rule

captum_attr = pytest.importorskip("captum.attr", reason="Captum 0.9 is a test dependency (requirements/bench.txt)")


class TwoInputNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(3, 8)
        self.b = torch.nn.Linear(5, 8)
        self.out = torch.nn.Linear(8, 4)

    def forward(self, x, y, scale):
        return self.out(torch.tanh(self.a(x) + self.b(y.flatten(1)))) * scale[:, None]


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32, num_labels=3,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return BertForSequenceClassification(cfg).eval()


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ibs", [None, 7])
def test_matches_captum_tuple_inputs_per_example_targets(float64_default, captum_weights, method, ibs):
    torch.manual_seed(1)
    net = TwoInputNet()
    x, y = torch.randn(5, 3), torch.randn(5, 1, 5)
    scale = torch.rand(5) + 0.5
    bx, by = 0.25, torch.randn(1, 1, 5)
    target = [0, 3, 1, 2, 3]
    ours, d = integrated_gradients(net, (x, y), (bx, by), target=target, additional_forward_args=(scale,),
                                   n_steps=13, method=method, internal_batch_size=ibs, return_convergence_delta=True)
    ref, dref = captum_attr.IntegratedGradients(net).attribute(
        (x, y), (bx, by), target=target, additional_forward_args=(scale,), n_steps=13, method=method,
        internal_batch_size=ibs, return_convergence_delta=True)
    for o, r in zip(ours, ref, strict=True):
        assert o.dtype == torch.float64 and o.shape == r.shape
        assert rel_err(o, r) < 1e-12
    assert float((d - dref).abs().max()) < 1e-12


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_float64_weights_differ_from_captum_only_by_its_float32_rounding(float64_default, method):
    """Without the rounding patch kexue keeps float64 weights: the difference from Captum is
    bounded by 2^-24 Σ_k w_k |g_k| |x - x'| (Captum's float32 weights), and not zero."""
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
    x = torch.randn(6, 4)
    ours = integrated_gradients(net, x, n_steps=20, method=method)
    ref = captum_attr.IntegratedGradients(net).attribute(x, n_steps=20, method=method)
    a, w = rule(method, 20)
    z = (a.view(-1, 1, 1) * x).requires_grad_()
    (g,) = torch.autograd.grad(net(z).sum(), z)
    bound = 2.0**-24 * (w.view(-1, 1, 1) * g.abs()).sum(0) * x.abs() + 1e-15
    assert bool(((ours - ref).abs() <= bound).all())
    assert float((ours - ref).abs().max()) > 0


@pytest.mark.parametrize("method", METHODS)
def test_matches_captum_on_tiny_bert_embeddings(float64_default, captum_weights, method):
    model = tiny_bert().double()
    ids = torch.randint(5, 50, (3, 9))
    emb = model.bert.embeddings.word_embeddings(ids).detach()
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[2, 6:] = 0

    def fwd(e, m):
        return model(inputs_embeds=e, attention_mask=m).logits

    tgt = torch.tensor([0, 2, 1])
    ours = integrated_gradients(fwd, emb, target=tgt, additional_forward_args=(mask,), n_steps=8, method=method,
                                internal_batch_size=5)
    ref = captum_attr.IntegratedGradients(fwd).attribute(emb, target=tgt, additional_forward_args=(mask,),
                                                         n_steps=8, method=method, internal_batch_size=5)
    assert rel_err(ours, ref) < 1e-11


def test_gradient_methods(float64_default):
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = torch.randn(5, 4, requires_grad=True)
    (g,) = torch.autograd.grad(net(x)[:, 2].sum(), x)
    x = x.detach()
    assert torch.equal(integrated_gradients(net, x, target=2, method="gradient"), g)
    assert torch.equal(integrated_gradients(net, x, target=2, method="gradient_x_input"), g * x.detach())
    ref = captum_attr.InputXGradient(net).attribute(x, target=2)
    assert rel_err(integrated_gradients(net, x, target=2, method="gradient_x_input"), ref) < 1e-14


# ---------------------------------------------------------------------------------------------
# adaptive steps


def test_clenshaw_curtis_levels_nested_positive_and_exact_to_degree_n_plus_1():
    for level in range(1, 9):
        n = 2**level
        w, x = level_weights(level), level_points(level)
        assert len(w) == len(x) == n + 1 and bool((w > 0).all()) and abs(float(w.sum()) - 1) < 1e-14
        assert torch.allclose(x[::2], level_points(level - 1), rtol=0, atol=1e-15)  # nested
        assert torch.equal(torch.sort(torch.cat([x[::2], x[new_point_indices(level)]])).values, x)
        for p in range(n + 2):
            assert abs(float((w * x**p).sum()) - 1 / (p + 1)) < 1e-13, (level, p)
    # sharp at low levels: Simpson (level 1) is not exact for degree 4
    w, x = level_weights(1), level_points(1)
    assert abs(float((w * x**4).sum()) - 1 / 5) > 1e-3


def test_clenshaw_curtis_beats_romberg_per_point_on_a_bump(float64_default):
    """The reason auto uses Clenshaw–Curtis: on an IG-like integrand (flat ends, a sharp bump) it
    is far more accurate at equal points than the Romberg rule kexue used before."""
    f = lambda a: torch.exp(-((a - 0.55) / 0.06) ** 2)  # noqa: E731
    exact = 0.06 * math.sqrt(math.pi) / 2 * (math.erf(0.45 / 0.06) + math.erf(0.55 / 0.06))
    level = 5  # 33 points
    cc = float((level_weights(level) * f(level_points(level))).sum())
    ends = 0.5 * (f(torch.tensor(0.0)) + f(torch.tensor(1.0)))
    trap = [(f(torch.linspace(0, 1, 2**k + 1)).sum() - ends) / 2**k for k in range(level + 1)]
    row: list = []
    for t in trap:
        new = [t]
        for m, p in enumerate(row, 1):
            new.append(new[-1] + (new[-1] - p) / (4**m - 1))
        row = new
    assert abs(cc - exact) < 0.1 * abs(float(row[-1]) - exact)


@pytest.mark.parametrize("tol", [1e-2, 1e-4, 1e-7])
def test_auto_completeness_and_error_estimate_against_reference(float64_default, tol):
    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.GELU(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
                              torch.nn.Linear(32, 2))
    x, b = torch.randn(8, 5) * 2, torch.randn(8, 5) * 0.1
    res = integrated_gradients(net, x, b, target=1, n_steps="auto", tol=tol, max_steps=513)
    assert bool(res.converged.all())
    df = res.f_input - res.f_baseline
    assert torch.allclose(res.f_input, net(x)[:, 1].detach()) and torch.allclose(res.f_baseline, net(b)[:, 1].detach())
    assert bool((res.error <= tol * df.abs()).all())
    assert torch.allclose(res.delta, res.attributions.sum(1) - df, rtol=0, atol=1e-12)
    for i in range(8):
        ref = integrated_gradients_reference(lambda z: net(z)[:, 1], x[i], b[i], n_points=2000)
        err = float((res.attributions[i] - ref).abs().max())
        # the reference's own trapezoid error is ~1e-7 of the integrand's curvature; the estimate bounds ours
        assert err <= float(res.error_estimate[i]) + 1e-6, (i, err, float(res.error_estimate[i]))
    assert int(res.steps.min()) >= 3 and int(res.steps.max()) <= 513


def test_auto_steps_drop_out_per_example(float64_default):
    """A linear example converges at the first test (3 points); a curved one needs more, and only
    it is evaluated further: the rows evaluated add up to the steps reported."""
    rows = []

    def fwd(z, which):
        rows.append(z.shape[0])
        return torch.where(which == 0, 2.0 * z[:, 0], torch.sin(3 * z[:, 0]) * torch.exp(z[:, 0]))

    x = torch.tensor([[1.0], [2.5]])
    res = integrated_gradients(fwd, x, additional_forward_args=(torch.tensor([0, 1]),), n_steps="auto", tol=1e-6)
    assert int(res.steps[0]) == 3 and int(res.steps[1]) > 3
    assert rows[:2] == [4, 2]  # level 0: 2 points × 2 examples; level 1: 1 new point × 2
    assert rows[2:] == [2 ** k for k in range(1, len(rows) - 1)]  # example 1 alone: 2, 4, 8 ... new points
    assert sum(rows) == int(res.steps.sum())


def test_auto_max_steps_reports_not_converged(float64_default):
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.randn(4, 3) * 20
    res = integrated_gradients(net, x, n_steps="auto", tol=1e-14, max_steps=9)
    assert int(res.steps.max()) == 9
    assert not bool(res.converged.all())


def test_auto_tol_per_example(float64_default):
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.randn(2, 3) * 3
    res = integrated_gradients(net, x, n_steps="auto", tol=torch.tensor([1e-1, 1e-8]))
    assert int(res.steps[0]) <= int(res.steps[1])
    assert float(res.error[1]) <= 1e-8 * float((res.f_input - res.f_baseline)[1].abs())


# ---------------------------------------------------------------------------------------------
# batching, compile


@pytest.mark.parametrize("n_steps", [17, "auto"])
def test_batched_equals_unbatched(float64_default, n_steps):
    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    x = torch.randn(7, 6)

    def run(**kw):
        r = integrated_gradients(net, x, target=1, n_steps=n_steps, tol=1e-5, **kw)
        return r.attributions if n_steps == "auto" else r

    full = run()
    for kw in ({"internal_batch_size": 1}, {"internal_batch_size": 5}, {"max_memory": 40_000}):
        assert float((run(**kw) - full).abs().max()) < 1e-13, kw


def test_max_memory_bounds_rows(float64_default):
    seen = []
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 1))

    def fwd(z):
        seen.append(z.shape[0])
        return net(z)[:, 0]

    x = torch.randn(10, 64)
    evaluate = api.make_integrand(fwd, (x,), (torch.zeros_like(x),), None, (), 10)
    fixed, per_row = engine.memory_model(evaluate, x.device)
    assert per_row >= 8 * (64 + 2 * 256)  # the input row's gradient and the two hidden activations, float64
    assert fixed >= 8 * 256 * 64  # the first weight is saved for the backward once, whatever the rows
    seen.clear()
    integrated_gradients(fwd, x, n_steps=20, max_memory=fixed + 25 * per_row)
    assert seen[:2] == [1, 2]  # the measurement
    assert max(seen[2:]) == 25 and sum(seen[2:]) == 200


def test_torch_compile_forward():
    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    compiled = torch.compile(net, fullgraph=True, dynamic=True)
    x = torch.randn(3, 4)
    eager = integrated_gradients(net, x, target=0, n_steps=10)
    comp = integrated_gradients(compiled, x, target=0, n_steps=10)
    assert torch.allclose(comp, eager, rtol=1e-5, atol=1e-6)


def test_float32_inputs_stay_float32():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 4)
    attr, delta = integrated_gradients(net, x, target=0, n_steps=50, return_convergence_delta=True)
    assert attr.dtype == torch.float32
    ref = captum_attr.IntegratedGradients(net).attribute(x, target=0, n_steps=50)
    assert rel_err(attr, ref) < 1e-5


# ---------------------------------------------------------------------------------------------
# bad input: (arguments, exception, keyword of the message)


def _net():
    return torch.nn.Sequential(torch.nn.Linear(4, 3))


X = torch.randn(2, 4)
ERRORS = [
    ({"inputs": X, "baselines": torch.zeros(3, 4)}, ValueError, "baselines"),
    ({"inputs": (X, torch.randn(3, 4))}, ValueError, "inputs[1]"),
    ({"inputs": X}, ValueError, "target"),
    ({"inputs": torch.ones(2, 4, dtype=torch.long), "target": 0}, TypeError, "layer"),
    ({"inputs": X, "target": 3}, ValueError, "target 3 is out of range"),
    ({"inputs": X, "target": [0, 1, 2]}, ValueError, "target"),
    ({"inputs": X, "target": 0.5}, TypeError, "target"),
    ({"inputs": X, "target": 0, "n_steps": 0}, ValueError, "n_steps"),
    ({"inputs": X, "target": 0, "n_steps": 1, "method": "riemann_left"}, ValueError, "n_steps"),
    ({"inputs": X, "target": 0, "n_steps": "many"}, ValueError, "n_steps"),
    ({"inputs": X, "target": 0, "n_steps": "auto", "tol": 0.0}, ValueError, "tol"),
    ({"inputs": X, "target": 0, "n_steps": "auto", "tol": -1e-3}, ValueError, "tol"),
    ({"inputs": X, "target": 0, "method": "simpson"}, ValueError, "method"),
    ({"inputs": X, "target": 0, "internal_batch_size": 0}, ValueError, "internal_batch_size"),
    ({"inputs": X, "target": 0, "max_memory": -5}, ValueError, "max_memory"),
    ({"inputs": X, "target": 0, "internal_batch_size": 4, "max_memory": 10**6}, ValueError, "max_memory"),
    ({"inputs": X, "target": 0, "method": "gradient", "return_convergence_delta": True}, ValueError, "gradient"),
    ({"inputs": X, "target": 0, "additional_forward_args": (torch.ones(3),)}, ValueError, "additional_forward_args"),
    ({"inputs": [X], "target": 0}, TypeError, "inputs"),
]


@pytest.mark.parametrize(("kw", "exc", "word"), ERRORS, ids=[e[2] for e in ERRORS])
def test_bad_input(kw, exc, word):
    net = _net()
    kw = dict(kw)
    inputs = kw.pop("inputs")
    fwd = (lambda x, *a: net(x)) if "additional_forward_args" in kw else net
    if isinstance(inputs, tuple):
        fwd = lambda x, y: net(x)  # noqa: E731
    with pytest.raises(exc, match=None) as info:
        integrated_gradients(fwd, inputs, **kw)
    assert word in str(info.value), str(info.value)
