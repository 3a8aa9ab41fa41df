"""Shared test helpers: devices, backends that must run here, tolerance rule."""

from __future__ import annotations

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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
