"""bench/fuzz_ops.py (the long random-configuration campaign) runs, passes on the CPU backends,
and reports a kernel that is off."""

from __future__ import annotations

from pathlib import Path

import pytest

import kexue
from helpers import load_bench_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fuzz():
    return load_bench_script("fuzz_ops")


@pytest.mark.parametrize("seed", range(4))
def test_seeds_pass_on_cpu(fuzz, seed):
    for fn in (fuzz.fuzz_la, fuzz.fuzz_ce):
        msgs, cfg = fn(seed, "cpu", "cpu")
        assert msgs == [], cfg


def test_a_kernel_that_is_off_is_reported(fuzz, monkeypatch):
    right = kexue.linear_attention

    def off(*args, **kwargs):  # one output entry moved by 5% of the largest (16-bit allowances are ~1%)
        out, state = right(*args, **kwargs)
        if out.numel():
            out = out.clone()
            out.view(-1)[-1] += 0.05 * max(1.0, float(out.detach().abs().max()))
        return out, state

    monkeypatch.setattr(kexue, "linear_attention", off)
    reported = [fuzz.fuzz_la(seed, "cpu", "cpu")[0] for seed in range(6)]
    assert all(any(m.startswith("out:") for m in msgs) for msgs in reported), reported
