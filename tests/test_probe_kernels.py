"""kexue.probe.kernels: masked_batch and segment_distance, every backend against its oracle.

masked_batch is integer work: every backend must equal, exactly, a plain Python loop over the
rows (which also checks the tensor reference).  segment_distance is compared with the reference
run in float64 (tests/helpers.py's rule: error at most 2x the same-dtype reference's, plus a
float32 floor), values and gradients with respect to h and ref.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import DEVICES, TRITON_DEVICES, assert_close_rule, backend_pairs, error, expected_backends
from kexue.probe import kernels as pk
from kexue.probe.kernels_reference import masked_batch_reference, segment_distance_reference

# Backends that must run on each device: one that is expected and missing fails the suite.
EXPECTED = expected_backends()
PAIRS = backend_pairs(EXPECTED)
MASK_ID, PAD_ID = 103, 0


def _available(ops, backend, device):
    ok, why = ops.availability(backend, torch.device(device))
    assert ok, f"{ops.name}: {backend} must run on {device}: {why}"


# ---- masked_batch ----

def make_sentences(n_sent, *, max_words=5, max_sub=3, one_word=False, gen=None):
    """Packed random sentences [CLS] + subwords of each word + [SEP], and their word spans."""
    g = gen or torch.Generator().manual_seed(0)
    tokens, tok_off, ws, we, woff, nwords = [], [0], [], [], [0], []
    for _ in range(n_sent):
        W = 1 if one_word else int(torch.randint(1, max_words + 1, (1,), generator=g))
        toks = [101]
        for _ in range(W):
            m = int(torch.randint(1, max_sub + 1, (1,), generator=g))
            ws.append(len(toks))
            toks += torch.randint(1000, 30000, (m,), generator=g).tolist()
            we.append(len(toks))
        toks.append(102)
        tokens += toks
        tok_off.append(len(tokens))
        woff.append(len(ws))
        nwords.append(W)
    t = lambda x: torch.tensor(x, dtype=torch.int64)  # noqa: E731
    return (t(tokens), t(tok_off), t(ws), t(we), t(woff)), nwords


def make_seqs(nwords, K, gen=None):
    """K random rows (s, i, j): pairs, single words (j = -1) and unmasked rows (i = j = -1)."""
    g = gen or torch.Generator().manual_seed(1)
    rows = []
    for k in range(K):
        s = int(torch.randint(0, len(nwords), (1,), generator=g))
        W = nwords[s]
        kind = k % 4
        i = int(torch.randint(0, W, (1,), generator=g))
        j = int(torch.randint(0, W, (1,), generator=g))
        if kind == 1:
            j = -1
        elif kind == 2:
            i = j = -1
        rows.append((s, i, j))
    return torch.tensor(rows, dtype=torch.int64).reshape(K, 3)


def oracle_masked_batch(tokens, tok_off, ws, we, woff, seqs, mask_id, pad_id, length):
    ids, att = [], []
    for s, i, j in seqs.tolist():
        sent = tokens[tok_off[s]:tok_off[s + 1]].tolist()
        row = list(sent)
        for w in (i, j):
            if w >= 0:
                a, b = int(ws[woff[s] + w]), int(we[woff[s] + w])
                row[a:b] = [mask_id] * (b - a)
        ids.append(row + [pad_id] * (length - len(row)))
        att.append([1] * len(sent) + [0] * (length - len(sent)))
    K = seqs.shape[0]
    return (torch.tensor(ids, dtype=torch.int64).reshape(K, length),
            torch.tensor(att, dtype=torch.int64).reshape(K, length))


def _max_len(tables, seqs):
    tok_off = tables[1]
    return max([int(tok_off[s + 1] - tok_off[s]) for s in seqs[:, 0].tolist()], default=0)


def check_masked_batch(backend, device, tables, seqs, length):
    expect = oracle_masked_batch(*tables, seqs, MASK_ID, PAD_ID, length)
    args = [t.to(device) for t in tables] + [seqs.to(device)]
    ids, att = pk.masked_batch(*args, MASK_ID, PAD_ID, length, backend=backend)
    assert ids.dtype == torch.int64 and att.dtype == torch.int64 and ids.device.type == device
    assert torch.equal(ids.cpu(), expect[0]), f"{backend}: input_ids differ"
    assert torch.equal(att.cpu(), expect[1]), f"{backend}: attention_mask differs"


MB_CASES = [  # (n_sent, K, extra columns of padding, one-word sentences)
    (1, 1, 0, False),
    (3, 1, 2, False),
    (4, 37, 0, False),
    (6, 50, 5, False),
    (3, 9, 1, True),
    (2, 5, 20, False),  # length > 16: several column tiles of the interpreted Triton kernel
]


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("case", MB_CASES, ids=lambda c: "n{}-K{}-pad{}{}".format(*c[:3], "-1word" if c[3] else ""))
def test_masked_batch(backend, device, case):
    _available(pk.MASKED_BATCH, backend, device)
    n_sent, K, extra, one_word = case
    tables, nwords = make_sentences(n_sent, one_word=one_word)
    seqs = make_seqs(nwords, K)
    check_masked_batch(backend, device, tables, seqs, _max_len(tables, seqs) + extra)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_masked_batch_edge_rows(backend, device):
    """Every word with every other, each alone, none; an empty seqs; a sentence of 0 tokens with
    no words; i = -1 with j set (masks word j only)."""
    _available(pk.MASKED_BATCH, backend, device)
    tables, nwords = make_sentences(2, max_words=4)
    tokens, tok_off, ws, we, woff = tables
    # append an empty sentence (no tokens, no words)
    tables = (tokens, torch.cat([tok_off, tok_off[-1:]]), ws, we, torch.cat([woff, woff[-1:]]))
    rows = [(s, i, j) for s in range(2) for i in range(-1, nwords[s]) for j in range(-1, nwords[s])]
    rows.append((2, -1, -1))
    seqs = torch.tensor(rows, dtype=torch.int64)
    check_masked_batch(backend, device, tables, seqs, _max_len(tables, seqs) + 1)
    check_masked_batch(backend, device, tables, seqs[:0], 4)
    check_masked_batch(backend, device, tables, seqs[-1:], 0)


def test_masked_batch_noncontiguous_inputs():
    tables, nwords = make_sentences(3)
    seqs = make_seqs(nwords, 11)
    length = _max_len(tables, seqs) + 2
    expect = oracle_masked_batch(*tables, seqs, MASK_ID, PAD_ID, length)
    strided = [torch.stack([t, t], 1)[:, 0] for t in tables]
    seqs_nc = seqs.t().contiguous().t()  # column-major
    assert not strided[0].is_contiguous() and not seqs_nc.is_contiguous()
    for backend in pk.MASKED_BATCH.available_backends(torch.device("cpu")):
        ids, att = pk.masked_batch(*strided, seqs_nc, MASK_ID, PAD_ID, length, backend=backend)
        assert torch.equal(ids, expect[0]) and torch.equal(att, expect[1]), backend


@settings(max_examples=25, deadline=None)
@given(n_sent=st.integers(1, 5), K=st.integers(0, 12), extra=st.integers(0, 3), seed=st.integers(0, 2**31 - 1),
       max_sub=st.integers(1, 4))
def test_masked_batch_property(n_sent, K, extra, seed, max_sub):
    """Every CPU backend equals the Python loop; masked positions are exactly the words' spans;
    the unmasked tokens and the padding are untouched."""
    g = torch.Generator().manual_seed(seed)
    tables, nwords = make_sentences(n_sent, max_sub=max_sub, gen=g)
    seqs = make_seqs(nwords, K, gen=g)
    length = _max_len(tables, seqs) + extra
    expect = oracle_masked_batch(*tables, seqs, MASK_ID, PAD_ID, length)
    for backend in pk.MASKED_BATCH.available_backends(torch.device("cpu")):
        ids, att = pk.masked_batch(*tables, seqs, MASK_ID, PAD_ID, length, backend=backend)
        assert torch.equal(ids, expect[0]) and torch.equal(att, expect[1]), backend
        assert int(att.sum()) == sum(int(tables[1][s + 1] - tables[1][s]) for s in seqs[:, 0].tolist())


def _bad_inputs():
    tables, nwords = make_sentences(3, max_words=3)
    seqs = make_seqs(nwords, 6)
    length = _max_len(tables, seqs)
    tokens, tok_off, ws, we, woff = tables
    s0_words = nwords[0]
    cases = []
    bad = seqs.clone()
    bad[3, 0] = 3
    cases.append(("sentence index", tables, bad, length, r"seqs\[3, 0\] = 3"))
    bad = seqs.clone()
    bad[2] = torch.tensor([0, s0_words, -1])
    cases.append(("word index", tables, bad, length, r"seqs\[2, 1\] = .* is not a word"))
    bad = seqs.clone()
    bad[1] = torch.tensor([0, 0, -2])
    cases.append(("j < -1", tables, bad, length, r"seqs\[1, 2\] = -2"))
    cases.append(("length", tables, seqs, length - 1, "length"))
    we_bad = we.clone()
    we_bad[0] = 10_000
    one = torch.tensor([[0, 0, -1]])
    cases.append(("span", (tokens, tok_off, ws, we_bad, woff), one, length, "span"))
    tok_bad = tok_off.clone()
    tok_bad[1] = tokens.shape[0] + 5
    cases.append(("tok_offsets", (tokens, tok_bad, ws, we, woff), one, 100, "tok_offsets"))
    return cases


@pytest.mark.parametrize("backend", EXPECTED["cpu"])
@pytest.mark.parametrize("case", range(6))
def test_masked_batch_bad_values(backend, case):
    _available(pk.MASKED_BATCH, backend, "cpu")
    what, tables, seqs, length, match = _bad_inputs()[case]
    with pytest.raises((ValueError, RuntimeError), match=match):
        pk.masked_batch(*tables, seqs, MASK_ID, PAD_ID, length, backend=backend)


def test_masked_batch_bad_arguments():
    tables, nwords = make_sentences(2)
    seqs = make_seqs(nwords, 3)
    with pytest.raises(ValueError, match="seqs must have shape"):
        pk.masked_batch(*tables, seqs[:, :2], MASK_ID, PAD_ID, 20)
    with pytest.raises(TypeError, match="seqs must be an int64"):
        pk.masked_batch(*tables, seqs.int(), MASK_ID, PAD_ID, 20)
    with pytest.raises(ValueError, match="length must be >= 0"):
        pk.masked_batch(*tables, seqs, MASK_ID, PAD_ID, -1)
    with pytest.raises(ValueError, match="word_offsets has"):
        pk.masked_batch(*tables[:4], tables[4][:-1], seqs, MASK_ID, PAD_ID, 20)
    with pytest.raises(TypeError, match="tokens must be an int64"):
        pk.masked_batch(tables[0].float(), *tables[1:], seqs, MASK_ID, PAD_ID, 20)
    with pytest.raises(ValueError, match="backend must be one of"):
        pk.masked_batch(*tables, seqs, MASK_ID, PAD_ID, 20, backend="nope")
    # the registered op checks by itself too (direct callers)
    with pytest.raises(RuntimeError, match="seqs must have shape"):
        torch.ops.kexue.probe_masked_batch(*tables, seqs[:, :2], MASK_ID, PAD_ID, 20)


def test_reference_matches_oracle():
    tables, nwords = make_sentences(5)
    seqs = make_seqs(nwords, 40)
    length = _max_len(tables, seqs) + 3
    ids, att = masked_batch_reference(*tables, seqs, MASK_ID, PAD_ID, length)
    e_ids, e_att = oracle_masked_batch(*tables, seqs, MASK_ID, PAD_ID, length)
    assert torch.equal(ids, e_ids) and torch.equal(att, e_att)


# ---- segment_distance ----

# float32 floor: each d_k is a float32 sum of D <= 385 products of O(1) values, then a mean of a
# few d_k: a few hundred ulps of the O(10) result; the gradient terms are O(1).
F32_FLOOR = 2e-5


def make_distance_case(R, R2, D, K, S, *, dtype=torch.float32, device="cpu", noncontig=False, same=False,
                       gen=None):
    g = gen or torch.Generator().manual_seed(2)

    def mat(n):
        if noncontig:  # transposed storage, every other column of a wider buffer
            return torch.randn(2 * D, n, generator=g).to(dtype).to(device).t()[:, ::2]
        return torch.randn(n, D, generator=g).to(dtype).to(device)

    h = mat(R)
    ref = h if same else mat(R2)
    R2 = R if same else R2
    rows = torch.randint(0, R, (K,), generator=g).to(device)
    ref_rows = torch.randint(0, R2, (K,), generator=g).to(device)
    # segments 0 and S-1 stay empty when S >= 3 (zero-member segments)
    lo, hi = (1, S - 1) if S >= 3 else (0, S)
    seg = torch.randint(lo, hi, (K,), generator=g).to(device)
    return h, rows, ref, ref_rows, seg


def value_and_grads(fn, h, rows, ref, ref_rows, seg, S, metric, go=None, same=False):
    hh = h.detach().clone().requires_grad_()
    rr = hh if same else ref.detach().clone().requires_grad_()
    out = fn(hh, rows, rr, ref_rows, seg, S, metric)
    if go is None:
        go = torch.linspace(-1.0, 2.0, S, dtype=torch.float64, device=out.device)
    leaves = (hh,) if same else (hh, rr)
    grads = torch.autograd.grad(out, leaves, go.to(out.dtype))
    return out.detach(), grads, go


def check_distance(backend, h, rows, ref, ref_rows, seg, S, metric, same=False, floor=F32_FLOOR):
    def kernel(*a):
        return pk.segment_distance(*a, backend=backend)

    out, grads, go = value_and_grads(kernel, h, rows, ref, ref_rows, seg, S, metric, same=same)
    out64, grads64, _ = value_and_grads(segment_distance_reference, h.double(), rows, ref.double(), ref_rows, seg,
                                        S, metric, go=go, same=same)
    low, grads_low, _ = value_and_grads(segment_distance_reference, h, rows, ref, ref_rows, seg, S, metric, go=go,
                                        same=same)
    acc = torch.float64 if h.dtype == torch.float64 else torch.float32
    assert out.shape == (S,) and out.dtype == acc
    scale = max(1.0, float(out64.abs().max())) if S else 1.0
    assert_close_rule(out, out64, low, floor=floor * scale, name=f"{backend} out")
    for name, g, g64, gl, x in zip(("grad h", "grad ref"), grads, grads64, grads_low, (h, ref), strict=False):
        assert g.shape == x.shape and g.dtype == x.dtype
        assert_close_rule(g, g64, gl, floor=floor, name=f"{backend} {name}")
    return out


DIST_SHAPES = [  # (R, R2, D, K, S)
    (1, 1, 1, 1, 1),
    (5, 3, 7, 9, 4),
    (13, 11, 385, 40, 9),
    (30, 7, 64, 70, 5),
]


def _skip_unsupported(backend, device, dtype):
    if dtype == torch.float64 and backend in ("cuda", "triton"):
        pytest.skip(f"{backend} kernels take float16/bfloat16/float32")


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("shape", DIST_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("metric", ["dist", "cos"])
def test_segment_distance(backend, device, shape, metric):
    _available(pk.SEGMENT_DISTANCE, backend, device)
    R, R2, D, K, S = shape
    args = make_distance_case(R, R2, D, K, S, device=device)
    check_distance(backend, *args, S, metric)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("metric", ["dist", "cos"])
def test_segment_distance_dtypes(backend, device, dtype, metric):
    _available(pk.SEGMENT_DISTANCE, backend, device)
    _skip_unsupported(backend, device, dtype)
    args = make_distance_case(9, 6, 129, 25, 6, dtype=dtype, device=device)
    # half inputs: the same float32 accumulation as float32 inputs, the gradient rounded to the
    # half type once (2x the same-dtype reference's rounding covers it)
    check_distance(backend, *args, 6, metric)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("metric", ["dist", "cos"])
def test_segment_distance_half_gradient_accumulates_in_float32(backend, device, dtype, metric):
    """Many pairs on one row of a 16-bit h: its gradient is a sum of K terms, accumulated in float32
    and rounded to h's dtype once (the docstring's "computed in float32").  The baseline is that
    float32 composite, not the reference in h's dtype (which would pass whatever it does).  The
    "torch" backend once accumulated in 16 bits through the gather's backward: 8% off at K = 300
    in bfloat16 (found by ``bench/fuzz_ops.py --op probe``, seed 7)."""
    _available(pk.SEGMENT_DISTANCE, backend, device)
    g = torch.Generator().manual_seed(0)
    h, ref = torch.randn(3, 16, generator=g), torch.randn(5, 16, generator=g)
    K = 300
    rows = torch.zeros(K, dtype=torch.int64)
    ref_rows, seg = torch.randint(0, 5, (K,), generator=g), torch.randint(0, 2, (K,), generator=g)
    go = torch.tensor([1.0, -0.5], dtype=torch.float64)

    def grads(fn, x, y):
        x, y = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
        out = fn(x, rows.to(x.device), y, ref_rows.to(x.device), seg.to(x.device), 2, metric)
        return torch.autograd.grad(out, (x, y), go.to(device=out.device, dtype=out.dtype))

    got = grads(lambda *a: pk.segment_distance(*a, backend=backend), h.to(device, dtype), ref.to(device, dtype))
    low = [t.to(dtype) for t in grads(segment_distance_reference, h.to(dtype).float(), ref.to(dtype).float())]
    want = grads(segment_distance_reference, h.to(dtype).double(), ref.to(dtype).double())
    for name, a, w, lo in zip(("grad h", "grad ref"), got, want, low, strict=True):
        assert a.dtype == dtype
        assert_close_rule(a.cpu(), w, lo, floor=F32_FLOOR, name=f"{backend} {name}")


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("metric", ["dist", "cos"])
def test_segment_distance_noncontiguous_and_aliased(backend, device, metric):
    _available(pk.SEGMENT_DISTANCE, backend, device)
    h, rows, ref, ref_rows, seg = make_distance_case(11, 8, 33, 30, 7, device=device, noncontig=True)
    assert not h.is_contiguous() and h.stride(1) != 1
    check_distance(backend, h, rows, ref, ref_rows, seg, 7, metric)
    h, rows, ref, ref_rows, seg = make_distance_case(11, 11, 33, 30, 7, device=device, same=True)
    check_distance(backend, h, rows, ref, ref_rows, seg, 7, metric, same=True)


@pytest.mark.parametrize("backend,device", PAIRS)
def test_segment_distance_empty_and_degenerate(backend, device):
    """K = 0 gives zeros; empty segments give 0; a zero vector gives cos distance 1 and a pair of
    equal rows distance 0 (zero gradient, as torch's norm)."""
    _available(pk.SEGMENT_DISTANCE, backend, device)
    h = torch.randn(4, 5, device=device)
    none = torch.zeros(0, dtype=torch.int64, device=device)
    out = pk.segment_distance(h, none, h, none, none, 3, backend=backend)
    assert torch.equal(out, torch.zeros(3, device=device))
    assert pk.segment_distance(h, none, h, none, none, 0, backend=backend).shape == (0,)
    h[0] = 0
    idx = torch.tensor([0, 1, 2], device=device)
    cos = pk.segment_distance(h, idx, h, torch.tensor([1, 1, 2], device=device), idx, 4, "cos", backend=backend)
    assert abs(float(cos[0]) - 1.0) < 1e-6 and abs(float(cos[1])) < 1e-5 and float(cos[3]) == 0.0
    x = h.detach().clone().requires_grad_()
    d = pk.segment_distance(x, idx, x, idx, idx, 3, backend=backend)
    (g,) = torch.autograd.grad(d.sum(), x)
    assert torch.equal(d.detach(), torch.zeros(3, device=device)) and torch.equal(g, torch.zeros_like(g))


@settings(max_examples=20, deadline=None)
@given(R=st.integers(1, 8), D=st.integers(1, 40), K=st.integers(1, 24), S=st.integers(1, 6),
       metric=st.sampled_from(["dist", "cos"]), seed=st.integers(0, 2**31 - 1))
def test_segment_distance_property(R, D, K, S, metric, seed):
    """Every CPU backend matches the float64 reference; the result does not depend on the order
    of the pairs; "dist" is symmetric in (h, rows) <-> (ref, ref_rows); 0 <= cos distance <= 2."""
    g = torch.Generator().manual_seed(seed)
    h, rows, ref, ref_rows, seg = make_distance_case(R, R + 1, D, K, S, gen=g)
    perm = torch.randperm(K, generator=g)
    ref64 = segment_distance_reference(h.double(), rows, ref.double(), ref_rows, seg, S, metric)
    for backend in pk.SEGMENT_DISTANCE.available_backends(torch.device("cpu")):
        out = pk.segment_distance(h, rows, ref, ref_rows, seg, S, metric, backend=backend)
        scale = max(1.0, float(ref64.abs().max()))
        assert error(out, ref64) <= F32_FLOOR * scale, backend
        shuffled = pk.segment_distance(h, rows[perm], ref, ref_rows[perm], seg[perm], S, metric, backend=backend)
        assert error(shuffled, out) <= F32_FLOOR * scale, backend
        if metric == "dist":
            swapped = pk.segment_distance(ref, ref_rows, h, rows, seg, S, metric, backend=backend)
            assert error(swapped, out) <= F32_FLOOR * scale, backend
            assert bool((out >= 0).all())
        else:
            assert bool((out >= -1e-6).all() & (out <= 2 + 1e-6).all())


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("metric", ["dist", "cos"])
def test_segment_distance_gradcheck(backend, metric):
    _available(pk.SEGMENT_DISTANCE, backend, "cpu")
    h, rows, ref, ref_rows, seg = make_distance_case(6, 5, 7, 15, 4, dtype=torch.float64)
    h.requires_grad_()
    ref.requires_grad_()

    def f(h, ref):
        return pk.segment_distance(h, rows, ref, ref_rows, seg, 4, metric, backend=backend)

    assert torch.autograd.gradcheck(f, (h, ref))
    # h alone (ref a constant), and h used as both operands
    assert torch.autograd.gradcheck(lambda h: f(h, ref.detach()), (h,))
    assert torch.autograd.gradcheck(lambda h: pk.segment_distance(h, rows, h, rows.flip(0), seg, 4, metric,
                                                                  backend=backend), (h,))


@pytest.mark.parametrize("backend", EXPECTED["cpu"])
def test_segment_distance_bad_values(backend):
    _available(pk.SEGMENT_DISTANCE, backend, "cpu")
    h, rows, ref, ref_rows, seg = make_distance_case(5, 4, 6, 8, 3)
    for name, pos, value in (("rows", 0, 5), ("ref_rows", 1, 4), ("seg", 2, 3), ("rows", 0, -1)):
        args = [rows.clone(), ref_rows.clone(), seg.clone()]
        args[pos][3] = value
        with pytest.raises((ValueError, RuntimeError), match=rf"{name}\[3\] = {value}|{name}"):
            pk.segment_distance(h, args[0], ref, args[1], args[2], 3, backend=backend)


def test_segment_distance_bad_arguments():
    h, rows, ref, ref_rows, seg = make_distance_case(5, 4, 6, 8, 3)
    with pytest.raises(ValueError, match="metric must be one of"):
        pk.segment_distance(h, rows, ref, ref_rows, seg, 3, "l1")
    with pytest.raises(ValueError, match="ref has D = 5 columns"):
        pk.segment_distance(h, rows, ref[:, :5], ref_rows, seg, 3)
    with pytest.raises(TypeError, match="must match h"):
        pk.segment_distance(h, rows, ref.double(), ref_rows, seg, 3)
    with pytest.raises(TypeError, match="h must be float16"):
        pk.segment_distance(h.int(), rows, ref.int(), ref_rows, seg, 3)
    with pytest.raises(ValueError, match="same length K"):
        pk.segment_distance(h, rows, ref, ref_rows[:-1], seg, 3)
    with pytest.raises(ValueError, match="num_segments must be >= 0"):
        pk.segment_distance(h, rows, ref, ref_rows, seg, -1)
    with pytest.raises(TypeError, match="seg must be an int64"):
        pk.segment_distance(h, rows, ref, ref_rows, seg.int(), 3)
    with pytest.raises(RuntimeError, match="seg\\[0\\]"):  # the registered op checks by itself too
        torch.ops.kexue.probe_segment_distance(h, rows, ref, ref_rows, seg + 5, 3, "dist")


# ---- registration: opcheck, torch.compile ----

def _native_and_triton_ops(name):
    ops = [getattr(torch.ops.kexue, name)]
    if "triton" in EXPECTED["cpu"]:
        from kexue.triton_kernels import probe  # noqa: F401  (registers the triton ops)

        ops.append(getattr(torch.ops.kexue, name + "_triton"))
    return ops


@pytest.mark.parametrize("op", _native_and_triton_ops("probe_masked_batch"), ids=lambda o: str(o))
def test_opcheck_masked_batch(op):
    tables, nwords = make_sentences(3)
    seqs = make_seqs(nwords, 7)
    torch.library.opcheck(op, (*tables, seqs, MASK_ID, PAD_ID, _max_len(tables, seqs) + 2))


@pytest.mark.parametrize("op", _native_and_triton_ops("probe_segment_distance"), ids=lambda o: str(o))
@pytest.mark.parametrize("metric", ["dist", "cos"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_segment_distance(op, metric, dtype):
    if "triton" in str(op) and dtype == torch.float64:
        pytest.skip("the Triton kernels take float16/bfloat16/float32")
    h, rows, ref, ref_rows, seg = make_distance_case(6, 5, 9, 12, 4, dtype=dtype)
    torch.library.opcheck(op, (h.requires_grad_(), rows, ref.requires_grad_(), ref_rows, seg, 4, metric))
    torch.library.opcheck(op, (h.detach(), rows, ref.detach(), ref_rows, seg, 4, metric))


COMPILE_PAIRS = [(d, d) for d in DEVICES] + [("triton", d) for d in TRITON_DEVICES]


@pytest.mark.parametrize("backend,device", COMPILE_PAIRS)
def test_torch_compile_fullgraph(backend, device):
    """A small probe step, compiled as one graph: build the masked batch, 'encode' it with an
    embedding, read the distances between the unmasked and the masked copies."""
    _available(pk.SEGMENT_DISTANCE, backend, device)
    torch._dynamo.reset()
    tables, nwords = make_sentences(3)
    tables = [t.to(device) for t in tables]
    seqs = make_seqs(nwords, 8).to(device)
    length = _max_len(tables, seqs)
    emb = torch.nn.Embedding(30000, 16, device=device)
    rows = torch.arange(8, device=device) * length + 1  # position 1 (the first word) of each row
    ref_rows = torch.zeros(8, dtype=torch.int64, device=device) + 1
    seg = torch.arange(8, device=device) % 3

    def f(weight):
        ids, att = pk.masked_batch(*tables, seqs, MASK_ID, PAD_ID, length, backend=backend)
        hidden = (torch.nn.functional.embedding(ids, weight) * att[..., None]).reshape(-1, 16)
        return pk.segment_distance(hidden, rows, hidden, ref_rows, seg, 3, "cos", backend=backend)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    w1 = emb.weight.detach().clone().requires_grad_()
    w2 = emb.weight.detach().clone().requires_grad_()
    a, b = compiled(w1), f(w2)
    (ga,) = torch.autograd.grad(a.sum(), w1)
    (gb,) = torch.autograd.grad(b.sum(), w2)
    assert error(a.detach(), b.detach()) < 1e-6 and error(ga, gb) < 1e-6 and float(ga.abs().sum()) > 0
