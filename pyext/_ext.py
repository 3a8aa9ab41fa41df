"""Loading of the compiled libraries and questions to the dispatcher.

``kexue._C`` (CPU ops and every op schema) is always built; ``kexue._C_cuda`` only where torch
has CUDA.  Whether a backend can run is asked of the dispatcher (does op X have a kernel for
dispatch key Y?), never guessed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re

import torch

try:  # written by setup.py: what the compiled libraries were built for
    from ._build_info import BUILD
except ImportError:  # a source tree whose libraries predate it: nothing to compare with
    BUILD = None

FROM_SOURCE = "pip install --no-build-isolation . (or `make wheel` for a wheel; see the README)"


def torch_mismatch(built: str, running: str) -> str | None:
    """The import error when the running torch is not the release the libraries were built
    against (their C++ ABI is bound to it), or None when they match ("2.11.0+cu130" matches "2.11.0")."""
    release_built, release_running = built.split("+")[0], running.split("+")[0]
    if release_built == release_running:
        return None
    return (
        f"this kexue was built against torch {built}, but torch {running} is installed; its compiled "
        "libraries only load with the torch release they were built against. Either install that torch "
        f"(pip install torch=={release_built}) or build kexue from source against this torch: {FROM_SOURCE}."
    )


if BUILD is not None:
    _mismatch = torch_mismatch(BUILD["torch"], torch.__version__)
    if _mismatch:
        raise ImportError(_mismatch)

try:
    from . import _C  # noqa: F401  (registers the schemas and the CPU kernels)
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        f"kexue's compiled library kexue._C is missing or does not load ({exc}). Build it against "
        f"the installed torch {torch.__version__}: {FROM_SOURCE}."
    ) from exc

CUDA_LIBRARY_ERROR: str | None = None
if importlib.util.find_spec("kexue._C_cuda") is not None:
    if BUILD is not None and BUILD.get("cuda") and not torch.version.cuda:
        CUDA_LIBRARY_ERROR = (f"this kexue was built for CUDA {BUILD['cuda']}, but the installed torch "
                              f"{torch.__version__} has no CUDA")
    else:
        try:
            importlib.import_module("kexue._C_cuda")
        except (ImportError, OSError) as exc:  # pragma: no cover - only where CUDA is built
            CUDA_LIBRARY_ERROR = str(exc)
else:
    CUDA_LIBRARY_ERROR = "kexue was built without CUDA (torch without CUDA, or nvcc not found)"


def arch_runs(arch: str, capability: tuple[int, int]) -> bool:
    """Whether code compiled for ``arch`` ("sm_80", "sm_90a", "compute_90") runs on a GPU of this
    compute capability: a cubin on the same major and a minor at least its own ("a" cubins: that
    GPU only); PTX on any GPU at least its version (the driver JIT-compiles it)."""
    m = re.fullmatch(r"(sm|compute)_(\d+)(\d)(a?)", arch)
    if m is None:
        return False
    kind, major, minor, specific = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    if specific:
        return capability == (major, minor)
    if kind == "sm":
        return capability[0] == major and capability[1] >= minor
    return capability >= (major, minor)


def arch_problem(archs: list[str], capability: tuple[int, int], gpu: str = "this GPU") -> str:
    """"" when the CUDA library has code (cubin or PTX) for ``capability``, else why not."""
    if not archs or any(arch_runs(a, capability) for a in archs):
        return ""
    cc = f"{capability[0]}.{capability[1]}"
    return (f"kexue's CUDA library holds code for {', '.join(archs)} only, none of which runs on {gpu} "
            f"(compute capability {cc}); build it for this GPU with TORCH_CUDA_ARCH_LIST=\"{cc}\" "
            f"(make wheel, or {FROM_SOURCE})")


@functools.cache
def _cuda_arch_problem(index: int) -> str:
    archs = (BUILD or {}).get("cuda_archs") or []
    if not archs:
        return ""
    return arch_problem(archs, torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index))


# Asked by the dispatcher before it picks the CUDA backend, so a GPU the library has no code for
# falls back instead of failing inside an op with "no kernel image"; a constant under torch.compile.
@torch.compiler.assume_constant_result
def cuda_arch_problem(index: int) -> str:
    """"" when kexue's CUDA library has code for GPU ``index``, else the reason it cannot run there."""
    return _cuda_arch_problem(index)


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


def cpu_cache_bytes() -> int:
    """Bytes held by the cache of large CPU output buffers (csrc/common/cpu_buffer_cache.h): freed
    gradients of 16 MiB or more that the next call of about their size reuses, so that it does not
    fault fresh pages in again.  Bounded by KEXUE_CPU_CACHE_MB (default 2048; 0 turns it off)."""
    return int(torch.ops.kexue.cpu_cache_bytes())


def empty_cpu_cache() -> int:
    """Frees every buffer the CPU buffer cache holds (as ``torch.cuda.empty_cache`` does on CUDA);
    returns the bytes released.  Buffers in use are not touched."""
    return int(torch.ops.kexue.cpu_cache_release())


def triton_status() -> tuple[bool, str]:
    """(usable, reason): Triton kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install 'kexue[triton]')"
    return True, ""
