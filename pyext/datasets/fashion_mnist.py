"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 70 000 grey 28x28 images of 10 kinds of clothing.

Source: the Debian package ``dataset-fashion-mnist`` (version ``0.0~git20200523.55506a9-1``), whose
``/usr/share/datasets/fashion-mnist/`` holds the four original IDX files
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``).  The package is fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x`` into the kexue cache (never installed); a machine where the package is installed
reads ``/usr/share/datasets/fashion-mnist`` directly.

Licence: MIT ("Expat" in Debian's copyright file), Copyright 2017 Zalando SE.

Split: the official one, 60 000 train / 10 000 test (1 000 test images per class).  Labels 0..9 are
:data:`CLASS_NAMES`, in that order.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import torch

from ._fetch import debian_package

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_VERSION = "0.0~git20200523.55506a9-1"
INSTALLED_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file of unsigned bytes, gzipped or not (header: 0, 0, 0x08, ndim, then ndim big-endian uint32)."""
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def _find(data_dir: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    return None


def default_data_dir() -> str:
    """``/usr/share/datasets/fashion-mnist`` when the package is installed, else the unpacked download."""
    if all(_find(INSTALLED_DIR, stem) for stem in FILES.values()):
        return INSTALLED_DIR
    root = debian_package(DEBIAN_PACKAGE)
    return str(Path(root) / INSTALLED_DIR.lstrip("/"))


def fashion_mnist(data_dir: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The four arrays: ``train_x``/``test_x`` (N, 28, 28) uint8 and ``train_y``/``test_y`` (N,) int64.

    ``data_dir``: a folder holding the four IDX files (``.gz`` or not).  ``None`` reads the installed
    Debian package or fetches it (see the module docstring).  A missing file raises
    ``FileNotFoundError`` naming the Debian package.

    Example::

        >>> from kexue.datasets import fashion_mnist
        >>> data = fashion_mnist()
        >>> data["train_x"].shape, data["test_y"].bincount().tolist()[:3]
        (torch.Size([60000, 28, 28]), [1000, 1000, 1000])
    """
    data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
    paths = {key: _find(data_dir, stem) for key, stem in FILES.items()}
    missing = [FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {data_dir!r} (missing {', '.join(missing)}[.gz]). Install the Debian "
            f"package {DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}, files in {INSTALLED_DIR}), call "
            f"kexue.datasets.fashion_mnist() with no folder to fetch it, or pass a folder holding the four IDX files.")
    out = {}
    for key, path in paths.items():
        arr = torch.from_numpy(read_idx(path).copy())
        out[key] = arr.long() if key.endswith("_y") else arr
    return out
