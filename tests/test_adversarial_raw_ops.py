"""Hostile input for the RAW ops (``torch.ops.kexue.*``): eager against fake (meta) and compiled.

Each row is a call with a bad shape, rank or dtype (never a bad value: fake tensors have none).
The eager kernel must raise a RuntimeError naming the argument; the op's fake kernel, run under
FakeTensorMode (what torch.compile and torch.export trace with), must raise the same way
(``torch._check``), instead of returning a tensor of a made-up shape that fails later or not at
all.  A few rows also go through ``torch.compile(backend="aot_eager", fullgraph=True)``.
``test_every_raw_op_has_rows`` fails when an op joins the registry without one.

The Triton ops share these fake kernels (kexue/triton_kernels/*.py register the same functions).
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import kexue
import kexue.attribution.op  # noqa: F401  (the attention_qkv ops' fake kernels and autograd)
import kexue.probe  # noqa: F401  (the probe ops' fake kernels)

K = torch.ops.kexue
F32, F64, I64 = torch.float32, torch.float64, torch.int64


def r(*shape, dtype=F32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape))).to(dtype)


# ---------------------------------------------------------------------------------------------
# argument builders: a valid call, with keyword overrides


def la(**kw):
    a = dict(q=r(1, 2, 5, 4), k=r(1, 2, 5, 4), v=r(1, 2, 5, 3), mask=None, S0=None, z0=None, cu=None, fm="elu",
             causal=True, normalize=True, eps=1e-6)
    a.update(kw)
    return "linear_attention_fwd", (a["q"], a["k"], a["v"], a["mask"], a["S0"], a["z0"], a["cu"], a["fm"],
                                    a["causal"], a["normalize"], a["eps"])


def la_bwd(**kw):
    a = dict(go=r(1, 2, 5, 3), gS=None, gz=None)
    a.update({k: kw.pop(k) for k in list(kw) if k in a})
    _, fwd_args = la(**kw)
    return "linear_attention_bwd", (a["go"], a["gS"], a["gz"], *fwd_args)


def ce(op="cross_entropy_fwd", **kw):
    a = dict(logits=r(4, 5), target=torch.tensor([0, 1, 4, 2]), bias=None, weight=None, grad=torch.ones(4),
             lse=torch.zeros(4))
    a.update(kw)
    head = (a["logits"], a["target"], a["bias"], a["weight"])
    if op == "cross_entropy_fwd":
        return op, (*head, 0.0, 0.0, -100, False)
    return op, (a["grad"], *head, a["lse"], 0.0, 0.0, -100)


def lce(op="linear_cross_entropy_fwd", **kw):
    a = dict(h=r(4, 3), w=r(5, 3), target=torch.tensor([0, 1, 4, 2]), bias=None, lb=None, cw=None, chunk=2,
             kernel="native", grad=torch.ones(4), lse=torch.zeros(4))
    a.update(kw)
    if op == "linear_cross_entropy_fwd":
        return op, (a["h"], a["w"], a["target"], a["bias"], a["lb"], a["cw"], 0.0, 0.0, -100, a["chunk"], a["kernel"])
    return op, (a["grad"], a["h"], a["w"], a["target"], a["bias"], a["lb"], a["cw"], a["lse"], 0.0, 0.0, -100,
                a["chunk"], a["kernel"])


def eis(**kw):
    a = dict(scores=r(2, 4, 4, dtype=F64), lengths=torch.tensor([3, 2]))
    a.update(kw)
    return "eisner", (a["scores"], a["lengths"], True)


def mb(**kw):
    a = dict(tokens=torch.tensor([5, 6, 7, 8, 9]), tok_offsets=torch.tensor([0, 5]), ws=torch.tensor([0, 1, 3]),
             we=torch.tensor([1, 3, 5]), wo=torch.tensor([0, 3]), seqs=torch.tensor([[0, 0, 1], [0, 2, -1]]),
             length=6)
    a.update(kw)
    return "probe_masked_batch", (a["tokens"], a["tok_offsets"], a["ws"], a["we"], a["wo"], a["seqs"], 103, 0,
                                  a["length"])


def sd(**kw):
    a = dict(h=r(3, 4), rows=torch.tensor([0, 1, 2]), ref=r(3, 4), ref_rows=torch.tensor([1, 1, 0]),
             seg=torch.tensor([0, 0, 1]), n=2, metric="dist")
    a.update(kw)
    return "probe_segment_distance", (a["h"], a["rows"], a["ref"], a["ref_rows"], a["seg"], a["n"], a["metric"])


def sp(op="sampling_probs", **kw):
    a = dict(logits=r(3, 6), T=torch.ones(3, dtype=F64), k=torch.zeros(3, dtype=I64), p=torch.ones(3, dtype=F64),
             keep=torch.full((3, 1), -1), u=torch.full((3,), 0.5, dtype=F64))
    a.update(kw)
    args = (a["logits"], a["T"], a["k"], a["p"], a["keep"])
    return op, args if op == "sampling_probs" else (*args, a["u"])


def at(op="attention_qkv_fwd", **kw):
    a = dict(qkv=r(2, 3, 12), heads=2, scale=0.5, go=r(2, 3, 4), gp=None, probs=r(2, 2, 3, 3))
    a.update(kw)
    if op == "attention_qkv_fwd":
        return op, (a["qkv"], a["heads"], a["scale"])
    return op, (a["go"], a["gp"], a["qkv"], a["probs"], a["heads"], a["scale"])


ROWS = [
    # attention_qkv_fwd / _bwd
    ("attn/qkv-rank", at(qkv=r(3, 12)), "qkv must have shape"),
    ("attn/qkv-half", at(qkv=r(2, 3, 12, dtype=torch.float16)), "float32 or float64"),
    ("attn/heads-zero", at(heads=0), "heads must be"),
    ("attn/columns", at(qkv=r(2, 3, 10)), "3 * heads * head_dim"),
    ("attn/scale", at(scale=float("inf")), "scale must be finite"),
    ("attn-bwd/grad-out-shape", at("attention_qkv_bwd", go=r(2, 3, 5)), "grad_out must have shape"),
    ("attn-bwd/probs-shape", at("attention_qkv_bwd", probs=r(2, 1, 3, 3)), "probs must have shape"),
    ("attn-bwd/dtype", at("attention_qkv_bwd", go=r(2, 3, 4, dtype=F64)), "share a dtype"),
    ("attn-bwd/grad-probs-shape", at("attention_qkv_bwd", gp=r(2, 2, 3, 2)), "grad_probs must have the shape"),
    ("attn-bwd/grad-probs-dtype", at("attention_qkv_bwd", gp=r(2, 2, 3, 3, dtype=F64)), "grad_probs must have"),
    # linear_attention_fwd
    ("la/q-rank3", la(q=r(2, 5, 4)), "q must have 4 dims"),
    ("la/q-int", la(q=torch.ones(1, 2, 5, 4, dtype=torch.int32)), "q must be float16"),
    ("la/k-dtype", la(k=r(1, 2, 5, 4, dtype=F64)), "k has dtype"),
    ("la/v-dtype", la(v=r(1, 2, 5, 3, dtype=F64)), "v has dtype"),
    ("la/batch", la(k=r(2, 2, 5, 4), v=r(2, 2, 5, 3)), "batch sizes differ"),
    ("la/length", la(k=r(1, 2, 4, 4), v=r(1, 2, 4, 3)), "sequence lengths differ"),
    ("la/head-dim", la(k=r(1, 2, 5, 3)), "head dim"),
    ("la/v-heads", la(v=r(1, 1, 5, 3)), "heads but k has"),
    ("la/gqa", la(k=r(1, 3, 5, 4), v=r(1, 3, 5, 3)), "multiple"),
    ("la/dv-zero", la(v=r(1, 2, 5, 0)), "head dims"),
    ("la/eps", la(eps=-1.0), "eps"),
    ("la/feature-map", la(fm="gelu"), "feature_map"),
    ("la/mask-dtype", la(mask=torch.zeros(1, 5, dtype=I64)), "key_padding_mask"),
    ("la/mask-shape", la(mask=torch.zeros(1, 4, dtype=torch.bool)), "key_padding_mask"),
    ("la/cu-dtype", la(cu=torch.tensor([0.0, 5.0])), "cu_seqlens"),
    ("la/cu-rank", la(cu=torch.tensor([[0, 5]])), "cu_seqlens"),
    ("la/cu-batch", la(q=r(2, 2, 5, 4), k=r(2, 2, 5, 4), v=r(2, 2, 5, 3), cu=torch.tensor([0, 5])), "batch must be 1"),
    ("la/S0-dtype", la(S0=r(1, 2, 4, 3, dtype=F64), z0=r(1, 2, 4)), "initial_S"),
    ("la/S0-shape", la(S0=r(1, 2, 4, 4), z0=r(1, 2, 4)), "initial_S"),
    ("la/z0-shape", la(S0=r(1, 2, 4, 3), z0=r(1, 2, 3)), "initial_z"),
    # linear_attention_bwd
    ("la-bwd/grad-out-shape", la_bwd(go=r(1, 2, 5, 4)), "grad_out"),
    ("la-bwd/grad-out-dtype", la_bwd(go=r(1, 2, 5, 3, dtype=F64)), "grad_out"),
    ("la-bwd/grad-S-shape", la_bwd(gS=r(1, 2, 4, 4), gz=r(1, 2, 4)), "grad_S"),
    ("la-bwd/q-rank", la_bwd(q=r(2, 5, 4)), "q must have 4 dims"),
    # cross_entropy_fwd / _bwd / _bwd_inplace
    ("ce/logits-rank", ce(logits=r(4)), "logits must have shape"),
    ("ce/logits-int", ce(logits=torch.ones(4, 5, dtype=I64)), "logits must be float16"),
    ("ce/no-class", ce(logits=r(4, 0)), "at least one class"),
    ("ce/target-shape", ce(target=torch.tensor([0, 1])), "target must have shape"),
    ("ce/target-dtype", ce(target=torch.tensor([0, 1, 4, 2], dtype=torch.int32)), "int64"),
    ("ce/bias-shape", ce(bias=r(4)), "bias must have shape"),
    ("ce/weight-shape", ce(weight=r(5, 1)), "weight must have shape"),
    ("ce-bwd/grad-shape", ce("cross_entropy_bwd", grad=torch.ones(3)), "grad_loss"),
    ("ce-bwd/lse-shape", ce("cross_entropy_bwd", lse=torch.zeros(5)), "lse"),
    ("ce-bwd/logits-rank", ce("cross_entropy_bwd", logits=r(4)), "logits must have shape"),
    ("ce-bwd-inplace/grad-shape", ce("cross_entropy_bwd_inplace", grad=torch.ones(3)), "grad_loss"),
    ("ce-bwd-inplace/target-dtype", ce("cross_entropy_bwd_inplace", target=torch.zeros(4, dtype=torch.int32)),
     "int64"),
    # linear_cross_entropy_fwd / _bwd
    ("lce/hidden-rank", lce(h=r(4)), "hidden must have shape"),
    ("lce/weight-cols", lce(w=r(5, 2)), "columns"),
    ("lce/weight-dtype", lce(w=r(5, 3, dtype=F64)), "weight has dtype"),
    ("lce/target-shape", lce(target=torch.tensor([0, 1])), "target must have shape"),
    ("lce/bias-shape", lce(bias=r(4)), "bias must have shape"),
    ("lce/class-weight-shape", lce(cw=r(3)), "class_weight"),
    ("lce/chunk-zero", lce(chunk=0), "chunk_size"),
    ("lce/kernel", lce(kernel="cuda"), "kernel"),
    ("lce-bwd/grad-shape", lce("linear_cross_entropy_bwd", grad=torch.ones(2)), "grad_loss"),
    ("lce-bwd/lse-shape", lce("linear_cross_entropy_bwd", lse=torch.zeros(2)), "lse"),
    # eisner
    ("eisner/rank", eis(scores=r(4, 4, dtype=F64)), "scores must have shape"),
    ("eisner/square", eis(scores=r(2, 4, 3, dtype=F64)), "square"),
    ("eisner/int", eis(scores=torch.ones(2, 4, 4, dtype=I64)), "floating"),
    ("eisner/lengths-shape", eis(lengths=torch.tensor([3])), "lengths must have shape"),
    ("eisner/lengths-dtype", eis(lengths=torch.tensor([3, 2], dtype=torch.int32)), "int64"),
    # probe_masked_batch
    ("masked-batch/seqs-shape", mb(seqs=torch.tensor([[0, 0], [0, 2]])), "seqs must have shape"),
    ("masked-batch/tokens-dtype", mb(tokens=torch.tensor([5.0, 6, 7, 8, 9])), "tokens must be int64"),
    ("masked-batch/tokens-rank", mb(tokens=torch.tensor([[5, 6, 7, 8, 9]])), "tokens must be 1-d"),
    ("masked-batch/offsets", mb(wo=torch.tensor([0, 3, 3])), "word_offsets"),
    ("masked-batch/spans", mb(we=torch.tensor([1, 3])), "word_start"),
    ("masked-batch/length", mb(length=-1), "length"),
    # probe_segment_distance
    ("segment/h-rank", sd(h=r(3)), "h must have shape"),
    ("segment/ref-dtype", sd(ref=r(3, 4, dtype=F64)), "ref has dtype"),
    ("segment/columns", sd(ref=r(3, 5)), "columns"),
    ("segment/h-int", sd(h=torch.ones(3, 4, dtype=I64), ref=torch.ones(3, 4, dtype=I64)), "h must be float16"),
    ("segment/ref-rows", sd(ref_rows=torch.tensor([1, 1])), "ref_rows"),
    ("segment/seg", sd(seg=torch.tensor([0, 0])), "seg has"),
    ("segment/num-segments", sd(n=-1), "num_segments"),
    ("segment/metric", sd(metric="l1"), "metric"),
    # sampling_probs / sample
    ("probs/logits-rank", sp(logits=r(6)), "logits must have shape"),
    ("probs/no-token", sp(logits=r(3, 0)), "at least one token"),
    ("probs/logits-int", sp(logits=torch.ones(3, 6, dtype=I64)), "logits must be float16"),
    ("probs/temperature-shape", sp(T=torch.ones(2, dtype=F64)), "temperature"),
    ("probs/temperature-dtype", sp(T=torch.ones(3)), "temperature"),
    ("probs/top-k-dtype", sp(k=torch.zeros(3, dtype=torch.int32)), "top_k"),
    ("probs/top-p-shape", sp(p=torch.ones(3, 1, dtype=F64)), "top_p"),
    ("probs/keep-shape", sp(keep=torch.full((2, 1), -1)), "keep"),
    ("sample/uniform-shape", sp("sample", u=torch.full((2,), 0.5, dtype=F64)), "uniform"),
    ("sample/uniform-dtype", sp("sample", u=torch.full((3,), 0.5)), "uniform"),
    ("sample/logits-rank", sp("sample", logits=r(6)), "logits must have shape"),
]
NO_ROWS = {"cpu_isa": "takes no arguments", "cpu_cache_bytes": "takes no arguments",
           "cpu_cache_release": "takes no arguments"}


def registry() -> list[str]:
    return sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("kexue::"))


def test_every_raw_op_has_rows():
    counts = collections.Counter(op for _, (op, _), _ in ROWS)
    missing = [op for op in registry() if "triton" not in op and op not in NO_ROWS and counts[op] == 0]
    assert not missing, f"raw ops without eager-vs-fake rows: {missing}"
    print("\nraw-op rows per op:", dict(sorted(counts.items())), f"({len(ROWS)} rows)")


@pytest.mark.parametrize("case", ROWS, ids=[c[0] for c in ROWS])
def test_raw_op_eager_and_fake_reject_alike(case):
    name, (op, args), keyword = case
    fn = getattr(K, op)
    with pytest.raises(RuntimeError) as eager:
        fn(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    assert keyword.lower() in str(eager.value).lower(), f"{name} eager: {eager.value}"
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(RuntimeError) as meta:
            fn(*fake)
    assert keyword.lower() in str(meta.value).lower(), f"{name} fake: {meta.value}"


def test_valid_rows_pass_both_ways():
    """The builders' defaults are valid calls, eager and fake, with the same output shapes (so
    every row above fails for its one override)."""
    for make in (at, lambda: at("attention_qkv_bwd"),
                 la, la_bwd, ce, lambda: ce("cross_entropy_bwd"), lce, lambda: lce("linear_cross_entropy_bwd"), eis,
                 mb, sd, sp, lambda: sp("sample")):
        op, args = make()
        out = getattr(K, op)(*args)
        with FakeTensorMode() as mode:
            fake_out = getattr(K, op)(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        fouts = fake_out if isinstance(fake_out, (tuple, list)) else (fake_out,)
        assert [(tuple(o.shape), o.dtype) for o in outs] == [(tuple(o.shape), o.dtype) for o in fouts], op


COMPILED_ROWS = ["la/k-dtype", "ce/target-shape", "probs/temperature-shape", "segment/columns"]


@pytest.mark.parametrize("name", COMPILED_ROWS)
def test_raw_op_compiled_rejects_like_eager(name):
    _, (op, args), keyword = next(c for c in ROWS if c[0] == name)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def call(*ts):
        full = list(args)
        for i, t in zip(tensors, ts, strict=True):
            full[i] = t
        return getattr(K, op)(*full)

    torch._dynamo.reset()
    compiled = torch.compile(call, backend="aot_eager", fullgraph=True)
    with pytest.raises(Exception) as info:  # (Dynamo wraps the fake kernel's RuntimeError in its own)
        compiled(*[args[i] for i in tensors])
    assert keyword.lower() in str(info.value).lower(), f"{name}: {info.value}"


def test_public_function_compiled_checks_shapes_like_eager():
    """kexue.linear_attention's own checks run under compile too (a shape error, not a wrong result)."""
    torch._dynamo.reset()
    f = torch.compile(lambda q, k, v: kexue.linear_attention(q, k, v, causal=True, backend="cpu"), backend="aot_eager")
    with pytest.raises(Exception, match="(?i)k"):
        f(r(1, 2, 5, 4), r(1, 2, 5, 3), r(1, 2, 5, 3))
