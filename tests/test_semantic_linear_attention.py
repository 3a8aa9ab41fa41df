"""Valid inputs, right answers: kexue.linear_attention (every backend here), linear_attention_step /
_state / _readout and kexue.nn.LinearAttention against an independent float64 double loop written
from the definition (Katharopoulos et al. 2020, eq. 2 / 5):

    o_i = Σ_{j∈A(i)} (φ(q_i)·φ(k_j)) v_j / (Σ_{j∈A(i)} φ(q_i)·φ(k_j) + eps)

with the feature maps written out elementwise: elu(x)+1 (Katharopoulos), max(x, 0), softmax over
the feature dim, and "taylor" = [1, x/‖x‖] so that φ(q)·φ(k) = 1 + cos(q, k) (the first-order
Taylor kernel on normalised vectors, Li et al. 2020).  Values, carried state (S, z) and gradients
(autograd through the loop) on the corners: N = 1, Dk != Dv, odd dims, GQA, key_padding_mask with
the first key or every key of a row masked, initial_state, cu_seqlens with empty and length-1
sequences, non-contiguous inputs; 16-bit inputs bounded by the unit roundoff of the terms' size.

Found clean (2026-12-06, a few hundred random cases per backend, see bench/RESULTS.md); kept as a
compact regression check.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

import kexue
from helpers import triton_runs_on
from kexue.linear_attention import linear_attention_readout, linear_attention_state, linear_attention_step

MAPS = ["elu", "relu", "softmax", "taylor", "none"]
CPU_BACKENDS = ["torch", "cpu"] + (["triton"] if triton_runs_on("cpu") else [])


# --------------------------------------------------------------------------- the independent oracle
def phi(x: torch.Tensor, fmap: str) -> torch.Tensor:
    """φ of one vector, from the papers' formulas (not kexue's feature_maps.py)."""
    if fmap == "elu":
        return torch.where(x > 0, x + 1, torch.exp(x.clamp(max=0)))
    if fmap == "relu":
        return torch.where(x > 0, x, torch.zeros_like(x))
    if fmap == "softmax":
        e = torch.exp(x - x.max())
        return e / e.sum()
    if fmap == "taylor":
        return torch.cat([x.new_ones(1), x / torch.sqrt((x * x).sum()).clamp(min=1e-12)])
    return x


def loop(q, k, v, *, causal, fmap, normalize=True, eps=1e-6, mask=None, state=None, cu=None):
    """(out, (S, z)) by a double loop over queries and keys; differentiable (autograd)."""
    B, H, N, Dk = q.shape
    g, Dv = H // k.shape[1], v.shape[3]
    bounds = [0, N] if cu is None else list(cu)
    Fd = Dk + 1 if fmap == "taylor" else Dk
    out = [[[] for _ in range(H)] for _ in range(B)]
    Ss, zs = {}, {}
    for b in range(B):
        for h in range(H):
            hk = h // g
            for s in range(len(bounds) - 1):
                lo, hi = bounds[s], bounds[s + 1]
                sid = b if cu is None else s
                S0 = state[0][sid, h] if state is not None else q.new_zeros(Fd, Dv)
                z0 = state[1][sid, h] if state is not None else q.new_zeros(Fd)
                keep = [j for j in range(lo, hi) if mask is None or not bool(mask[b, j])]
                fk = torch.stack([phi(k[b, hk, j], fmap) for j in keep]) if keep else q.new_zeros(0, Fd)
                vk = v[b, hk, keep]
                for i in range(lo, hi):
                    a = phi(q[b, h, i], fmap)
                    n = sum(1 for j in keep if not causal or j <= i)  # keep is ascending
                    w = fk[:n] @ a  # φ(q_i)·φ(k_j) for the keys j in A(i)
                    num, den = a @ S0 + w @ vk[:n], a @ z0 + w.sum()
                    out[b][h].append(num / (den + eps) if normalize else num)
                Ss[sid, h] = S0 + fk.T @ vk  # Σ_j φ(k_j) v_jᵀ
                zs[sid, h] = z0 + fk.sum(0)
    nseq = B if cu is None else len(bounds) - 1
    o = torch.stack([torch.stack([torch.stack(r) if r else v.new_zeros(0, Dv) for r in row]) for row in out])
    S = torch.stack([torch.stack([Ss[s, h] for h in range(H)]) for s in range(nseq)])
    z = torch.stack([torch.stack([zs[s, h] for h in range(H)]) for s in range(nseq)])
    return o, (S, z)


def _case(rng: random.Random, *, small: bool = False):
    B = rng.choice([1, 2])
    Hkv = rng.choice([1, 2])
    H = Hkv * rng.choice([1, 2, 3])
    N = rng.choice([1, 2, 5, 9] if small else [1, 2, 5, 17, 65, 70])
    Dk, Dv = rng.choice([1, 3, 4, 7]), rng.choice([1, 2, 5])
    fmap = rng.choice(MAPS)
    c = dict(causal=rng.random() < 0.5, fmap=fmap, normalize=rng.random() < 0.7,
             eps=0.5 if fmap in ("relu", "none") else rng.choice([1e-6, 0.1]))
    q, k, v = torch.randn(B, H, N, Dk), torch.randn(B, Hkv, N, Dk), torch.randn(B, Hkv, N, Dv)
    if rng.random() < 0.3:  # non-contiguous q and v
        q = torch.randn(B, N, H, Dk).transpose(1, 2)
        v = torch.randn(Dv, B, Hkv, N).permute(1, 2, 3, 0)
    if fmap == "none":  # "inputs already mapped": positive features
        q, k = q.abs() + 0.1, k.abs() + 0.1
    mask = None
    if rng.random() < 0.4:
        mask = torch.rand(B, N) < 0.4
        mask[0, 0] = rng.random() < 0.5  # the first key masked (causal: query 0 sees nothing)
        if rng.random() < 0.3:
            mask[-1] = True  # a row with every key masked
    cu = None
    if B == 1 and rng.random() < 0.3:
        cu = sorted(set([0, N] + rng.sample(range(N + 1), min(N + 1, 2))))
        if rng.random() < 0.4:
            cu = [0] + cu  # an empty sequence first
    nseq = B if cu is None else len(cu) - 1
    Fd = Dk + 1 if fmap == "taylor" else Dk
    state = None
    if rng.random() < 0.3:  # z's first entry large: φ(q)·z0 > 0 for every map
        z = torch.rand(nseq, H, Fd) + 0.5
        z[..., 0] += Fd
        state = (torch.randn(nseq, H, Fd, Dv), z)
    return (q, k, v), c, mask, state, cu


def _rel(a: torch.Tensor, r: torch.Tensor) -> float:
    if r.numel() == 0:
        return 0.0
    a, r = a.detach().double(), r.detach()
    return float((a - r).abs().max() / (1 + r.abs().max()))


def _run_cases(backend: str, n: int, seed: int, dtype: torch.dtype, tol: float, small: bool) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        (q, k, v), c, mask, state, cu = _case(rng, small=small)
        leaves = [t.double().requires_grad_() for t in (q, k, v, *(state or ()))]
        st64 = tuple(leaves[3:]) if state else None
        ref, (S_ref, z_ref) = loop(*leaves[:3], **c, mask=mask, state=st64, cu=cu)
        go = torch.randn_like(ref)
        anchor = sum(t.sum() for t in leaves) * 0  # keeps every leaf in the graph (all-masked rows)
        g_ref = torch.autograd.grad((ref * go).sum() + anchor, leaves)
        lv = [t.detach().to(dtype).requires_grad_() for t in leaves]
        out, (S, z) = kexue.linear_attention(
            *lv[:3], causal=c["causal"], feature_map=c["fmap"], normalize=c["normalize"], eps=c["eps"],
            key_padding_mask=mask, initial_state=tuple(lv[3:]) if state else None, return_state=True,
            cu_seqlens=None if cu is None else torch.tensor(cu), backend=backend)
        g = torch.autograd.grad((out * go.to(dtype)).sum() + sum(t.sum() for t in lv) * 0, lv)
        where = f"{backend} {c} N={q.shape[2]} H={q.shape[1]} Hkv={k.shape[1]} mask={mask} cu={cu} state={bool(state)}"
        assert _rel(out, ref.detach()) <= tol, f"out: {where}"
        assert _rel(S, S_ref.detach()) <= tol and _rel(z, z_ref.detach()) <= tol, f"state: {where}"
        for name, a, r in zip("q k v S0 z0".split(), g, g_ref, strict=False):
            assert _rel(a, r) <= tol, f"grad {name}: {where}"


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_values_state_and_grads_match_the_loop_float64(backend):
    _run_cases(backend, 40, seed=11, dtype=torch.float64, tol=1e-9, small=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_values_state_and_grads_match_the_loop_float32(backend):
    _run_cases(backend, 12, seed=12, dtype=torch.float32, tol=2e-5, small=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_error_within_unit_roundoff_of_the_terms(backend, dtype):
    """Error bound: the unit roundoff u of the dtype times the size of the terms (the same loop with
    |v|): the float32 evaluation of the definition from 16-bit operands errs by that order at most;
    a bare relative tolerance would fail wherever the output cancels."""
    if backend == "triton" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter has no bf16 arithmetic")
    rng = random.Random(13)
    u = 2.0 ** -(11 if dtype == torch.float16 else 8)
    for _ in range(8):
        N, fmap, causal = rng.choice([1, 5, 67]), rng.choice(MAPS[:4]), rng.random() < 0.5
        eps = 0.5 if fmap == "relu" else 1e-6
        q, k, v = (torch.randn(1, 2, N, d).to(dtype) for d in (rng.choice([3, 8]),) * 2 + (rng.choice([2, 5]),))
        mask = (torch.rand(1, N) < 0.3) if rng.random() < 0.4 else None
        with torch.no_grad():
            ref, _ = loop(q.double(), k.double(), v.double(), causal=causal, fmap=fmap, eps=eps, mask=mask)
            size, _ = loop(q.double(), k.double(), v.double().abs(), causal=causal, fmap=fmap, eps=eps, mask=mask)
        out = kexue.linear_attention(q, k, v, causal=causal, feature_map=fmap, eps=eps, key_padding_mask=mask,
                                     backend=backend)
        assert out.dtype == dtype
        excess = (out.double() - ref).abs() - 2 * u * size
        assert float(excess.max()) <= 0, f"{backend} {dtype} {fmap} causal={causal} N={N}"


@pytest.mark.parametrize("fmap", MAPS[:4])
@pytest.mark.parametrize("heads", [(1, 1), (3, 1), (4, 2)])
def test_step_state_readout_match_the_loop(fmap, heads):
    H, Hkv = heads
    B, N, Dk, Dv = 2, 7, 5, 3
    eps = 0.5 if fmap == "relu" else 1e-6
    q = torch.randn(B, H, N, Dk, dtype=torch.float64)
    k, v = torch.randn(B, Hkv, N, Dk, dtype=torch.float64), torch.randn(B, Hkv, N, Dv, dtype=torch.float64)
    ref, _ = loop(q, k, v, causal=True, fmap=fmap, eps=eps)
    st, outs = None, []
    for t in range(N):  # incremental decoding == the full causal pass
        o, st = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], st, feature_map=fmap, eps=eps)
        outs.append(o)
    assert _rel(torch.stack(outs, 2), ref) <= 1e-12
    # pieces with the state carried == whole
    _, st = kexue.linear_attention(q[:, :, :3], k[:, :, :3], v[:, :, :3], causal=True, feature_map=fmap, eps=eps,
                                   return_state=True)
    rest = kexue.linear_attention(q[:, :, 3:], k[:, :, 3:], v[:, :, 3:], causal=True, feature_map=fmap, eps=eps,
                                  initial_state=st)
    assert _rel(rest, ref[:, :, 3:]) <= 1e-12
    # state of a masked key sequence, read by other queries (cross-attention)
    mask = torch.rand(B, N) < 0.3
    mask[0, 0] = True
    S, z = linear_attention_state(k, v, num_heads=H, feature_map=fmap, key_padding_mask=mask)
    qx = torch.randn(B, H, 4, Dk, dtype=torch.float64)
    _, (S_ref, z_ref) = loop(q, k, v, causal=False, fmap=fmap, mask=mask)
    assert _rel(S, S_ref) <= 1e-12 and _rel(z, z_ref) <= 1e-12
    for normalize in (True, False):
        want = torch.stack([torch.stack([torch.stack([
            (phi(qx[b, h, i], fmap) @ S_ref[b, h]) / ((phi(qx[b, h, i], fmap) @ z_ref[b, h] + eps) if normalize else 1)
            for i in range(4)]) for h in range(H)]) for b in range(B)])
        got = linear_attention_readout(qx, (S, z), feature_map=fmap, eps=eps, normalize=normalize)
        assert _rel(got, want) <= 1e-12


def _hand_module(m, query, key, value, kpm, batch_first: bool, causal: bool) -> torch.Tensor:
    """nn.LinearAttention written out: projections, heads split, the loop per head, merge, out_proj."""
    def lin(layer, x):
        return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)
    if not batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    B, Nq, E = query.shape
    H, Hkv, d = m.num_heads, m.num_kv_heads, m.head_dim
    q, k, v = lin(m.q_proj, query), lin(m.k_proj, key), lin(m.v_proj, value)
    heads = []
    for h in range(H):
        hk = h // (H // Hkv)
        qh = q[..., h * d:(h + 1) * d].unsqueeze(1)
        kh, vh = (t[..., hk * d:(hk + 1) * d].unsqueeze(1) for t in (k, v))
        if Nq == kh.shape[2]:
            o, _ = loop(qh, kh, vh, causal=causal, fmap="elu", eps=m.eps, mask=kpm)
        else:  # cross-attention: every query reads every (unmasked) key
            a = F.elu(qh) + 1
            w = (a @ (F.elu(kh) + 1).transpose(-1, -2)).masked_fill(kpm[:, None, None, :], 0.0)
            o = (w @ vh) / (w.sum(-1, keepdim=True) + m.eps)
        heads.append(o[:, 0])
    out = lin(m.out_proj, torch.cat(heads, -1))
    return out if batch_first else out.transpose(0, 1)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", ["self", "self_causal", "kvdim", "cross"])
@pytest.mark.parametrize("heads", [(4, 4), (4, 1)])
def test_module_matches_a_hand_written_module(batch_first, kind, heads):
    H, Hkv = heads
    E, B, Nq = 8, 2, 6
    causal = kind == "self_causal"
    kd, vd = (5, 3) if kind in ("kvdim", "cross") else (None, None)
    m = kexue.nn.LinearAttention(E, H, num_kv_heads=Hkv, causal=causal, batch_first=batch_first, kdim=kd, vdim=vd,
                                 dtype=torch.float64)
    Nk = 9 if kind == "cross" else Nq

    def shp(n, dd):
        return (B, n, dd) if batch_first else (n, B, dd)
    x = torch.randn(*shp(Nq, E), dtype=torch.float64)
    key = x if kd is None else torch.randn(*shp(Nk, kd), dtype=torch.float64)
    val = x if vd is None else torch.randn(*shp(Nk, vd), dtype=torch.float64)
    kpm = torch.rand(B, Nk) < 0.3
    kpm[0, 0] = True
    ref = _hand_module(m, x, key, val, kpm, batch_first, causal)
    out, w = m(x, key, val, key_padding_mask=kpm)
    assert w is None and _rel(out, ref) <= 1e-12
    float_mask = torch.zeros(B, Nk, dtype=torch.float64).masked_fill(kpm, float("-inf"))
    assert _rel(m(x, key, val, key_padding_mask=float_mask)[0], ref) <= 1e-12


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_empty_sequence_keeps_the_state_and_the_graph(backend, causal):
    """N = 0: out is (B, H, 0, Dv), the state is the initial state, and the output stays in the graph
    (backward gives empty gradients, as every op on inputs that require grad does)."""
    q = torch.randn(2, 2, 0, 4, requires_grad=True)
    k, v = torch.randn(2, 1, 0, 4, requires_grad=True), torch.randn(2, 1, 0, 3, requires_grad=True)
    S0, z0 = torch.randn(2, 2, 4, 3), torch.rand(2, 2, 4) + 5
    out, (S, z) = kexue.linear_attention(q, k, v, causal=causal, initial_state=(S0, z0), return_state=True,
                                         backend=backend)
    assert out.shape == (2, 2, 0, 3) and torch.equal(S, S0) and torch.equal(z, z0)
    assert out.requires_grad
    g = torch.autograd.grad(out.sum(), (q, k, v), allow_unused=True)
    assert [None if t is None else tuple(t.shape) for t in g][0] == (2, 2, 0, 4)


def _range_safe16(x: torch.Tensor) -> torch.Tensor:
    """x (float32) rounded to float16 after scaling by the power of two putting max |x| in
    [2^13, 2^14): what a range-safe float16 operand keeps (no subnormals for small entries)."""
    s = torch.exp2(13.0 - torch.floor(torch.log2(x.abs().amax().clamp(min=1e-30))))
    return (x * s).half().float() / s


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("fmap,scale", [("softmax", 30.0), ("none", 3e-5), ("relu", 1e-4)])
def test_float16_small_features_keep_their_precision(backend, fmap, scale):
    """Features far below float16's normal range (2^-14 ≈ 6e-5) — a peaked softmax over large
    logits, inputs already mapped to tiny values — with attention mass at the scale of eps:
    the error must stay at the float16 rounding of range-safe operands (each operand scaled by a
    power of two before the cast, as the kernels already do for their state tiles), not at the
    subnormals' (up to 100 % for entries below 6e-8).  Bug found: the Triton kernels cast φ(q)
    and φ(k) to float16 unscaled (1-10 % errors in the outputs, 30x the bound)."""
    torch.manual_seed(0)
    B, H, N, Dk, Dv = 1, 2, 70, 16, 8
    q, k = (torch.randn(B, H, N, Dk) * (scale if fmap != "none" else 1) for _ in range(2))
    if fmap == "none":  # already-mapped positive features of size `scale`
        q, k = q.abs() * scale, k.abs() * scale
    q, k, v = q.half(), k.half(), torch.randn(B, H, N, Dv).half()
    go = torch.randn(B, H, N, Dv).half()
    eps = 1e-6 if fmap != "none" else 1e-10
    for causal in (False, True):
        L64 = [t.double().requires_grad_() for t in (q, k, v)]
        ref, _ = loop(*L64, causal=causal, fmap=fmap, eps=eps)
        g_ref = torch.autograd.grad((ref * go.double()).sum(), L64)
        # the bound: the same loop on range-safe float16 features (float64 otherwise)
        fq = _range_safe16(torch.stack([torch.stack([torch.stack([phi(q[0, h, i].float(), fmap)
                                                                  for i in range(N)]) for h in range(H)])]))
        fk = _range_safe16(torch.stack([torch.stack([torch.stack([phi(k[0, h, j].float(), fmap)
                                                                  for j in range(N)]) for h in range(H)])]))
        base, _ = loop(fq.double(), fk.double(), v.double(), causal=causal, fmap="none", eps=eps)
        lv = [t.clone().requires_grad_() for t in (q, k, v)]
        out = kexue.linear_attention(*lv, causal=causal, feature_map=fmap, eps=eps, backend=backend)
        g = torch.autograd.grad((out * go).sum(), lv)
        u = 2.0 ** -11
        bound = 2 * float((base - ref).abs().max()) + 4 * u * float(ref.abs().max())
        err = float((out.double() - ref).abs().max())
        assert err <= bound, f"out: {backend} {fmap} causal={causal}: error {err:.3g} > {bound:.3g}"
        for name, a, r in zip("qkv", g, g_ref, strict=True):
            gerr, gmax = float((a.double() - r).abs().max()), float(r.abs().max())
            assert gerr <= 16 * u * gmax, f"grad {name}: {backend} {fmap} causal={causal}: {gerr:.3g} vs max {gmax:.3g}"
