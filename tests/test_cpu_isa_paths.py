"""The CPU kernels have one code path per instruction set (csrc/common/cpu_isa.h: AVX-512, AVX2 +
FMA, baseline SSE2/NEON), chosen once per process.  The rest of the suite runs the widest path
this machine has; here the linear-attention, probe, sampling and attention_qkv CPU tests run again in a subprocess with
the path capped by KEXUE_CPU_ISA, so the narrower paths are tested on the same machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("isa", ["avx2", "base"])
def test_cpu_kernels_on_a_narrower_isa_path(isa):
    env = dict(os.environ, KEXUE_CPU_ISA=isa)
    which = subprocess.run([sys.executable, "-c", "import kexue._ext as e; print(e.cpu_isa())"],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert which.stdout.strip() in ({"base"} if isa == "base" else {"base", "avx2"}), which.stderr[-2000:]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cpu and not triton",
         str(ROOT / "tests" / "test_linear_attention.py"), str(ROOT / "tests" / "test_probe_kernels.py"),
         str(ROOT / "tests" / "test_linear_attention_cpu_chunk.py"), str(ROOT / "tests" / "test_sampling.py"),
         str(ROOT / "tests" / "test_attention_qkv_cpu.py")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout


def test_cpu_isa_is_reported():
    from kexue._ext import cpu_isa

    assert cpu_isa() in ("avx512", "avx2", "base")
