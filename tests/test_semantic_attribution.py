"""Valid inputs, right answers: kexue.attribution.integrated_gradients against Captum 0.9's
IntegratedGradients.attribute in float64, on the corners tests/test_attribution.py does not reach:
a forward with several outputs per example and targets as int / tuple / list of ints / list of
tuples / tensor (one index, one per example); additional_forward_args of tensors (per example,
never interpolated), 0-d tensors and non-tensors; baselines None, per-input numbers, (1, ...) and
(B, ...) tensors, tensors without the batch axis (kexue broadcasts; Captum is given them
expanded); internal_batch_size that does not divide n_steps·B; batches of 1; every method;
inputs that already require grad; dropout in train mode (the same masks as Captum's one
step-major forward); max_memory == the unbatched result.

Bug found (2026-12-06): a 0-d tensor in additional_forward_args (a temperature, a scale) is
passed unchanged to every forward by Captum; kexue refused it ("tensors there are per example").
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from kexue.attribution import integrated_gradients

captum_attr = pytest.importorskip("captum.attr", reason="Captum 0.9 is a test dependency (requirements/bench.txt)")

METHODS = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]


class Net(torch.nn.Module):
    """Two inputs, output (B, *out_shape); extra arguments scale or shift the output."""

    def __init__(self, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 8), torch.nn.Linear(10, 8)
        self.out = torch.nn.Linear(8, max(1, math.prod(out_shape)))
        self.out_shape = out_shape

    def forward(self, x, y, *extra):
        o = self.out(torch.tanh(self.a(x) + self.b(y.flatten(1))))
        for e in extra:
            if isinstance(e, torch.Tensor) and e.dim():
                o = o * e.reshape(e.shape[0], -1)[:, :1]
            elif isinstance(e, torch.Tensor):
                o = o * e
            elif isinstance(e, str):
                o = o + (1.0 if e == "shift" else 0.0)
            else:
                o = o * e
        return o.reshape(o.shape[0], *self.out_shape)


def _case(rng: random.Random):
    B = rng.choice([1, 2, 5])
    out_shape = rng.choice([(), (4,), (3, 2)])
    net = Net(out_shape)
    x, y = torch.randn(B, 3), torch.randn(B, 2, 5)
    if rng.random() < 0.2:
        x.requires_grad_()  # inputs that already require grad
    if rng.random() < 0.2:
        y = torch.randn(B, 5, 2).transpose(1, 2)  # non-contiguous
    kind = rng.choice(["none", "numbers", "tensors", "mixed", "no-batch-axis"])
    baselines = {"none": None, "numbers": (0.3, -1.0), "tensors": (torch.randn(1, 3), torch.randn(B, 2, 5)),
                 "mixed": (0.25, torch.randn(1, 2, 5)), "no-batch-axis": (torch.randn(3), torch.randn(2, 5))}[kind]
    captum_baselines = (tuple(b.expand(B, *b.shape) for b in baselines) if kind == "no-batch-axis" else baselines)
    if out_shape == ():
        target = None
    elif out_shape == (4,):
        target = rng.choice([2, [rng.randrange(4) for _ in range(B)], torch.randint(0, 4, (B,)), torch.tensor([3])])
    else:
        target = rng.choice([(2, 1), [(rng.randrange(3), rng.randrange(2)) for _ in range(B)]])
    extra = rng.choice([None, (torch.rand(B) + 0.5,), ("shift", 2.0), (torch.rand(B, 2) + 0.5, "shift", 3),
                        torch.rand(B, 1) + 0.5, (torch.tensor(1.7), "shift")])
    kw = dict(target=target, additional_forward_args=extra, n_steps=rng.choice([2, 3, 7, 16]),
              method=rng.choice(METHODS), internal_batch_size=rng.choice([None, 1, 3, 7, 11]),
              return_convergence_delta=True)
    return net, (x, y), baselines, captum_baselines, kw


@pytest.mark.filterwarnings("ignore::UserWarning")  # Captum: internal_batch_size < B, raised to B
def test_matches_captum_on_random_corners(float64_default, captum_weights):
    rng = random.Random(31)
    for _ in range(120):
        net, inputs, baselines, captum_baselines, kw = _case(rng)
        ours, delta = integrated_gradients(net, inputs, baselines, **kw)
        ref, ref_delta = captum_attr.IntegratedGradients(net).attribute(inputs, captum_baselines, **kw)
        where = f"B={inputs[0].shape[0]} out={net.out_shape} baselines={baselines} {kw}"
        for o, r in zip(ours, ref, strict=True):
            assert o.shape == r.shape and o.dtype == r.dtype, where
            assert float((o - r.detach()).abs().max()) <= 1e-12 * (1 + float(r.abs().max())), where
        assert delta.shape == ref_delta.shape, where
        assert float((delta - ref_delta).abs().max()) <= 1e-12, where


def test_zero_dim_tensor_forward_arg_is_passed_unchanged_as_in_captum(float64_default, captum_weights):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

    def fwd(x, temperature):
        return net(x) / temperature

    x, t = torch.randn(5, 4), torch.tensor(0.7)
    ours = integrated_gradients(fwd, x, target=1, additional_forward_args=(t,), n_steps=6, internal_batch_size=4)
    ref = captum_attr.IntegratedGradients(fwd).attribute(x, target=1, additional_forward_args=(t,), n_steps=6,
                                                         internal_batch_size=4)
    assert float((ours - ref).abs().max()) <= 1e-12 * float(ref.abs().max())


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("ibs", [None, 10, 7])
def test_dropout_follows_captum(float64_default, captum_weights, mode, ibs):
    """Neither switches the model's mode: in eval mode dropout is off; in train mode the rows go
    through the forwards step-major in the same order, so with one seed the masks are Captum's."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    getattr(net, mode)()
    x = torch.randn(5, 4)
    torch.manual_seed(5)
    ours = integrated_gradients(net, x, target=1, n_steps=6, internal_batch_size=ibs)
    torch.manual_seed(5)
    ref = captum_attr.IntegratedGradients(net).attribute(x, target=1, n_steps=6, internal_batch_size=ibs)
    assert float((ours - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
    assert net.training == (mode == "train")


@pytest.mark.parametrize("max_memory", [1, 2_000, 10**9])
def test_max_memory_gives_the_unbatched_result(float64_default, max_memory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    x = torch.randn(5, 4)
    whole = integrated_gradients(net, x, target=[0, 1, 2, 0, 1], n_steps=9)
    bounded = integrated_gradients(net, x, target=[0, 1, 2, 0, 1], n_steps=9, max_memory=max_memory)
    assert float((whole - bounded).abs().max()) <= 1e-14 * float(whole.abs().max())
