"""Build script for kexue.

* ``kexue._C``       CPU C++ ops (always built); op schemas live in csrc/registration.cpp.
* ``kexue._C_cuda``  CUDA kernels + their torch binding, built only when the installed torch
                     has CUDA and nvcc is found (``torch.version.cuda and CUDA_HOME``), unless
                     ``KEXUE_NO_CUDA=1``.  ``TORCH_CUDA_ARCH_LIST`` picks the target GPUs.

Sources come from csrc/sources.txt, the list CMakeLists.txt reads too.
Build with ``pip install --no-build-isolation -e .`` (torch must already be installed); a wheel
for a target GPU with ``make wheel TORCH_CUDA_ARCH_LIST=9.0`` (tools/build_wheel.py).

* CUDA is required (the build stops with a message saying what to install, never a CPU-only
  build in silence) when ``KEXUE_CUDA=1`` or ``TORCH_CUDA_ARCH_LIST`` is set; otherwise it is
  built where torch has CUDA and nvcc is found (tools/build_config.py: ``CUDA_HOME``, ``PATH``,
  pip's ``nvidia/cu<major>``, ``/usr/local/cuda``).
* The version carries what the libraries are bound to (``0.1.0+cu130torch2.11``), the
  metadata pins that torch release (``torch==2.11.0``), and ``kexue/_build_info.py`` records
  torch, CUDA, architectures and compiler for ``kexue.build_info()`` and the import-time check.
* Release flags: no debug info, stripped libraries, no build paths (``-ffile-prefix-map``);
  ``KEXUE_DEBUG=1`` keeps symbols (-O0 -g), ``KEXUE_LINEINFO=1`` keeps nvcc's -lineinfo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
import build_config  # noqa: E402  (tools/build_config.py)

VERSION = "0.1.0"


def read_sources() -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {"cpu": [], "cuda_kernel": [], "cuda_binding": []}
    for line in (ROOT / "csrc" / "sources.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, path = line.split()
        kinds[kind].append(path)
    return kinds


def flag(name: str) -> bool:
    return os.environ.get(name, "0") == "1"


def fail(message: str) -> None:
    raise SystemExit(f"\nkexue build error: {message}\n")


def cuda_plan(torch) -> tuple[str | None, str]:
    """(CUDA home to build with, or None for a CPU-only build; the reason).  Stops the build when
    CUDA was asked for and cannot be built."""
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if flag("KEXUE_NO_CUDA"):
        if flag("KEXUE_CUDA"):
            fail("KEXUE_CUDA=1 and KEXUE_NO_CUDA=1 contradict each other; unset one.")
        return None, "KEXUE_NO_CUDA=1"
    required = flag("KEXUE_CUDA") or bool(arch_list)
    asks = [f"TORCH_CUDA_ARCH_LIST={arch_list!r}"] * bool(arch_list) + ["KEXUE_CUDA=1"] * flag("KEXUE_CUDA")
    why_required = " and ".join(asks) + (" ask" if len(asks) > 1 else " asks")
    if not torch.version.cuda:
        if required:
            fail(
                f"{why_required} for the CUDA kernels, but the installed torch {torch.__version__} "
                "has no CUDA. Install a CUDA build of torch (PyPI's `pip install torch==2.11.0` is "
                "CUDA 13.0; `make wheel` does it where torch is missing), or set KEXUE_NO_CUDA=1 "
                "(and unset TORCH_CUDA_ARCH_LIST) for a CPU-only build."
            )
        return None, f"torch {torch.__version__} has no CUDA"
    major = torch.version.cuda.split(".")[0]
    home, where = build_config.find_cuda_home(major)
    if home is None:
        if required:
            pin = build_config.torch_cuda_toolkit_pin() or f"{torch.version.cuda}.*"
            fail(
                f"{why_required} for the CUDA kernels, but nvcc was not found ({where}). "
                f"Install the compiler that matches torch's CUDA {torch.version.cuda}: "
                f"`pip install \"cuda-toolkit[nvcc,cccl,crt,nvvm]=={pin}\"` (found without CUDA_HOME), "
                "or point CUDA_HOME at a CUDA toolkit; KEXUE_NO_CUDA=1 builds the CPU library only."
            )
        return None, f"nvcc not found ({where})"
    if not (Path(home) / "bin" / "nvcc").is_file():
        fail(f"CUDA_HOME={home} ({where}) has no bin/nvcc.")
    return home, f"nvcc from {where}"


def compiler_version() -> str:
    cxx = os.environ.get("CXX", "c++").split()[-1]
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
        return out.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return cxx


def write_build_info(torch, cuda_home: str | None, archs: list[str]) -> None:
    """kexue/_build_info.py: what the compiled libraries are bound to (read without loading them)."""
    info = {
        "version": VERSION,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda_home else None,
        "cuda_archs": archs,
        "nvcc": build_config.nvcc_version(cuda_home) if cuda_home else None,
        "cxx": compiler_version(),
        "python_abi": "abi3 (CPython >= 3.10)",
        "debug": flag("KEXUE_DEBUG"),
    }
    text = (
        '"""What the compiled libraries of this kexue were built for (written by setup.py)."""\n\n'
        f"BUILD = {json.dumps(info, indent=4)}\n"
    ).replace(": null", ": None").replace(": true", ": True").replace(": false", ": False")
    (ROOT / "pyext" / "_build_info.py").write_text(text)


def prefix_maps(cuda_home: str | None) -> list[str]:
    """-ffile-prefix-map for the source tree, site-packages (torch's headers) and the toolkit:
    __FILE__ in error messages and any debug info then hold relative paths."""
    prefixes = [(str(ROOT), "kexue")]
    for key in ("purelib", "platlib", "include"):
        prefixes.append((sysconfig.get_paths()[key], key))
    if cuda_home:
        prefixes.append((str(Path(cuda_home).resolve()), "cuda"))
    seen, flags = set(), []
    for old, new in prefixes:
        if old not in seen:
            seen.add(old)
            flags.append(f"-ffile-prefix-map={old}={new}")
    return flags


def extensions():
    import torch

    cuda_home, why = cuda_plan(torch)
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import
    import torch.utils.cpp_extension as cpp

    if cuda_home:
        cpp.CUDA_HOME = cuda_home  # in case it was imported before with another answer
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.device_count() == 0:
            os.environ["TORCH_CUDA_ARCH_LIST"] = build_config.DEFAULT_ARCH_LIST
            print(f"kexue: TORCH_CUDA_ARCH_LIST unset and no GPU visible: building {build_config.DEFAULT_ARCH_LIST}")
    archs = build_config.arch_targets(cpp._get_cuda_arch_flags()) if cuda_home else []
    print(f"kexue: CUDA {'for ' + ', '.join(archs) if cuda_home else 'not built'} ({why})")
    write_build_info(torch, cuda_home, archs)

    srcs = read_sources()
    debug = flag("KEXUE_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    host = [] if debug else prefix_maps(cuda_home)
    cxx = [*opt, "-std=c++17", "-fopenmp", *host]
    link = ["-fopenmp"] if debug else ["-fopenmp", "-s"]
    include = [str(ROOT / "csrc")]
    exts = [
        cpp.CppExtension(
            "kexue._C",
            srcs["cpu"],
            include_dirs=include,
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
            py_limited_api=True,  # torch adds the one -DPy_LIMITED_API (CPython 3.10)
        )
    ]
    if cuda_home and srcs["cuda_kernel"]:
        lineinfo = ["-lineinfo"] if debug or flag("KEXUE_LINEINFO") else []
        nvcc = [*opt[:1], "-std=c++17", "--expt-relaxed-constexpr", *lineinfo, "--use_fast_math",
                *[f"-Xcompiler={f}" for f in host]]
        libraries, cudart_args = build_config.cudart_link(cuda_home)
        ext = cpp.CUDAExtension(
            "kexue._C_cuda",
            srcs["cuda_binding"] + srcs["cuda_kernel"],
            include_dirs=include,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link + cudart_args,
            py_limited_api=True,
        )
        if "cudart" not in libraries:  # CUDAExtension adds -lcudart, which needs libcudart.so
            ext.libraries = [lib for lib in ext.libraries if lib != "cudart"]
        exts.append(ext)
    return exts


def requirements() -> list[str]:
    """The torch release the libraries are bound to (its C++ ABI changes between releases)."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", "numpy"]


