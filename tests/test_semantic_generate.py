"""Valid inputs, right answers: kexue.decoding.generate against independent implementations.

* greedy: Hugging Face ``generate(do_sample=False)`` on a tiny random GPT-2, each prompt alone,
  while kexue runs prompts of different lengths in one call through a KV-cache step_fn;
* beam: an exhaustive search over every hypothesis on a tiny vocabulary (a beam as wide as the
  number of hypotheses must return the best-scoring one, eos-terminated or not);
* ``terminated`` / ``lengths`` / ``scores`` recomputed from the sequences.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kexue.decoding import generate

V_GPT = 50


def _tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=V_GPT, n_positions=64, eos_token_id=None,
                     bos_token_id=None, pad_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # a sharper head so that eos is sometimes the argmax
        model.lm_head.weight.mul_(8.0)
    return model


def _cache_step(model):
    """step_fn with the KV cache as the state; rows leave or are reordered by index_select."""
    from transformers import DynamicCache

    @torch.no_grad()
    def step(ids, state):
        cache = DynamicCache(config=model.config) if state is None else state
        out = model(ids, past_key_values=cache, use_cache=True)
        return out.logits[:, -1].float(), out.past_key_values

    def reorder(cache, idx):
        cache.reorder_cache(idx)
        return cache

    return step, reorder


def _check_consistent(out, eos, max_len, step_logp):
    """terminated / lengths / scores / padding agree with the sequences (and the model's log-probs)."""
    for b in range(out.sequences.shape[0]):
        seq = out.sequences[b]
        n = int(out.lengths[b])
        hits = (seq[:n] == eos).nonzero()[:, 0].tolist()
        if bool(out.terminated[b]):
            assert hits == [n - 1], (seq, n)
        else:
            assert hits == [] and n == max_len
        if step_logp is not None:
            want = step_logp(b, seq[:n].tolist())
            assert math.isclose(float(out.scores[b]), want, rel_tol=1e-9, abs_tol=1e-9), (b, out.scores[b], want)


def test_greedy_equals_hf_generate_on_gpt2_with_prompts_of_different_lengths():
    model = _tiny_gpt2()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, V_GPT, (n,), generator=g) for n in (1, 4, 2, 4, 7, 1, 3, 4, 4, 2, 2, 4)]
    max_len = 12
    # eos: a token that greedy decoding reaches from some prompts and not from others
    free = [model.generate(p[None], do_sample=False, max_new_tokens=max_len, eos_token_id=None, pad_token_id=0)[
        0, p.numel():].tolist() for p in prompts]
    counts = [sum(v in f for f in free) for v in range(V_GPT)]
    eos = min(range(V_GPT), key=lambda v: (abs(counts[v] - len(prompts) / 2), v))
    step, reorder = _cache_step(model)
    out = generate(step, prompts, strategy="greedy", eos_id=eos, max_len=max_len, pad_id=-1, reorder_state=reorder)
    n_eos = 0
    for b, pr in enumerate(prompts):
        new = model.generate(pr[None], do_sample=False, max_new_tokens=max_len, eos_token_id=eos,
                             pad_token_id=0)[0, pr.numel():]
        n = int(out.lengths[b])
        assert torch.equal(out.sequences[b, :n], new[:n]), (b, out.sequences[b], new)
        assert bool(out.terminated[b]) == bool((new == eos).any())
        if bool(out.terminated[b]):
            assert n == int((new == eos).nonzero()[0, 0]) + 1
            n_eos += 1
        else:
            assert n == max_len == new.numel()
        assert bool((out.sequences[b, n:] == -1).all())
        # scores: the sum of the log-probabilities of the generated tokens under a full recomputation
        with torch.no_grad():
            full = torch.cat([pr, out.sequences[b, :n]])
            logp = model(full[None]).logits[0].double().log_softmax(-1)
        want = float(logp[pr.numel() - 1: -1].gather(1, full[pr.numel():, None]).sum())
        assert math.isclose(float(out.scores[b]), want, rel_tol=1e-5, abs_tol=1e-5)
    assert 0 < n_eos < len(prompts), "the case mix needs rows that stop and rows that run to max_len"


