"""Hostile inputs for every public function and module (issue 20, item 7): the tables are in
tests/adversarial_cases.py; this file runs them, plus the cases that need a model, the CLI, and
eager against compiled calls."""

from __future__ import annotations

import collections
import io
import os
from contextlib import redirect_stderr

import numpy as np
import pytest
import torch
from adversarial_cases import CLASSES, all_bad, all_good

import kexue
import kexue.probe as kp
from kexue.__main__ import main as cli_main

BAD, GOOD = all_bad(), all_good()


def test_tables_are_well_formed():
    ids = [c.id for c in BAD + GOOD]
    assert len(ids) == len(set(ids)), [i for i, n in collections.Counter(ids).items() if n > 1]
    for c in BAD + GOOD:
        assert c.classes and set(c.classes) <= set(CLASSES), c.id


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_input_raises_a_clear_error(case):
    with pytest.raises(case.exc) as info:
        case.call()
    assert case.keyword.lower() in str(info.value).lower(), f"{case.id}: {info.value!r}"


def _same(a, b, close: bool) -> bool:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return False
        return torch.allclose(a, b.to(a.dtype), rtol=1e-5, atol=1e-6, equal_nan=True) if close else \
            torch.equal(a, b.to(a.dtype))
    if isinstance(a, torch.Size):
        return tuple(a) == tuple(b)
    return a == b


@pytest.mark.parametrize("case", GOOD, ids=[c.id for c in GOOD])
def test_awkward_valid_input_gives_the_plain_result(case):
    got, want = case.call(), case.expected()
    assert _same(got, want, case.close), f"{case.id}: {got!r} != {want!r}"


# ---------------------------------------------------------------------------------------------
# the named examples
# ---------------------------------------------------------------------------------------------
def test_nan_prior_is_a_value_error_not_an_index_error():
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"prior.*prior\[1\] = nan"):
        kexue.cross_entropy(logits, target, prior=torch.tensor([1.0, float("nan"), 2.0]))


def test_conllu_with_a_bom_is_read(tmp_path):
    p = tmp_path / "bom.conllu"
    p.write_bytes("\ufeff# text = Hi\n1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n".encode())
    [s] = kp.read_conllu(p)
    assert s.words == ["Hi"] and s.text == "Hi"


def test_conllu_matches_the_conllu_package_on_pud():
    """The hand-written reader against the ecosystem's (``conllu`` on PyPI, when installed)."""
    conllu = pytest.importorskip("conllu")
    text = open(kp.pud_path(), encoding="utf-8").read()
    ours = kp.conllu.parse_conllu(text)
    theirs = conllu.parse(text)
    assert len(ours) == len(theirs) == 1000
    for a, b in zip(ours, theirs, strict=True):
        words = [t for t in b if isinstance(t["id"], int)]
        assert a.words == [t["form"] for t in words] and a.heads == [t["head"] for t in words]
        assert a.id == b.metadata.get("sent_id") and a.text == b.metadata.get("text")


# ---------------------------------------------------------------------------------------------
# eager against compiled: the same bad input fails in both (kept small: compiling is slow)
# ---------------------------------------------------------------------------------------------
def _ce_prior(x, t, p):
    return kexue.cross_entropy(x, t, prior=p)


def _ce_weight(x, t, w):
    return kexue.cross_entropy(x, t, weight=w)


def _la_packed(q, k, v, cu):
    return kexue.linear_attention(q, k, v, causal=True, cu_seqlens=cu)


COMPILED = [
    ("prior-zero", _ce_prior, lambda: (torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.tensor([1.0, 0.0, 2.0])),
     "prior"),
    ("prior-nan", _ce_prior, lambda: (torch.randn(4, 3), torch.tensor([0, 1, 2, 0]),
                                      torch.tensor([1.0, float("nan"), 2.0])), "prior"),
    ("weight-inf", _ce_weight, lambda: (torch.randn(4, 3), torch.tensor([0, 1, 2, 0]),
                                        torch.tensor([1.0, float("inf"), 2.0])), "weight"),
    ("cu-seqlens-falling", _la_packed, lambda: (*(torch.randn(1, 2, 6, 4) for _ in range(3)),
                                                torch.tensor([0, 4, 2, 6])), "cu_seqlens"),
]


@pytest.mark.parametrize("name,fn,make,keyword", COMPILED, ids=[c[0] for c in COMPILED])
def test_eager_and_compiled_reject_alike(name, fn, make, keyword):
    """Eager raises ValueError; compiled (aot_eager: Dynamo + the fake kernels + AOT autograd)
    raises the device assert's RuntimeError naming the same argument, never a silent inf/nan."""
    with pytest.raises(ValueError, match=keyword):
        fn(*make())
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager")
    with pytest.raises(RuntimeError, match=keyword):
        compiled(*make())


@pytest.mark.slow
def test_inductor_prior_with_a_zero_raises():
    """The issue's example as reported: the default (inductor) compile of a prior with a 0 entry
    returned inf where eager raised."""
    torch._dynamo.reset()
    compiled = torch.compile(_ce_prior)
    with pytest.raises(RuntimeError, match="prior"):
        compiled(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.tensor([1.0, 0.0, 2.0]))
    good = compiled(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.tensor([1.0, 3.0, 2.0]))
    assert torch.isfinite(good)


# ---------------------------------------------------------------------------------------------
# cases that need an encoder (the bundled MiniLM, loaded once)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_tok():
    return kp.default_model(device="cpu")


