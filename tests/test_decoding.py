"""The self-terminating head, the model-agnostic decoder and the Hugging Face routes of kexue.decoding."""

from __future__ import annotations

import math

import pytest
import torch

from kexue.decoding import generate, non_termination_ratio
from kexue.nn import SelfTerminatingHead

# ---- SelfTerminatingHead ----


def _head(mode, eps=1e-2, D=8, V=11, eos=3, context_len=0, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(D, V).to(dtype)
    return SelfTerminatingHead(lin, eos_token_id=eos, eps=eps, mode=mode, context_len=context_len)


@pytest.mark.parametrize("mode", ["st", "nmst"])
@pytest.mark.parametrize("context_len", [0, 4])
def test_probabilities_sum_to_one_and_bound(mode, context_len):
    head = _head(mode, eps=1e-2, context_len=context_len)
    T = 600
    h = torch.randn(3, T, 8, dtype=torch.float64) * 3  # random weights, long t
    with torch.no_grad():
        logp = head(h)
    p = logp.exp()
    assert torch.allclose(p.sum(-1), torch.ones(3, T, dtype=torch.float64), atol=1e-12)
    n = (torch.arange(T) - context_len + 1).clamp(min=0)
    bound = head.eos_lower_bound(n)
    p_eos = p[..., 3]
    assert bool((p_eos >= bound - 1e-12).all()), float((bound - p_eos).max())
    assert bool((p_eos[:, :context_len] == 0).all())
    assert float(bound[-1]) > 0.99  # the bound really binds by t = 600 at eps = 1e-2


def test_bound_fails_for_a_plain_softmax():
    """The bound test can fail: a softmax head with a very negative eos logit breaks it."""
    head = _head("st")
    lin = head.lm_head
    with torch.no_grad():
        z = lin(torch.randn(1, 50, 8, dtype=torch.float64))
        z[..., 3] = -30
    p = z.log_softmax(-1).exp()[..., 3]
    assert not bool((p >= head.eos_lower_bound(torch.arange(1, 51))).all())


@pytest.mark.parametrize("mode", ["st", "nmst"])
def test_forward_and_step_agree(mode):
    head = _head(mode, context_len=2)
    h = torch.randn(4, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        full = head(h)
        state, steps = None, []
        # a prefill of 3 positions, then one at a time
        out, state = head(h[:, :3], return_state=True)
        steps.append(out)
        for t in range(3, 9):
            o, state = head.step(h[:, t], state)
            steps.append(o[:, None])
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-12)


@pytest.mark.parametrize("mode", ["st", "nmst"])
def test_gradcheck(mode):
    head = _head(mode, D=4, V=5, eos=1)
    h = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: head(x), (h,))
    assert torch.autograd.gradgradcheck(lambda x: head(x), (h,))


def test_head_float32_matches_float64():
    head64 = _head("st")
    head32 = _head("st", dtype=torch.float32)
    h = torch.randn(2, 40, 8, dtype=torch.float64)
    with torch.no_grad():
        a, b = head64(h), head32(h.float())
    finite = a > -30
    assert torch.allclose(a[finite], b.double()[finite], atol=1e-4)


@pytest.mark.parametrize("kw,word", [(dict(mode="x"), "mode"), (dict(eps=0.0), "eps"), (dict(eps=1.0), "eps"),
                                     (dict(eos_token_id=-1), "eos_token_id"), (dict(context_len=-1), "context_len")])
def test_head_bad_input(kw, word):
    args = dict(lm_head=torch.nn.Linear(4, 5), eos_token_id=0, eps=1e-2)
    args.update(kw)
    with pytest.raises(ValueError, match=word):
        SelfTerminatingHead(**args)


def test_head_eos_out_of_range():
    head = SelfTerminatingHead(torch.nn.Linear(4, 5), eos_token_id=7)
    with pytest.raises(ValueError, match="eos_token_id"):
        head(torch.randn(1, 2, 4))


# ---- generate ----

V = 12
EOS = 0


