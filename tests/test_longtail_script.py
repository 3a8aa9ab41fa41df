"""bench/longtail_fmnist.py on a tiny synthetic data set (CI has no Fashion-MNIST package).

Checks the imbalance profile and the sampling, the IDX reader and the missing-data message, the
balanced accuracy, that a few training steps with kexue.cross_entropy learn (and that flooding
above the loss turns them into ascent), and the whole command line end to end.
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kexue
from helpers import load_bench_script


@pytest.fixture(scope="module")
def lt():
    mod = load_bench_script("longtail_fmnist")
    yield mod
    sys.modules.pop("longtail_fmnist", None)


def synthetic(num_classes: int, per_class: int, size: int = 8, seed: int = 0):
    """uint8 images (N, size, size): each class a bright square at its own place plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    x = torch.randint(0, 60, (y.numel(), size, size), generator=g)
    for c in range(num_classes):
        r, q = divmod(c, size // 2)
        x[y == c, 2 * r % size:2 * r % size + 2, 2 * q:2 * q + 2] += 180
    perm = torch.randperm(y.numel(), generator=g)
    return x[perm].to(torch.uint8), y[perm]


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_longtail_counts(lt):
    counts = lt.longtail_counts(6000, 10, 100)
    assert counts == [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
    assert lt.longtail_counts(100, 3, 4) == [100, 50, 25]
    assert lt.longtail_counts(7, 1, 100) == [7]


def test_longtail_indices(lt):
    labels = torch.arange(4).repeat(50)[torch.randperm(200)]
    counts = [50, 20, 7, 2]
    idx = lt.longtail_indices(labels, counts, torch.Generator().manual_seed(3))
    assert torch.bincount(labels[idx], minlength=4).tolist() == counts
    assert idx.unique().numel() == idx.numel() and bool((idx[1:] > idx[:-1]).all())
    again = lt.longtail_indices(labels, counts, torch.Generator().manual_seed(3))
    other = lt.longtail_indices(labels, counts, torch.Generator().manual_seed(4))
    assert torch.equal(idx, again) and not torch.equal(idx, other)
    with pytest.raises(ValueError, match="class 1"):
        lt.longtail_indices(labels, [1, 51, 1, 1], torch.Generator())


def test_balanced_accuracy(lt):
    target = torch.tensor([0, 0, 0, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 0, 2, 1])
    acc = lt.per_class_accuracy(pred, target, 4)
    assert acc[:3].tolist() == [1.0, 0.0, 0.5] and acc[3].isnan()  # class 3 absent from the targets
    assert lt.balanced_accuracy(pred, target, 4) == pytest.approx(0.5)  # plain accuracy would be 4/6


def test_idx_reader_and_missing_data(lt, tmp_path):
    x, y = synthetic(3, 4, size=6)
    for key, arr in (("train_x", x), ("train_y", y), ("test_x", x[:5]), ("test_y", y[:5])):
        write_idx(tmp_path / (lt.FILES[key] + ".gz"), arr.numpy())
    data = lt.load_fashion_mnist(str(tmp_path))
    assert torch.equal(data["train_x"], x) and torch.equal(data["test_y"], y[:5])
    assert data["train_y"].dtype == torch.int64
    (tmp_path / (lt.FILES["test_y"] + ".gz")).unlink()
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        lt.load_fashion_mnist(str(tmp_path))
    assert lt.main(["--data-dir", str(tmp_path / "nowhere")]) == 2


def test_training_steps_learn_and_flood_ascends(lt):
    x, y = synthetic(4, 16)
    xs, _ = lt.standardise(x, x)
    cfg = lt.TrainConfig(epochs=5, batch_size=64, lr=0.05, max_steps=5)  # full batch: deterministic steps
    plain_model, plain = lt.train(xs, y, 4, seed=0, cfg=cfg)
    _, flooded = lt.train(xs, y, 4, seed=0, cfg=cfg, flood=100.0)  # loss below b: the gradient flips sign
    assert plain.steps == flooded.steps == 5
    assert plain.losses[0] == pytest.approx(flooded.losses[0])  # same init, same batch
    assert plain.losses[-1] < plain.losses[0] and flooded.losses[-1] > flooded.losses[0]
    assert flooded.flooded_fraction == 1.0 and plain.flooded_fraction != plain.flooded_fraction  # NaN: no flood
    _, la = lt.train(xs, y, 4, seed=0, cfg=cfg, prior=torch.tensor([8.0, 4.0, 2.0, 1.0]))
    assert la.losses[0] != pytest.approx(plain.losses[0])  # the prior enters the loss
    logits = lt.predict_logits(plain_model, xs)
    assert logits.shape == (64, 4) and lt.balanced_accuracy(logits.argmax(-1), y, 4) > 0.25


def test_run_rows_and_posthoc(lt):
    x, y = synthetic(4, 24)
    keep = lt.longtail_indices(y, [24, 12, 6, 3], torch.Generator().manual_seed(0))
    cfg = lt.TrainConfig(epochs=1, batch_size=16)
    results = lt.run(x[keep], y[keep], x, y, num_classes=4, seeds=[0, 1], cfg=cfg, flood=0.1,
                     flood_modes=["batch", "sample"], log=lambda s: None)
    methods = list(dict.fromkeys(r["method"] for r in results))
    assert methods == ["CE", "CE + post-hoc LA", "LA loss", "CE + flood b=0.1", "CE + flood b=0.1 + post-hoc LA",
                       "LA loss + flood b=0.1", "CE + iFlood b=0.1", "CE + iFlood b=0.1 + post-hoc LA",
                       "LA loss + iFlood b=0.1"]
    assert len(results) == 2 * len(methods)
    assert all(0.0 <= r[k] <= 1.0 for r in results for k in ("balanced", "head", "tail"))
    rows = lt.summarise(results)
    assert [r[0] for r in rows] == methods and all("±" in r[1] for r in rows)
    assert "| CE + post-hoc LA |" in lt.format_markdown(rows) and "LA loss" in lt.format_text(rows)
    # the post-hoc rows predict argmax(logits - log prior): from equal logits, the rarest class
    prior = kexue.class_prior(y[keep], 4)
    adjusted = lt.posthoc_adjusted(torch.zeros(2, 4), prior)
    assert adjusted.argmax(-1).tolist() == [3, 3]
    torch.testing.assert_close(adjusted[0], -prior.log())


def test_main_end_to_end(lt, tmp_path):
    x, y = synthetic(10, 12, size=8)
    for key, arr in (("train_x", x), ("train_y", y), ("test_x", x), ("test_y", y)):
        write_idx(tmp_path / (lt.FILES[key] + ".gz"), arr.numpy())
    out = tmp_path / "table.md"
    rc = lt.main(["--data-dir", str(tmp_path), "--n-max", "12", "--ratio", "6", "--epochs", "1", "--seeds", "0,1",
                  "--flood-modes", "batch", "--threads", "1", "--out", str(out)])
    assert rc == 0
    text = out.read_text()
    assert "counts [12, 9, 8, 6, 5, 4, 3, 2, 2, 2]" in text
    assert text.count("\n| ") == 7  # header + 6 methods
