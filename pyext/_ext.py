"""Loading of the compiled libraries and questions to the dispatcher.

``kexue._C`` (CPU ops and every op schema) is always built; ``kexue._C_cuda`` only where torch
has CUDA.  Whether a backend can run is asked of the dispatcher (does op X have a kernel for
dispatch key Y?), never guessed.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

try:
    from . import _C  # noqa: F401  (registers the schemas and the CPU kernels)
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "kexue's compiled library kexue._C is missing or does not load "
        f"({exc}). Build it with `pip install --no-build-isolation -e .` against the installed torch."
    ) from exc

CUDA_LIBRARY_ERROR: str | None = None
if importlib.util.find_spec("kexue._C_cuda") is not None:
    try:
        importlib.import_module("kexue._C_cuda")
    except (ImportError, OSError) as exc:  # pragma: no cover - only where CUDA is built
        CUDA_LIBRARY_ERROR = str(exc)
else:
    CUDA_LIBRARY_ERROR = "kexue was built without CUDA (torch without CUDA, or nvcc not found)"


# Registrations happen when the libraries load, so under torch.compile the answer is a constant
# of the traced program (dynamo cannot trace the C++ query itself: it would break the graph).
@torch.compiler.assume_constant_result
def has_kernel(op: str, dispatch_key: str) -> bool:
    """True when ``kexue::<op>`` has a kernel registered for ``dispatch_key`` ("CPU", "CUDA")."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"kexue::{op}", dispatch_key)


def cpu_isa() -> str:
    """The instruction-set path of the CPU kernels in this process: "avx512", "avx2" or "base"
    (the widest this CPU runs, capped by the environment variable KEXUE_CPU_ISA=avx2|base)."""
    return torch.ops.kexue.cpu_isa()


def triton_status() -> tuple[bool, str]:
    """(usable, reason): Triton kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install 'kexue[triton]')"
    return True, ""