MODEL_BAD = [
    ("impact/empty-words", lambda m, t: kp.impact_matrix(m, t, []), ValueError, "empty"),
    ("impact/empty-string", lambda m, t: kp.impact_matrix(m, t, "   "), ValueError, "empty"),
    ("impact/words-type", lambda m, t: kp.impact_matrix(m, t, [1, 2]), TypeError, "string"),
    ("impact/layer-range", lambda m, t: kp.impact_matrix(m, t, "a b", layer=99), ValueError, "layer"),
    ("impact/layer-float", lambda m, t: kp.impact_matrix(m, t, "a b", layer=1.5), (TypeError, ValueError), "layer"),
    ("impact/metric", lambda m, t: kp.impact_matrix(m, t, "a b", metric="l1"), ValueError, "metric"),
    ("impact/subword", lambda m, t: kp.impact_matrix(m, t, "a b", subword="last"), ValueError, "subword"),
    ("impact/dtype-str", lambda m, t: kp.impact_matrix(m, t, "a b", dtype="float16"), TypeError, "dtype"),
    ("impact/dtype-int", lambda m, t: kp.impact_matrix(m, t, "a b", dtype=torch.int32), TypeError, "dtype"),
    ("impact/layer-list-str", lambda m, t: kp.impact_matrix(m, t, "a b", layer=[1, "a"]), TypeError, "layer[1]"),
    ("impact/layer-empty", lambda m, t: kp.impact_matrix(m, t, "a b", layer=[]), ValueError, "layer"),
    ("impact/batch-size", lambda m, t: kp.impact_matrix(m, t, "a b", batch_size=0), ValueError, "batch_size"),
    ("impact/too-long", lambda m, t: kp.impact_matrix(m, t, "a " * 600), ValueError, "maximum"),
    ("segment/empty", lambda m, t: kp.segment(m, t, " "), ValueError, "empty"),
    ("segment/threshold-nan", lambda m, t: kp.segment(m, t, "abc", threshold=float("nan")), ValueError,
     "threshold"),
    ("segment/text-type", lambda m, t: kp.segment(m, t, 5), TypeError, "text"),
]


@pytest.mark.parametrize("name,call,exc,keyword", MODEL_BAD, ids=[c[0] for c in MODEL_BAD])
def test_model_bad_input(model_tok, name, call, exc, keyword):
    with pytest.raises(exc) as info:
        call(*model_tok)
    assert keyword.lower() in str(info.value).lower(), f"{name}: {info.value!r}"


def test_impact_number_like_batch_size(model_tok):
    m, t = model_tok
    a = kp.impact_matrix(m, t, "the cat sat", batch_size=np.int64(2))
    b = kp.impact_matrix(m, t, "the cat sat", batch_size=2)
    assert torch.equal(a, b)


def test_segment_splits_runs_longer_than_wordpiece_limit(model_tok):
    """WordPiece makes a run of > 100 characters one [UNK]; segment must not return it whole."""
    m, t = model_tok
    text = "thequickbrownfoxjumpsoverthelazydog" * 4  # 140 characters, no space
    assert t.convert_ids_to_tokens(t(text)["input_ids"])[1:-1] == ["[UNK]"]
    words = kp.segment(m, t, text)
    assert "".join(words) == text and len(words) > 1
    assert t.backend_tokenizer.model.max_input_chars_per_word == 100  # the user's tokenizer is untouched


# ---------------------------------------------------------------------------------------------
# the CLI: one line on stderr, exit status 2, never a traceback
# ---------------------------------------------------------------------------------------------
CLI_BAD = [
    ["nope"],
    [],
    ["bench", "--op", "nope"],
    ["bench", "--repeats", "0"],
    ["bench", "--repeats", "x"],
    ["bench", "--device", "cuda:99" if torch.cuda.is_available() else "cuda"],
    ["bench", "--device", "tpu"],
    ["bench", "--device", ""],
    ["probe"],
    ["probe", "a b", "--layer", "x"],
    ["probe", "a b", "--metric", "l1"],
    ["probe", "a b", "--device", "cuda:99" if torch.cuda.is_available() else "cuda"],
    ["probe", "a b", "--device", "gpu0"],
    ["probe", "   "],
    ["probe", "a b", "--model", "/no/such/folder"],
    ["probe", "a b", "--plot", "/no/such/folder/x.png"],
]


@pytest.mark.parametrize("argv", CLI_BAD, ids=[" ".join(a) or "<none>" for a in CLI_BAD])
def test_cli_bad_argument_is_one_line_and_exit_2(argv):
    err = io.StringIO()
    with redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exc:
            code = exc.code
    lines = err.getvalue().strip().splitlines()
    assert code == 2, (argv, code, err.getvalue())
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in lines[0], lines


@pytest.mark.parametrize("argv", [["probe", "a b", "--layer", "99"], ["probe", "a b", "--root", "3"]],
                         ids=["layer-range", "root-range"])
def test_cli_probe_bad_value_after_loading(argv, capsys):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    code = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "error" in err[0], err


def test_summary_counts():
    """The closing note's figures: cases per class (printed with -s)."""
    per_class = collections.Counter(c for case in BAD + GOOD for c in case.classes)
    total = len(BAD) + len(GOOD) + len(COMPILED) + 1 + len(MODEL_BAD) + 2 + len(CLI_BAD) + 2 + 3
    print(f"\nadversarial suite: {len(BAD)} bad-input rows, {len(GOOD)} awkward-valid rows, {len(COMPILED) + 1} "
          f"compiled, {len(MODEL_BAD) + 2} with a model, {len(CLI_BAD) + 2} CLI; {total} cases in all")
    print("per class:", dict(sorted(per_class.items())))
    assert set(per_class) == set(CLASSES)
