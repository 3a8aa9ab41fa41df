"""Public linear-attention functions: argument checks, backend choice, state handling."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._dispatch import OpBackends, native_first, triton_kernel_ready
from .._validate import FLOAT_DTYPES, as_bool, as_float, as_int
from .feature_maps import FEATURE_MAPS, apply_feature_map, feature_dim
from .op import native_forward
from .reference import accumulation_dtype, linear_attention_chunked

MAX_HEAD_DIM = 256  # largest Dk / Dv the kernels keep on chip
State = tuple[torch.Tensor, torch.Tensor]
FeatureMap = str | Callable[[torch.Tensor], torch.Tensor] | None


def _torch_forward(q, k, v, mask, S0, z0, cu, feature_map, causal, normalize, eps):
    state = None if S0 is None else (S0, z0)
    out, (S, z) = linear_attention_chunked(
        q, k, v, causal=causal, feature_map=feature_map, normalize=normalize, eps=eps,
        key_padding_mask=mask, initial_state=state, cu_seqlens=cu,
    )
    return out, S, z


def _triton_forward(*args):
    from ..triton_kernels import linear_attention as tk

    return tk.linear_attention_fwd_triton(*args)


#: From this many tokens per sequence on, ``auto`` prefers the Triton kernels on CUDA.  Why, before
#: any GPU timing: the CUDA kernels multiply float32 in float32 on the CUDA cores (about
#: 67 TFLOP/s peak on an H100/H200) and the Triton kernels on the tensor cores (about 990 for
#: bf16); the CUDA kernels' 16-bit path (WMMA tensor cores) is plain next to the autotuned
#: Triton kernels (no asynchronous copies, state in shared memory), so Triton stays first until
#: the GPU benchmark (providers cuda, cuda_fp32, triton) says otherwise.  The chunk
#: algorithm does 4·D² + 4·C·D FLOPs per token and head (C = 64) against 4·D·2 bytes: at D = 128
#: the CUDA-core kernel is arithmetic-bound near 1 ms per 10^9 tokens·heads·D², several times the
#: memory floor the Triton kernels can approach.  For short inputs (the decoding step N = 1, short
#: prompts) launch cost dominates, and the CUDA kernels launch from C++ (about 5 µs each) where
#: the Triton kernels pay their Python launcher per kernel.  Provisional: to be replaced by the
#: measured crossing point (bench/gpu_check_linear_attention.py) in the first GPU session.
TRITON_MIN_TOKENS = 128


def _triton_has_fp64() -> bool:
    try:
        from ..triton_kernels._compat import HAS_FP64_DOT
    except ImportError:  # no triton
        return False
    return HAS_FP64_DOT


#: The chunked CUDA kernels' tiles (csrc/linear_attention/chunk_kernel.cuh): feature widths (F,
#: and Dv + 1 in the backward) up to 132 fit in 87 KiB of shared memory per block, which every
#: GPU kexue builds for allows; wider ones need 113 KiB, which sm_80 (163) and sm_90 (227) allow
#: and sm_86 / sm_89 (RTX 30xx / 40xx, A10, L4, L40: 99 KiB) do not: there "auto" takes Triton.
CUDA_NARROW_WIDTH = 132
CUDA_WIDE_SMEM_BYTES = 115408


@torch.compiler.assume_constant_result
def _smem_per_block_optin(index: int) -> int:
    """Bytes of shared memory a block may opt into on CUDA device ``index`` (0 if unknown)."""
    return int(getattr(torch.cuda.get_device_properties(index), "shared_memory_per_block_optin", 0) or 0)


def _cuda_kernels_fit(device: torch.device, width: int | None) -> bool:
    """Whether the CUDA kernels have a tile configuration for feature width ``width`` on ``device``
    (unknown width or device limit: assumed so, and the op says when not)."""
    if width is None or (width + 3) // 4 * 4 <= CUDA_NARROW_WIDTH:
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    optin = _smem_per_block_optin(index)
    return optin == 0 or optin >= CUDA_WIDE_SMEM_BYTES


def _auto_order(device: torch.device, info: dict) -> tuple[list[str], str]:
    if device.type != "cuda":
        return native_first(device, info), "the native kernel of this device"
    n, dtype = info.get("tokens"), info.get("dtype")
    if dtype == torch.float64:  # the CUDA kernels take float16/bfloat16/float32 only
        return (["triton", "torch"] if _triton_has_fp64() else ["torch"]), \
            "float64 on CUDA: the Triton kernels (float64 dots need triton >= 3.5), else the reference"
    if not _cuda_kernels_fit(device, info.get("width")):
        return ["triton", "torch"], (f"feature width {info['width']} > {CUDA_NARROW_WIDTH} on a GPU with less than "
                                     f"{CUDA_WIDE_SMEM_BYTES} B of shared memory per block: the Triton kernels")
    if n is not None and n >= TRITON_MIN_TOKENS:
        return ["triton", "cuda", "torch"], f"N={n} >= {TRITON_MIN_TOKENS}: tensor-core Triton kernels first"
    return ["cuda", "triton", "torch"], f"N={n} < {TRITON_MIN_TOKENS}: the CUDA kernels launch cheapest"


BACKENDS = OpBackends(
    name="linear_attention",
    impls={"torch": _torch_forward, "cpu": native_forward, "cuda": native_forward, "triton": _triton_forward},
    native_op="linear_attention_fwd",
    triton_ready=triton_kernel_ready("linear_attention", "linear_attention_fwd_triton"),
    auto=_auto_order,
)


def _check_tensor(name: str, t, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")


def _check_state(state, B: int, H: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (S (B, H, F, Dv), z (B, H, F)) pair of float tensors on one device."""
    if not (isinstance(state, (tuple, list)) and len(state) == 2):
        raise TypeError(f"state must be a pair (S, z), got {type(state).__name__}")
    S, z = state
    _check_tensor("state S", S, 4)
    _check_tensor("state z", z, 3)
    if not S.is_floating_point() or not z.is_floating_point():
        raise TypeError(f"state S and z must be float tensors, got {S.dtype} and {z.dtype}")
    if S.shape[:3] != z.shape or S.shape[:2] != (B, H):
        raise ValueError(f"state must be (S (B, H, F, Dv), z (B, H, F)) with (B, H) = {(B, H)}, got "
                         f"{tuple(S.shape)} and {tuple(z.shape)}")
    if S.device != z.device:
        raise ValueError(f"state S is on {S.device} but z is on {z.device}")
    return S, z


