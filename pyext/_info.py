"""``kexue.build_info()`` and ``python -m kexue info``: what this kexue was built for, what it runs
on, and which backends can run here."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import torch

from . import _ext

# One op per family: each reports its backends on each device.
_OPS = {
    "linear_attention": ("kexue.linear_attention.api", "BACKENDS"),
    "cross_entropy": ("kexue.cross_entropy.api", "BACKENDS"),
    "probe.masked_batch": ("kexue.probe.kernels", "MASKED_BATCH"),
}


def _version() -> str:
    try:
        return importlib.metadata.version("kexue")
    except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        from . import __version__

        return __version__


def _gpus() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        cc = torch.cuda.get_device_capability(i)
        out.append({"index": i, "name": torch.cuda.get_device_name(i), "capability": f"{cc[0]}.{cc[1]}",
                    "kexue_code": not _ext.cuda_arch_problem(i)})
    return out


def build_info() -> dict[str, Any]:
    """What this kexue was built for and what it runs on.

    Returns a dict with:
      * ``version``: the installed version (``0.1.0+cu130torch2.11``: CUDA 13.0, torch 2.11);
      * ``build``: torch, CUDA, GPU architectures (``sm_XY`` cubins, ``compute_XY`` PTX) and
        compiler of the compiled libraries (None for a source tree built before this was recorded);
      * ``runtime``: Python, the running torch and its CUDA, the GPUs (with whether kexue has code
        for each), the CPU kernels' instruction set;
      * ``backends``: per op family and device, each backend's availability and the reason when not.

    Example:
        >>> import kexue
        >>> info = kexue.build_info()
        >>> sorted(info)
        ['backends', 'build', 'runtime', 'version']
    """
    import importlib

    devices = [torch.device("cpu")] + [torch.device("cuda", g["index"]) for g in _gpus()]
    backends: dict[str, dict[str, dict[str, Any]]] = {}
    for op, (module, attr) in _OPS.items():
        table = getattr(importlib.import_module(module), attr)
        for dev in devices:
            rows = backends.setdefault(op, {}).setdefault(str(dev), {})
            for b in ("cpu", "cuda", "triton"):
                if b in table.impls and (b == "triton" or b == dev.type):  # native kernels: own device only
                    ok, why = table.availability(b, dev)
                    rows[b] = {"available": ok, "reason": why}
    return {
        "version": _version(),
        "build": dict(_ext.BUILD) if _ext.BUILD is not None else None,
        "runtime": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "gpus": _gpus(),
            "cpu_isa": _ext.cpu_isa(),
            "cuda_library": "loaded" if _ext.CUDA_LIBRARY_ERROR is None else _ext.CUDA_LIBRARY_ERROR,
        },
        "backends": backends,
    }


def format_info(info: dict[str, Any]) -> str:
    """The text ``python -m kexue info`` prints."""
    lines = [f"kexue {info['version']}"]
    b = info["build"]
    if b is None:
        lines.append("  built for:   unknown (libraries built before build info was recorded; rebuild to record it)")
    else:
        archs = ", ".join(b["cuda_archs"]) if b.get("cuda_archs") else "none"
        cuda = f"CUDA {b['cuda']} (nvcc {b['nvcc']}), GPU code {archs}" if b.get("cuda") else "no CUDA"
        lines.append(f"  built for:   torch {b['torch']}, {cuda}; {b['cxx']}; {b['python_abi']}")
    r = info["runtime"]
    lines.append(f"  running:     Python {r['python']}, torch {r['torch']}"
                 + (f" (CUDA {r['torch_cuda']})" if r["torch_cuda"] else " (no CUDA)")
                 + f", CPU kernels {r['cpu_isa']}")
    for g in r["gpus"]:
        lines.append(f"  GPU {g['index']}:       {g['name']}, compute capability {g['capability']}"
                     + ("" if g["kexue_code"] else " (no kexue CUDA code for it)"))
    if not r["gpus"]:
        lines.append("  GPU:         none visible")
    if r["cuda_library"] != "loaded":
        lines.append(f"  CUDA library: {r['cuda_library']}")
    for op, per_dev in info["backends"].items():
        for dev, rows in per_dev.items():
            cells = [name if row["available"] else f"{name}: no ({row['reason']})" for name, row in rows.items()]
            lines.append(f"  {op} on {dev}: " + "; ".join(cells))
    return "\n".join(lines)
