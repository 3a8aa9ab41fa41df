"""Benchmark cases of cross_entropy for `python -m kexue bench`.

CPU: float32, N=4096, C in {1000, 32000} (issue targets: the "cpu" backend's forward+backward
>= 2x faster than the torch composite, with at most half its peak memory).  Options: plain CE,
and logit adjustment + label smoothing + batch flooding ("la+ls+flood").
CUDA: bf16, N=8192, C=128256 against Liger-Kernel and the compiled torch composite when
available.  F.cross_entropy ("torch_F") is shown for context where it computes the same loss.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..benchmarking import BenchCase
from .api import BACKENDS, cross_entropy
from .reference import cross_entropy_reference

VARIANTS = {
    "plain": {},
    "la+ls+flood": {"prior": True, "label_smoothing": 0.1, "flood": 0.5},
}


def _options(variant: str, C: int, device) -> dict:
    kw = dict(VARIANTS[variant])
    if kw.pop("prior", False):
        kw["prior"] = torch.rand(C, device=device).pow(3) * 100 + 0.01
    return kw


def _setup(fn: Callable, N: int, C: int, dtype, device, mode: str, kw: dict):
    def setup():
        x = torch.randn(N, C, dtype=dtype, device=device, requires_grad=mode != "fwd")
        t = torch.randint(0, C, (N,), device=device)

        def fwd():
            with torch.no_grad():
                return fn(x, t, **kw)

        def fwd_bwd():
            return torch.autograd.grad(fn(x, t, **kw), x)

        return fwd if mode == "fwd" else fwd_bwd

    return setup


def _kexue(backend: str) -> Callable:
    return lambda x, t, **kw: cross_entropy(x, t, backend=backend, **kw)


def _liger(x, t, **kw):
    from liger_kernel.transformers.functional import liger_cross_entropy

    return liger_cross_entropy(x, t, label_smoothing=kw.get("label_smoothing", 0.0))


def cases(device: torch.device, quick: bool = False) -> list[BenchCase]:
    if device.type == "cuda":
        dtype, grid = torch.bfloat16, [(1024, 32000)] if quick else [(8192, 128256)]
    else:
        dtype, grid = torch.float32, [(256, 1000)] if quick else [(4096, 1000), (4096, 32000)]
    backends = BACKENDS.timed_backends(device)
    has_liger = device.type == "cuda" and importlib.util.find_spec("liger_kernel") is not None
    es = torch.tensor([], dtype=dtype).element_size()
    out = []
    for N, C in grid:
        for variant in VARIANTS:
            kw = _options(variant, C, device)
            for mode in ("fwd", "fwd+bwd"):
                providers = {"torch": _setup(cross_entropy_reference, N, C, dtype, device, mode, kw)}
                if device.type == "cuda":
                    compiled = torch.compile(cross_entropy_reference)
                    providers["torch_compile"] = _setup(compiled, N, C, dtype, device, mode, kw)
                for b in backends:
                    providers[b] = _setup(_kexue(b), N, C, dtype, device, mode, kw)
                if variant == "plain":
                    providers["torch_F"] = _setup(F.cross_entropy, N, C, dtype, device, mode, {})
                    if has_liger:
                        providers["liger"] = _setup(_liger, N, C, dtype, device, mode, {})
                tag = f"N{N} C{C} {str(dtype).removeprefix('torch.')} {variant}"
                # fwd: logits + target in, a scalar out; fwd+bwd: the gradient out too
                n_out = 0 if mode == "fwd" else N * C * es
                out.append(BenchCase("cross_entropy", tag, mode, providers, input_bytes=N * C * es + N * 8,
                                     output_bytes=n_out + es))
    return out
