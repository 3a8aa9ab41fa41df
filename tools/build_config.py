"""What a kexue build targets: the CUDA toolkit, the CUDA runtime to link, the GPU architectures.

Used by setup.py (which imports it from tools/) and by tools/build_wheel.py; needs only the standard
library and, where it asks torch, an installed torch.

* :func:`find_cuda_home` finds nvcc the way a pip-only machine has it: ``CUDA_HOME`` /
  ``CUDA_PATH``, ``nvcc`` on ``PATH``, pip's ``cuda-toolkit`` packages (``site-packages/nvidia/cu<major>``,
  whose ``bin/nvcc`` is on no ``PATH``), then ``/usr/local/cuda``.
* :func:`cudart_link` links the CUDA runtime by its versioned file name when the unversioned
  ``libcudart.so`` is absent (pip's ``nvidia-cuda-runtime`` ships only ``libcudart.so.<major>``).
* :func:`arch_targets` turns ``TORCH_CUDA_ARCH_LIST`` into the cubins and PTX the build embeds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# The architectures built when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible: A100 and
# H100 SASS, plus H100 PTX that newer GPUs JIT-compile at first use.
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _site_dirs() -> list[Path]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]
    seen: list[Path] = []
    for d in dirs:
        p = Path(d) if d else None
        if p is not None and p.is_dir() and p not in seen:
            seen.append(p)
    return seen


def pip_cuda_homes(cuda_major: str | None) -> list[Path]:
    """``site-packages/nvidia/cu<major>`` folders holding pip's nvcc (cuda-toolkit[nvcc] wheels)."""
    homes = []
    for d in _site_dirs():
        for home in sorted(d.glob(f"nvidia/cu{cuda_major or '*'}")):
            if (home / "bin" / "nvcc").is_file() and home not in homes:
                homes.append(home)
    return homes


def find_cuda_home(cuda_major: str | None = None) -> tuple[str | None, str]:
    """(CUDA home or None, where it was found).  ``cuda_major``: torch's CUDA major version, to
    pick pip's ``nvidia/cu<major>`` toolkit that matches it."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            return home, f"${var}"
    nvcc = shutil.which("nvcc")
    if nvcc:
        return str(Path(nvcc).resolve().parent.parent), "nvcc on PATH"
    pip = pip_cuda_homes(cuda_major)
    if pip:
        return str(pip[0]), "pip's cuda-toolkit packages"
    if Path("/usr/local/cuda/bin/nvcc").is_file():
        return "/usr/local/cuda", "/usr/local/cuda"
    return None, "no nvcc: not in $CUDA_HOME, on PATH, in pip's nvidia/cu<major> packages, or in /usr/local/cuda"


def nvcc_version(cuda_home: str) -> str | None:
    """The release nvcc reports ("13.0.88"), or None when it does not run."""
    try:
        out = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"V(\d+\.\d+\.\d+)", out) or re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def cuda_lib_dir(cuda_home: str) -> Path:
    """The folder torch.utils.cpp_extension links from: lib64, or lib where lib64 is absent."""
    home = Path(cuda_home)
    return home / "lib64" if (home / "lib64").is_dir() or not (home / "lib").is_dir() else home / "lib"


def cudart_link(cuda_home: str) -> tuple[list[str], list[str]]:
    """(libraries, extra link args) that link the CUDA runtime from ``cuda_home``.

    ``-lcudart`` needs the unversioned ``libcudart.so`` that only a full toolkit install has;
    otherwise the versioned file (``libcudart.so.13``) is named with ``-l:``.  The library's
    NEEDED entry is the runtime's soname either way, which torch's own CUDA libraries load.
    """
    lib = cuda_lib_dir(cuda_home)
    if (lib / "libcudart.so").exists():
        return ["cudart"], []
    versioned = sorted(lib.glob("libcudart.so.[0-9]*"), key=lambda p: len(p.name))
    if versioned:
        return [], [f"-L{lib}", f"-l:{versioned[0].name}"]
    return ["cudart"], []  # nothing found: let the linker say what is missing


def arch_targets(flags: list[str]) -> list[str]:
    """["sm_80", "sm_90", "compute_90"] from nvcc's -gencode flags (sm_*: cubins, compute_*: PTX)."""
    targets = {m.group(1) for f in flags for m in [re.search(r"code=([a-z]+_\d+a?)", f)] if m}
    return sorted(targets, key=lambda t: (int(re.sub(r"\D", "", t)), t.startswith("compute")))


def torch_cuda_toolkit_pin() -> str | None:
    """The ``cuda-toolkit==X`` version the installed torch requires (torch >= 2.10 wheels declare
    it), so pip's compiler can be pinned to the same CUDA release; None when torch declares none."""
    from importlib import metadata

    try:
        reqs = metadata.requires("torch") or []
    except metadata.PackageNotFoundError:
        return None
    for r in reqs:
        m = re.match(r"cuda-toolkit(\[[^\]]*\])?\s*==\s*([0-9.*]+)", r)
        if m:
            return m.group(2)
    return None
