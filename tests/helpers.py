"""Shared test helpers: devices, backends that must run here, tolerance rule."""

from __future__ import annotations

import importlib.util
import os

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
HAS_TRITON = importlib.util.find_spec("triton") is not None


def triton_runs_on(device: str) -> bool:
    """Triton kernels run compiled on CUDA tensors, and on CPU tensors only under the interpreter
    (TRITON_INTERPRET=1, set by conftest.py when there is no GPU).  The mode is one per process:
    on a GPU machine the suite tests compiled Triton on CUDA and skips Triton on CPU tensors."""
    if not HAS_TRITON:
        return False
    if device == "cpu":
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return device == "cuda"


TRITON_DEVICES = [d for d in DEVICES if triton_runs_on(d)]


def expected_backends() -> dict[str, list[str]]:
    """Backends that must run on each device: the reference ("torch"), the device's native
    kernel ("cpu"/"cuda"), and "triton" where it runs (see :func:`triton_runs_on`).  A test
    that finds an expected backend unavailable fails, it does not skip."""
    return {d: ["torch", d] + (["triton"] if triton_runs_on(d) else []) for d in ("cpu", "cuda")}


def backend_pairs(expected: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(backend, device) for every device present and every backend expected there."""
    return [(b, d) for d in DEVICES for b in expected[d]]


def error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max |x - ref| in float64 (NaN propagates, so unwritten poisoned outputs fail)."""
    d = (x.double() - ref.double()).abs()
    if d.numel() == 0:
        return 0.0
    return float("nan") if torch.isnan(d).any() else float(d.max())


def assert_close_rule(out, ref64, ref_same_dtype, *, floor: float, name: str = "out") -> None:
    """flash-attention's rule: the kernel's error against the float64 reference is at most
    2x the error of the plain-PyTorch reference run in the same dtype, plus a floor for
    float32 rounding (the floor is written next to each call)."""
    err = error(out, ref64)
    base = error(ref_same_dtype, ref64)
    assert err == err, f"{name}: NaN in output (unwritten or invalid)"
    assert err <= 2 * base + floor, f"{name}: error {err:.3g} > 2 x reference error {base:.3g} + {floor:g}"


def backend_available(op_backends, backend: str, device: str) -> tuple[bool, str]:
    return op_backends.availability(backend, torch.device(device))
