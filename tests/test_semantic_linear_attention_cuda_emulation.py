"""A known bug of the CUDA float16 tensor-core linear-attention kernel, tracked under host
emulation (tests/cuda_emulation/la_kernels_emu.cpp built with -DKEXUE_EMU_SMALL_FEATURES: two
float16 cases with a peaked softmax feature map, q and k ~ N(0, 30²)).

The kernel casts φ(q) and φ(k) rows to float16 without the power-of-two scale it applies to its
state, P and dout-derived tiles, so features below 2^-14 become subnormals or zero; rows whose
attention mass is near eps are then wrong (an output of 0 where the definition gives -0.021,
680x the allowed error).  The float32 CUDA kernel passes the same cases, and the Triton kernels
were fixed the same session (tests/test_semantic_linear_attention.py::
test_float16_small_features_keep_their_precision).  Strict xfail: when the kernel is fixed this
test passes, fails as XPASS, and the marker is to be removed.  Needs g++ (C++20) and the CUDA
headers, not a GPU; skipped without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="CUDA float16 tensor-core kernel: unscaled float16 cast of the phi rows")
def test_cuda_float16_kernel_keeps_small_features(tmp_path):
    root = Path(__file__).resolve().parents[1]
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        homes.append(str(Path(nvcc).resolve().parents[1]))
    inc = next((Path(h) / "include" for h in homes if h and (Path(h) / "include" / "cuda_bf16.h").exists()), None)
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if inc is None or cxx is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h)")
    exe = tmp_path / "la_small_features"
    build = subprocess.run(
        [cxx, "-std=c++20", "-O1", "-Wno-unknown-pragmas", "-DKEXUE_EMU_SMALL_FEATURES", f"-I{inc}",
         f"-I{root / 'csrc'}", str(root / "tests" / "cuda_emulation" / "la_kernels_emu.cpp"), "-o", str(exe)],
        capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and ("ucontext" in build.stderr or "c++20" in build.stderr):
        pytest.skip("the C++ compiler lacks C++20 or POSIX <ucontext.h>")
    if build.returncode != 0:  # not the tracked bug: a RuntimeError fails the test (xfail expects AssertionError)
        raise RuntimeError(build.stderr[-4000:])
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    if "4 cases" not in run.stdout or " 0 emulation errors" not in run.stdout:  # 2 cases x 2 kernels
        raise RuntimeError(run.stdout[-2000:] + run.stderr[-2000:])
    assert run.returncode == 0 and "FAIL" not in run.stdout, run.stdout[-2000:]  # the tracked bug