# --------------------------------------------------------------------------- beam = exhaustive search
def _table_model(V: int, seed: int, eos_bias: float = 0.0):
    """A deterministic model of the whole history: logits = a random table indexed by (prompt, prefix)."""
    table: dict[tuple, torch.Tensor] = {}
    g = torch.Generator().manual_seed(seed)

    def logits_of(hist: tuple) -> torch.Tensor:
        if hist not in table:
            x = torch.randn(V, generator=g, dtype=torch.float64) * 1.5
            x[-1] += eos_bias  # (eos is the last id in these tests)
            if len(table) % 3 == 0:
                x[x.argmin()] = -float("inf")  # some tokens are impossible
            table[hist] = x
        return table[hist]

    def step(ids, state):
        hist = ids if state is None else torch.cat([state, ids], 1)
        return torch.stack([logits_of(tuple(h.tolist())) for h in hist]), hist

    def logp(hist: tuple) -> torch.Tensor:
        return logits_of(hist).log_softmax(0)

    return step, logp


def _exhaustive(logp, prompt: tuple, V: int, eos: int, max_len: int):
    """Every hypothesis: a sequence ending at its first eos (length <= max_len) or max_len tokens without eos."""
    best = (-math.inf, None)
    for n in range(1, max_len + 1):
        for body in itertools.product([v for v in range(V) if v != eos], repeat=n - 1):
            for last in range(V):
                if n < max_len and last != eos:
                    continue
                seq = body + (last,)
                s = sum(float(logp(prompt + seq[:i])[seq[i]]) for i in range(n))
                if s > best[0]:
                    best = (s, seq)
    return best


@pytest.mark.parametrize("V,max_len", [(2, 1), (3, 3), (4, 3), (3, 5)])
def test_wide_beam_is_the_exhaustive_best(V, max_len):
    eos = V - 1
    n_term = n_live = 0
    for seed in range(6):
        step, logp = _table_model(V, seed, eos_bias=-3.0 if seed % 2 else 0.0)
        prompts = [torch.tensor([9, seed]), torch.tensor([7]), torch.tensor([8, 1, seed])]
        hyps = sum((V - 1) ** (n - 1) for n in range(1, max_len + 1)) + (V - 1) ** max_len
        out = generate(step, prompts, strategy="beam", beam_size=hyps, eos_id=eos, max_len=max_len, pad_id=-1)
        for b, pr in enumerate(prompts):
            s, seq = _exhaustive(logp, tuple(pr.tolist()), V, eos, max_len)
            n = int(out.lengths[b])
            assert tuple(out.sequences[b, :n].tolist()) == seq, (seed, b, out.sequences[b], seq, s)
            assert math.isclose(float(out.scores[b]), s, rel_tol=1e-12, abs_tol=1e-12)
            n_term += seq[-1] == eos
            n_live += seq[-1] != eos

        def step_logp(b, seq, prompts=prompts, logp=logp):
            pr = tuple(prompts[b].tolist())
            return sum(float(logp(pr + tuple(seq[:i]))[seq[i]]) for i in range(len(seq)))

        _check_consistent(out, eos, max_len, step_logp)
    assert n_term > 0 and n_live > 0, (n_term, n_live)  # (both kinds of best hypothesis occur)


def test_greedy_and_sample_outputs_are_self_consistent():
    step, logp = _table_model(5, seed=11)
    prompts = [torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([1, 2]), torch.tensor([4, 4, 4])]
    for kw in (dict(strategy="greedy"), dict(strategy="sample", top_k=3, generator=torch.Generator().manual_seed(0)),
               dict(strategy="beam", beam_size=2)):
        out = generate(step, prompts, eos_id=4, max_len=6, pad_id=-1, **kw)

        def step_logp(b, seq):
            pr = tuple(prompts[b].tolist())
            return sum(float(logp(pr + tuple(seq[:i]))[seq[i]]) for i in range(len(seq)))

        _check_consistent(out, 4, 6, step_logp)
        assert bool((out.sequences[torch.arange(6)[None] >= out.lengths[:, None]] == -1).all())


