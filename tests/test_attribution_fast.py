"""The hand-written BERT-classifier integrand (kexue.attribution.bert_fast) against the autograd
integrand and Captum's LayerIntegratedGradients in float64: every method, adaptive steps, chunking
that splits texts, predicted and given targets; when it applies and when it must not."""

from __future__ import annotations

import pytest
import torch

import kexue.attribution.bert_fast as bert_fast
from kexue.attribution import token_attributions

transformers = pytest.importorskip("transformers")

TEXTS = ["a gripping, funny film", "dull", "the plot is thin but the acting is superb",
         "an unbearably tedious affair", "funny film", "a tedious, thin plot"]


@pytest.fixture(scope="module")
def tok():
    from kexue.probe.models import default_model_path

    return transformers.AutoTokenizer.from_pretrained(default_model_path())


def _bert(tok, layers: int = 3, heads: int = 2, hidden: int = 16, labels: int = 3, **cfg):
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=2 * hidden,
                                     max_position_embeddings=64, num_labels=labels, **cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.BertForSequenceClassification(config).eval()
        with torch.no_grad():  # non-trivial biases and LayerNorm affines (HF initialises them to 0 / 1)
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def bert64(tok):
    return _bert(tok).double()


def _close(a, b, rel):
    for x, y in zip(a, b, strict=True):
        assert x.tokens == y.tokens and x.target == y.target and x.steps == y.steps
        scale = float(y.attributions.abs().max())
        assert float((x.attributions - y.attributions).abs().max()) <= rel * scale
        assert abs(x.f_input - y.f_input) <= rel * (abs(y.f_input) + 1)
        if y.f_baseline == y.f_baseline:  # NaN for the gradient methods
            assert abs(x.f_baseline - y.f_baseline) <= rel * (abs(y.f_baseline) + 1)
            assert abs(x.delta - y.delta) <= rel * (abs(y.f_input - y.f_baseline) + scale)


def _spy(monkeypatch) -> list[int]:
    calls = []
    real = bert_fast.BertClassifierIntegrand.weighted

    def weighted(self, ex, alphas, w):
        calls.append(len(ex))
        return real(self, ex, alphas, w)

    monkeypatch.setattr(bert_fast.BertClassifierIntegrand, "weighted", weighted)
    return calls


@pytest.mark.parametrize("kw", [dict(n_steps=16), dict(n_steps=9, method="riemann_trapezoid"),
                                dict(n_steps=5, method="riemann_left", batch_size=3),
                                dict(n_steps="auto", tol=1e-6), dict(n_steps="auto", tol=1e-2, batch_size=2),
                                dict(method="gradient"), dict(method="gradient_x_input")],
                         ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("target", [None, [0, 1, 2, 1, 0, 2]], ids=["predicted", "given"])
def test_fast_path_equals_autograd_float64(bert64, tok, kw, target, monkeypatch):
    calls = _spy(monkeypatch)
    fast = token_attributions(bert64, tok, TEXTS, target=target, **kw)
    assert sum(calls) > 0  # the fast path ran
    slow = token_attributions(bert64, tok, TEXTS, target=target, fast_path=False, **kw)
    _close(fast, slow, 1e-12)


def test_fast_path_equals_captum_float64(bert64, tok):
    captum_attr = pytest.importorskip("captum.attr")
    from kexue.attribution.quadrature import rule

    res = token_attributions(bert64, tok, TEXTS[:3], target=[2, 0, 1], n_steps=12)
    for r, t in zip(res, [2, 0, 1], strict=True):
        enc = tok(r.text, return_tensors="pt")
        ids = enc["input_ids"]
        special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id)
        base = torch.where(special, ids, torch.full_like(ids, tok.pad_token_id))
        lig = captum_attr.LayerIntegratedGradients(
            lambda i, m: bert64(input_ids=i, attention_mask=m).logits, bert64.bert.embeddings)
        a, d = lig.attribute(ids, base, target=t, additional_forward_args=(enc["attention_mask"],), n_steps=12,
                             return_convergence_delta=True)
        # Captum rounds its weights to float32: the bound 2^-24 Σ_k w_k |g_k||x - x'| is below 1e-6 here
        assert float((r.attributions - a[0]).abs().max()) <= 1e-6 * float(a.abs().max())
        assert abs(r.delta - float(d)) <= 1e-6 * (abs(r.f_input - r.f_baseline) + 1)
    assert len(rule("gausslegendre", 12)[0]) == 12