def _check_inputs(q, k, v, key_padding_mask, initial_state, cu_seqlens, eps, feature_dim_: int) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t, 4)
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"q must be float16, bfloat16, float32 or float64, got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has {q.dtype}: q, k, v must share a dtype")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    B, H, N, Dk = q.shape
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"batch sizes differ: q {B}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[2] != N or v.shape[2] != N:
        raise ValueError(f"sequence lengths differ: q {N}, k {k.shape[2]}, v {v.shape[2]}")
    if k.shape[3] != Dk:
        raise ValueError(f"k's head dim {k.shape[3]} differs from q's {Dk}")
    Hkv = k.shape[1]
    if v.shape[1] != Hkv:
        raise ValueError(f"v has {v.shape[1]} heads but k has {Hkv}")
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(f"q's heads ({H}) must be a multiple of k's and v's heads ({Hkv})")
    Dv = v.shape[3]
    if not 1 <= Dk <= MAX_HEAD_DIM:
        raise ValueError(f"q and k's head dim Dk={Dk} must be in [1, {MAX_HEAD_DIM}]")
    if not 1 <= Dv <= MAX_HEAD_DIM:
        raise ValueError(f"v's head dim Dv={Dv} must be in [1, {MAX_HEAD_DIM}]")
    nseq = B
    if cu_seqlens is not None:
        _check_tensor("cu_seqlens", cu_seqlens, 1)
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
        if cu_seqlens.device != q.device:
            raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but q is on {q.device}")
        if B != 1:
            raise ValueError(f"with cu_seqlens the sequences are packed along N: batch must be 1, got {B}")
        if cu_seqlens.shape[0] < 2:
            raise ValueError("cu_seqlens must hold at least 2 offsets (0 and N)")
        nseq = cu_seqlens.shape[0] - 1
        if cu_seqlens.device.type == "cpu" and not torch.compiler.is_compiling():
            c = cu_seqlens.tolist()
            if c[0] != 0 or c[-1] != N or any(b < a for a, b in zip(c, c[1:], strict=False)):
                raise ValueError(f"cu_seqlens must rise from 0 to N={N}, got {c}")
        else:  # CUDA tensors, compiled graphs: a device-side assert (never an out-of-bounds read)
            ok = (cu_seqlens[0] == 0) & (cu_seqlens[-1] == N) & (cu_seqlens[1:] >= cu_seqlens[:-1]).all()
            torch._assert_async(ok, f"kexue: cu_seqlens must rise from 0 to N={N}")
    if key_padding_mask is not None:
        _check_tensor("key_padding_mask", key_padding_mask, 2)
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask must be bool (True = ignore), got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (B, N):
            raise ValueError(f"key_padding_mask must have shape (B, N) = {(B, N)}, got {tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device} but q is on {q.device}")
    if initial_state is not None:
        if not (isinstance(initial_state, (tuple, list)) and len(initial_state) == 2):
            raise TypeError("initial_state must be a pair (S, z)")
        S0, z0 = initial_state
        _check_tensor("initial_state[0] (S)", S0, 4)
        _check_tensor("initial_state[1] (z)", z0, 3)
        want_S, want_z = (nseq, H, feature_dim_, Dv), (nseq, H, feature_dim_)
        if tuple(S0.shape) != want_S:
            raise ValueError(f"initial_state S must have shape (B, H, F, Dv) = {want_S}, got {tuple(S0.shape)}")
        if tuple(z0.shape) != want_z:
            raise ValueError(f"initial_state z must have shape (B, H, F) = {want_z}, got {tuple(z0.shape)}")
        for name, t in (("initial_state S", S0), ("initial_state z", z0)):
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
            if t.device != q.device:
                raise ValueError(f"{name} is on {t.device} but q is on {q.device}")


