"""Build script for kexue.

* ``kexue._C``       CPU C++ ops (always built); op schemas live in csrc/registration.cpp.
* ``kexue._C_cuda``  CUDA kernels + their torch binding, built only when the installed torch
                     has CUDA and nvcc is found (``torch.version.cuda and CUDA_HOME``), unless
                     ``KEXUE_NO_CUDA=1``.  ``TORCH_CUDA_ARCH_LIST`` picks the target GPUs.

Sources come from csrc/sources.txt, the list CMakeLists.txt reads too.
Build with ``pip install --no-build-isolation -e .`` (torch must already be installed).
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def read_sources() -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {"cpu": [], "cuda_kernel": [], "cuda_binding": []}
    for line in (ROOT / "csrc" / "sources.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, path = line.split()
        kinds[kind].append(path)
    return kinds


def extensions():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    srcs = read_sources()
    debug = os.environ.get("KEXUE_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx = [*opt, "-std=c++17", "-fopenmp", "-DPy_LIMITED_API=0x03090000"]
    include = [str(ROOT / "csrc")]
    exts = [
        CppExtension(
            "kexue._C",
            srcs["cpu"],
            include_dirs=include,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
            py_limited_api=True,
        )
    ]
    want_cuda = os.environ.get("KEXUE_NO_CUDA", "0") != "1"
    if want_cuda and torch.version.cuda and CUDA_HOME and srcs["cuda_kernel"]:
        nvcc = [*opt, "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", "--use_fast_math"]
        exts.append(
            CUDAExtension(
                "kexue._C_cuda",
                srcs["cuda_binding"] + srcs["cuda_kernel"],
                include_dirs=include,
                extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                extra_link_args=["-fopenmp"],
                py_limited_api=True,
            )
        )
    return exts


def build_ext_cls():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


setup(
    packages=[
        "kexue", "kexue.linear_attention", "kexue.cross_entropy", "kexue.nn", "kexue.integrations", "kexue.probe",
        "kexue.probe.data", "kexue.datasets", "kexue.vae",
        "kexue.triton_kernels",
    ],
    package_dir={"kexue": "pyext", "kexue.triton_kernels": "triton_kernels"},
    package_data={"kexue.probe.data": ["ud-english-pud/*"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": build_ext_cls()},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
