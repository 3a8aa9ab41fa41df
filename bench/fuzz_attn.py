"""``--op attn`` of bench/fuzz_ops.py: the attribution attention op ``kexue::attention_qkv_fwd`` /
``_bwd`` (csrc/attribution/attention_cpu.cpp, entry kexue.attribution.op.attention_qkv) against a
float64 composite written here from the docstring.

Fused rows qkv (R, L, 3D), D = heads·dh: q = qkv[..., :D], k = qkv[..., D:2D], v = qkv[..., 2D:],
head h in columns [h·dh, (h+1)·dh) of each; P_h = softmax(q_h k_hᵀ · scale) (R, heads, L, L),
out[r, :, h·dh:(h+1)·dh] = P_h v_h.  Checked: out and probs of the forward; through the op's
autograd (the backward kernel) d qkv of ⟨out, G⟩ + ⟨probs, G_P⟩ (G_P absent in half the draws:
the integrand's case) and ``attention_qkv_backward`` (the integrand's direct call).  Random R, L,
heads, dh with 1 and odd sizes, scales from 0 to large (saturated softmax), float32 and float64
(the dtypes the op takes), contiguous and strided qkv (a transposed (L, R) layout, a slice of
wider rows, a step).  The op has no mask.  Rule: fuzz_ops.py's (the composite in the input's
dtype is the baseline).
"""

from __future__ import annotations

import random

import torch
from fuzz_ops import ROUNDING_SAMPLES, ROUNDING_UNIT, _signs, check, rounding_model, scale_of

from kexue.attribution import op

FLOOR = {torch.float32: 1e-5, torch.float64: 1e-12}  # floors, times the values' scale


def composite(qkv: torch.Tensor, heads: int, scale: float, rnd=None,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, probs) from the docstring, in qkv's dtype; differentiable.  ``rnd`` (fuzz_ops'
    rounding_model at float32's unit, on float64 tensors): the rounding of the scores, the
    probabilities and the outputs (and of their gradients) in the standard model, plus √dh units
    of each score's absolute sum |scale| Σ_d |q_d k_d| with random signs (the typical rounding
    error of a dh-term dot product: √n·u·Σ|x_i y_i|, Higham & Mary's probabilistic bound)."""
    R, L, C = qkv.shape
    D = C // 3
    dh = D // heads
    gen = torch.Generator().manual_seed(seed)
    outs, probs = [], []
    for h in range(heads):
        cols = slice(h * dh, (h + 1) * dh)
        q, k, v = qkv[..., :D][..., cols], qkv[..., D:2 * D][..., cols], qkv[..., 2 * D:][..., cols]
        s = torch.einsum("rid,rjd->rij", q, k) * scale
        if rnd is not None:
            size = torch.einsum("rid,rjd->rij", q.abs(), k.abs()).detach() * abs(scale) * dh**0.5
            size = size * ROUNDING_UNIT[torch.float32]
            s = rnd(s + size * _signs(s, gen))
        p = torch.softmax(s, dim=-1)
        p = rnd(p) if rnd is not None else p
        o = torch.einsum("rij,rjd->rid", p, v)
        outs.append(rnd(o) if rnd is not None else o)
        probs.append(p)
    return torch.cat(outs, dim=-1), torch.stack(probs, dim=1)


def _config(rng: random.Random) -> dict:
    dh = rng.choice([1, 2, 3, rng.randint(1, 70), 64])
    return dict(R=rng.choice([1, 2, rng.randint(1, 5)]), L=rng.choice([1, 2, 3, rng.randint(1, 70)]),
                heads=rng.choice([1, 2, 3, rng.randint(1, 12)]), dh=dh,
                scale=rng.choice([dh**-0.5, rng.uniform(-2, 2), 0.0, 10.0]), size=rng.choice([0.3, 1.0, 3.0]),
                dtype=rng.choice([torch.float32] * 3 + [torch.float64]),
                strided=rng.choice([None, None, "t", "wide", "step"]), grad_probs=rng.random() < 0.5)


