"""Shared test helpers: devices, backends that must run here, tolerance rule, random states."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

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


def make_state(B, H, F, Dv, device="cpu", dtype=torch.float32):
    """A random carried state (S, z).  z's first entry is at least F, more than the norm of the
    rest, so that φ(q)·z > 0 for every map, "taylor" included (φ = [1, q̂]): a state the keys of
    earlier tokens could have left.  (With z ~ U(0.5, 1.5) alone, the taylor normaliser
    z[0] + q̂·z[1:] can cross zero, and outputs near a zero normaliser are ill-conditioned in any
    precision: whether a test passes would depend on the random stream, which differs on CUDA.)"""
    z = torch.rand(B, H, F, device=device, dtype=dtype) + 0.5
    z[..., 0] += F
    return torch.randn(B, H, F, Dv, device=device, dtype=dtype), z


def backend_available(op_backends, backend: str, device: str) -> tuple[bool, str]:
    return op_backends.availability(backend, torch.device(device))


def run_cuda_emulator(name: str, tmp_path, *, min_pass: int, timeout: int = 900) -> str:
    """Builds tests/cuda_emulation/<name>.cpp with g++ (the real kernel source on the host CUDA
    stand-ins of cuda_host_emu.h) and runs it; asserts no FAIL line, no emulation error and at
    least ``min_pass`` PASS lines; returns its stdout.  Skips without g++ (C++20, POSIX
    ucontext) or the CUDA headers (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h); no GPU needed."""
    import os
    import re
    import shutil
    import subprocess
    from pathlib import Path

    import pytest

    root = Path(__file__).resolve().parents[1]
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        homes.append(str(Path(nvcc).resolve().parents[1]))
    inc = next((Path(h) / "include" for h in homes if h and (Path(h) / "include" / "cuda_bf16.h").exists()), None)
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if inc is None or cxx is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h)")
    exe = tmp_path / name
    build = subprocess.run(
        [cxx, "-std=c++20", "-O1", "-Wno-unknown-pragmas", f"-I{inc}", f"-I{root / 'csrc'}",
         str(root / "tests" / "cuda_emulation" / f"{name}.cpp"), "-o", str(exe)],
        capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and ("ucontext" in build.stderr or "c++20" in build.stderr):
        pytest.skip("the C++ compiler lacks C++20 or POSIX <ucontext.h>")
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout)
    bad = [line for line in run.stdout.splitlines() if line.startswith(("FAIL", "EMU-ERROR"))]
    report = "\n".join(bad[:20]) + "\n" + run.stdout[-800:] + run.stderr[-2000:]
    assert run.returncode == 0 and not bad, report
    assert re.search(r"(^|\s)0 failed", run.stdout) and run.stdout.count("PASS") >= min_pass, report
    return run.stdout


def load_bench_script(name: str):
    """``bench/<name>.py`` imported as the module ``name``, registered in ``sys.modules`` (dataclasses
    look their module up there); a test that must not leave it there pops it when done."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
