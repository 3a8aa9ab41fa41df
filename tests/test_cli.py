"""`python -m kexue bench` runs end to end (small shapes) and prints its table."""

import os
import subprocess
import sys


def test_bench_quick_prints_table():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as a user runs it
    res = subprocess.run([sys.executable, "-m", "kexue", "bench", "--quick", "--repeats", "1", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    assert "median ms" in res.stdout and "linear_attention/causal" in res.stdout
    assert "torch" in res.stdout and "cross_entropy" in res.stdout
    assert " triton " not in res.stdout  # no interpreter timings
