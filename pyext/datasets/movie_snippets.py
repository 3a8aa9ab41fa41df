"""Rotten Tomatoes movie-review snippets with human sentiment ratings (Hutto & Gilbert 2014).

Source: the file ``additional_resources/hutto_ICWSM_2014.tar.gz`` →
``hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt`` inside the **source distribution** of
``vaderSentiment==3.3.2`` on PyPI (the wheel does not contain it), fetched with
``pip download --no-deps --no-binary :all: vadersentiment==3.3.2``.  10 605 sentences, each
``id \\t mean rating in [-4, 4] \\t text``: the sentences are Pang & Lee's (2005) Rotten Tomatoes
snippets, rated by 20 people each for the VADER paper (C.J. Hutto and E.E. Gilbert, "VADER: A
Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM 2014).

Licence: the vaderSentiment distribution, this file included, is under the MIT License
(Copyright (c) 2016 C.J. Hutto).

Labels: 1 (positive) for a mean rating > 0, 0 (negative) for < 0; the 37 sentences rated exactly
0 are dropped, leaving 10 568.  The split is fixed: a permutation drawn once from a seeded
generator (seed 0) gives 80% train, 10% dev, 10% test.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass

import torch

from ._fetch import pypi_distribution

REQUIREMENT = "vadersentiment==3.3.2"
MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class TextSplit:
    """One split: parallel lists of texts, 0/1 labels and the raw mean ratings in [-4, 4]."""

    texts: list[str]
    labels: list[int]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.texts)


def _read_rows() -> list[tuple[str, float]]:
    root = pypi_distribution(REQUIREMENT, sdist=True, dest_name="vadersentiment-3.3.2-sdist")
    (inner,) = list(root.glob("*/additional_resources/hutto_ICWSM_2014.tar.gz"))
    with tarfile.open(inner) as tf:
        raw = tf.extractfile(MEMBER).read().decode("utf-8")
    rows = []
    for line in raw.split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        _, score, text = line.split("\t", 2)
        rows.append((text.strip(), float(score)))
    return rows


def movie_snippets() -> dict[str, TextSplit]:
    """The labelled snippets as ``{"train", "dev", "test"}`` splits (fixed; see the module docstring).

    Example::

        data = kexue.datasets.movie_snippets()
        len(data["train"]), data["test"].texts[0], data["test"].labels[0]
    """
    rows = [(t, s) for t, s in _read_rows() if s != 0.0]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_train = int(SPLIT_FRACTIONS[0] * len(rows))
    n_dev = int(SPLIT_FRACTIONS[1] * len(rows))
    parts = {"train": order[:n_train], "dev": order[n_train:n_train + n_dev], "test": order[n_train + n_dev:]}
    out = {}
    for name, idx in parts.items():
        texts = [rows[i][0] for i in idx]
        scores = [rows[i][1] for i in idx]
        out[name] = TextSplit(texts, [int(s > 0) for s in scores], scores)
    return out
