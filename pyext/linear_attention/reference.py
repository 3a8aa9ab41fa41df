"""Plain-PyTorch linear attention: the definition every kernel is tested against.

With a = φ(q_i), b_j = φ(k_j) (b_j = 0 where key_padding_mask[b, j] is True) and A(i) the keys
that query i sees (all of them, or j <= i when causal)::

    num_i = Σ_{j∈A(i)} (a_i · b_j) v_j  + a_i S0        (causal or not)
    den_i = Σ_{j∈A(i)}  a_i · b_j       + a_i · z0
    out_i = num_i / (den_i + eps)        (normalize=True)   or   num_i   (normalize=False)

and the final state is S = S0 + Σ_j b_j v_jᵀ, z = z0 + Σ_j b_j.  Query head h reads kv head
h // (H // Hkv) (grouped-query attention).  With ``cu_seqlens`` the inputs are packed
sequences (B = 1) and each sequence runs on its own state.

Two implementations, the same function:
  * :func:`linear_attention_chunked` — the "torch" backend: chunks of C tokens, per chunk
    ``tril(A Bᵀ) V' + A S'`` and ``S' += Bᵀ V'``, where V' = [V, 1] carries the normaliser as one
    more value column.  O(N·C·(F+Dv) + N·F·Dv) work, O(B·H·F·Dv) state.
  * :func:`linear_attention_quadratic` — the N×N matrix written out; the test oracle.
Both compute in float32 (float64 for float64 inputs) and return ``out`` in the input dtype.
"""

from __future__ import annotations

import torch

from .feature_maps import apply_feature_map

DEFAULT_CHUNK = 64


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mapped(q, k, v, feature_map, key_padding_mask):
    """φ(q), φ(k) (masked keys zeroed), v expanded to q's heads, all in the accumulation dtype."""
    acc = accumulation_dtype(q.dtype)
    fq = apply_feature_map(q.to(acc), feature_map)
    fk = apply_feature_map(k.to(acc), feature_map)
    vv = v.to(acc)
    if key_padding_mask is not None:
        fk = fk.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        fk = fk.repeat_interleave(groups, dim=1)
        vv = vv.repeat_interleave(groups, dim=1)
    return fq, fk, vv


