"""Valid inputs, right answers: kexue.theseus.wrap against the original model and its export.

tests/test_theseus.py already checks logits and loss at p = 0 / p = 1, the export and its
save/load round trip.  Here: every hidden state and attention map at p = 0 (padding masks, eager
attention), the eval-mode model reached through ``wrapped.model`` (generate, forward) after a
mixed training step, and a decoder stepped with past_key_values (left-padded batch) against a
full recomputation by the exported successor.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_theseus import batch, make, run

from kexue import theseus

DECODERS = ["gpt2", "llama"]


def _eager(model):
    model.config._attn_implementation = "eager"  # (attention maps are returned by the eager path only)
    return model


@pytest.mark.parametrize("arch", ["bert", "distilbert", "gpt2", "llama"])
def test_p0_hidden_states_and_attentions_are_the_predecessors(arch):
    original = _eager(make(arch))
    wrapped = theseus.wrap(copy.deepcopy(original), ratio=2, scheduler=theseus.ConstantReplacing(0.0))
    inputs = dict(batch(arch), output_hidden_states=True, output_attentions=True)
    if arch in DECODERS:
        inputs["use_cache"] = False
    original.train()
    wrapped.train()
    a, b = wrapped(**inputs), original(**inputs)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
    assert len(a.hidden_states) == len(b.hidden_states) == 5
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))
    assert len(a.attentions) == len(b.attentions) == 4
    assert all(torch.equal(x, y) for x, y in zip(a.attentions, b.attentions, strict=True))


def _mixed_step(wrapped, arch):
    """Training forwards until a draw mixes predecessor and successor groups; returns the choices."""
    wrapped.train()
    for _ in range(20):
        run(wrapped, batch(arch), True)
        if not bool(wrapped.last_choices.all()) and bool(wrapped.last_choices.any()):
            return wrapped.last_choices
    raise AssertionError("no mixed draw in 20 steps")


@pytest.mark.parametrize("arch", DECODERS + ["bert"])
def test_eval_model_is_the_successor_after_a_mixed_training_step(arch):
    """Bug (fixed): the groups kept the last training draw, so after wrapped.eval() the wrapped
    model itself (wrapped.model(...), wrapped.model.generate(...)) ran predecessor layers."""
    wrapped = theseus.wrap(make(arch), ratio=2, scheduler=theseus.ConstantReplacing(0.5), seed=3)
    _mixed_step(wrapped, arch)
    wrapped.eval()
    small = wrapped.successor()
    inputs = batch(arch)
    kw = dict(use_cache=False) if arch in DECODERS else {}
    assert torch.equal(wrapped.model(**inputs, **kw).logits, small(**inputs, **kw).logits)
    assert torch.equal(wrapped(**inputs, **kw).logits, small(**inputs, **kw).logits)
    if arch in DECODERS:
        ids = inputs["input_ids"][:2]
        got = wrapped.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert torch.equal(got, small.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0))


@pytest.mark.parametrize("init", ["first", "every_nth"])
@pytest.mark.parametrize("arch", DECODERS)
def test_eval_decoder_with_past_key_values_equals_full_recomputation(arch, init):
    """The wrapper in eval mode, stepped one token at a time with past_key_values on a left-padded
    batch, gives the logits of the exported successor run on the whole sequence at once."""
    wrapped = theseus.wrap(make(arch), ratio=2, init=init, scheduler=theseus.ConstantReplacing(0.5), seed=1)
    _mixed_step(wrapped, arch)
    with torch.no_grad():  # move the successor off its source layers
        for g in wrapped.groups:
            for p in g.successor.parameters():
                p.add_(0.05 * torch.randn_like(p))
    wrapped.eval()
    small = wrapped.successor()
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(1, 40, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    mask[2, :1] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = small(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
        out = wrapped(input_ids=ids[:, :5], attention_mask=mask[:, :5], position_ids=pos[:, :5], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for t in range(5, 9):
            out = wrapped(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1], position_ids=pos[:, t:t + 1],
                          past_key_values=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.past_key_values
    stepped = torch.cat(steps, 1)
    real = mask.bool()
    torch.testing.assert_close(stepped[real], full[real], rtol=1e-5, atol=1e-5)
