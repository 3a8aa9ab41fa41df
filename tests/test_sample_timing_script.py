"""bench/sample_cpu_timing.py --quick runs (the full table is in bench/RESULTS.md)."""


from helpers import load_bench_script


def test_sample_cpu_timing_quick():
    mod = load_bench_script("sample_cpu_timing")
    rows = mod.main(["--quick"])
    assert len(rows) == 2 and all(r["hf"] > 0 and r["cpu"] > 0 for r in rows)
