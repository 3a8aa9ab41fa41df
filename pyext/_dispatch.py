"""The one place where a public function's ``backend=`` argument becomes an implementation.

Backends:
  "torch"  plain-PyTorch reference that defines the semantics (any device, any float dtype)
  "cpu"    C++ kernel (CPU tensors)
  "cuda"   CUDA C++ kernel (CUDA tensors)
  "triton" Triton kernel (CUDA tensors; CPU tensors under TRITON_INTERPRET=1)
  "auto"   the fastest available for the device and shape (per-op policy)

Each op declares an :class:`OpBackends` with its implementations; an op that gains a backend
adds an entry there, and nothing in its public API changes.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import _ext
from ._autograd import forward_ad_active, functorch_active

BACKENDS = ("torch", "cpu", "cuda", "triton")


def triton_can_run(device: torch.device) -> tuple[bool, str]:
    ok, why = _ext.triton_status()
    if not ok:
        return ok, why
    if device.type == "cuda":
        return True, ""
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1":
        return True, ""
    return False, f"the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got {device}"


def native_first(device: torch.device, info: dict) -> list[str]:
    """The usual ``auto`` order: the device's native kernel, then Triton on CUDA, then the reference."""
    if device.type == "cuda":
        return ["cuda", "triton", "torch"]
    return ["cpu", "torch"]


def triton_kernel_ready(module: str, kernel: str) -> Callable[[], tuple[bool, str]]:
    """An ``OpBackends.triton_ready`` check: ``kexue.triton_kernels.<module>`` imports and has ``kernel``."""

    def ready() -> tuple[bool, str]:
        try:
            tk = importlib.import_module(f"{__package__}.triton_kernels.{module}")
        except ImportError as exc:
            return False, f"the Triton kernels do not import ({exc})"
        return (True, "") if hasattr(tk, kernel) else (False, "no Triton kernel yet")

    return ready


def eager_cpu(t: torch.Tensor) -> bool:
    """Value checks that read data run eagerly on CPU tensors only (never a device sync, never
    traced, never on a tensor batched by torch.func.vmap, whose values cannot steer Python)."""
    return (t.device.type == "cpu" and not torch.compiler.is_compiling()
            and not torch._C._functorch.is_batchedtensor(t))


@dataclass
class OpBackends:
    """Implementations of one op, keyed by backend name.

    ``native_op`` is the registered op name whose CPU/CUDA kernels back the "cpu"/"cuda"
    backends; ``auto`` orders the backends for (device, shape info): a list, or (list, reason)
    where the reason goes into what ``explain`` says; the first available one runs.
    """

    name: str
    impls: dict[str, Callable] = field(default_factory=dict)
    native_op: str | None = None
    triton_ready: Callable[[], tuple[bool, str]] | None = None
    auto: Callable[[torch.device, dict], list[str] | tuple[list[str], str]] | None = None

    def availability(self, backend: str, device: torch.device) -> tuple[bool, str]:
        """(can run, reason if not) for ``backend`` on tensors of ``device``."""
        if backend not in self.impls:
            return False, f"{self.name} has no {backend!r} backend"
        if backend == "torch":
            return True, ""
        if backend in ("cpu", "cuda"):
            if device.type != backend:
                return False, f"backend={backend!r} runs on {backend} tensors, got {device.type} tensors"
            key = "CPU" if backend == "cpu" else "CUDA"
            if self.native_op is None or not _ext.has_kernel(self.native_op, key):
                why = _ext.CUDA_LIBRARY_ERROR if backend == "cuda" else "no CPU kernel registered"
                return False, f"backend={backend!r} is not available: {why}"
            if backend == "cuda":
                index = device.index if device.index is not None else torch.cuda.current_device()
                why = _ext.cuda_arch_problem(index)
                if why:
                    return False, f"backend='cuda' is not available: {why}"
            return True, ""
        if backend == "triton":
            ok, why = triton_can_run(device)
            if ok and self.triton_ready is not None:
                ok, why = self.triton_ready()
            return ok, why
        return False, f"unknown backend {backend!r}"

    def resolve(self, backend: str, device: torch.device, info: dict | None = None) -> tuple[str, str]:
        """Returns (backend name, why it was picked); raises ValueError if it cannot run.

        Inside a torch.func transform or a forward-mode AD dual level every backend runs as the
        reference (see kexue._autograd: the kernels' registered autograd cannot enter functorch
        and has no forward-mode formula), whose results the kernels match."""
        name, why = self._resolve(backend, device, info)
        if name != "torch" and functorch_active():
            return "torch", f"{why}; inside a torch.func transform it runs as the reference (torch operators)"
        if name != "torch" and forward_ad_active():
            return "torch", f"{why}; inside a forward-mode AD dual level it runs as the reference (torch operators)"
        return name, why

    def _resolve(self, backend: str, device: torch.device, info: dict | None) -> tuple[str, str]:
        if backend == "auto":
            picked = self.auto(device, info or {}) if self.auto else ["cuda", "cpu", "triton", "torch"]
            order, reason = picked if isinstance(picked, tuple) else (picked, "")
            skipped = []
            for name in order:
                ok, why = self.availability(name, device)
                if ok:
                    note = f"auto picked {name!r} for {device.type} tensors" + (f" ({reason})" if reason else "")
                    if skipped:
                        note += " (skipped: " + "; ".join(skipped) + ")"
                    return name, note
                skipped.append(f"{name}: {why}")
            return "torch", "auto fell back to the reference: " + "; ".join(skipped)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {backend!r}")
        ok, why = self.availability(backend, device)
        if not ok:
            raise ValueError(f"{self.name}: backend={backend!r} cannot run here: {why}")
        return backend, f"backend={backend!r} requested"

    def available_backends(self, device: torch.device) -> list[str]:
        return [b for b in BACKENDS if self.availability(b, device)[0]]

    def timed_backends(self, device: torch.device) -> list[str]:
        """The fast backends worth timing on ``device``: available ones, minus Triton on the CPU
        (the interpreter runs there, and its timings mean nothing)."""
        return [b for b in ("cpu", "cuda", "triton") if self.availability(b, device)[0]
                and not (b == "triton" and device.type != "cuda")]
