"""Valid inputs, right answers: the self-terminating head and its Hugging Face integration.

* ``SelfTerminatingHead`` against a float64 loop over positions written here (the product of the
  β_t for ST, λ and (1 − ε)^n for NMST), in one call and continued through its state;
* ``self_terminating(model)`` + ``model.generate`` on a batch of LEFT-padded prompts of different
  lengths: per row the same tokens and the same p(eos) as that prompt alone (t counted from the
  prompt's end), with and without the KV cache, greedy and beam;
* ``consistent_generate`` on a self-terminating model: the same as ``model.generate`` (the prompt
  is the context there too), padded batch = each prompt alone.
"""

from __future__ import annotations

import math

import pytest
import torch

from kexue.nn import SelfTerminatingHead

EOS, V = 2, 40


def _loop_log_probs(z: torch.Tensor, eos: int, eps: float, mode: str, ctx: int) -> torch.Tensor:
    """One row z (T, V) → p (T, V) in float64, position by position."""
    z = z.double()
    out = torch.zeros_like(z)
    keep = 1.0
    for t in range(z.shape[0]):
        u = float(z[t, eos])
        lam = 1.0 / (1.0 + math.exp(-u))
        if t < ctx:
            keep_t = 1.0
        elif mode == "st":
            keep *= (1.0 - eps) * lam
            keep_t = keep
        else:
            keep_t = (1.0 - lam) * (1.0 - eps) ** (t - ctx + 1)
        rest = z[t].clone()
        rest[eos] = -math.inf
        out[t] = keep_t * rest.softmax(0)
        out[t, eos] = 1.0 - keep_t
    return out