def local_version(exts) -> str:
    """0.1.0+cu130torch2.11 (or +cputorch2.13): the wheel's name says what it was built for."""
    import torch

    torch_mm = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    built_cuda = any(e.name == "kexue._C_cuda" for e in exts)
    tag = f"cu{torch.version.cuda.replace('.', '')}" if built_cuda else "cpu"
    return f"{VERSION}+{tag}torch{torch_mm}"


def build_ext_cls():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


def python_packages() -> list[str]:
    """Every package under pyext/ as kexue.*, found rather than listed: a capability added later
    cannot be left out of the wheel (tests/test_packaging.py checks what build_py copies)."""
    from setuptools import find_packages

    found = find_packages(str(ROOT / "pyext"), exclude=["triton_kernels", "triton_kernels.*"])  # (a dev link)
    return ["kexue", *(f"kexue.{p}" for p in found), "kexue.triton_kernels"]


EXTENSIONS = extensions()
setup(
    packages=python_packages(),
    package_dir={"kexue": "pyext", "kexue.triton_kernels": "triton_kernels"},
    package_data={"kexue.probe.data": ["ud-english-pud/*"]},
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": build_ext_cls()},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},  # = requires-python and torch's Py_LIMITED_API
    version=local_version(EXTENSIONS),
    install_requires=requirements(),
)
