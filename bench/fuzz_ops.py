"""Random-configuration campaigns: every compiled op against its float64 definition, outputs and
gradients.  ``--op la``: kexue.linear_attention; ``ce``: cross_entropy / linear_cross_entropy
(both here); ``sample``: sampling_probs / sample (bench/fuzz_sample.py); ``attn``: the attribution
attention op attention_qkv_fwd / _bwd (bench/fuzz_attn.py); ``probe``: eisner, segment_distance,
masked_batch (bench/fuzz_probe.py); ``warp``: the Hugging Face warpers of kexue.decoding against
transformers' and a float64 definition (bench/fuzz_warp.py); ``generate``: kexue.decoding.generate
against per-prompt oracles, exhaustive beam search and HF generate (bench/fuzz_generate.py).  Each
module's docstring states its definition and allowances.

    python bench/fuzz_ops.py --op la --seconds 600 [--seed 0] [--backends cpu,triton] [--device cpu]
    python bench/fuzz_ops.py --op ce --seconds 600 --device cuda --backends cuda,triton
    python bench/fuzz_ops.py --op sample --seconds 600 --backends cpu,torch,triton --yield-to /tmp/kexue-quiet
    python bench/fuzz_ops.py --op attn --seconds 600 --backends cpu,torch
    python bench/fuzz_ops.py --op probe --seconds 600 --backends cpu,torch,triton
    python bench/fuzz_ops.py --op warp --seconds 600 --backends cpu,torch --yield-to /tmp/kexue-quiet
    python bench/fuzz_ops.py --op generate --seconds 600 --backends cpu,torch --yield-to /tmp/kexue-quiet

``--yield-to FILE`` sleeps between seeds while FILE exists (the sleep is not counted in
``--seconds``); ``--mutate R`` moves one output of the op by R (la, sample, attn, probe: a kernel
that is off, which the campaign must report; warp: top-p × (1 + R); generate: per-row
parameters given to the wrong rows); ``FUZZ_TRACEBACK=1`` prints a crash's traceback.

Where the hypothesis tests of ``make test`` take a few dozen draws of a few options each, this
crosses every option at once, for as long as it is given: shapes with the awkward sizes (1, 2,
no multiple of any block), feature maps, causal or not, normalised or not, masks, carried states
(with their gradients), packed sequences, GQA, strided inputs, float32/float16/bfloat16; for
cross-entropy every option of the loss, huge and -inf logits, in-place backward and the fused
lm_head.  Each configuration is one seed: ``--seed S --seconds 0`` reruns just seed S.

Rule (flash-attention's, every campaign): error against float64 <= 2 x the error of the plain
composite in the input's dtype (for 16-bit linear attention the composite computed in 16 bits,
``compute_dtype``) + a float32 floor; for 16-bit inputs also 2 units of the dtype at the
values' size.  Each failure prints its configuration.  Known ill-conditioned corners are left
out of the draw and named where they are (``_la_config``).  The "taylor" map's scores
1 + cos(q, k) cancel (a query opposite a key, most often in small Dk and in short packed
sequences, 1 token each): there the composite's own error is luck, so the baseline is also the
float32 evaluation of the definition in the kernels' state form (``_state_form``: numerator
and denominator rounded apart, as in the kernels), and the larger of the two counts.  The
"relu" map gets the same baseline: its zero features let the normaliser φ(q)·z fall to the
order of eps (keys that are all but one negative, Dk = 1 most often), where the gradient
r (U − t z) is a cancellation amplified by r = 1 / (den + eps) (seeds 702510, 703845: the cpu
and Triton kernels 4-48x the composite's error, inside the state form's own rounding spread).
On the CPU, Triton runs under the interpreter (TRITON_INTERPRET=1 is set when no GPU is present).
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import sys
import time
import traceback

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the campaign modules beside this file

import kexue  # noqa: E402
from kexue.cross_entropy import cross_entropy_reference  # noqa: E402
from kexue.linear_attention import feature_dim, linear_attention_quadratic  # noqa: E402
from kexue.linear_attention.reference import _finish, _initial, _mapped, _per_sequence, _rounding  # noqa: E402

UNIT = {torch.float32: 0.0, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
ROUNDING_UNIT = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}  # u = half an ulp at 1
ROUNDING_SAMPLES = 4  # evaluations of the rounding model per configuration (taylor and relu only)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    d = (a.double() - b.double()).abs()
    if d.numel() == 0:
        return 0.0
    return float("nan") if torch.isnan(d).any() else float(d.max())


def scale_of(t: torch.Tensor) -> float:
    finite = t.detach().double()
    finite = finite[torch.isfinite(finite)]
    return max(1.0, float(finite.abs().max())) if finite.numel() else 1.0


def check(name: str, got, ref64, low, floor: float, msgs: list[str], extra=()) -> None:
    """The rule on the entries where the same-dtype composite is finite (an output dtype's
    overflow is the composite's too: those entries must match it, inf for inf).  ``extra``:
    more evaluations of the definition at the input dtype's precision; the baseline is the
    largest error among ``low`` and them."""
    got, ref64, low = (t.detach().reshape(-1) for t in (got, ref64, low))
    extra = [t.detach().reshape(-1) for t in extra]
    fg, fl = torch.isfinite(got.double()), torch.isfinite(low.double())
    if not torch.equal(fg, fl):
        msgs.append(f"{name}: finite where the composite is not, or the reverse ({int((fg != fl).sum())} entries)")
        return
    if not torch.equal(got.double()[~fg].nan_to_num(), low.double()[~fl].nan_to_num()):
        msgs.append(f"{name}: non-finite entries differ from the composite's")
        return
    keep = fg & torch.isfinite(ref64)
    e = max_err(got[keep], ref64[keep])
    base = max([max_err(low[keep], ref64[keep])] + [max_err(t[keep], ref64[keep]) for t in extra])
    if not e <= 2 * base + floor:
        msgs.append(f"{name}: error {e:.3g} > 2 x {base:.3g} + {floor:.3g}")


# ---- linear attention ----

def _la_config(rng: random.Random, targeted: bool = False) -> dict:
    """A random configuration; ``targeted``: the taylor map on short packed sequences (1-token
    sequences most often, N <= 8, Dk <= 4), the corner where 1 + cos cancels."""
    if targeted:
        c = _la_config(rng)
        N = rng.randint(1, 8)
        c.update(fmap="taylor", varlen=True, B=1, N=N, Dk=rng.randint(2, 4), cuts=rng.randint(N // 2, N + 1))
        return c
    varlen = rng.random() < 0.25
    hkv = rng.randint(1, 3)
    dk = rng.choice([1, 3, rng.randint(1, 40), 16, 32, 64])
    fmap = rng.choice(["elu", "relu", "softmax", "taylor", None])
    if fmap == "taylor" and dk == 1:
        # φ(q)·φ(k) ∈ {0, 2}: queries with a zero normaliser turn the gradient of the state form
        # into a difference of terms of size 1/eps (ill-conditioned in any precision)
        fmap = "elu"
    return dict(
        B=1 if varlen else rng.randint(1, 3), Hkv=hkv, H=hkv * rng.randint(1, 3),
        N=rng.choice([1, 2, rng.randint(1, 40), rng.randint(40, 200), 64, 128]),
        Dk=dk, Dv=rng.choice([1, dk, rng.randint(1, 40), 64]), fmap=fmap,
        causal=rng.random() < 0.6, normalize=rng.random() < 0.7,
        dtype=rng.choice([torch.float32] * 3 + [torch.bfloat16, torch.float16]),
        strided=rng.random() < 0.3, masked=rng.random() < 0.3, varlen=varlen,
        state=rng.random() < 0.4, grads=rng.random() < 0.6,
        cuts=rng.randint(0, 4), grad_state=rng.random() < 0.5,
    )


class _Perturb(torch.autograd.Function):
    """x (1 + δ) forward and g (1 + δ') backward, δ, δ' = ±u with random signs: the standard
    model of one rounding, fl(x) = x (1 + δ) with |δ| <= u, in both passes."""

    @staticmethod
    def forward(ctx, x, u, gen):
        ctx.u, ctx.gen = u, gen
        return x * (1 + u * _signs(x, gen))

    @staticmethod
    def backward(ctx, g):
        return g * (1 + ctx.u * _signs(g, ctx.gen)), None, None


def _signs(x, gen):
    return (torch.randint(0, 2, x.shape, generator=gen, dtype=x.dtype) * 2 - 1).to(x.device)


def rounding_model(u: float, seed: int):
    """A ``rnd`` for :func:`_state_form` on float64 tensors: every rounded quantity (the mapped
    features, the state, the numerator) and its gradient moved by one unit u of the input dtype,
    with random signs (seeded).  The spread of such evaluations around the float64 definition is
    what rounding at precision u does to it, cancellations (taylor's 1 + cos) included: a
    baseline that no order of summation can be luckier than by construction."""
    gen = torch.Generator().manual_seed(seed)
    return lambda x: _Perturb.apply(x, u, gen)


def _state_form(q, k, v, *, causal, feature_map, normalize, eps, key_padding_mask, initial_state, cu_seqlens=None,
                compute_dtype=None, rnd=None):
    """The definition evaluated as the kernels evaluate it, in the input's precision: through the
    state, num_i = φ(q_i)·S_i and den_i = φ(q_i)·z_i with S_i = S0 + Σ_{j∈A(i)} φ(k_j) v_jᵀ
    (N×F×Dv memory: fuzz sizes only); for 16-bit inputs φ and the state are rounded to that
    dtype as tensor-core operands are.  Unlike the quadratic form, numerator and denominator
    round independently, so a cancelling normaliser (taylor's 1 + cos) shows its true error."""
    if cu_seqlens is not None:
        return _per_sequence(_state_form, q, k, v, key_padding_mask, initial_state, cu_seqlens, causal=causal,
                             feature_map=feature_map, normalize=normalize, eps=eps, compute_dtype=compute_dtype,
                             rnd=rnd)
    rnd = rnd or _rounding(compute_dtype)
    fq, fk, vv = _mapped(q, k, v, feature_map, key_padding_mask)
    fq, fk = rnd(fq), rnd(fk)
    vv = torch.cat([vv, torch.ones_like(vv[..., :1])], dim=-1)
    S0 = _initial(fq, vv, initial_state)
    kv = fk[..., :, None] * vv[..., None, :]  # (B, H, N, F, Dv + 1)
    S = (kv.cumsum(2) if causal else kv.sum(2, keepdim=True)) + S0[:, :, None]
    num = rnd((fq[..., None] * rnd(S)).sum(-2))
    return _finish(num, S0 + kv.sum(2), normalize, eps, q.dtype)


def fuzz_la(seed: int, backend: str, device: str, targeted: bool = False) -> tuple[list[str], dict]:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    c = _la_config(rng, targeted)
    B, H, Hkv, N, Dk, Dv, dtype = c["B"], c["H"], c["Hkv"], c["N"], c["Dk"], c["Dv"], c["dtype"]

    def mk(h, d):
        if c["strided"]:
            return torch.randn(B, N, h, d + 2)[..., 1 : d + 1].transpose(1, 2)
        return torch.randn(B, h, N, d)

    q, k, v = mk(H, Dk), mk(Hkv, Dk), mk(Hkv, Dv)
    if c["fmap"] is None:  # already-mapped inputs: positive features
        q, k = q.abs() + 0.1, k.abs() + 0.1
    q, k, v = (t.to(device=device, dtype=dtype) for t in (q, k, v))
    mask = (torch.rand(B, N) < 0.3).to(device) if c["masked"] else None
    cu, nseq = None, B
    if c["varlen"]:
        cuts = sorted(rng.sample(range(N + 1), min(N + 1, c["cuts"])))
        cu = torch.tensor(sorted({0, N, *cuts}), dtype=torch.int32, device=device)
        nseq = cu.numel() - 1
    F = feature_dim(c["fmap"], Dk)
    state = None
    if c["state"]:  # z[0] >= F: φ(q)·z > 0 for every map (a state earlier keys could leave)
        z = torch.rand(nseq, H, F) + 0.5
        z[..., 0] += F
        state = (torch.randn(nseq, H, F, Dv).to(device), z.to(device))
    kw = dict(causal=c["causal"], feature_map=c["fmap"], normalize=c["normalize"], key_padding_mask=mask,
              cu_seqlens=cu)
    grads = c["grads"]

    def leaves(ts, to64=False):
        return [(t.detach().double() if to64 else t.detach().clone()).requires_grad_(grads) for t in ts]

    ins = (q, k, v) + (state or ())
    got_l, ref_l, low_l = leaves(ins), leaves(ins, True), leaves(ins)

    def st(ls):
        return tuple(ls[3:]) if state else None

    out, (S, z_) = kexue.linear_attention(*got_l[:3], initial_state=st(got_l), return_state=True, backend=backend,
                                          **kw)
    o64, (S64, z64) = linear_attention_quadratic(*ref_l[:3], initial_state=st(ref_l), **kw)
    cdt = dtype if dtype != torch.float32 else None
    ol, (Sl, zl) = linear_attention_quadratic(*low_l[:3], initial_state=st(low_l), compute_dtype=cdt, **kw)
    f32 = 3e-5 * (1 if c["normalize"] else 10)
    pert = []  # taylor, relu: the state form's own float32 (16-bit) evaluation, see the module doc
    if c["fmap"] in ("taylor", "relu"):
        sf_l = leaves(ins)
        o_sf, (S_sf, z_sf) = _state_form(*sf_l[:3], initial_state=st(sf_l), compute_dtype=cdt, eps=1e-6, **kw)
        pert = [(sf_l, [o_sf, S_sf, z_sf])]
        for j in range(ROUNDING_SAMPLES):  # the rounding model at the input dtype's unit, in float64
            m_l = leaves(ins, True)
            o_m, (S_m, z_m) = _state_form(*m_l[:3], initial_state=st(m_l), eps=1e-6,
                                          rnd=rounding_model(ROUNDING_UNIT[dtype], seed * 64 + j), **kw)
            pert.append((m_l, [o_m, S_m, z_m]))
    msgs: list[str] = []
    if out.shape != o64.shape or out.dtype != dtype:
        msgs.append(f"out: shape {tuple(out.shape)} dtype {out.dtype}")
        return msgs, c
    for i, (name, a, r, lo) in enumerate((("out", out, o64, ol), ("S", S, S64, Sl), ("z", z_, z64, zl))):
        check(name, a, r, lo, (f32 + 2 * UNIT[dtype]) * scale_of(r), msgs, [p[1][i] for p in pert])
    if grads and out.numel():
        go = torch.randn(o64.shape, dtype=torch.float64, device=device)
        gS = torch.randn(S64.shape, dtype=torch.float64, device=device) if c["grad_state"] else None

        def backward(o, S_, ls):
            loss = (o.double() * go).sum() + ((S_.double() * gS).sum() if gS is not None else 0)
            return torch.autograd.grad(loss, ls, allow_unused=True)

        pert_grads = [backward(p_out[0], p_out[1], p_ls) for p_ls, p_out in pert]
        for i, (name, a, r, lo) in enumerate(zip(["dq", "dk", "dv", "dS0", "dz0"], backward(out, S, got_l),
                                                 backward(o64, S64, ref_l), backward(ol, Sl, low_l), strict=False)):
            if r is None:
                continue
            if a is None:
                msgs.append(f"{name}: missing")
                continue
            check(name, a, r, lo, (f32 + 2 * UNIT[dtype]) * scale_of(r), msgs, [g[i] for g in pert_grads])
    return msgs, c


# ---- cross-entropy ----

def fuzz_ce(seed: int, backend: str, device: str) -> tuple[list[str], dict]:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    N = rng.choice([1, 2, rng.randint(1, 50), rng.randint(50, 300)])
    C = rng.choice([1, 2, 3, rng.randint(2, 100), rng.randint(100, 3000), 1024, 4097])
    dtype = rng.choice([torch.float32] * 3 + [torch.bfloat16, torch.float16])
    reduction, flood_mode = rng.choice(["mean", "sum", "none"]), rng.choice(["batch", "sample"])
    flood = rng.choice([None, 0.0, rng.uniform(0, 8)])
    if flood_mode == "batch" and reduction == "none":
        flood = None
    kw = dict(reduction=reduction, flood=flood, flood_mode=flood_mode,
              label_smoothing=rng.choice([0.0, 0.0, rng.uniform(0, 1)]),
              z_loss=rng.choice([0.0, 0.0, rng.uniform(0, 1e-2)]), tau=rng.choice([1.0, rng.uniform(-2, 3)]),
              ignore_index=rng.choice([-100, 0, -1]))
    prior = (torch.rand(C).pow(3) * 100 + 0.01).to(device) if rng.random() < 0.4 else None
    weight = (torch.rand(C) + 0.1).to(device) if rng.random() < 0.3 else None
    target = torch.randint(0, C, (N,))
    if rng.random() < 0.5:
        target[torch.rand(N) < rng.random()] = kw["ignore_index"]
    target = target.to(device)
    linear = rng.random() < 0.25
    cfg = dict(linear=linear, N=N, C=C, dtype=dtype, prior=prior is not None, weight=weight is not None, **kw)
    msgs: list[str] = []

    def d64(t):
        return None if t is None else t.double()

    def grads(out, ls, go):
        return torch.autograd.grad(out, ls, go.to(out.dtype))

    if not linear:
        scale = rng.choice([1.0, 3.0, 30.0, 1e4 if dtype != torch.float16 else 1e3])
        strided = rng.random() < 0.3
        x = (torch.randn(C * 2, N) * scale).t()[:, ::2] if strided else torch.randn(N, C) * scale
        if rng.random() < 0.15 and C > 1:
            x[torch.rand(N, C) < 0.3] = float("-inf")
        x = x.to(device=device, dtype=dtype)
        inplace = rng.random() < 0.2 and backend != "torch"
        cfg.update(scale=scale, strided=strided, inplace=inplace)
        xg, xl = (x.detach().clone().requires_grad_() for _ in range(2))
        x64 = x.detach().double().requires_grad_()
        out = kexue.cross_entropy(xg * 1 if inplace else xg, target, backend=backend, inplace_backward=inplace,
                                  prior=prior, weight=weight, **kw)
        o64 = cross_entropy_reference(x64, target, prior=d64(prior), weight=d64(weight), **kw)
        ol = cross_entropy_reference(xl, target, prior=prior, weight=weight, **kw)
        if out.dtype != dtype or out.shape != o64.shape:
            return [f"loss: dtype {out.dtype} shape {tuple(out.shape)}"], cfg
        check("loss", out, o64, ol, 1e-4 * scale_of(o64), msgs)
        if torch.isfinite(o64).all() and torch.isfinite(ol).all() and o64.numel():
            go = torch.randn(o64.shape, dtype=torch.float64, device=device)
            check("grad", grads(out, [xg], go)[0], grads(o64, [x64], go)[0], grads(ol, [xl], go)[0],
                  1e-5 * scale_of(go), msgs)
        return msgs, cfg
    Hd = rng.choice([1, 5, rng.randint(1, 70), 64])
    h = torch.randn(N, Hd).to(device=device, dtype=dtype)
    W = (torch.randn(C, Hd) / Hd**0.5).to(device=device, dtype=dtype)
    b = torch.randn(C).to(device=device, dtype=dtype) if rng.random() < 0.5 else None
    chunk = rng.choice([None, 1, rng.randint(1, N + 2)])
    cfg.update(H=Hd, bias=b is not None, chunk=chunk)
    ins = (h, W) + ((b,) if b is not None else ())
    L, Ll = ([t.detach().clone().requires_grad_() for t in ins] for _ in range(2))
    L64 = [t.detach().double().requires_grad_() for t in ins]

    def call(ls, backend_, **extra):
        return kexue.linear_cross_entropy(ls[0], ls[1], target, ls[2] if b is not None else None, backend=backend_,
                                          **kw, **extra)

    out = call(L, backend, prior=prior, class_weight=weight, chunk_size=chunk)
    o64 = call(L64, "torch", prior=d64(prior), class_weight=d64(weight))
    ol = call(Ll, "torch", prior=prior, class_weight=weight)
    check("loss", out, o64, ol, 1e-4 * scale_of(o64), msgs)
    if torch.isfinite(o64).all() and torch.isfinite(ol).all() and o64.numel():
        go = torch.randn(o64.shape, dtype=torch.float64, device=device)
        # 16-bit: the chunked weight gradient sums N rows in float32 and rounds once, the
        # composite rounds each row's product: 30 float32 floors for that
        floor = 1e-4 * (1 if dtype == torch.float32 else 30)
        for name, a, r, lo in zip(["dhidden", "dweight", "dbias"], grads(out, L, go), grads(o64, L64, go),
                                  grads(ol, Ll, go), strict=False):
            check(name, a, r, lo, floor * scale_of(r), msgs)
    return msgs, cfg


def _mutate_linear_attention(rel: float) -> None:
    """Replaces kexue.linear_attention by one whose first output entry is off by ``rel`` × the
    largest |entry| (at least 1): the campaign must report it."""
    right = kexue.linear_attention

    def off(*args, **kwargs):
        out, state = right(*args, **kwargs)
        if out.numel():
            out = out.clone()
            out.view(-1)[0] += rel * max(1.0, float(out.detach().abs().max()))
        return out, state

    kexue.linear_attention = off


# --op: bench/<module>.py (warp, generate: the decoding layer, HF warpers and generate)
CAMPAIGNS = {"sample": "fuzz_sample", "attn": "fuzz_attn", "probe": "fuzz_probe", "warp": "fuzz_warp",
             "generate": "fuzz_generate"}


def yield_to(path: str | None, poll: float = 5.0) -> float:
    """Sleeps while ``path`` exists (checked between seeds); returns the seconds slept (not counted
    in ``--seconds``)."""
    start = time.time()
    while path and os.path.exists(path):
        time.sleep(poll)
    return time.time() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--op", choices=["la", "ce", *CAMPAIGNS], required=True)
    p.add_argument("--seconds", type=float, default=300.0, help="run new seeds until this long (0: one seed)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--backends", default="cpu,triton")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--count", type=int, default=None, help="run exactly this many seeds (overrides --seconds)")
    p.add_argument("--targeted", action="store_true", help="la only: taylor on short packed sequences")
    p.add_argument("--mutate", type=float, default=0.0,
                   help="la, sample, attn, probe: move one output entry by this fraction (a kernel that is off); "
                   "warp, generate: see the module docs")
    p.add_argument("--yield-to", default=None, metavar="FILE",
                   help="between seeds, sleep while FILE exists (someone else is taking timings)")
    a = p.parse_args()
    sys.modules.setdefault("fuzz_ops", sys.modules[__name__])  # (the campaign modules import the rule from here)
    campaign = importlib.import_module(CAMPAIGNS[a.op]) if a.op in CAMPAIGNS else None
    if a.mutate:
        campaign.mutate(a.mutate) if campaign else _mutate_linear_attention(a.mutate)
    torch.set_num_threads(a.threads)
    fn = getattr(campaign, f"fuzz_{a.op}") if campaign else fuzz_la if a.op == "la" else fuzz_ce
    if a.targeted:
        fn = lambda seed, backend, device: fuzz_la(seed, backend, device, targeted=True)  # noqa: E731
    start, seed, runs, failures, paused = time.time(), a.seed, 0, 0, 0.0
    while True:
        paused += yield_to(a.yield_to)
        for backend in a.backends.split(","):
            try:
                msgs, cfg = fn(seed, backend, a.device)
            except Exception as exc:  # noqa: BLE001 - a crash is a finding: report it and go on
                if os.environ.get("FUZZ_TRACEBACK"):
                    traceback.print_exc()
                msgs, cfg = [f"{type(exc).__name__}: {exc}".splitlines()[0]], {}
            runs += 1
            if msgs:
                failures += 1
                print(f"FAIL seed {seed} backend {backend} {cfg}: {'; '.join(msgs)}", flush=True)
        seed += 1
        done = seed - a.seed >= a.count if a.count is not None else time.time() - start - paused >= a.seconds
        if done:
            break
    for name, n in sorted(getattr(campaign, "COUNTS", {}).items()):  # definitional differences, skips
        print(f"  {name}: {n}", flush=True)
    print(f"{runs} runs ({a.op}, seeds {a.seed}..{seed - 1}, backends {a.backends}, {a.device}): "
          f"{failures} failed; {time.time() - start - paused:.0f} s running, {paused:.0f} s paused", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
