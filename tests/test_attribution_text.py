"""kexue.attribution.token_attributions on Hugging Face models with random weights: against
Captum's LayerIntegratedGradients (float64), the mask never interpolated, grouping and batching,
causal LMs, torchrun sharding, render, the CLI, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import kexue.attribution.text as text_mod
from kexue.attribution import integrated_gradients, render, token_attributions
from kexue.attribution.quadrature import rule

captum_attr = pytest.importorskip("captum.attr", reason="Captum 0.9 is a test dependency (requirements/bench.txt)")
transformers = pytest.importorskip("transformers")

TEXTS = ["a gripping, funny film", "dull", "the plot is thin but the acting is superb",
         "an unbearably tedious affair", "funny film"]


@pytest.fixture(scope="module")
def tok():
    from kexue.probe.models import default_model_path

    return transformers.AutoTokenizer.from_pretrained(default_model_path())


def _seeded(fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return fn()


@pytest.fixture(scope="module")
def bert(tok):
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                                  num_labels=3)
    return _seeded(lambda: transformers.BertForSequenceClassification(cfg).eval())


@pytest.fixture(scope="module")
def gpt2(tok):
    cfg = transformers.GPT2Config(vocab_size=tok.vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=64)
    return _seeded(lambda: transformers.GPT2LMHeadModel(cfg).eval())


@pytest.fixture
def captum_weights(monkeypatch):
    monkeypatch.setattr(text_mod, "rule", lambda m, n: (rule(m, n)[0], rule(m, n)[1].float().double()))


def _pad_baseline(tok, ids):
    b = ids.clone()
    special = torch.tensor([t in (tok.cls_token_id, tok.sep_token_id) for t in ids[0].tolist()])
    b[0, ~special] = tok.pad_token_id
    return b


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_classifier_matches_captum_layer_ig(bert, tok, captum_weights, method):
    model = bert.double()
    try:
        res = token_attributions(model, tok, TEXTS, target=[0, 1, 2, 1, 0], n_steps=16, method=method)
        for r, t in zip(res, [0, 1, 2, 1, 0], strict=True):
            enc = tok(r.text, return_tensors="pt")
            lig = captum_attr.LayerIntegratedGradients(
                lambda ids, m: model(input_ids=ids, attention_mask=m).logits, model.bert.embeddings)
            a, d = lig.attribute(enc["input_ids"], _pad_baseline(tok, enc["input_ids"]), target=t,
                                 additional_forward_args=(enc["attention_mask"],), n_steps=16, method=method,
                                 return_convergence_delta=True)
            ref = a[0].sum(-1)
            assert r.tokens == tok.convert_ids_to_tokens(enc["input_ids"][0])
            assert float((r.scores.double() - ref).abs().max()) <= 1e-5 * float(ref.abs().max())  # scores are float32
            assert float((r.attributions.double() - a[0]).abs().max()) <= 1e-5 * float(a.abs().max())
            assert abs(r.delta - float(d)) <= 1e-9 * (abs(r.f_input - r.f_baseline) + 1e-3)
            assert r.steps == 16 and r.target == t
    finally:
        model.float()


def test_mask_never_interpolated_and_inputs_kept(bert, tok):
    seen = []

    def spy(_m, _args, kwargs):
        ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else _args[0]
        seen.append((kwargs["attention_mask"].clone(), ids.clone()))

    h = bert.bert.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        # the autograd integrand (the hand-written BERT one calls no model forward at the steps and
        # has no mask: tests/test_attribution_fast.py)
        res = token_attributions(bert, tok, TEXTS, n_steps=7, batch_size=4, fast_path=False)
    finally:
        h.remove()
    assert len(seen) > 5
    for mask, _ in seen:
        assert mask.dtype == torch.long and bool((mask == 1).all())  # the texts' own masks: no padding, no α
    lengths = {len(tok(t)["input_ids"]) for t in TEXTS}
    # the baseline's ids go in once per length group (the pass that reads its embeddings), never at a step
    assert sum(bool((ids == tok.pad_token_id).any()) for _, ids in seen) == len(lengths)
    assert all(r.steps == 7 for r in res)


def test_grouping_and_batching_do_not_change_results(bert, tok):
    model = bert.double()
    try:
        together = token_attributions(model, tok, TEXTS, n_steps=9, target=1)
        alone = [token_attributions(model, tok, t, n_steps=9, target=1, batch_size=1) for t in TEXTS]
        for a, b in zip(together, alone, strict=True):
            assert a.tokens == b.tokens
            assert float((a.attributions - b.attributions).abs().max()) <= 1e-6 * float(b.attributions.abs().max())
    finally:
        model.float()


def test_auto_completeness_and_words(bert, tok):
    model = bert.double()
    try:
        res = token_attributions(model, tok, TEXTS, n_steps="auto", tol=1e-4)
    finally:
        model.float()
    for r in res:
        assert r.error <= 1e-4 * abs(r.f_input - r.f_baseline) + 1e-12
        assert r.steps >= 3
        assert r.scores[0] == 0 and r.scores[-1] == 0  # [CLS], [SEP]: kept in the pad baseline
        assert len(r.words) == len(r.text.replace(",", " ,").split())
        assert abs(float(r.word_scores.sum()) - float(r.scores.sum())) < 1e-5
    assert res[0].words == ["a", "gripping", ",", "funny", "film"]


def test_fast_linear_agrees_with_plain(bert, tok):
    a = token_attributions(bert, tok, TEXTS[:3], n_steps=10, target=0, fast_linear=True)
    b = token_attributions(bert, tok, TEXTS[:3], n_steps=10, target=0, fast_linear=False)
    for x, y in zip(a, b, strict=True):
        assert float((x.scores - y.scores).abs().max()) <= 1e-4 * float(y.scores.abs().max())


def test_gradient_methods_text(bert, tok):
    g = token_attributions(bert, tok, "funny film", method="gradient", target=2)
    gx = token_attributions(bert, tok, "funny film", method="gradient_x_input", target=2)
    enc = tok("funny film", return_tensors="pt")
    e = bert.bert.embeddings(input_ids=enc["input_ids"]).detach().requires_grad_()
    lig = captum_attr.LayerGradientXActivation(lambda ids: bert(input_ids=ids).logits, bert.bert.embeddings)
    ref = lig.attribute(enc["input_ids"], target=2)[0]
    err = float((gx.attributions - ref).abs().max())
    assert err <= 1e-5 * float(ref.abs().max()), (err, float(ref.abs().max()))
    assert g.steps == 1 and e.shape[1] == len(g.tokens)


@pytest.mark.parametrize("baseline", ["pad", "mask", "zero"])
def test_causal_lm_next_token_and_continuation(gpt2, tok, captum_weights, baseline):
    gpt2 = gpt2.double()  # float64: the comparisons are to rounding, not to float32's log-softmax noise
    try:
        _causal_case(gpt2, tok, baseline)
    finally:
        gpt2.float()


def _causal_case(gpt2, tok, baseline):
    text = "the film was"
    ids = tok(text, return_tensors="pt")["input_ids"]
    wte = gpt2.get_input_embeddings()
    e_x = wte(ids).detach()
    if baseline == "zero":
        e_b = torch.zeros_like(e_x)
    else:
        fill = tok.pad_token_id if baseline == "pad" else tok.mask_token_id
        b = torch.where((ids == tok.cls_token_id) | (ids == tok.sep_token_id), ids, torch.full_like(ids, fill))
        e_b = wte(b).detach()
    nxt = token_attributions(gpt2, tok, text, target=7, n_steps=12, baseline=baseline)
    ref = captum_attr.IntegratedGradients(lambda e: gpt2(inputs_embeds=e).logits[:, -1]).attribute(
        e_x, e_b, target=7, n_steps=12)
    assert float((nxt.attributions - ref[0]).abs().max()) <= 1e-9 * float(ref.abs().max())
    # a continuation's log-probability: its tokens are kept in the baseline, so only the text is attributed
    cont = " great fun"
    cids = tok(cont, add_special_tokens=False, return_tensors="pt")["input_ids"]
    full = torch.cat([ids, cids], 1)
    P = ids.shape[1]

    def logp(e):
        emb = torch.cat([e, wte(cids).expand(e.shape[0], -1, -1)], 1)
        lp = torch.log_softmax(gpt2(inputs_embeds=emb).logits, -1)
        return lp[:, P - 1:-1].gather(-1, full[:, P:].expand(e.shape[0], -1).unsqueeze(-1)).squeeze(-1).sum(1)

    r = token_attributions(gpt2, tok, text, target=cont, n_steps=12, baseline=baseline)
    ref2 = captum_attr.IntegratedGradients(logp).attribute(e_x, e_b, n_steps=12)
    assert r.tokens == tok.convert_ids_to_tokens(ids[0]) and r.target == cont
    assert float((r.attributions - ref2[0]).abs().max()) <= 1e-9 * float(ref2.abs().max())
    assert abs(r.f_input - float(logp(e_x))) < 1e-4


def test_tensor_baseline_equals_zero(bert, tok):
    a = token_attributions(bert, tok, TEXTS[:2], baseline="zero", n_steps=6, target=0)
    b = token_attributions(bert, tok, TEXTS[:2], baseline=torch.zeros(16), n_steps=6, target=0)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.attributions, y.attributions)


def test_layer_ig_equals_input_ig_on_the_embeddings_output(bert, tok):
    """Integrating over the embeddings block's output is IG of the rest of the model at that point."""
    r = token_attributions(bert, tok, "funny film", n_steps=10, target=1, baseline="zero", fast_linear=False)
    enc = tok("funny film", return_tensors="pt")
    e = bert.bert.embeddings(input_ids=enc["input_ids"]).detach()

    def rest(z):  # no padding: the all-ones mask is no mask
        return bert.classifier(bert.bert.pooler(bert.bert.encoder(z).last_hidden_state))

    ref = integrated_gradients(rest, e, target=1, n_steps=10)
    assert float((r.attributions - ref[0]).abs().max()) <= 1e-5 * float(ref.abs().max())