def _markov(seed=0, eos_logit=-4.0, scale=2.0):
    """A random first-order Markov model over V tokens; its state is the row's last token (B,)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(V, V, generator=g) * scale
    table[:, EOS] = eos_logit

    def step_fn(ids, state):
        return table[ids[:, -1]], ids[:, -1]

    return step_fn, table


def test_greedy_loops_without_eos_and_consistent_sampling_stops():
    step_fn, _ = _markov(eos_logit=-30.0)
    prompts = torch.randint(1, V, (16, 3), generator=torch.Generator().manual_seed(1))
    greedy = generate(step_fn, prompts, strategy="greedy", eos_id=EOS, max_len=200)
    assert non_termination_ratio(greedy) == 1.0
    g = torch.Generator().manual_seed(0)
    step_fn, table = _markov(eos_logit=-1.0, scale=3.0)
    assert bool((table[:, 1:].topk(2, dim=1).values[:, 1] > -1.0).all())  # eos is never in the top 2
    plain = generate(step_fn, prompts, strategy="sample", top_k=2, eos_id=EOS, max_len=300, generator=g)
    cons = generate(step_fn, prompts, strategy="sample", top_k=2, keep=EOS, eos_id=EOS, max_len=3000, generator=g)
    assert plain.non_termination_ratio() == 1.0  # eos never in the top 2: never ends
    assert cons.non_termination_ratio() == 0.0
    assert bool((cons.sequences.gather(1, (cons.lengths - 1)[:, None]) == EOS).all())


def test_greedy_matches_a_hand_loop():
    step_fn, table = _markov(eos_logit=0.5)
    prompts = torch.randint(1, V, (5, 2), generator=torch.Generator().manual_seed(2))
    out = generate(step_fn, prompts, strategy="greedy", eos_id=EOS, max_len=30)
    for b in range(5):
        last, toks = prompts[b, -1].item(), []
        for _ in range(30):
            last = int(table[last].argmax())
            toks.append(last)
            if last == EOS:
                break
        assert out.sequences[b, : len(toks)].tolist() == toks
        assert out.lengths[b] == len(toks)
        assert bool(out.terminated[b]) == (toks[-1] == EOS)


def _brute_force_best(table, prompt_last, L):
    """The highest-scoring sequence among all finished sequences of length <= L and unfinished ones of length L."""
    logp = table.double().log_softmax(-1)
    best = (-math.inf, None)
    frontier = [((), prompt_last, 0.0)]
    for _ in range(L):
        nxt = []
        for toks, last, s in frontier:
            for v in range(V):
                s2 = s + float(logp[last, v])
                if v == EOS:
                    if s2 > best[0]:
                        best = (s2, toks + (v,))
                else:
                    nxt.append((toks + (v,), v, s2))
        frontier = nxt
    for toks, _, s in frontier:
        if s > best[0]:
            best = (s, toks)
    return best


def test_beam_search_with_a_wide_beam_is_exact():
    V_small = 4
    g = torch.Generator().manual_seed(3)
    table = torch.randn(V, V, generator=g)
    table[:, V_small:] = -math.inf  # 4 live tokens: the full tree of depth 4 fits a beam of 4^4
    def step_fn(ids, state):
        return table[ids[:, -1]], None
    prompts = torch.tensor([[1], [2], [3]])
    out = generate(step_fn, prompts, strategy="beam", beam_size=64, eos_id=EOS, max_len=4)
    for b in range(3):
        s, toks = _brute_force_best(table, prompts[b, 0].item(), 4)
        assert out.sequences[b, : len(toks)].tolist() == list(toks)
        assert math.isclose(float(out.scores[b]), s, rel_tol=1e-9)
        assert bool(out.terminated[b]) == (toks[-1] == EOS)


def test_beam_one_is_greedy():
    step_fn, _ = _markov(eos_logit=0.0)
    prompts = torch.randint(1, V, (6, 2), generator=torch.Generator().manual_seed(4))
    a = generate(step_fn, prompts, strategy="greedy", eos_id=EOS, max_len=25)
    b = generate(step_fn, prompts, strategy="beam", beam_size=1, eos_id=EOS, max_len=25)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.terminated, b.terminated)


def test_prompts_of_different_lengths_and_state_reordering():
    """An LSTM-like state (a running sum of the prompt) must follow its rows as rows finish."""
    step_fn, table = _markov(eos_logit=0.0)

    def stateful(ids, state):
        s = ids.sum(1) if state is None else state + ids[:, -1]
        return table[ids[:, -1]] + 0.01 * s[:, None].float(), s

    prompts = [torch.tensor([1, 2, 3]), torch.tensor([4]), torch.tensor([5, 6, 7]), torch.tensor([8, 9])]
    together = generate(stateful, prompts, strategy="greedy", eos_id=EOS, max_len=40)
    for i, p in enumerate(prompts):
        alone = generate(stateful, [p], strategy="greedy", eos_id=EOS, max_len=40)
        assert torch.equal(alone.sequences[0], together.sequences[i])


def test_st_head_makes_greedy_stop():
    """A self-terminating head on a model that greedily loops: every sequence ends by the bound."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(V, 8)
    lin = torch.nn.Linear(8, V)
    with torch.no_grad():
        lin.bias[EOS] = -20.0
    eps = 0.05
    head = SelfTerminatingHead(lin, EOS, eps=eps)

    def plain(ids, state):
        return lin(emb(ids[:, -1])), None

    def st(ids, state):
        h = emb(ids)
        if state is None:
            logp, state = head(h, return_state=True)
            return logp[:, -1], state
        return head.step(h[:, -1], state)

    prompts = torch.randint(1, V, (8, 2))
    with torch.no_grad():
        assert generate(plain, prompts, eos_id=EOS, max_len=300).non_termination_ratio() == 1.0
        out = generate(st, prompts, eos_id=EOS, max_len=300)
    assert out.non_termination_ratio() == 0.0
    assert int(out.lengths.max()) <= math.ceil(math.log(2) / -math.log1p(-eps)) + 2


