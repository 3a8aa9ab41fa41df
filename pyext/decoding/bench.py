"""Benchmark cases of kexue.sample for `python -m kexue bench --op sample`.

The issue's grid: B in {1, 32, 128} x V in {32 000, 128 256}, float32 logits, with top_k=50 +
top_p=0.9 and with top_p=0.9 alone; the reference provider is Hugging Face's
TopKLogitsWarper + TopPLogitsWarper + softmax + torch.multinomial ("hf"), timed side by side
with kexue's backends (target: >= 5x at B >= 32 on the CPU). On a GPU the table adds the
torch.compile'd HF pipeline and FlashInfer's top_k_top_p_sampling_from_logits when installed.
"""

from __future__ import annotations

import importlib.util

import torch

from ..benchmarking import BenchCase
from .api import BACKENDS, sample

FILTERS = {"k50+p0.9": dict(top_k=50, top_p=0.9), "p0.9": dict(top_p=0.9)}


def hf_sample(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """What HF's generate does per step: the warpers, softmax, multinomial."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    scores = logits
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.multinomial(scores.softmax(dim=-1), 1)[:, 0]


def _setup(fn, B: int, V: int, device, kw: dict):
    def setup():
        x = torch.randn(B, V, device=device) * 3

        def run():
            with torch.no_grad():
                return fn(x, **kw)

        return run

    return setup


def _flashinfer(x, top_k=None, top_p=None):
    import flashinfer

    return flashinfer.sampling.top_k_top_p_sampling_from_logits(x, top_k or x.shape[1], top_p or 1.0)


def cases(device: torch.device, quick: bool = False) -> list[BenchCase]:
    grid = [(4, 1000)] if quick else [(B, V) for V in (32000, 128256) for B in (1, 32, 128)]
    backends = BACKENDS.timed_backends(device)
    has_fi = device.type == "cuda" and importlib.util.find_spec("flashinfer") is not None
    out = []
    for B, V in grid:
        for tag, kw in FILTERS.items():
            providers = {"hf": _setup(hf_sample, B, V, device, kw)}
            if device.type == "cuda":
                providers["hf_compile"] = _setup(torch.compile(hf_sample), B, V, device, kw)
                if has_fi:
                    providers["flashinfer"] = _setup(_flashinfer, B, V, device, kw)
            for b in backends:
                providers[b] = _setup(lambda x, b=b, **k: sample(x, backend=b, **k), B, V, device, kw)
            out.append(BenchCase("sample", f"B{B} V{V} float32 {tag}", "fwd", providers, reference="hf",
                                 input_bytes=B * V * 4, output_bytes=B * 8))
    return out