def _round16(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x rounded to the precision of a 16-bit dtype, in x's dtype and range: float16 with the
    tensor first scaled by a power of two that puts max |x| in [2^13, 2^14) (exact), so nothing
    overflows or underflows float16's range, as in a range-safe float16 kernel."""
    if dtype == torch.float16 and x.numel():
        m = x.detach().abs().amax()
        if bool(torch.isfinite(m)) and bool(m > 0):
            s = torch.exp2(14.0 - torch.frexp(m).exponent.to(x.dtype))
            return (x * s).to(dtype).to(x.dtype) / s
    return x.to(dtype).to(x.dtype)


class _Round16(torch.autograd.Function):
    """_round16 forward, and the same rounding of the gradient backward (16-bit matmuls round
    their outputs in both passes)."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = dtype
        return _round16(x, dtype)

    @staticmethod
    def backward(ctx, grad):
        return _round16(grad, ctx.dtype), None


def _rounding(compute_dtype: torch.dtype | None):
    """The rounding applied after each step of the quadratic form: none, or to a 16-bit dtype."""
    if compute_dtype in (torch.float16, torch.bfloat16):
        return lambda x: _Round16.apply(x, compute_dtype)
    if compute_dtype not in (None, torch.float32, torch.float64):
        raise TypeError(f"compute_dtype must be None, float16, bfloat16, float32 or float64, got {compute_dtype}")
    return lambda x: x


def _initial(fq, v_aug, initial_state):
    """S' = [S0, z0] of shape (B, H, F, Dv + 1) for V' = [V, 1]; zeros when no initial state."""
    B, H, _, F = fq.shape
    if initial_state is None:
        return fq.new_zeros(B, H, F, v_aug.shape[-1])
    S0, z0 = initial_state
    return torch.cat([S0.to(fq.dtype), z0.to(fq.dtype)[..., None]], dim=-1)


def _finish(num_aug, S_aug, normalize, eps, dtype):
    Dv = num_aug.shape[-1] - 1
    num, den = num_aug[..., :Dv], num_aug[..., Dv:]
    out = num / (den + eps) if normalize else num
    return out.to(dtype), (S_aug[..., :Dv], S_aug[..., Dv])


def _per_sequence(fn, q, k, v, key_padding_mask, initial_state, cu_seqlens, **kw):
    """Runs ``fn`` on each packed sequence of ``cu_seqlens`` with its own state."""
    bounds = cu_seqlens.tolist()
    outs, Ss, zs = [], [], []
    for s in range(len(bounds) - 1):
        lo, hi = bounds[s], bounds[s + 1]
        st = None if initial_state is None else (initial_state[0][s : s + 1], initial_state[1][s : s + 1])
        m = None if key_padding_mask is None else key_padding_mask[:, lo:hi]
        o, (S, z) = fn(q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], key_padding_mask=m, initial_state=st, **kw)
        outs.append(o)
        Ss.append(S)
        zs.append(z)
    return torch.cat(outs, dim=2), (torch.cat(Ss, dim=0), torch.cat(zs, dim=0))


def linear_attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    feature_map: str = "elu",
    normalize: bool = True,
    eps: float = 1e-6,
    key_padding_mask: torch.Tensor | None = None,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Chunked reference (the "torch" backend).  Returns ``out, (S, z)``; see the module doc."""
    kw = dict(causal=causal, feature_map=feature_map, normalize=normalize, eps=eps, chunk_size=chunk_size)
    if cu_seqlens is not None:
        return _per_sequence(linear_attention_chunked, q, k, v, key_padding_mask, initial_state, cu_seqlens, **kw)
    fq, fk, vv = _mapped(q, k, v, feature_map, key_padding_mask)
    vv = torch.cat([vv, torch.ones_like(vv[..., :1])], dim=-1)  # V' = [V, 1]
    S = _initial(fq, vv, initial_state)
    N = q.shape[2]
    if not causal:
        S = S + fk.transpose(-1, -2) @ vv
        return _finish(fq @ S, S, normalize, eps, q.dtype)
    chunks = []
    for lo in range(0, N, chunk_size):
        hi = min(lo + chunk_size, N)
        qc, kc, vc = fq[:, :, lo:hi], fk[:, :, lo:hi], vv[:, :, lo:hi]
        scores = torch.tril(qc @ kc.transpose(-1, -2))  # intra-chunk, j <= i
        chunks.append(qc @ S + scores @ vc)  # inter-chunk from the carried state
        S = S + kc.transpose(-1, -2) @ vc
    num = torch.cat(chunks, dim=2) if chunks else fq @ S  # N = 0: empty, and still in the graph
    return _finish(num, S, normalize, eps, q.dtype)


def linear_attention_quadratic(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    feature_map: str = "elu",
    normalize: bool = True,
    eps: float = 1e-6,
    key_padding_mask: torch.Tensor | None = None,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    cu_seqlens: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The N×N form of the definition (test oracle; O(N²) memory).

    ``compute_dtype``: None (float32 for 16-bit inputs, float64 for float64: each product exact
    to that precision) or a 16-bit dtype: φ(q), φ(k), the initial state, the scores, the two
    products of the numerator (normaliser column included) and the final state are each rounded
    to that dtype's precision (float16 range-safe, see ``_round16``), and so are the gradients
    flowing back through them: the plain composite in 16 bits, the baseline of
    flash-attention's error rule for kernels whose tensor-core operands are 16-bit."""
    kw = dict(causal=causal, feature_map=feature_map, normalize=normalize, eps=eps, compute_dtype=compute_dtype)
    if cu_seqlens is not None:
        return _per_sequence(linear_attention_quadratic, q, k, v, key_padding_mask, initial_state, cu_seqlens, **kw)
    rnd = _rounding(compute_dtype)
    fq, fk, vv = _mapped(q, k, v, feature_map, key_padding_mask)
    fq, fk = rnd(fq), rnd(fk)
    vv = torch.cat([vv, torch.ones_like(vv[..., :1])], dim=-1)
    S0 = rnd(_initial(fq, vv, initial_state))
    scores = fq @ fk.transpose(-1, -2)
    if causal:
        scores = torch.tril(scores)
    scores = rnd(scores)
    num = rnd(scores @ vv) + rnd(fq @ S0)
    S = rnd(S0 + fk.transpose(-1, -2) @ vv)
    return _finish(num, S, normalize, eps, q.dtype)