def test_render_writes_png_and_html(bert, tok, tmp_path):
    res = token_attributions(bert, tok, TEXTS[:2], n_steps=5)
    png, page = render(res, tmp_path / "ig.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = page.read_text()
    assert "gripping" in body and "rgb(" in body
    words_png, _ = render(res[0], tmp_path / "w", level="words")
    assert words_png.exists()
    with pytest.raises(ValueError, match="level"):
        render(res[0], tmp_path / "x", level="chars")


def _dist_worker(rank, world, port, path, tok_path, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = transformers.BertForSequenceClassification.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tok_path)
    res = token_attributions(model, tok, TEXTS, n_steps=5, target=0)
    if rank == 0:
        torch.save([r.attributions for r in res], out)
    else:
        assert res is None
    dist.destroy_process_group()


def test_distributed_sharding_gathers_on_rank_0(bert, tok, tmp_path):
    import socket

    import torch.multiprocessing as mp

    bert.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "out.pt")
    mp.spawn(_dist_worker, args=(2, port, str(tmp_path / "m"), str(tmp_path / "m"), out), nprocs=2)
    got = torch.load(out)
    ref = token_attributions(bert, tok, TEXTS, n_steps=5, target=0)
    for g, r in zip(got, ref, strict=True):
        assert float((g - r.attributions).abs().max()) <= 1e-6 * float(r.attributions.abs().max())


