"""Valid inputs, right answers: kexue.probe impact matrices against a naive loop written here.

The loop shares nothing with kexue: it tokenizes each word with the tokenizer itself, builds
[CLS] + pieces + [SEP], masks every piece of word i (and of word j) by hand, runs the model once
per masked sequence and takes, per Wu et al. (2020), f(i, j) = d(H(x∖{i})_i, H(x∖{i, j})_i),
averaged over the pieces of word i ("avg") or read at its first piece ("first").  Words that
split into several pieces (WordPiece continuations, punctuation split off by BERT's basic
tokenizer, unknown words), a 1-word and a 2-word sentence; the batched engine, the definition
(`impact_matrix_reference`) and the published scheme are all held to it.
"""

from __future__ import annotations

import pytest
import torch
from test_probe_engine import tiny_bert, tiny_tokenizer

import kexue.probe as kp

SENTENCES = [
    ["fox"],                                               # W = 1
    ["the", "cats"],                                       # W = 2, a 2-piece word
    ["unbelievable", ",", "the", "cat.", "sat", "on", "mat"],  # 3 pieces; "cat." splits into cat + .
    ["quickly", "zzz", "jumping", "dogs"],                 # an unknown word, 2-piece words
]


def _naive(model, tok, words, layer, metric, subword):
    pieces = [tok.convert_tokens_to_ids(tok.tokenize(w)) for w in words]
    assert all(pieces)
    ids, spans = [tok.cls_token_id], []
    for p in pieces:
        spans.append(list(range(len(ids), len(ids) + len(p))))
        ids += p
    ids.append(tok.sep_token_id)

    def hidden(masked):
        x = list(ids)
        for w in masked:
            for pos in spans[w]:
                x[pos] = tok.mask_token_id
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([x]), output_hidden_states=True).hidden_states
        return hs[layer][0].double()

    def d(a, b):
        if metric == "dist":
            return float((a - b).norm())
        return float(1 - (a @ b) / (a.norm() * b.norm()))

    W = len(words)
    M = torch.zeros(W, W, dtype=torch.float64)
    for i in range(W):
        read = spans[i][:1] if subword == "first" else spans[i]
        base = hidden([i])
        for j in range(W):
            if j != i:
                pair = hidden([i, j])
                M[i, j] = sum(d(base[p], pair[p]) for p in read) / len(read)
    return M


@pytest.fixture(scope="module")
def tiny():
    return tiny_bert(), tiny_tokenizer()


def test_sentences_really_split(tiny):
    _, tok = tiny
    n = [[len(tok.tokenize(w)) for w in s] for s in SENTENCES]
    assert n[1][1] == 2 and n[2][0] == 3 and n[2][3] == 2 and max(n[3]) >= 2
    assert tok.unk_token in tok.tokenize("zzz")


@pytest.mark.parametrize(("metric", "subword", "layer"), [
    ("dist", "avg", -1), ("dist", "first", 1), ("cos", "avg", 2), ("cos", "first", -1), ("dist", "avg", 0),
])
def test_impact_matrices_equal_a_naive_loop(tiny, metric, subword, layer):
    model, tok = tiny
    engine = kp.impact_matrices(model, tok, SENTENCES, layer=layer, metric=metric, subword=subword, batch_size=5)
    for words, M in zip(SENTENCES, engine, strict=True):
        want = _naive(model, tok, words, layer, metric, subword)
        scale = max(1.0, float(want.abs().max()))
        assert M.shape == want.shape == (len(words), len(words))
        assert float((M.double() - want).abs().max()) < 1e-5 * scale, (words, M, want)
        one = kp.impact_matrix(model, tok, words, layer=layer, metric=metric, subword=subword)
        assert float((one.double() - want).abs().max()) < 1e-5 * scale
        ref = kp.impact_matrix_reference(model, tok, words, layer=layer, metric=metric, subword=subword)
        assert float((ref - want).abs().max()) < 1e-9 * scale
        if len(words) <= 4:
            pub = kp.impact_matrix_published_scheme(model, tok, words, layer=layer, metric=metric, subword=subword)
            assert float((pub.double() - want).abs().max()) < 1e-5 * scale
        if layer != 0 and len(words) > 1:
            assert float(want.abs().max()) > 1e-4  # (masking really moves the states)
