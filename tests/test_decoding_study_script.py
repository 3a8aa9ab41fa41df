"""bench/decoding_study.py --quick runs (the full table is in bench/RESULTS.md)."""


import pytest

from helpers import load_bench_script

pytest.importorskip("h5py")


def test_decoding_study_quick():
    mod = load_bench_script("decoding_study")
    try:
        rows = mod.main(["--quick"])
    except RuntimeError as exc:  # pragma: no cover - only without access to PyPI
        pytest.skip(f"PyPI not reachable: {exc}")
    assert len(rows) == len(mod.STRATEGIES)
    assert all(0.0 <= r["r_L"] <= 1.0 for r in rows)
