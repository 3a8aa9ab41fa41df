"""textgenrnn's pretrained character LSTM (Max Woolf), loaded into PyTorch without TensorFlow.

Source: ``textgenrnn/textgenrnn_weights.hdf5`` and ``textgenrnn/textgenrnn_vocab.json`` inside the
source distribution ``textgenrnn==2.0.0`` on PyPI (``pip download --no-deps --no-binary :all:
textgenrnn==2.0.0``); the package itself is never imported (it needs TensorFlow).  The weights
(462 717 parameters) were trained on Reddit submission titles; the meta token ``<s>`` starts
and ends a title.  Reading the HDF5 file needs ``h5py`` (extras ``decoding-study``).

Licence: textgenrnn is under the MIT License (Copyright (c) 2017-2020 Max Woolf).

Architecture (textgenrnn/model.py): the last 40 tokens (left-padded with 0) → Embedding(465, 100)
→ LSTM(128) → LSTM(128) (both over the whole window) → concatenation [embedding, lstm1, lstm2]
(356) → attention-weighted average over the window (one weight vector, softmax over time) →
Dense(465) softmax: the next token.  The LSTMs were saved from Keras' CuDNN path: the bias is the
input and recurrent biases stacked (8·128), which PyTorch's LSTM has as bias_ih and bias_hh, gates
in the order i, f, c, o (PyTorch's i, f, g, o).  ``gate_layout="cudnn"`` also applies Keras'
per-gate CuDNN kernel transform (``kernel.T.reshape(kernel.shape, order="F")`` per gate); the
right one is the one whose bits per character on real English text are sane (see
:func:`bits_per_char`): on the first 100 test sentences of :func:`kexue.datasets.movie_snippets`
(English, but not Reddit titles) the "cudnn" layout gives 2.40 bits per character and the plain
"keras" one 70.4 (worse than uniform over 465 tokens, 8.86): "cudnn" is the default.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ._fetch import pypi_distribution

REQUIREMENT = "textgenrnn==2.0.0"
MAX_LENGTH = 40
META_TOKEN = "<s>"


def textgenrnn_files() -> tuple[Path, Path]:
    """(weights .hdf5, vocab .json) from the cached sdist."""
    root = pypi_distribution(REQUIREMENT, sdist=True, dest_name="textgenrnn-2.0.0-sdist")
    (pkg,) = list(root.glob("*/textgenrnn"))
    return pkg / "textgenrnn_weights.hdf5", pkg / "textgenrnn_vocab.json"


def _per_gate_cudnn(kernel, n_gates: int = 4):
    import numpy as np

    return np.hstack([k.T.reshape(k.shape, order="F") for k in np.hsplit(kernel, n_gates)])


class TextgenrnnLM(nn.Module):
    """textgenrnn's network; ``forward(ids (B, 40)) -> next-token logits (B, 465)``."""

    def __init__(self, num_classes: int = 465, dim_embeddings: int = 100, hidden: int = 128):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, dim_embeddings)
        self.rnn_1 = nn.LSTM(dim_embeddings, hidden, batch_first=True)
        self.rnn_2 = nn.LSTM(hidden, hidden, batch_first=True)
        self.attention = nn.Parameter(torch.zeros(dim_embeddings + 2 * hidden))
        self.output = nn.Linear(dim_embeddings + 2 * hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embedding(ids)
        h1, _ = self.rnn_1(e)
        h2, _ = self.rnn_2(h1)
        x = torch.cat([e, h1, h2], dim=-1)
        a = torch.softmax(x @ self.attention, dim=1)
        return self.output((a[..., None] * x).sum(1))


def load_textgenrnn(gate_layout: str = "cudnn") -> tuple[TextgenrnnLM, dict[str, int]]:
    """(model in eval mode, vocab char → id) from the pretrained weights; ``gate_layout`` "keras" or "cudnn"."""
    import h5py

    if gate_layout not in ("keras", "cudnn"):
        raise ValueError(f"gate_layout must be 'keras' or 'cudnn', got {gate_layout!r}")
    weights, vocab_path = textgenrnn_files()
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    model = TextgenrnnLM()
    t = lambda a: torch.from_numpy(a.copy())  # noqa: E731
    with h5py.File(weights, "r") as f, torch.no_grad():
        model.embedding.weight.copy_(t(f["embedding/embedding/embeddings:0"][()]))
        for name in ("rnn_1", "rnn_2"):
            g = f[f"{name}/{name}"]
            kernel, rec, bias = g["kernel:0"][()], g["recurrent_kernel:0"][()], g["bias:0"][()]
            if gate_layout == "cudnn":
                kernel, rec = _per_gate_cudnn(kernel), _per_gate_cudnn(rec)
            lstm = getattr(model, name)
            H = rec.shape[0]
            lstm.weight_ih_l0.copy_(t(kernel).T)
            lstm.weight_hh_l0.copy_(t(rec).T)
            lstm.bias_ih_l0.copy_(t(bias[: 4 * H]))
            lstm.bias_hh_l0.copy_(t(bias[4 * H:]))
        model.attention.copy_(t(f["attention/attention/attention_W:0"][()])[:, 0])
        model.output.weight.copy_(t(f["output/output/kernel:0"][()]).T)
        model.output.bias.copy_(t(f["output/output/bias:0"][()]))
    return model.eval(), vocab


def encode(text: str, vocab: dict[str, int]) -> list[int]:
    """Characters → ids (characters outside the vocabulary are skipped, as textgenrnn does)."""
    return [vocab[c] for c in text if c in vocab]


def windows(ids: list[int]) -> torch.Tensor:
    """(len(ids), 40): row t = the 40 tokens before ids[t] (the context that predicts it), left-padded with 0."""
    padded = [0] * MAX_LENGTH + ids
    return torch.tensor([padded[t: t + MAX_LENGTH] for t in range(len(ids))])


@torch.no_grad()
def bits_per_char(model: TextgenrnnLM, vocab: dict[str, int], texts: list[str]) -> float:
    """Mean −log2 p(next char) over texts, each starting from ``<s>`` and ending with ``<s>``."""
    total, n = 0.0, 0
    meta = vocab[META_TOKEN]
    for text in texts:
        ids = [meta] + encode(text, vocab) + [meta]
        x = windows(ids)[1:]  # row t: the 40 tokens before ids[t]
        logp = torch.log_softmax(model(x).double(), dim=-1)
        total += float(-logp.gather(1, torch.tensor(ids[1:])[:, None]).sum()) / torch.log(torch.tensor(2.0)).item()
        n += len(ids) - 1
    return total / n
