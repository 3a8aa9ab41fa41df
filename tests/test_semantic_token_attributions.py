"""Valid inputs, right answers: kexue.attribution.token_attributions on a batch of texts of different
lengths against Captum 0.9 run the way a careful Captum user runs it on a PADDED batch, in float64:

* a tiny random BertForSequenceClassification, right padding + attention mask,
  LayerIntegratedGradients over ``bert.embeddings`` with the pad / mask baseline ids ([CLS], [SEP]
  kept), a target per text; the "zero" baseline with IntegratedGradients on the embeddings
  block's output (a forward hook that puts the interpolated tensor in its place);
* a tiny random GPT2LMHeadModel, LEFT padding + attention mask + position ids from the mask,
  LayerIntegratedGradients over ``wte``: the next-token logit at the last position, and the
  log-probability of a continuation Σ_j log p(c_j | text, c_<j) (the continuation kept in the
  baseline);

and the word scores against sums over the tokenizer's own ``word_ids()``.  kexue never pads (it
groups texts by length), so each text's scores must equal Captum's on the padded batch.

Found clean (2026-12-06); kept as a compact regression check.
"""

from __future__ import annotations

import pytest
import torch

from kexue.attribution import text as text_mod
from kexue.attribution import token_attributions
from kexue.attribution.quadrature import rule

captum_attr = pytest.importorskip("captum.attr", reason="Captum 0.9 is a test dependency (requirements/bench.txt)")
transformers = pytest.importorskip("transformers")

TEXTS = ["a gripping, funny film", "dull", "the plot is thin but the acting is superb", "funny film"]
N_STEPS = 10


@pytest.fixture(scope="module")
def tok():
    from kexue.probe.models import default_model_path

    return transformers.AutoTokenizer.from_pretrained(default_model_path())


def _perturbed(model):
    with torch.no_grad():  # non-trivial biases and LayerNorm affines
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval().double()


@pytest.fixture(scope="module")
def bert(tok):
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64, num_labels=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _perturbed(transformers.BertForSequenceClassification(cfg))


