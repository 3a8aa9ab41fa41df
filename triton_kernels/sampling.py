"""Triton kernels of kexue.sample / kexue.decoding.sampling_probs (the "triton" backend).

Ops (``torch.library.triton_op``, so torch.compile sees the kernels): ``kexue::sample_triton`` and
``kexue::sampling_probs_triton``, with the signatures of ``kexue::sample`` / ``kexue::sampling_probs``
(csrc/registration.cpp). Semantics: pyext/decoding/reference.py; the row algorithm every backend
follows is the comment at the top of csrc/sampling/sampling_cpu.cpp.

Kernel, grid (B,), one program per row streaming BLOCK-wide tiles (no sort, no V-sized scratch):
  * pass 1: m = max x over the logits x and a count of NaN / +inf;
  * top-k (FlashInfer-style pivot search, exact): bisection on the order-preserving int32 key of
    x for θ_k = the largest key t with #{key(x) >= t} >= k: 32 counting passes;
  * top-p: bisection on the bits of w = exp((x − m) / T) (``_gap``: no overflow for any T > 0;
    positive floats order as their bits) for
    τ = the largest t with Σ_{w >= t, a >= θ_k} w >= p·Z: 31 summing passes;
  * Z_K over K = {a >= θ_k, w >= τ} ∪ keep, then the inverse-CDF pass in token order (a tile's
    mass first, ``tl.cumsum`` only in the tile where the running mass crosses u·Z_K).
Cost per row: (3 + 32·[top-k] + 31·[top-p])·V loads and exps, O(1) extra memory, float32 math.
A bad row (NaN / +inf, or all −inf) gets token −1; the wrapper raises on CPU tensors (the
interpreter) and asserts on the device elsewhere (no host synchronisation).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from .._autograd import register_functorch_reference
from ..decoding.op import register_probs_autograd
from ..decoding.reference import sample_reference
from ._compat import INTERPRET, apply_interpreter_shims
from ._compat import launch as _launch

if INTERPRET:
    apply_interpreter_shims()
BLOCK = 128 if INTERPRET else 2048  # tile width: interpreter tests cover several tiles per row
WARPS = 8
KEY_BISECT_STEPS = 32  # int32 key range: 2^32 values
TAU_BISECT_STEPS = 31  # bits of w in [0, 1.0]: < 2^30 + 1 values
ONE_BITS = 0x3F800000  # bits of 1.0f


@triton.jit
def _key(a):
    """Order-preserving int32 key of a float32 (negative floats have their magnitude bits flipped;
    -0.0 is +0.0 first: equal floats, equal keys, so a zero tied with θ_k is kept)."""
    b = tl.where(a == 0.0, 0.0, a).to(tl.int32, bitcast=True)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


@triton.jit
def _logit_block(row, c0, offs, V, s1):
    """Columns c0 + offs of a row, their in-range mask, and the logits in float32 (-inf past V)."""
    cols = c0 + offs
    msk = cols < V
    a = tl.load(row + cols.to(tl.int64) * s1, mask=msk, other=-float("inf")).to(tl.float32)
    return cols, msk, a


@triton.jit
def _gap(a, m, mT, T):
    """(a − m) / T without overflow (reference.py's scaled_gap): a / T − m / T (mT = m / T) only where
    a − m overflows and T >= 1, else (a − m) / T; 0 at the max (T may round to 0 in float32), −inf
    for a masked token (T above float32's range rounds to inf, and −inf / inf is NaN)."""
    d = a - m
    overflowed = tl.where(T >= 1.0, a / T - mT, d / T)
    g = tl.where(d == -float("inf"), overflowed, tl.where(a == m, 0.0, d / T))
    return tl.where(a == -float("inf"), -float("inf"), g)


@triton.jit
def _sample_kernel(x_ptr, s0, s1, V, t_ptr, k_ptr, p_ptr, keep_ptr, K, u_ptr, tok_ptr, probs_ptr,
                   HAS_PROBS: tl.constexpr, KEY_STEPS: tl.constexpr, TAU_STEPS: tl.constexpr,
                   ONE: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    row = x_ptr + r * s0
    T = tl.load(t_ptr + r).to(tl.float32)
    k = tl.load(k_ptr + r)
    p = tl.load(p_ptr + r).to(tl.float32)
    offs = tl.arange(0, BLOCK)
    # pass 1: max and bad values
    m = -float("inf")
    nbad = 0
    for c0 in range(0, V, BLOCK):
        cols, msk, a = _logit_block(row, c0, offs, V, s1)
        nbad += tl.sum(tl.where(msk & ((a != a) | (a == float("inf"))), 1, 0), 0)
        m = tl.maximum(m, tl.max(a, 0))
    bad = (nbad > 0) | (m == -float("inf"))
    m = tl.where(bad, 0.0, m)
    mT = m / T
    # top-k: θ = the k-th largest key (bisection on [lo, hi): #{key >= lo} >= k > #{key >= hi})
    use_k = (k > 0) & (k < V)
    lo = tl.full((), -2147483648, tl.int64)
    hi = _key(m).to(tl.int64) + 1
    for _ in range(0, tl.where(use_k, KEY_STEPS, 0)):
        mid = lo + (hi - lo) // 2
        cnt = 0
        for c0 in range(0, V, BLOCK):
            cols, msk, a = _logit_block(row, c0, offs, V, s1)
            cnt += tl.sum(tl.where(msk & (_key(a).to(tl.int64) >= mid), 1, 0), 0)
        ge = cnt >= k
        lo = tl.where(ge, mid, lo)
        hi = tl.where(ge, hi, mid)
    theta = lo
    # Z over the top-k candidates
    Z = 0.0
    for c0 in range(0, V, BLOCK):
        cols, msk, a = _logit_block(row, c0, offs, V, s1)
        Z += tl.sum(tl.where(msk & (_key(a).to(tl.int64) >= theta), tl.exp(_gap(a, m, mT, T)), 0.0), 0)
    # top-p: τ bits = the largest t with Σ_{bits(w) >= t} w >= p·Z (bisection on [tlo, thi))
    target = p * Z
    tlo = tl.full((), 0, tl.int32)
    thi = tl.full((), ONE + 1, tl.int32)
    for _ in range(0, tl.where(p < 1.0, TAU_STEPS, 0)):
        mid = tlo + (thi - tlo) // 2
        s = 0.0
        for c0 in range(0, V, BLOCK):
            cols, msk, a = _logit_block(row, c0, offs, V, s1)
            w = tl.where(msk & (_key(a).to(tl.int64) >= theta), tl.exp(_gap(a, m, mT, T)), 0.0)
            s += tl.sum(tl.where(w.to(tl.int32, bitcast=True) >= mid, w, 0.0), 0)
        ge = s >= target
        tlo = tl.where(ge, mid, tlo)
        thi = tl.where(ge, thi, mid)
    tau = tlo
    # Z_K over K = candidates with w >= τ, plus the keep ids (own weight)
    ZK = 0.0
    for c0 in range(0, V, BLOCK):
        cols, msk, a = _logit_block(row, c0, offs, V, s1)
        e = tl.where(msk, tl.exp(_gap(a, m, mT, T)), 0.0)
        kept = (_key(a).to(tl.int64) >= theta) & (e.to(tl.int32, bitcast=True) >= tau)
        for c in range(0, K):
            kept = kept | (cols == tl.load(keep_ptr + r * K + c))
        ZK += tl.sum(tl.where(kept, e, 0.0), 0)
    # inverse CDF in token order (and the probabilities)
    goal = tl.load(u_ptr + r).to(tl.float32) * ZK
    cum = 0.0
    tok = -1
    last = -1
    for c0 in range(0, V, BLOCK):
        cols, msk, a = _logit_block(row, c0, offs, V, s1)
        e = tl.where(msk, tl.exp(_gap(a, m, mT, T)), 0.0)
        kept = (_key(a).to(tl.int64) >= theta) & (e.to(tl.int32, bitcast=True) >= tau)
        for c in range(0, K):
            kept = kept | (cols == tl.load(keep_ptr + r * K + c))
        wk = tl.where(kept, e, 0.0)
        if HAS_PROBS:
            tl.store(probs_ptr + r * V + cols, wk / ZK, mask=msk)
        bsum = tl.sum(wk, 0)
        cs = tl.cumsum(wk, 0)
        hit = tl.min(tl.where((cum + cs > goal) & (wk > 0), cols, V), 0)
        tok = tl.where((tok < 0) & (hit < V), hit, tok)
        last = tl.maximum(last, tl.max(tl.where(wk > 0, cols, -1), 0))
        cum += bsum
    tok = tl.where(tok < 0, last, tok)  # (rounding: u·Z_K at the very top)
    tl.store(tok_ptr + r, tl.where(bad, -1, tok).to(tl.int64))


def _launch_rows(logits, temperature, top_k, top_p, keep, uniform, tokens, probs) -> None:
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"backend='triton' takes float16, bfloat16 or float32 logits, got {logits.dtype}")
    B, V = logits.shape
    if B == 0:
        return
    _launch(_sample_kernel, (B,), logits, logits.stride(0), logits.stride(1), V, temperature, top_k, top_p, keep,
            keep.shape[1], uniform, tokens, probs if probs is not None else tokens, HAS_PROBS=probs is not None,
            KEY_STEPS=KEY_BISECT_STEPS, TAU_STEPS=TAU_BISECT_STEPS, ONE=ONE_BITS, BLOCK=BLOCK, num_warps=WARPS)


@triton_op("kexue::sample_triton", mutates_args=())
def sample_triton(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                  keep: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    tokens = logits.new_empty((logits.shape[0],), dtype=torch.int64)
    _launch_rows(logits, temperature, top_k, top_p, keep, uniform, tokens, None)
    return tokens


@triton_op("kexue::sampling_probs_triton", mutates_args=())
def sampling_probs_triton(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                          top_p: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    B = logits.shape[0]
    probs = logits.new_empty(logits.shape, dtype=torch.float32)
    tokens = logits.new_empty((B,), dtype=torch.int64)
    uniform = torch.zeros(B, dtype=torch.float64, device=logits.device)
    _launch_rows(logits, temperature, top_k, top_p, keep, uniform, tokens, probs)
    return probs


register_probs_autograd("kexue::sampling_probs_triton", out_dtype=lambda dtype: torch.float32)
# (a triton_op gets an autograd kernel that functorch refuses; under torch.func draw by the reference,
# as kexue.sample does there)
register_functorch_reference("kexue::sample_triton", sample_reference, differentiable=False)


def _raise_bad_rows(tokens: torch.Tensor) -> None:
    if tokens.device.type == "cpu" and not torch.compiler.is_compiling():
        bad = tokens < 0
        if bool(bad.any()):
            r = int(bad.nonzero()[0, 0])
            raise ValueError(f"logits row {r} contains NaN or +inf, or is all -inf (only -inf, a masked token, "
                             "is allowed, and some token must be unmasked)")
    elif not torch.compiler.is_compiling():
        torch._assert_async((tokens >= 0).all(), "kexue.sample: a logits row has NaN/+inf or is all -inf")


def sample_triton_checked(logits, temperature, top_k, top_p, keep, uniform):
    tokens = torch.ops.kexue.sample_triton(logits, temperature, top_k, top_p, keep, uniform)
    _raise_bad_rows(tokens)
    return tokens


def sampling_probs_triton_checked(logits, temperature, top_k, top_p, keep):
    probs = torch.ops.kexue.sampling_probs_triton(logits, temperature, top_k, top_p, keep)
    if torch.compiler.is_compiling():
        return probs
    if logits.device.type == "cpu":
        bad = torch.isnan(logits) | torch.isposinf(logits)
        if bool(bad.any()) or bool(torch.isneginf(logits).all(dim=1).any()):
            from ..decoding.api import check_finite_rows

            check_finite_rows(logits)
    else:  # a bad row's probabilities are NaN: a device-side assertion, no host synchronisation
        torch._assert_async(torch.isfinite(probs).all(),
                            "kexue.sampling_probs: a logits row has NaN/+inf or is all -inf")
    return probs
