"""kexue.nn.LinearAttention and the Hugging Face integration."""

from __future__ import annotations

import copy

import pytest
import torch

import kexue
from helpers import error
from kexue.linear_attention import linear_attention_quadratic


def manual_attention(attn, x, y, causal, mask=None):
    """The module's math written out with the float64 oracle."""
    B, Nq, E = x.shape
    hd = attn.head_dim
    q = attn.q_proj(x).view(B, Nq, attn.num_heads, hd).transpose(1, 2)
    k = attn.k_proj(y).view(B, y.shape[1], attn.num_kv_heads, hd).transpose(1, 2)
    v = attn.v_proj(y).view(B, y.shape[1], attn.num_kv_heads, hd).transpose(1, 2)
    o, _ = linear_attention_quadratic(q.double(), k.double(), v.double(), causal=causal, key_padding_mask=mask)
    return attn.out_proj(o.float().transpose(1, 2).reshape(B, Nq, E))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_kv_heads", [None, 2])
def test_module_matches_definition(causal, num_kv_heads):
    attn = kexue.nn.LinearAttention(48, 4, num_kv_heads=num_kv_heads, causal=causal)
    x = torch.randn(3, 11, 48)
    mask = torch.zeros(3, 11, dtype=torch.bool)
    mask[2, 7:] = True
    out, w = attn(x, x, x, key_padding_mask=mask)
    assert w is None and out.shape == x.shape
    assert error(out, manual_attention(attn, x, x, causal, mask)) < 1e-5


def test_module_cross_attention_and_sequence_first():
    attn = kexue.nn.LinearAttention(32, 4, batch_first=False)
    x, y = torch.randn(5, 2, 32), torch.randn(9, 2, 32)  # (N, B, E)
    out, _ = attn(x, y, y)
    assert out.shape == (5, 2, 32)
    q = attn.q_proj(x.transpose(0, 1)).view(2, 5, 4, 8).transpose(1, 2)
    k = attn.k_proj(y.transpose(0, 1)).view(2, 9, 4, 8).transpose(1, 2)
    v = attn.v_proj(y.transpose(0, 1)).view(2, 9, 4, 8).transpose(1, 2)
    fq, fk = torch.nn.functional.elu(q.double()) + 1, torch.nn.functional.elu(k.double()) + 1
    a = fq @ fk.transpose(-1, -2)
    o = (a @ v.double()) / (a.sum(-1, keepdim=True) + 1e-6)
    expect = attn.out_proj(o.float().transpose(1, 2).reshape(2, 5, 32)).transpose(0, 1)
    assert error(out, expect) < 1e-5


def test_module_from_multihead_attention_keeps_weights():
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    la = kexue.nn.LinearAttention.from_multihead_attention(mha, causal=True)
    x = torch.randn(2, 6, 32)
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    assert torch.equal(la.q_proj.weight, wq) and torch.equal(la.v_proj.weight, wv) and torch.equal(la.k_proj.weight, wk)
    assert error(la(x, x, x)[0], manual_attention(la, x, x, True)) < 1e-5


def test_module_errors():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        kexue.nn.LinearAttention(30, 4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        kexue.nn.LinearAttention(32, 4, num_kv_heads=3)
    attn = kexue.nn.LinearAttention(32, 4)
    x = torch.randn(1, 3, 32)
    with pytest.raises(ValueError, match="need_weights"):
        attn(x, x, x, need_weights=True)
    with pytest.raises(ValueError, match="attn_mask"):
        attn(x, x, x, attn_mask=torch.zeros(3, 3))


def test_module_trains():
    attn = kexue.nn.LinearAttention(16, 2, causal=True)
    x = torch.randn(2, 5, 16)
    attn(x, x, x)[0].square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn.parameters())


# ---- Hugging Face transformers -------------------------------------------------------------

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf():
    import kexue.integrations.hf as hf

    return hf


def _oracle_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Independent check: the float64 N×N oracle with the padding taken from the 2D mask."""
    causal = kwargs.get("is_causal", getattr(module, "is_causal", False))
    pad = None if attention_mask is None else ~attention_mask.bool()
    o, _ = linear_attention_quadratic(query.double(), key.double(), value.double(), causal=causal,
                                      key_padding_mask=pad)
    return o.to(query.dtype).transpose(1, 2).contiguous(), None


def test_hf_bert_runs_linear_attention_with_padding(hf):
    from transformers import AttentionInterface, BertConfig, BertModel
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register("kexue_oracle", _oracle_attention)
    AttentionMaskInterface.register("kexue_oracle", hf.padding_mask_function)
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     initializer_range=0.5)  # large weights: softmax and linear attention differ clearly
    # each model gets its own config: _from_config sets the implementation on the config object
    model = BertModel._from_config(copy.deepcopy(cfg), attn_implementation=hf.NAME).eval()
    oracle = BertModel._from_config(copy.deepcopy(cfg), attn_implementation="kexue_oracle").eval()
    oracle.load_state_dict(model.state_dict())
    sdpa = BertModel._from_config(copy.deepcopy(cfg), attn_implementation="sdpa").eval()
    sdpa.load_state_dict(model.state_dict())
    ids = torch.randint(0, 99, (2, 9))
    am = torch.ones(2, 9, dtype=torch.long)
    am[1, 6:] = 0
    assert model.config._attn_implementation == hf.NAME
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=am).last_hidden_state
        assert error(out, oracle(input_ids=ids, attention_mask=am).last_hidden_state) < 1e-4
        assert error(out, sdpa(input_ids=ids, attention_mask=am).last_hidden_state) > 1e-2  # really replaced
        alone = model(input_ids=ids[1:, :6]).last_hidden_state  # padding changes nothing
        assert error(out[1, :6], alone[0]) < 1e-5


def test_hf_gpt2_is_causal_and_decodes_with_cache(hf):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation=hf.NAME).eval()
    assert model.config._attn_implementation == hf.NAME
    ids = torch.randint(0, 99, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        changed = ids.clone()
        changed[:, 8:] = (changed[:, 8:] + 1) % 99
        assert error(model(changed).logits[:, :8], full[:, :8]) < 1e-5  # no look-ahead
        out = model(ids[:, :8], use_cache=True)
        cache, steps = out.past_key_values, [out.logits[:, -1]]
        for t in range(8, 11):
            out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits[:, -1])
    assert error(torch.stack(steps, 1), full[:, 7:11]) < 1e-4
