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


# ---- the decoding layer above the kernels (bench/fuzz_warp.py, fuzz_generate.py) ----

@pytest.fixture(scope="module")
def decoding_campaigns(fuzz):
    return {op: load_bench_script(fuzz.CAMPAIGNS[op]) for op in ("warp", "generate")}


@pytest.mark.parametrize("op,seeds", [("warp", range(0, 40)), ("generate", range(8))])
def test_decoding_campaign_seeds_pass(decoding_campaigns, op, seeds):
    fn = getattr(decoding_campaigns[op], f"fuzz_{op}")
    for seed in seeds:
        for backend in ("cpu", "torch"):
            msgs, cfg = fn(seed, backend, "cpu")
            assert msgs == [], (seed, backend, cfg)


def test_a_top_p_warper_that_is_off_is_reported(decoding_campaigns, monkeypatch):
    from kexue.decoding import warpers

    right = warpers.ConsistentTopPLogitsWarper.__call__

    def wider(self, input_ids, scores):  # the nucleus of p·1.3 (a top-p that is off)
        p = self.top_p
        self.top_p = min(1.0, p * 1.3)
        try:
            return right(self, input_ids, scores)
        finally:
            self.top_p = p

    monkeypatch.setattr(warpers.ConsistentTopPLogitsWarper, "__call__", wider)
    # (the draws in 0..59 with top-p in [0.01, 1), V >= 4 and moderate scores: 11, 26, 53, 56, 57;
    # at 53 p = 0.01 and 0.013 keep the same single token)
    n, reports = _reported(decoding_campaigns["warp"].fuzz_warp, (11, 26, 56, 57), "top_p row")
    assert n == 4, reports


def test_the_underflow_bug_of_the_top_p_warper_is_reported(decoding_campaigns, monkeypatch):
    """The threshold on float32 probabilities (before the fix: τ = 0 when the min_tokens_to_keep-th
    probability underflows, every token kept) fails seeds 26, 258, 362, 461, 479 (all of 0..599)."""
    from kexue.decoding import warpers

    def old(self, input_ids, scores):
        if self.top_p >= 1.0:
            return scores
        probs = scores.float().softmax(dim=-1)
        desc = probs.sort(dim=-1, descending=True).values
        cross = (desc.cumsum(dim=-1) < self.top_p).sum(dim=-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
        cross = cross.clamp(min=min(self.min_tokens_to_keep, scores.shape[-1]) - 1)
        remove = probs < desc.gather(-1, cross)
        return warpers._keep_eos(scores, scores.masked_fill(remove, self.filter_value), self.eos)

    monkeypatch.setattr(warpers.ConsistentTopPLogitsWarper, "__call__", old)
    n, reports = _reported(decoding_campaigns["warp"].fuzz_warp, (26, 258, 362, 461, 479), "top_p row")
    assert n == 5, reports


def test_generate_that_mixes_rows_up_is_reported(decoding_campaigns, monkeypatch):
    import sys

    g = sys.modules["kexue.decoding.generate"]
    right = g._rows_of

    def reversed_rows(sample_kw, names, rows):  # per-row parameters given to the wrong rows
        return right(sample_kw, names, rows.flip(0))

    monkeypatch.setattr(g, "_rows_of", reversed_rows)
    n, reports = _reported(decoding_campaigns["generate"].fuzz_generate, (52, 55, 59), "sample row")
    assert n == 3, reports


def test_a_wrong_beam_is_reported(decoding_campaigns, monkeypatch):
    import sys

    g = sys.modules["kexue.decoding.generate"]
    right = g._beam

    def narrow(step_fn, prompts, beam_size, *args):  # a beam of 1 whatever was asked
        return right(step_fn, prompts, 1, *args)

    monkeypatch.setattr(g, "_beam", narrow)
    # (seeds 0..99 hold 31 beam draws; with V <= 4 and max_len <= 4 a beam of 1 is often optimal too:
    # these 3 are the ones where it is not)
    n, reports = _reported(decoding_campaigns["generate"].fuzz_generate, (5, 17, 83), "the optimum")
    assert n == 3, reports