def _qkv(c: dict) -> torch.Tensor:
    R, L, C = c["R"], c["L"], 3 * c["heads"] * c["dh"]
    if c["strided"] == "t":
        x = torch.randn(L, R, C).transpose(0, 1)
    elif c["strided"] == "wide":
        x = torch.randn(R, L, C + 5)[..., 2:C + 2]
    elif c["strided"] == "step":
        x = torch.randn(R, 2 * L, C)[:, ::2]
    else:
        x = torch.randn(R, L, C)
    return (x * c["size"]).to(c["dtype"])


def fuzz_attn(seed: int, backend: str, device: str) -> tuple[list[str], dict]:
    """``backend``: "cpu" (the kernel; the op has no other) or "torch" (the op module's composite
    route, kexue.attribution.reference)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    c = _config(rng)
    qkv = _qkv(c).to(device)
    heads, scale, dtype = c["heads"], c["scale"], c["dtype"]
    msgs: list[str] = []
    x, x64, xl = (t.requires_grad_() for t in (qkv.detach().clone(), qkv.detach().double(), qkv.detach().clone()))
    if backend == "torch":
        from kexue.attribution.reference import attention_qkv_reference as fwd
    else:
        fwd = op.attention_qkv
        if not op._kernel_runs(qkv):
            return [f"the kernel does not take {dtype} on {device}"], c
    out, probs = fwd(x, heads, scale)
    o64, p64 = composite(x64, heads, scale)
    ol, pl = composite(xl, heads, scale)
    if out.shape != o64.shape or probs.shape != p64.shape or out.dtype != dtype or probs.dtype != dtype:
        return [f"shapes/dtypes: out {tuple(out.shape)} {out.dtype}, probs {tuple(probs.shape)} {probs.dtype}"], c
    # float32: also the rounding model (a saturated softmax's gradient is ill-conditioned, and the
    # composite's own error there is luck: the la campaign's taylor argument)
    pert = []
    for j in range(ROUNDING_SAMPLES if dtype == torch.float32 else 0):
        xm = qkv.detach().double().requires_grad_()
        pert.append((xm, composite(xm, heads, scale, rounding_model(ROUNDING_UNIT[dtype], seed * 64 + j), seed + j)))
    check("out", out, o64, ol, FLOOR[dtype] * scale_of(o64), msgs, [m[1][0] for m in pert])
    check("probs", probs, p64, pl, FLOOR[dtype], msgs, [m[1][1] for m in pert])
    go = torch.randn(o64.shape, dtype=torch.float64)
    gp = torch.randn(p64.shape, dtype=torch.float64) if c["grad_probs"] else None

    def grad(o, p, leaf):
        loss = (o.double() * go).sum() + ((p.double() * gp).sum() if gp is not None else 0)
        return torch.autograd.grad(loss, leaf)[0]

    g64 = grad(o64, p64, x64)
    gm = [grad(m[1][0], m[1][1], m[0]) for m in pert]
    floor = FLOOR[dtype] * scale_of(g64)
    check("dqkv", grad(out, probs, x), g64, grad(ol, pl, xl), floor, msgs, gm)
    if backend != "torch" and gp is None:  # the integrand's direct call, given the forward's probs
        direct = op.attention_qkv_backward(go.to(dtype), qkv, probs.detach(), heads, scale)
        xl2 = qkv.detach().clone().requires_grad_()
        check("attention_qkv_backward", direct, g64, grad(*composite(xl2, heads, scale), xl2), floor, msgs, gm)
    return msgs, c


def mutate(rel: float) -> None:
    """op.attention_qkv with the last entry of ``out`` moved by ``rel`` × its largest |entry|
    (at least 1): the campaign must report it."""
    right = op.attention_qkv

    def off(qkv, heads, scale):
        out, probs = right(qkv, heads, scale)
        out = out.clone()
        out.view(-1)[-1] += rel * max(1.0, float(out.detach().abs().max()))
        return out, probs

    op.attention_qkv = off
