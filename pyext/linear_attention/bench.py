"""Benchmark cases of linear attention for `python -m kexue bench`.

CPU: float32, B=2, H=4, N in {1024, 4096}, D=64 (issue targets: the "cpu" backend's causal
forward+backward >= 1.5x the chunked reference, peak memory <= 2x inputs + outputs).
CUDA: bf16, B=8, H=16, N in {1024, 4096, 16384}, D in {64, 128}, against flash-linear-attention
and torch SDPA (softmax attention) when available.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from ..benchmarking import BenchCase
from .api import BACKENDS, linear_attention


def _inputs(B, H, N, D, dtype, device, grad):
    return [torch.randn(B, H, N, D, dtype=dtype, device=device, requires_grad=grad) for _ in range(3)]


def _kexue(backend: str, shape, causal: bool, mode: str, dtype, device) -> Callable[[], Callable[[], object]]:
    def setup():
        q, k, v = _inputs(*shape, dtype, device, mode != "fwd")
        go = torch.randn_like(q)

        def fwd():
            with torch.no_grad():
                return linear_attention(q, k, v, causal=causal, backend=backend)

        def fwd_bwd():
            out = linear_attention(q, k, v, causal=causal, backend=backend)
            return torch.autograd.grad(out, (q, k, v), go)

        return fwd if mode == "fwd" else fwd_bwd

    return setup


def _sdpa(shape, causal: bool, mode: str, dtype, device):
    def setup():
        q, k, v = _inputs(*shape, dtype, device, mode != "fwd")
        go = torch.randn_like(q)
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def fwd():
            with torch.no_grad():
                return sdpa(q, k, v, is_causal=causal)

        def fwd_bwd():
            return torch.autograd.grad(sdpa(q, k, v, is_causal=causal), (q, k, v), go)

        return fwd if mode == "fwd" else fwd_bwd

    return setup


def _fla(fn_name: str, shape, causal: bool, mode: str, dtype, device, normalize: bool):
    """flash-linear-attention's chunked kernels (causal only; (B, N, H, D) layout, elu+1 mapped here)."""

    def setup():
        import fla.ops.linear_attn as fla_la

        fn = getattr(fla_la, fn_name)
        B, H, N, D = shape
        q, k, v = (torch.randn(B, N, H, D, dtype=dtype, device=device, requires_grad=mode != "fwd") for _ in range(3))
        go = torch.randn_like(q)

        def run():
            fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
            out = fn(fq, fk, v, scale=1.0, normalize=normalize)
            return out[0] if isinstance(out, tuple) else out

        def fwd():
            with torch.no_grad():
                return run()

        def fwd_bwd():
            return torch.autograd.grad(run(), (q, k, v), go)

        return fwd if mode == "fwd" else fwd_bwd

    return setup


def cases(device: torch.device, quick: bool = False) -> list[BenchCase]:
    if device.type == "cuda":
        dtype, B, H = torch.bfloat16, 8, 16
        grid = [(N, D) for N in ((1024,) if quick else (1024, 4096, 16384)) for D in (64, 128)]
    else:
        dtype, B, H = torch.float32, 2, 4
        grid = [(N, 64) for N in ((256,) if quick else (1024, 4096))]
    backends = BACKENDS.timed_backends(device)
    has_fla = device.type == "cuda" and importlib.util.find_spec("fla") is not None
    out = []
    for N, D in grid:
        shape = (B, H, N, D)
        tensor_bytes = B * H * N * D * torch.tensor([], dtype=dtype).element_size()
        for causal in (True, False):
            for mode in ("fwd", "fwd+bwd"):
                providers = {"torch": _kexue("torch", shape, causal, mode, dtype, device)}
                for b in backends:
                    providers[b] = _kexue(b, shape, causal, mode, dtype, device)
                if device.type == "cuda":
                    providers["sdpa"] = _sdpa(shape, causal, mode, dtype, device)
                if has_fla and causal:
                    providers["fla_chunk"] = _fla("chunk_linear_attn", shape, causal, mode, dtype, device, True)
                    providers["fla_fused"] = _fla("fused_chunk_linear_attn", shape, causal, mode, dtype, device, True)
                tag = f"B{B} H{H} N{N} D{D} {str(dtype).removeprefix('torch.')}"
                # fwd: q, k, v in, out out; fwd+bwd: q, k, v, grad_out in, out, dq, dk, dv out
                n_in, n_out = (3, 1) if mode == "fwd" else (4, 4)
                out.append(BenchCase("linear_attention" + ("/causal" if causal else ""), tag, mode, providers,
                                     input_bytes=n_in * tensor_bytes, output_bytes=n_out * tensor_bytes))
    return out