def test_cli_on_a_local_model(bert, tok, tmp_path):
    bert.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    res = subprocess.run([sys.executable, "-m", "kexue", "attribute", "a gripping, funny film", "--model",
                          str(tmp_path / "m"), "--target", "1", "--png", str(tmp_path / "o.png"), "--html",
                          str(tmp_path / "o.html")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "gripping" in res.stdout and "completeness error" in res.stdout
    assert (tmp_path / "o.png").exists() and (tmp_path / "o.html").exists()
    bad = subprocess.run([sys.executable, "-m", "kexue", "attribute", "x", "--model", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "model" in bad.stderr


ERRORS = [
    ({"target": "great"}, ValueError, "causal LM"),
    ({"target": 3}, ValueError, "target 3 is out of range"),
    ({"target": [0, 1]}, ValueError, "target"),
    ({"baseline": "unk"}, ValueError, "baseline"),
    ({"baseline": torch.zeros(5)}, ValueError, "baseline"),
    ({"layer": "bert.nope"}, ValueError, "layer"),
    ({"n_steps": 0}, ValueError, "n_steps"),
    ({"tol": 0.0}, ValueError, "tol"),
    ({"batch_size": 0}, ValueError, "batch_size"),
]


@pytest.mark.parametrize(("kw", "exc", "word"), ERRORS, ids=[e[2] for e in ERRORS])
def test_bad_input(bert, tok, kw, exc, word):
    with pytest.raises(exc) as info:
        token_attributions(bert, tok, "funny film", **kw)
    assert word in str(info.value), str(info.value)


def test_bad_model_and_texts(bert, tok):
    with pytest.raises(TypeError, match="model"):
        token_attributions(bert.bert, tok, "funny")
    with pytest.raises(TypeError, match="texts"):
        token_attributions(bert, tok, ["ok", 3])
