"""bench/fuzz_ops.py (the long random-configuration campaign) runs, passes on the CPU backends,
and reports a kernel that is off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


# ---- the campaigns of the other compiled ops (bench/fuzz_sample.py, fuzz_attn.py, fuzz_probe.py) ----

@pytest.fixture(scope="module")
def campaigns(fuzz):
    return {op: load_bench_script(module) for op, module in fuzz.CAMPAIGNS.items()}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("op,backends", [("sample", ("cpu", "torch", "triton")), ("attn", ("cpu", "torch")),
                                         ("probe", ("cpu", "torch", "triton"))])
def test_new_campaign_seeds_pass(campaigns, op, backends, seed):
    for backend in backends:
        msgs, cfg = getattr(campaigns[op], f"fuzz_{op}")(seed, backend, "cpu")
        assert msgs == [], (backend, cfg)


def _reported(fn, seeds, word, backend="cpu"):
    reports = [fn(seed, backend, "cpu")[0] for seed in seeds]
    return sum(any(word in m for m in msgs) for msgs in reports), reports


def test_sampling_probs_that_are_off_are_reported(campaigns, monkeypatch):
    right = kexue.decoding.sampling_probs

    def off(*args, **kwargs):  # the largest probability of row 0 moved by 1e-2 of itself, renormalised
        q = right(*args, **kwargs)
        bump = torch.zeros_like(q)
        bump[0, int(q[0].detach().argmax())] = 1e-2
        q = q + bump * q.detach()
        return q / q.sum(dim=1, keepdim=True)

    monkeypatch.setattr(kexue.decoding, "sampling_probs", off)
    n, reports = _reported(campaigns["sample"].fuzz_sample, range(12), "probs:")
    assert n >= 5, reports  # (5 of 12: the others' row 0 keeps one token, q = 1, which renormalising restores)


def test_a_wrong_draw_and_a_wrong_kept_set_are_reported(campaigns, monkeypatch):
    right_sample, right_probs = kexue.sample, kexue.decoding.sampling_probs
    fz = campaigns["sample"].fuzz_sample

    def next_token(logits, **kwargs):  # the token after the right one (mod V)
        return (right_sample(logits, **kwargs) + 1) % logits.shape[1]

    monkeypatch.setattr(kexue, "sample", next_token)
    n, reports = _reported(fz, range(12), "inverse-CDF")
    assert n >= 6, reports
    monkeypatch.setattr(kexue, "sample", right_sample)

    def no_top_p(logits, **kwargs):  # top-p ignored: the kept set is too large
        return right_probs(logits, **dict(kwargs, top_p=None))

    monkeypatch.setattr(kexue.decoding, "sampling_probs", no_top_p)
    n, reports = _reported(fz, (25, 30, 47, 55, 60, 62, 87), "not minimal")  # the draws with top-p < 1 in 0..99
    assert n == 7, reports


def test_attention_that_is_off_is_reported(campaigns, monkeypatch):
    from kexue.attribution import op

    right = op.attention_qkv

    def off(qkv, heads, scale):  # one probability moved by 1e-3 (float32 allowances: ~1e-6, 1e-4 saturated)
        out, probs = right(qkv, heads, scale)
        probs = probs.clone()
        probs.view(-1)[-1] += 1e-3
        return out, probs

    monkeypatch.setattr(op, "attention_qkv", off)
    n, reports = _reported(campaigns["attn"].fuzz_attn, range(6), "probs:")
    assert n == 6, reports


def test_probe_ops_that_are_off_are_reported(campaigns, monkeypatch):
    from kexue.probe import kernels, parsers

    fz = campaigns["probe"].fuzz_probe
    right_eisner = parsers.eisner

    def chain(scores, lengths=None, **kwargs):  # a projective tree, rarely the best: word d -> d - 1
        heads = right_eisner(scores, lengths, **kwargs)
        n1 = heads.shape[-1]
        lens = torch.full(heads.shape[:-1], n1 - 1) if lengths is None else torch.as_tensor(lengths).reshape(
            heads.shape[:-1])
        d = torch.arange(n1)
        return torch.where((d >= 1) & (d <= lens[..., None]), d - 1, -1)

    monkeypatch.setattr(parsers, "eisner", chain)
    n, reports = _reported(fz, range(12), "score")
    assert n >= 4, reports
    monkeypatch.setattr(parsers, "eisner", right_eisner)
    right_mb = kernels.masked_batch

    def one_more_masked(*args, **kwargs):  # the token after each masked span masked too
        ids, att = right_mb(*args, **kwargs)
        m = ids == args[6]
        ids = torch.where(torch.roll(m, 1, dims=1) & (att == 1), torch.full_like(ids, args[6]), ids)
        return ids, att

    monkeypatch.setattr(kernels, "masked_batch", one_more_masked)
    n, reports = _reported(fz, range(12), "masked_batch: rows differ")
    assert n >= 4, reports
