"""The registered ops kexue::linear_attention_fwd / _bwd on their CPU kernels: torch.library.opcheck
(schema, fake kernels, autograd registration, AOT dispatch), torch.compile of the public
function, and the C++ argument checks of a direct call."""

from __future__ import annotations

import pytest
import torch

import kexue
from kexue.linear_attention import feature_dim
from kexue.linear_attention.api import BACKENDS

pytestmark = pytest.mark.skipif(
    not BACKENDS.availability("cpu", torch.device("cpu"))[0], reason="no CPU kernel registered"
)

FWD = torch.ops.kexue.linear_attention_fwd.default
BWD = torch.ops.kexue.linear_attention_bwd.default


def _qkv(B, H, Hkv, N, Dk, Dv, dtype, noncontig):
    if noncontig:  # (B, N, H, D) storage seen as (B, H, N, D), and a sliced last dim for v
        q = torch.randn(B, N, H, Dk, dtype=dtype).transpose(1, 2)
        k = torch.randn(B, N, Hkv, Dk, dtype=dtype).transpose(1, 2)
        v = torch.randn(B, N, Hkv, Dv + 2, dtype=dtype)[..., 1 : Dv + 1].transpose(1, 2)
        return q, k, v
    return (torch.randn(B, H, N, Dk, dtype=dtype), torch.randn(B, Hkv, N, Dk, dtype=dtype),
            torch.randn(B, Hkv, N, Dv, dtype=dtype))


# (name, B, H, Hkv, N, Dk, Dv, dtype, noncontig, mask, state, cu_seqlens, feature_map, causal, normalize)
CASES = [
    ("plain-f32-causal", 2, 2, 2, 70, 8, 6, torch.float32, False, False, False, None, "elu", True, True),
    ("noncontig-mask-state-gqa", 2, 4, 2, 37, 5, 7, torch.float32, True, True, True, None, "softmax", False, True),
    ("f64-cu-int32-state", 1, 2, 1, 23, 4, 3, torch.float64, False, False, True, [0, 5, 5, 23], "taylor", True, True),
    ("f64-mask-unnormalized", 2, 3, 1, 19, 6, 4, torch.float64, True, True, False, None, "relu", True, False),
    ("f32-cu-int64-mask", 1, 2, 2, 80, 3, 5, torch.float32, False, True, True, [0, 66, 80], "none", False, True),
]


def _sample(case, requires_grad):
    _, B, H, Hkv, N, Dk, Dv, dtype, noncontig, mask, state, cu, fmap, causal, normalize = case
    q, k, v = _qkv(B, H, Hkv, N, Dk, Dv, dtype, noncontig)
    if fmap == "none":
        q, k = q.abs() + 0.1, k.abs() + 0.1
    nseq = B if cu is None else len(cu) - 1
    F = feature_dim(fmap, Dk)
    kpm = (torch.rand(B, N) < 0.3) if mask else None
    S0 = torch.randn(nseq, H, F, Dv, dtype=dtype) if state else None
    z0 = (torch.rand(nseq, H, F, dtype=dtype) + 0.5) if state else None
    cu_t = None if cu is None else torch.tensor(cu, dtype=torch.int32 if "int32" in case[0] else torch.int64)
    if requires_grad:
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        if state:
            S0, z0 = S0.requires_grad_(), z0.requires_grad_()
    return (q, k, v, kpm, S0, z0, cu_t, fmap, causal, normalize, 1e-6), (nseq, H, N, F, Dv, dtype)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_forward(case, requires_grad):
    args, _ = _sample(case, requires_grad)
    torch.library.opcheck(FWD, args)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("state_grads", [False, True])
def test_opcheck_backward(case, state_grads):
    args, (nseq, H, N, F, Dv, dtype) = _sample(case, False)
    B = args[0].shape[0]
    grad_out = torch.randn(B, N, H, Dv, dtype=args[0].dtype).transpose(1, 2)  # any strides
    gS = torch.randn(nseq, H, F, Dv, dtype=dtype) if state_grads else None
    gz = torch.randn(nseq, H, F, dtype=dtype) if state_grads else None
    torch.library.opcheck(BWD, (grad_out, gS, gz, *args))


class _Block(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, q, k, v, S0, z0):
        out, (S, z) = kexue.linear_attention(q, k, v, initial_state=(S0, z0), return_state=True, backend="cpu",
                                             **self.kw)
        return out * 2, S, z