def test_sample_with_per_row_parameters_follows_each_prompt():
    """Per-row tensors in sample_kw ((B,) temperature / top_k / top_p, (B, K) keep) belong to the
    prompts in the order given: they follow each prompt into its length group and out of the
    batch when rows finish.  (They used to reach kexue.sample unsliced: a shape error as soon as
    the prompts had different lengths or a row finished.)  Row r here may only draw from its own
    top-k set plus its own keep ids, which a mix-up of rows breaks within a few steps."""
    V, eos = 6, 5
    logits_row = torch.tensor([1.0, 0.9, 0.8, 0.7, 0.6, 0.85])  # descending order: 0, 1, 5, 2, 3, 4

    def step(ids, state):
        return logits_row.expand(ids.shape[0], V).clone(), state

    prompts = [torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([1, 1]), torch.tensor([4]), torch.tensor([2, 2])]
    top_k = torch.tensor([1, 2, 3, 6, 1])
    keep = torch.tensor([[eos], [-1], [-1], [-1], [3]])
    allowed = [{0, eos}, {0, 1}, {0, 1, eos}, set(range(V)), {0, 3}]
    for seed in range(3):
        out = generate(step, prompts, strategy="sample", eos_id=eos, max_len=40, pad_id=-1, top_k=top_k, keep=keep,
                       temperature=torch.tensor([1.0, 0.5, 2.0, 1.0, 1.0], dtype=torch.float64),
                       generator=torch.Generator().manual_seed(seed))
        for r in range(len(prompts)):
            toks = set(out.sequences[r, : int(out.lengths[r])].tolist())
            assert toks <= allowed[r], (r, toks)
        assert not bool(out.terminated[1]) and not bool(out.terminated[4])  # (eos is not in their sets)
        assert bool(out.terminated[0]) and bool(out.terminated[3])


def test_per_row_parameters_of_the_wrong_length_are_refused():
    def step(ids, state):
        return torch.zeros(ids.shape[0], 4), state

    with pytest.raises(ValueError, match="temperature"):
        generate(step, [torch.tensor([1]), torch.tensor([2, 3])], strategy="sample", eos_id=0, max_len=3,
                 temperature=torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("strategy,beam_size", [("beam", 3), ("beam", 1), ("greedy", 1)])
def test_kv_cache_step_fn_equals_full_recomputation(strategy, beam_size):
    """Beams reorder and rows leave the batch: a KV-cache step_fn must give what recomputing the
    whole sequence each step gives (sequences, lengths, scores)."""
    model = _tiny_gpt2(seed=1)
    step, reorder = _cache_step(model)

    @torch.no_grad()
    def full(ids, state):
        hist = ids if state is None else torch.cat([state, ids], 1)
        return model(hist).logits[:, -1].float(), hist

    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(4, V_GPT, (n,), generator=g) for n in (3, 3, 5, 3, 5)]
    ends = [generate(full, prompts, strategy=strategy, beam_size=beam_size, eos_id=e, max_len=10, pad_id=-1)
            for e in range(4, V_GPT)]
    eos = 4 + max(range(len(ends)), key=lambda e: (0 < int(ends[e].terminated.sum()) < len(prompts),
                                                    float(ends[e].lengths.double().std())))
    want = ends[eos - 4]
    got = generate(step, prompts, strategy=strategy, beam_size=beam_size, eos_id=eos, max_len=10, pad_id=-1,
                   reorder_state=reorder)
    assert torch.equal(got.sequences, want.sequences) and torch.equal(got.lengths, want.lengths)
    assert torch.equal(got.terminated, want.terminated)
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-5, atol=1e-5)
    assert 0 < int(want.terminated.sum()) < len(prompts)