@pytest.mark.parametrize("kw,word", [(dict(strategy="nope"), "strategy"), (dict(max_len=0), "max_len"),
                                     (dict(beam_size=0), "beam_size"), (dict(eos_id=-1), "eos_id"),
                                     (dict(top_k=2), "strategy='sample'")])
def test_generate_bad_input(kw, word):
    step_fn, _ = _markov()
    args = dict(eos_id=EOS)
    args.update(kw)
    with pytest.raises(ValueError, match=word):
        generate(step_fn, torch.ones(2, 2, dtype=torch.long), **args)


# ---- Hugging Face ----

transformers = pytest.importorskip("transformers")


def _tiny_llama(seed=0, vocab=40):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, eos_token_id=2, bos_token_id=1, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def test_consistent_warpers_match_hf_and_keep_eos():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    from kexue.decoding import ConsistentTopKLogitsWarper, ConsistentTopPLogitsWarper

    x = torch.randn(8, 300) * 3
    x[:, 5] = -20
    for ours, theirs in [(ConsistentTopKLogitsWarper(10, eos_token_id=5), TopKLogitsWarper(10)),
                         (ConsistentTopPLogitsWarper(0.8, eos_token_id=5), TopPLogitsWarper(0.8))]:
        a, b = ours(None, x.clone()), theirs(None, x.clone())
        assert torch.equal(a[:, 5], x[:, 5])
        rest = torch.ones(300, dtype=torch.bool)
        rest[5] = False
        assert torch.equal(a[:, rest], b[:, rest])
    with pytest.raises(ValueError, match="top_k"):
        ConsistentTopKLogitsWarper(0, eos_token_id=1)
    with pytest.raises(ValueError, match="top_p"):
        ConsistentTopPLogitsWarper(1.5, eos_token_id=1)
    with pytest.raises(ValueError, match="eos_token_id"):
        ConsistentTopPLogitsWarper(0.5, eos_token_id=[])


def test_top_p_warper_min_tokens_to_keep_with_underflowed_probabilities():
    """min_tokens_to_keep = m keeps the m best tokens (ties kept), also when the m-th probability
    underflows float32 (scores ~100+ apart): the threshold was τ = 0 there and every token stayed
    (found by bench/fuzz_warp.py; seeds 26, 258, 362, 461, 479 of its final draw)."""
    from transformers.generation.logits_process import TopPLogitsWarper

    from kexue.decoding import ConsistentTopPLogitsWarper

    x = torch.tensor([[-500.0, 0.0, 1000.0, -1000.0, 1496.0, -1496.0, -1000.0],
                      [3.0, 2.0, -300.0, -200.0, -250.0, 1.0, -0.0]])
    ours = ConsistentTopPLogitsWarper(0.5, eos_token_id=0, min_tokens_to_keep=2)(None, x.clone())
    theirs = TopPLogitsWarper(0.5, min_tokens_to_keep=2)(None, x.clone())
    theirs[:, 0] = x[:, 0]
    assert torch.equal(ours, theirs)
    assert torch.isfinite(ours).sum(-1).tolist() == [3, 2]