@pytest.fixture(scope="module")
def gpt2(tok):
    cfg = transformers.GPT2Config(vocab_size=tok.vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return _perturbed(transformers.GPT2LMHeadModel(cfg))


@pytest.fixture
def captum_weights(monkeypatch):
    """Captum rounds its quadrature weights to float32; kexue does the same here."""
    monkeypatch.setattr(text_mod, "rule", lambda m, n: (rule(m, n)[0], rule(m, n)[1].float().double()))


def _baseline_ids(tok, ids, fill):
    keep = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (ids == tok.pad_token_id)
    return torch.where(keep, ids, torch.full_like(ids, fill))


def _close(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape
    assert float((got.double() - ref).abs().max()) <= 1e-9 * (1 + float(ref.abs().max()))


@pytest.mark.parametrize("baseline", ["pad", "mask", "zero"])
def test_bert_batch_equals_captum_on_a_right_padded_batch(bert, tok, captum_weights, baseline):
    targets = [0, 2, 1, 2]
    res = token_attributions(bert, tok, TEXTS, target=targets, baseline=baseline, n_steps=N_STEPS, fast_path=False)
    fast = token_attributions(bert, tok, TEXTS, target=targets, baseline=baseline, n_steps=N_STEPS)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    tgt = torch.tensor(targets)
    if baseline == "zero":
        slot = {}

        def put(_m, _i, _out):
            return slot["z"]

        def fwd(z):
            slot["z"] = z
            h = bert.bert.embeddings.register_forward_hook(put)
            try:
                return bert(input_ids=ids.expand(z.shape[0] // ids.shape[0], -1, -1).reshape(-1, ids.shape[1]),
                            attention_mask=mask.repeat(z.shape[0] // ids.shape[0], 1)).logits
            finally:
                h.remove()

        e_x = bert.bert.embeddings(input_ids=ids).detach()
        attr = captum_attr.IntegratedGradients(fwd).attribute(e_x, torch.zeros_like(e_x), target=tgt, n_steps=N_STEPS)
    else:
        fill = tok.pad_token_id if baseline == "pad" else tok.mask_token_id
        lig = captum_attr.LayerIntegratedGradients(lambda i, m: bert(input_ids=i, attention_mask=m).logits,
                                                   bert.bert.embeddings)
        attr = lig.attribute(ids, _baseline_ids(tok, ids, fill), target=tgt, additional_forward_args=(mask,),
                             n_steps=N_STEPS)
    for b, (r, f) in enumerate(zip(res, fast, strict=True)):
        L = int(mask[b].sum())
        assert r.tokens == tok.convert_ids_to_tokens(ids[b, :L])
        _close(r.attributions, attr[b, :L])
        _close(f.attributions, attr[b, :L])  # the hand-written BERT integrand too
        _close(r.scores, attr[b, :L].sum(-1))
        # words: the tokenizer's own word_ids, summed
        wid = enc.word_ids(b)[:L]
        words = sorted({w for w in wid if w is not None})
        want = torch.stack([attr[b, :L].sum(-1)[[i for i, w in enumerate(wid) if w == k]].sum() for k in words])
        _close(r.word_scores, want)
        assert r.words == [r.text[s:e] for s, e in (enc.word_to_chars(b, k) for k in words)]


def _left_padded(tok, texts, continuation=None):
    rows = [tok(t)["input_ids"] + (tok(continuation, add_special_tokens=False)["input_ids"] if continuation else [])
            for t in texts]
    L = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (L - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows])
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, pos


def test_gpt2_next_token_and_continuation_equal_captum_on_a_left_padded_batch(gpt2, tok, captum_weights):
    wte = gpt2.get_input_embeddings()

    def logits(i, m, p):
        return gpt2(input_ids=i, attention_mask=m, position_ids=p).logits

    # next-token logit after each text, a token id per text
    targets = [7, 1999, 42, 5]
    res = token_attributions(gpt2, tok, TEXTS, target=targets, n_steps=N_STEPS)
    ids, mask, pos = _left_padded(tok, TEXTS)
    lig = captum_attr.LayerIntegratedGradients(lambda i, m, p: logits(i, m, p)[:, -1], wte)
    attr = lig.attribute(ids, _baseline_ids(tok, ids, tok.pad_token_id), target=torch.tensor(targets),
                         additional_forward_args=(mask, pos), n_steps=N_STEPS)
    for b, r in enumerate(res):
        L = int(mask[b].sum())
        _close(r.attributions, attr[b, -L:])
        assert attr[b, :-L].abs().max() == 0 if L < ids.shape[1] else True  # padding: no attribution
    # a continuation's log-probability
    cont = " great fun"
    n_cont = len(tok(cont, add_special_tokens=False)["input_ids"])
    res = token_attributions(gpt2, tok, TEXTS, target=cont, n_steps=N_STEPS)
    ids, mask, pos = _left_padded(tok, TEXTS, cont)
    T = ids.shape[1]

    def logp(i, m, p):
        lp = torch.log_softmax(logits(i, m, p), -1)
        got = lp[:, T - n_cont - 1:T - 1].gather(-1, i[:, T - n_cont:].unsqueeze(-1)).squeeze(-1)
        return got.sum(1)

    base = _baseline_ids(tok, ids, tok.pad_token_id)
    base[:, T - n_cont:] = ids[:, T - n_cont:]  # the continuation is kept in the baseline
    lig = captum_attr.LayerIntegratedGradients(logp, wte)
    attr, delta = lig.attribute(ids, base, additional_forward_args=(mask, pos), n_steps=N_STEPS,
                                return_convergence_delta=True)
    for b, r in enumerate(res):
        L = int(mask[b].sum()) - n_cont  # the text's own tokens
        _close(r.attributions, attr[b, T - n_cont - L:T - n_cont])
        with torch.no_grad():
            assert abs(r.f_input - float(logp(ids[b:b + 1], mask[b:b + 1], pos[b:b + 1]))) <= 1e-9
        assert abs(r.delta - float(delta[b])) <= 1e-8
