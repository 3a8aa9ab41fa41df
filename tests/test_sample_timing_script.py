"""bench/sample_cpu_timing.py --quick runs (the full table is in bench/RESULTS.md)."""

import importlib.util
from pathlib import Path


def test_sample_cpu_timing_quick():
    path = Path(__file__).resolve().parents[1] / "bench" / "sample_cpu_timing.py"
    spec = importlib.util.spec_from_file_location("sample_cpu_timing", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(["--quick"])
    assert len(rows) == 2 and all(r["hf"] > 0 and r["cpu"] > 0 for r in rows)