def test_warpers_in_model_generate():
    """In model.generate the candidate set after the consistent top-1 warper is {argmax, eos}."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from kexue.decoding import ConsistentTopKLogitsWarper

    seen = []

    class Record(LogitsProcessor):
        def __call__(self, input_ids, scores):
            seen.append(torch.isfinite(scores))
            return scores

    model = _tiny_llama()
    ids = torch.tensor([[1, 5, 6]])
    model.generate(ids, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=5, pad_token_id=0,
                   logits_processor=LogitsProcessorList([ConsistentTopKLogitsWarper(1, eos_token_id=2), Record()]))
    assert seen
    for finite in seen:
        assert bool(finite[:, 2].all())
        assert bool((finite.sum(-1) <= 2).all())


def test_consistent_generate_greedy_equals_hf():
    from kexue.integrations.hf import consistent_generate

    model = _tiny_llama()
    ids = torch.tensor([[1, 5, 6, 7], [1, 9, 8, 3]])
    want = model.generate(ids, do_sample=False, max_new_tokens=12, eos_token_id=2, pad_token_id=0)
    got = consistent_generate(model, ids, top_k=1, max_new_tokens=12, pad_token_id=0, consistent=False)
    n = min(want.shape[1], got.shape[1])
    assert torch.equal(want[:, :n], got[:, :n])


def test_consistent_generate_samples_through_kexue():
    from kexue.integrations.hf import consistent_generate

    model = _tiny_llama()
    ids = torch.tensor([[1, 5, 6, 7]] * 3)
    kw = dict(top_k=5, top_p=0.9, max_new_tokens=8)
    a = consistent_generate(model, ids, generator=torch.Generator().manual_seed(0), **kw)
    b = consistent_generate(model, ids, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a, b) and a.shape[1] > 4


@pytest.mark.parametrize("mode", ["st", "nmst"])
@pytest.mark.parametrize("beams", [1, 3])
def test_hf_self_terminating_cache_equals_recomputation(mode, beams):
    from kexue.integrations.hf import self_terminating

    model = self_terminating(_tiny_llama(), eps=0.05, mode=mode)
    ids = torch.tensor([[1, 5, 6, 7], [1, 9, 8, 3]])
    kw = dict(do_sample=False, num_beams=beams, max_new_tokens=80, pad_token_id=0)
    with_cache = model.generate(ids, use_cache=True, **kw)
    without = model.generate(ids, use_cache=False, **kw)
    assert torch.equal(with_cache, without)
    if beams == 1:
        # a full recomputation by hand: the head on every position of the generated sequence
        head = model.self_terminating_head
        with torch.no_grad():
            model.remove_self_terminating()
            h = model.model(with_cache).last_hidden_state
            z = head.lm_head(h)
            logp, _ = head.log_probs_from_logits(z, context_len=ids.shape[1])
        nxt = logp[:, ids.shape[1] - 1: -1].argmax(-1)
        gen = with_cache[:, ids.shape[1]:]
        for b in range(2):
            n = int((gen[b] == 2).nonzero()[0, 0]) + 1 if bool((gen[b] == 2).any()) else gen.shape[1]
            assert torch.equal(nxt[b, :n], gen[b, :n])
    # every row ends: greedy under ST stops within ~ln 2 / -ln(1 - eps) steps
    assert bool((with_cache[:, ids.shape[1]:] == 2).any(dim=1).all())


def test_hf_self_terminating_training_loss_is_nll():
    from kexue.integrations.hf import self_terminating

    model = self_terminating(_tiny_llama(), eps=0.01)
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    out = model(ids, labels=ids)
    logp = out.logits[0, :-1].float()
    nll = -logp.gather(1, ids[0, 1:, None]).mean()
    assert torch.allclose(out.loss, nll, atol=1e-5)
    assert torch.allclose(out.logits.float().exp().sum(-1), torch.ones(1, 5), atol=1e-5)