@pytest.mark.parametrize(
    "shape,kw",
    [
        ((2, 4, 2, 50, 8, 6), dict(causal=True, feature_map="elu")),
        ((2, 2, 2, 33, 5, 7), dict(causal=False, feature_map="taylor", normalize=False)),
        ((1, 2, 1, 40, 6, 4), dict(causal=True, feature_map="softmax",
                                   cu_seqlens=torch.tensor([0, 9, 40], dtype=torch.int32))),
    ],
    ids=["causal-gqa-mask", "noncausal-taylor", "cu_seqlens"],
)
def test_torch_compile_fullgraph_matches_eager(shape, kw):
    B, H, Hkv, N, Dk, Dv = shape
    q, k, v = _qkv(B, H, Hkv, N, Dk, Dv, torch.float32, noncontig=True)
    nseq = B if "cu_seqlens" not in kw else kw["cu_seqlens"].shape[0] - 1
    F = feature_dim(kw["feature_map"], Dk)
    S0, z0 = torch.randn(nseq, H, F, Dv), torch.rand(nseq, H, F) + 0.5
    if "cu_seqlens" not in kw:
        kw = dict(kw, key_padding_mask=torch.rand(B, N) < 0.25)
    block = _Block(**kw)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (block, compiled):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, S0, z0)]
        out, S, z = fn(*leaves)
        torch.manual_seed(1)
        go, gS, gz = torch.randn_like(out), torch.randn_like(S), torch.randn_like(z)
        grads = torch.autograd.grad([out, S, z], leaves, [go, gS, gz])
        results.append((out, S, z, *grads))
    for name, a, b in zip(["out", "S", "z", "dq", "dk", "dv", "dS0", "dz0"], *results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")


def test_torch_compile_inductor_forward_backward():
    q, k, v = _qkv(2, 2, 2, 30, 4, 4, torch.float32, noncontig=False)

    def f(q, k, v):
        return kexue.linear_attention(q, k, v, causal=True, backend="cpu").sin().sum()

    compiled = torch.compile(f, fullgraph=True)
    grads = []
    for fn in (f, compiled):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        fn(*leaves).backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def _direct_args(**change):
    q, k, v = _qkv(2, 4, 2, 9, 6, 5, torch.float32, noncontig=False)
    args = dict(q=q, k=k, v=v, key_padding_mask=None, initial_S=None, initial_z=None, cu_seqlens=None,
                feature_map="elu", causal=True, normalize=True, eps=1e-6)
    args.update(change)
    return list(args.values())


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(k=torch.randn(2, 2, 9, 6, dtype=torch.float64)), "k has dtype"),
        (dict(v=torch.randn(2, 3, 9, 5)), "v has 3 heads"),
        (dict(q=torch.randn(2, 4, 9)), "q must have 4 dims"),
        (dict(q=torch.randn(2, 3, 9, 6)), "multiple of"),
        (dict(k=torch.randn(2, 2, 8, 6)), "sequence lengths differ"),
        (dict(key_padding_mask=torch.zeros(2, 9)), "key_padding_mask must be bool"),
        (dict(key_padding_mask=torch.zeros(2, 8, dtype=torch.bool)), "key_padding_mask must have shape"),
        (dict(initial_S=torch.zeros(2, 4, 6, 5, dtype=torch.float64)), "initial_S must have the accumulation dtype"),
        (dict(initial_z=torch.zeros(2, 4, 5)), "initial_z must have shape"),
        (dict(cu_seqlens=torch.tensor([0, 9])), "batch must be 1"),
        (dict(feature_map="gelu"), "feature_map must be one of"),
        (dict(eps=-1.0), "eps must be >= 0"),
    ],
)
def test_direct_call_errors_name_the_argument(change, match):
    with pytest.raises(RuntimeError, match=match):
        FWD(*_direct_args(**change))


def test_direct_call_bad_cu_seqlens_and_grad_out():
    q, k, v = _qkv(1, 2, 2, 9, 4, 4, torch.float32, noncontig=False)
    rest = (None, None, None)
    with pytest.raises(RuntimeError, match="cu_seqlens must rise from 0 to N=9"):
        FWD(q, k, v, None, None, None, torch.tensor([0, 5, 3, 9]), "elu", True, True, 1e-6)
    with pytest.raises(RuntimeError, match="cu_seqlens must be int32 or int64"):
        FWD(q, k, v, None, None, None, torch.tensor([0.0, 9.0]), "elu", True, True, 1e-6)
    with pytest.raises(RuntimeError, match="grad_out must have shape"):
        BWD(torch.randn(1, 2, 9, 3), None, None, q, k, v, *rest, None, "elu", True, True, 1e-6)
    with pytest.raises(RuntimeError, match="grad_S must have shape"):
        BWD(torch.randn(1, 2, 9, 4), torch.randn(1, 2, 4, 3), None, q, k, v, *rest, None, "elu", True, True, 1e-6)