@pytest.mark.parametrize("mode", ["st", "nmst"])
@pytest.mark.parametrize("ctx", [0, 1, 4, 9])
def test_head_equals_a_loop_over_positions(mode, ctx):
    torch.manual_seed(0)
    lm = torch.nn.Linear(8, 11).double()
    head = SelfTerminatingHead(lm, eos_token_id=3, eps=0.05, mode=mode, context_len=ctx)
    h = torch.randn(3, 7, 8, dtype=torch.float64) * 2
    got = head(h).exp()
    for b in range(3):
        want = _loop_log_probs(lm(h[b]).detach(), 3, 0.05, mode, ctx)
        assert torch.allclose(got[b], want, rtol=1e-12, atol=1e-14)
    # continued through the state in pieces of 3, 1, 3 positions: the same
    state, parts = None, []
    for a, e in [(0, 3), (3, 4), (4, 7)]:
        out, state = head(h[:, a:e], state, return_state=True)
        parts.append(out)
    assert torch.allclose(torch.cat(parts, 1).exp(), got, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- HF integration
def _tiny_llama(mode: str, seed: int = 0):
    """A tiny random Llama whose head has a bias, so that eos is neither certain nor hopeless:
    σ(u) ≈ 1 for ST (β ≈ 1 − ε) and ≈ 0 for NMST (λ ≈ 0), sequences of ~5-20 tokens at ε = 0.01."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, eos_token_id=EOS, bos_token_id=1, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    head = torch.nn.Linear(16, V, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight * 6)
        head.bias.zero_()
        head.bias[EOS] = 8.0 if mode == "st" else -8.0
    model.lm_head = head
    return model


PROMPTS = [[1, 5, 6], [1, 9, 8, 3, 7, 11], [1, 4], [1, 12, 13, 14]]


def _left_padded(prompts):
    P = max(map(len, prompts))
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        mask[i, P - len(p):] = 1
    return ids, mask


def _p_eos_steps(logits, row):
    return torch.stack([s[row, EOS] for s in logits]).double().exp()


def _until_eos(seq: torch.Tensor) -> list[int]:
    s = seq.tolist()
    return s[: s.index(EOS) + 1] if EOS in s else s


@pytest.mark.parametrize("mode", ["st", "nmst"])
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("beams", [1, 2])
def test_left_padded_batch_equals_each_prompt_alone(mode, use_cache, beams):
    from kexue.integrations.hf import self_terminating

    eps = 0.01
    model = self_terminating(_tiny_llama(mode), eps=eps, mode=mode)
    ids, mask = _left_padded(PROMPTS)
    P = ids.shape[1]
    kw = dict(do_sample=False, num_beams=beams, max_new_tokens=40, pad_token_id=0, use_cache=use_cache,
              return_dict_in_generate=True, output_logits=True)
    batch = model.generate(ids, attention_mask=mask, **kw)
    lengths = []
    for i, p in enumerate(PROMPTS):
        alone = model.generate(torch.tensor([p]), **kw)
        got, want = _until_eos(batch.sequences[i, P:]), _until_eos(alone.sequences[0, len(p):])
        assert got == want, (i, got, want)
        lengths.append(len(want))
        if beams == 1:
            a, b = _p_eos_steps(alone.logits, 0), _p_eos_steps(batch.logits, i)
            n = len(want)
            assert torch.allclose(b[:n], a[:n], rtol=1e-4, atol=1e-6), (i, b[:n], a[:n])
            # the guarantee, t counted from the prompt's end: p(eos) at generated step j >= 1 - (1 - ε)^(j - 1)
            bound = 1 - (1 - eps) ** torch.arange(n, dtype=torch.float64)
            assert bool((b[:n] >= bound - 1e-6).all())
    assert max(lengths) > 3  # (sequences long enough for the per-row position count to matter)


@pytest.mark.parametrize("mode", ["st", "nmst"])
def test_consistent_generate_on_a_self_terminating_model(mode):
    """Bug (fixed): consistent_generate left the head's context at 0, so the prompt (and the left
    padding) counted as generated positions: p(eos) was too large, rows stopped early and a padded
    row differed from its prompt alone.  Now the context is the prompt, as in model.generate."""
    from kexue.integrations.hf import consistent_generate, self_terminating

    model = self_terminating(_tiny_llama(mode), eps=0.01, mode=mode)
    ids, mask = _left_padded(PROMPTS)
    P = ids.shape[1]
    batch = consistent_generate(model, ids, attention_mask=mask, top_k=1, max_new_tokens=40, pad_token_id=0,
                                    consistent=False)
    for i, p in enumerate(PROMPTS):
        alone = consistent_generate(model, torch.tensor([p]), top_k=1, max_new_tokens=40, pad_token_id=0,
                                    consistent=False)
        hf = model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=40, pad_token_id=0)
        want = _until_eos(hf[0, len(p):])
        assert _until_eos(alone[0, len(p):]) == want, (i, alone, want)
        assert _until_eos(batch[i, P:]) == want, (i, batch[i], want)


def test_explicit_context_len_counts_columns():
    """self_terminating(context_len=c): β = 1 (ST) over the first c columns of the sequence, in
    model.generate and consistent_generate alike (positions are columns, left padding included)."""
    from kexue.integrations.hf import consistent_generate, self_terminating

    model = self_terminating(_tiny_llama("st"), eps=0.01, mode="st", context_len=2)
    p = torch.tensor([[1, 9, 8, 3, 7, 11]])
    out = model.generate(p, do_sample=False, max_new_tokens=40, pad_token_id=0, return_dict_in_generate=True,
                         output_logits=True)
    cg = consistent_generate(model, p, top_k=1, max_new_tokens=40, pad_token_id=0, consistent=False)
    assert _until_eos(cg[0, 6:]) == _until_eos(out.sequences[0, 6:])
    # the first generated token's distribution is at column 5: n = 5 - 2 + 1 = 4 positions past the context
    assert float(_p_eos_steps(out.logits, 0)[0]) >= 1 - 0.99 ** 4 - 1e-6


def test_generate_from_inputs_embeds_counts_from_the_prompt_end():
    """Bug (fixed): model.generate(inputs_embeds=...) on a self-terminating model took the prompt
    length from input_ids only (0 here), so the prompt counted as generated positions."""
    from kexue.integrations.hf import self_terminating

    model = self_terminating(_tiny_llama("st"), eps=0.01)
    p = torch.tensor([[1, 9, 8, 3, 7, 11]])
    kw = dict(do_sample=False, max_new_tokens=40, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    by_ids = model.generate(p, **kw)
    by_embeds = model.generate(inputs_embeds=model.get_input_embeddings()(p).detach(), **kw)
    want = _until_eos(by_ids.sequences[0, 6:])
    assert _until_eos(by_embeds.sequences[0]) == want
    n = len(want)
    assert torch.allclose(_p_eos_steps(by_embeds.logits, 0)[:n], _p_eos_steps(by_ids.logits, 0)[:n], atol=1e-6)


def test_consistent_generate_pads_finished_rows_like_hf():
    """Bug (fixed): with the model's pad_token_id = 0 and none passed, consistent_generate padded
    finished rows with the eos id (``0 or eos``), where HF's generate pads with 0."""
    from kexue.integrations.hf import consistent_generate

    model = _tiny_llama("nmst")  # (a plain model: eos is an ordinary token here)
    assert model.generation_config.pad_token_id == 0
    ids = torch.tensor([[1, 5, 6], [1, 9, 8]])
    free = consistent_generate(model, ids, top_k=1, consistent=False, max_new_tokens=10, eos_token_id=V - 1)
    eos = int(free[0, 4])  # a token row 0 reaches at its 2nd step and row 1 later
    assert eos not in free[1, 3:5].tolist() and eos in free[1, 5:].tolist()
    got = consistent_generate(model, ids, top_k=1, consistent=False, max_new_tokens=10, eos_token_id=eos)
    want = model.generate(ids, do_sample=False, max_new_tokens=10, eos_token_id=eos)
    assert torch.equal(got, want[:, :got.shape[1]]), (got, want)
