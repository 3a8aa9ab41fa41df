"""nn.Module drop-in for nn.MultiheadAttention backed by kexue.linear_attention."""

from __future__ import annotations

import torch
from torch import nn

from .._validate import as_bool, as_float, as_int, check_values
from ..linear_attention.api import FeatureMap, linear_attention, linear_attention_readout, linear_attention_state


class LinearAttention(nn.Module):
    r"""Multi-head linear attention with the call of ``nn.MultiheadAttention``.

    ``attn(query, key, value, key_padding_mask=None, need_weights=False)`` returns
    ``(out, None)``: projections q = x W_q, k = x W_k, v = x W_v split into heads, then
    :func:`kexue.linear_attention` (no softmax scaling: the feature map takes its place), then
    the output projection.  ``num_kv_heads < num_heads`` gives grouped-query attention.
    Cross-attention (key length != query length) is supported when ``causal=False``.

    Example:
        >>> import torch, kexue
        >>> attn = kexue.nn.LinearAttention(64, 4, causal=True)
        >>> x = torch.randn(2, 10, 64)
        >>> out, weights = attn(x, x, x)
        >>> out.shape, weights
        (torch.Size([2, 10, 64]), None)
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        causal: bool = False,
        feature_map: FeatureMap = "elu",
        bias: bool = True,
        batch_first: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        dropout: float = 0.0,
        eps: float = 1e-6,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        embed_dim = as_int("embed_dim", embed_dim, minimum=1)
        num_heads = as_int("num_heads", num_heads, minimum=1)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        num_kv_heads = num_heads if num_kv_heads is None else as_int("num_kv_heads", num_kv_heads, minimum=1)
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        kdim = None if kdim is None else as_int("kdim", kdim, minimum=1)
        vdim = None if vdim is None else as_int("vdim", vdim, minimum=1)
        if as_float("dropout", dropout, minimum=0.0, maximum=1.0):
            raise ValueError("dropout must be 0: linear attention forms no attention weights to drop")
        eps = as_float("eps", eps, minimum=0.0)
        causal, bias, batch_first = (as_bool(n, f) for n, f in (("causal", causal), ("bias", bias),
                                                                ("batch_first", batch_first)))
        f = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.causal, self.feature_map, self.batch_first, self.eps, self.backend = (
            causal, feature_map, batch_first, eps, backend)
        kv_dim = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **f)
        self.k_proj = nn.Linear(self.kdim, kv_dim, bias=bias, **f)
        self.v_proj = nn.Linear(self.vdim, kv_dim, bias=bias, **f)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **f)

    @classmethod
    def from_multihead_attention(cls, mha: nn.MultiheadAttention, **kwargs) -> LinearAttention:
        """A LinearAttention with the projection weights of ``mha`` (same embed_dim, heads, kdim,
        vdim, bias, batch_first, device and dtype).

        Options linear attention cannot honour are refused (``ValueError``), never dropped:
        ``dropout > 0`` (no attention weights to drop), ``add_bias_kv`` (a learned extra key and
        value) and ``add_zero_attn`` (an extra zero key, which φ maps to a nonzero feature).
        Note that the attention itself changes (a feature map in place of softmax(qkᵀ/√d)): the
        weights are a starting point for fine-tuning, not the same function."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be a torch.nn.MultiheadAttention, got {type(mha).__name__}")
        if mha.dropout:
            raise ValueError(f"mha has dropout={mha.dropout}: linear attention forms no attention weights to drop "
                             "(set mha.dropout = 0.0 to convert)")
        if mha.bias_k is not None or mha.bias_v is not None:
            raise ValueError("mha has add_bias_kv=True (a learned extra key and value): LinearAttention cannot "
                             "honour it")
        if mha.add_zero_attn:
            raise ValueError("mha has add_zero_attn=True (an extra zero key): LinearAttention cannot honour it")
        for name in ("embed_dim", "num_heads", "kdim", "vdim", "bias", "device", "dtype", "dropout"):
            if name in kwargs:
                raise TypeError(f"from_multihead_attention takes {name} from mha; it cannot be overridden")
        has_bias = mha.in_proj_bias is not None
        if has_bias != (mha.out_proj.bias is not None):
            raise ValueError("mha has an input-projection bias but no output-projection bias (or the reverse): "
                             "LinearAttention has one bias flag for both")
        kwargs.setdefault("batch_first", mha.batch_first)
        p = next(mha.parameters())
        new = cls(mha.embed_dim, mha.num_heads, bias=has_bias, kdim=mha.kdim, vdim=mha.vdim, device=p.device,
                  dtype=p.dtype, **kwargs)
        if new.num_kv_heads != new.num_heads:
            raise ValueError("from_multihead_attention converts full multi-head attention: num_kv_heads must equal "
                             "num_heads")
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                wq, wk, wv = mha.in_proj_weight.chunk(3)
            else:
                wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            for lin, w in ((new.q_proj, wq), (new.k_proj, wk), (new.v_proj, wv)):
                lin.weight.copy_(w)
            if has_bias:
                for lin, b in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_bias.chunk(3), strict=True):
                    lin.bias.copy_(b)
                new.out_proj.bias.copy_(mha.out_proj.bias)
            new.out_proj.weight.copy_(mha.out_proj.weight)
        return new

    def _check_inputs(self, query, key, value, key_padding_mask) -> bool:
        """torch.nn.MultiheadAttention's shape contract; returns True for unbatched input."""
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
        if query.dim() not in (2, 3):
            raise ValueError(f"query must be 3-D (batched) or 2-D (unbatched), got shape {tuple(query.shape)}")
        unbatched = query.dim() == 2
        for name, t in (("key", key), ("value", value)):
            if t.dim() != query.dim():
                raise ValueError(f"{name} must be {query.dim()}-D like query ({'un' if unbatched else ''}batched), "
                                 f"got shape {tuple(t.shape)}")
            if t.device != query.device:
                raise ValueError(f"{name} is on {t.device} but query is on {query.device}")
        for name, t, dim in (("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)):
            if t.shape[-1] != dim:
                raise ValueError(f"{name}'s last dim must be {dim}, got shape {tuple(t.shape)}")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"key and value must have the same batch and sequence dims, got {tuple(key.shape)} and "
                             f"{tuple(value.shape)}")
        if not unbatched:
            b = 0 if self.batch_first else 1
            if key.shape[b] != query.shape[b]:
                raise ValueError(f"key's batch size {key.shape[b]} differs from query's {query.shape[b]}")
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, torch.Tensor):
                raise TypeError(f"key_padding_mask must be a torch.Tensor, got {type(key_padding_mask).__name__}")
            S = key.shape[0] if unbatched else key.shape[1 if self.batch_first else 0]
            want = (S,) if unbatched else (key.shape[0 if self.batch_first else 1], S)
            if tuple(key_padding_mask.shape) != want:
                raise ValueError(f"key_padding_mask must have shape {want} (batch, key length), got "
                                 f"{tuple(key_padding_mask.shape)}")
            if key_padding_mask.dtype != torch.bool and not key_padding_mask.is_floating_point():
                raise TypeError(f"key_padding_mask must be bool or float, got {key_padding_mask.dtype}")
            if key_padding_mask.device != query.device:
                raise ValueError(f"key_padding_mask is on {key_padding_mask.device} but query is on {query.device}")
        return unbatched

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        if need_weights:
            raise ValueError("need_weights must be False: linear attention never forms the attention matrix")
        key = query if key is None else key
        value = key if value is None else value
        unbatched = self._check_inputs(query, key, value, key_padding_mask)
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        B, Nq, _ = query.shape
        Nk = key.shape[1]
        causal = self.causal or as_bool("is_causal", is_causal)
        if attn_mask is not None:
            _check_causal_mask(attn_mask, Nq, Nk, self.num_heads * B)
            causal = True
        if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
            key_padding_mask = _float_padding_mask(key_padding_mask)
        q = self.q_proj(query).view(B, Nq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(B, Nk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(B, Nk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if Nq == Nk:
            out = linear_attention(q, k, v, causal=causal, feature_map=self.feature_map, eps=self.eps,
                                   key_padding_mask=key_padding_mask, backend=self.backend)
        elif causal:
            raise ValueError(f"causal attention needs key length == query length, got {Nk} and {Nq}")
        else:
            state = linear_attention_state(k, v, num_heads=self.num_heads, feature_map=self.feature_map,
                                           key_padding_mask=key_padding_mask)
            out = linear_attention_readout(q, state, feature_map=self.feature_map, eps=self.eps)
        out = self.out_proj(out.transpose(1, 2).reshape(B, Nq, self.embed_dim))
        if unbatched:
            return out.squeeze(0), None
        return (out if self.batch_first else out.transpose(0, 1)), None


def _float_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """A float key_padding_mask as nn.MultiheadAttention reads it (added to the scores): -inf drops
    the key, 0 keeps it.  Any other value is a soft bias linear attention cannot honour: refused."""
    check_values("key_padding_mask", mask, lambda m: (m == 0) | (m == float("-inf")),
                 "0 (keep) or -inf (ignore) when float: linear attention cannot add a finite bias to scores")
    return mask != 0


def _check_causal_mask(attn_mask, Nq: int, Nk: int, batch_heads: int) -> None:
    """attn_mask is honoured only when it is the causal mask (bool: True above the diagonal;
    float: -inf above the diagonal, 0 elsewhere), of shape (L, S) or (B·H, L, S)."""
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor, got {type(attn_mask).__name__}")
    if tuple(attn_mask.shape) not in ((Nq, Nk), (batch_heads, Nq, Nk)):
        raise ValueError(f"attn_mask must have shape (L, S) = {(Nq, Nk)} or (B·num_heads, L, S) = "
                         f"{(batch_heads, Nq, Nk)}, got {tuple(attn_mask.shape)}")
    if Nq != Nk:
        raise ValueError("attn_mask is supported only as the causal mask, which needs key length == query length")
    above = torch.ones(Nq, Nk, dtype=torch.bool, device=attn_mask.device).triu(1)
    if attn_mask.dtype == torch.bool:
        def ok(m):
            return m == above
    elif attn_mask.is_floating_point():
        def ok(m):
            return torch.where(above, m == float("-inf"), m == 0)
    else:
        raise TypeError(f"attn_mask must be bool or float, got {attn_mask.dtype}")
    check_values("attn_mask", attn_mask, ok, "the causal mask (True / -inf above the diagonal only): linear "
                 "attention cannot apply any other (use key_padding_mask for padding)")