def _prepare(q, k, v, feature_map: FeatureMap):
    """Resolves the feature map: a callable is applied here (autograd through it) and "none" is passed on."""
    if feature_map is None:
        return q, k, "none"
    if callable(feature_map):
        return feature_map(q), feature_map(k), "none"
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, a callable or None; got {feature_map!r}")
    return q, k, feature_map


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    feature_map: FeatureMap = "elu",
    normalize: bool = True,
    eps: float = 1e-6,
    key_padding_mask: torch.Tensor | None = None,
    initial_state: State | None = None,
    return_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, State]:
    r"""Linear attention (Katharopoulos et al. 2020), causal or not.

    .. math::
        o_i = \frac{\sum_{j \in A(i)} (\phi(q_i)\cdot\phi(k_j))\, v_j}
                   {\sum_{j \in A(i)} \phi(q_i)\cdot\phi(k_j) + \varepsilon}

    A(i) is every key (``causal=False``) or the keys j <= i (``causal=True``), minus those where
    ``key_padding_mask[b, j]`` is True; ``normalize=False`` drops the denominator.  The state
    ``(S, z) = (Σ φ(k_j) v_jᵀ, Σ φ(k_j))`` can be passed in (``initial_state``: keys seen before
    token 0) and out (``return_state=True``), so a sequence processed in pieces with the state
    carried gives the same result as processed whole.

    Args:
        q: (B, H, N, Dk) queries.  k: (B, Hkv, N, Dk) keys; v: (B, Hkv, N, Dv) values, H % Hkv == 0
            (query head h reads kv head h // (H // Hkv)).  Any strides; float16/bfloat16/float32
            (float64 on the CPU), computed with float32 accumulation.
        causal: each query sees only keys at or before its position.
        feature_map: "elu" (elu+1), "relu", "softmax", "taylor" (φ(q)·φ(k) = 1 + cos), None (inputs
            already mapped) or a callable applied to q and k over the last dim.
        normalize / eps: divide by the attention mass + eps.
        key_padding_mask: (B, N) bool, True = ignore that key (as in nn.MultiheadAttention).
        initial_state: (S (B, H, F, Dv), z (B, H, F)), F the feature dim of φ.
        return_state: also return the final state (float32; float64 for float64 inputs).
        cu_seqlens: (num_seqs + 1,) int offsets of packed sequences along N (B must be 1); each
            sequence has its own state (states then have num_seqs rows).
        backend: "auto", "torch" (reference), "cpu", "cuda" or "triton".

    Returns:
        out (B, H, N, Dv) in q's dtype, and ``(S, z)`` when ``return_state``.

    Example:
        >>> import torch, kexue
        >>> q, k, v = (torch.randn(2, 4, 100, 32) for _ in range(3))
        >>> out, state = kexue.linear_attention(q, k, v, causal=True, return_state=True)
        >>> out.shape, state[0].shape
        (torch.Size([2, 4, 100, 32]), torch.Size([2, 4, 32, 32]))
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t, 4)
    eps = as_float("eps", eps, minimum=0.0)
    causal, normalize, return_state = (as_bool(n, f) for n, f in (("causal", causal), ("normalize", normalize),
                                                                  ("return_state", return_state)))
    q, k, fmap = _prepare(q, k, v, feature_map)
    F = feature_dim(fmap, q.shape[-1])
    _check_inputs(q, k, v, key_padding_mask, initial_state, cu_seqlens, eps, F)
    name, _ = BACKENDS.resolve(backend, q.device, _shape_info(q, v, F))
    S0 = z0 = None
    if initial_state is not None:
        acc = accumulation_dtype(q.dtype)
        S0, z0 = initial_state[0].to(acc), initial_state[1].to(acc)
    out, S, z = BACKENDS.impls[name](
        q, k, v, key_padding_mask, S0, z0, cu_seqlens, fmap, bool(causal), bool(normalize), float(eps)
    )
    return (out, (S, z)) if return_state else out


def _shape_info(q: torch.Tensor, v: torch.Tensor | None = None, F: int | None = None) -> dict:
    # width: the widest feature dim of the CUDA kernels' passes (F forward, Dv + 1 backward)
    width = None if v is None or F is None else max(F, v.shape[-1] + 1)
    return {"tokens": q.shape[2], "dtype": q.dtype, "width": width}


def explain(q: torch.Tensor, backend: str = "auto", **_: object) -> str:
    """Which backend ``linear_attention`` would run for these inputs, and why."""
    return BACKENDS.resolve(backend, q.device, _shape_info(q))[1]


linear_attention.explain = explain  # type: ignore[attr-defined]


def linear_attention_step(
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    state: State | None,
    *,
    feature_map: FeatureMap = "elu",
    normalize: bool = True,
    eps: float = 1e-6,
    backend: str = "auto",
) -> tuple[torch.Tensor, State]:
    r"""One causal decoding step: O(F·Dv) per token, the same math as :func:`linear_attention`.

    .. math:: S \leftarrow S + \phi(k_t) v_t^\top,\; z \leftarrow z + \phi(k_t),\;
              o_t = \frac{\phi(q_t)^\top S}{\phi(q_t)\cdot z + \varepsilon}

    Args:
        q_t: (B, H, Dk); k_t: (B, Hkv, Dk); v_t: (B, Hkv, Dv) for the new token.
        state: (S (B, H, F, Dv), z (B, H, F)) from the previous step or a prefix run with
            ``return_state=True``; None for an empty prefix.

    Returns:
        (o_t (B, H, Dv), new state).

    Example:
        >>> import torch, kexue
        >>> q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
        >>> _, st = kexue.linear_attention(q[:, :, :4], k[:, :, :4], v[:, :, :4], causal=True, return_state=True)
        >>> o, st = kexue.linear_attention_step(q[:, :, 4], k[:, :, 4], v[:, :, 4], st)
        >>> torch.allclose(o, kexue.linear_attention(q, k, v, causal=True)[:, :, 4], atol=1e-5)
        True
    """
    for name, t in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        _check_tensor(name, t, 3)
    if state is not None and not (isinstance(state, (tuple, list)) and len(state) == 2):
        raise TypeError(f"state must be a pair (S, z) or None, got {type(state).__name__}")
    out, new_state = linear_attention(
        q_t.unsqueeze(2), k_t.unsqueeze(2), v_t.unsqueeze(2), causal=True, feature_map=feature_map,
        normalize=normalize, eps=eps, initial_state=state, return_state=True, backend=backend,
    )
    return out.squeeze(2), new_state


def linear_attention_state(
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    num_heads: int | None = None,
    feature_map: FeatureMap = "elu",
    key_padding_mask: torch.Tensor | None = None,
) -> State:
    r"""The state of a key/value sequence, :math:`S = \sum_j \phi(k_j) v_j^\top`, :math:`z = \sum_j \phi(k_j)`.

    Args:
        k: (B, Hkv, N, Dk); v: (B, Hkv, N, Dv); num_heads: query heads H (a multiple of Hkv;
            default Hkv): the state is given per query head, as ``initial_state`` takes it.
        key_padding_mask: (B, N) bool, True = leave that key out.

    Returns:
        (S (B, H, F, Dv), z (B, H, F)) in float32 (float64 for float64 inputs).

    Example:
        >>> import torch, kexue
        >>> from kexue.linear_attention import linear_attention_state, linear_attention_readout
        >>> q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 50, 8), torch.randn(1, 2, 50, 4)
        >>> linear_attention_readout(q, linear_attention_state(k, v)).shape  # cross-attention
        torch.Size([1, 2, 3, 4])
    """
    _check_tensor("k", k, 4)
    _check_tensor("v", v, 4)
    if not k.is_floating_point() or v.dtype != k.dtype:
        raise TypeError(f"k and v must be float tensors of one dtype, got {k.dtype} and {v.dtype}")
    if v.device != k.device:
        raise ValueError(f"v is on {v.device} but k is on {k.device}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k (B, Hkv, N, Dk) and v (B, Hkv, N, Dv) must agree in B, Hkv, N; got {tuple(k.shape)} "
                         f"and {tuple(v.shape)}")
    if k.shape[1] == 0:
        raise ValueError("k must have at least one head")
    H = k.shape[1] if num_heads is None else as_int("num_heads", num_heads, minimum=1)
    if H % k.shape[1]:
        raise ValueError(f"num_heads ({H}) must be a multiple of k's heads ({k.shape[1]})")
    if key_padding_mask is not None:
        _check_tensor("key_padding_mask", key_padding_mask, 2)
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask must be bool (True = ignore), got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (k.shape[0], k.shape[2]):
            raise ValueError(f"key_padding_mask must have shape (B, N) = {(k.shape[0], k.shape[2])}, got "
                             f"{tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != k.device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device} but k is on {k.device}")
    fmap = "none" if feature_map is None else feature_map
    acc = accumulation_dtype(k.dtype)
    fk = fmap(k).to(acc) if callable(fmap) else apply_feature_map(k.to(acc), fmap)
    if key_padding_mask is not None:
        fk = fk.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    groups = H // k.shape[1]
    S = torch.einsum("bhnf,bhnd->bhfd", fk, v.to(acc)).repeat_interleave(groups, 1)
    return S, fk.sum(2).repeat_interleave(groups, 1)


def linear_attention_readout(
    q: torch.Tensor, state: State, *, feature_map: FeatureMap = "elu", normalize: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    r"""Queries read a fixed state: :math:`o_i = \phi(q_i)^\top S / (\phi(q_i) \cdot z + \varepsilon)`.

    Non-causal linear attention of q (B, H, Nq, Dk) against keys of any length summarised by
    ``state`` (from :func:`linear_attention_state`); returns (B, H, Nq, Dv) in q's dtype.
    """
    _check_tensor("q", q, 4)
    if not q.is_floating_point():
        raise TypeError(f"q must be a float tensor, got {q.dtype}")
    eps = as_float("eps", eps, minimum=0.0)
    normalize = as_bool("normalize", normalize)
    S, z = _check_state(state, q.shape[0], q.shape[1])
    if S.device != q.device:
        raise ValueError(f"state is on {S.device} but q is on {q.device}")
    fmap = "none" if feature_map is None else feature_map
    fq = fmap(q).to(S.dtype) if callable(fmap) else apply_feature_map(q.to(S.dtype), fmap)
    if fq.shape[-1] != S.shape[2]:
        raise ValueError(f"the feature map gives {fq.shape[-1]} features per query but the state has F = {S.shape[2]}: "
                         "use the feature_map the state was built with")
    num = fq @ S
    if normalize:
        num = num / ((fq * z[:, :, None]).sum(-1, keepdim=True) + eps)
    return num.to(q.dtype)