def test_fast_path_float32_agrees(tok):
    m = _bert(tok, layers=2, heads=4, hidden=32)
    fast = token_attributions(m, tok, TEXTS, n_steps=20)
    slow = token_attributions(m, tok, TEXTS, n_steps=20, fast_path=False)
    _close(fast, slow, 1e-4)
    dnn = token_attributions(m, tok, TEXTS, n_steps=20, fast_linear=True)
    _close(dnn, slow, 1e-4)


def test_per_row_gradients_equal_autograd(bert64, tok):
    """__call__ (per-row gradients, used by the gradient methods and max_memory) at interior α."""
    from kexue.attribution import text as T

    e = T._encode(tok, TEXTS[2], None)
    kw = T._model_inputs(torch.tensor([e.ids] * 2), torch.ones(2, len(e.ids), dtype=torch.long),
                         torch.tensor([e.token_type_ids] * 2))
    layer = bert64.bert.embeddings
    e_x = T._capture(bert64, layer, kw)
    e_b = torch.randn_like(e_x)
    tgt = torch.tensor([1, 2])
    ig = bert_fast.BertClassifierIntegrand(bert64, e_x, e_b, tgt)
    alphas = torch.tensor([0.3, 0.85], dtype=torch.float64)
    (g,), f = ig(torch.arange(2), alphas)
    z = (e_b + alphas.view(-1, 1, 1) * (e_x - e_b)).requires_grad_(True)
    with T.replaced_forwards({layer: T._first_call_returns(layer, z)}):
        logits = bert64(**kw).logits
    ref_f = logits[torch.arange(2), tgt]
    (ref_g,) = torch.autograd.grad(ref_f.sum(), z)
    assert torch.allclose(f, ref_f.detach(), rtol=1e-12, atol=1e-12)
    assert float((g - ref_g).abs().max()) <= 1e-12 * float(ref_g.abs().max())


def test_support_and_fallbacks(tok, monkeypatch):
    m = _bert(tok, layers=2)
    assert bert_fast.support(m, m.bert.embeddings) is None
    assert "embeddings" in bert_fast.support(m, m.bert.encoder.layer[0])
    one = _bert(tok, layers=1)
    assert "fewer than 2 layers" in bert_fast.support(one, one.bert.embeddings)
    relu = _bert(tok, layers=2, hidden_act="relu")
    assert "hidden_act" in bert_fast.support(relu, relu.bert.embeddings)
    m.train()
    assert "training" in bert_fast.support(m, m.bert.embeddings)
    m.eval()
    assert "float16" in bert_fast.support(m.half(), m.bert.embeddings)
    m.float()
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=tok.vocab_size, n_embd=16, n_layer=2,
                                                               n_head=2, n_positions=64))
    assert "GPT2LMHeadModel" in bert_fast.support(gpt, gpt.transformer.wte)
    # where it does not apply (or is switched off) the autograd path runs, with the same result
    calls = _spy(monkeypatch)
    token_attributions(relu, tok, TEXTS[:2], n_steps=4)
    token_attributions(m, tok, TEXTS[:2], n_steps=4, fast_path=False)
    token_attributions(m, tok, TEXTS[:2], n_steps=4, layer="bert.encoder.layer.0")
    assert calls == []
    token_attributions(m, tok, TEXTS[:2], n_steps=4)
    assert calls
