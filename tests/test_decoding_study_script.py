"""bench/decoding_study.py --quick runs (the full table is in bench/RESULTS.md)."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("h5py")


def test_decoding_study_quick():
    path = Path(__file__).resolve().parents[1] / "bench" / "decoding_study.py"
    spec = importlib.util.spec_from_file_location("decoding_study", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        rows = mod.main(["--quick"])
    except RuntimeError as exc:  # pragma: no cover - only without access to PyPI
        pytest.skip(f"PyPI not reachable: {exc}")
    assert len(rows) == len(mod.STRATEGIES)
    assert all(0.0 <= r["r_L"] <= 1.0 for r in rows)
