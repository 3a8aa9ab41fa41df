"""nn.Module drop-in for nn.MultiheadAttention backed by kexue.linear_attention."""

from __future__ import annotations

import torch
from torch import nn

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
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if dropout:
            raise ValueError("dropout must be 0: linear attention forms no attention weights to drop")
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
        """A LinearAttention with the projection weights of ``mha`` (same embed_dim, heads, layout)."""
        has_bias = mha.in_proj_bias is not None if mha._qkv_same_embed_dim else mha.q_proj_weight is not None
        kwargs.setdefault("batch_first", mha.batch_first)
        p = next(mha.parameters())
        new = cls(mha.embed_dim, mha.num_heads, bias=has_bias and mha.out_proj.bias is not None, kdim=mha.kdim,
                  vdim=mha.vdim, device=p.device, dtype=p.dtype, **kwargs)
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                wq, wk, wv = mha.in_proj_weight.chunk(3)
            else:
                wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            for lin, w in ((new.q_proj, wq), (new.k_proj, wk), (new.v_proj, wv)):
                lin.weight.copy_(w)
            if new.q_proj.bias is not None:
                for lin, b in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_bias.chunk(3), strict=True):
                    lin.bias.copy_(b)
                new.out_proj.bias.copy_(mha.out_proj.bias)
            new.out_proj.weight.copy_(mha.out_proj.weight)
        return new

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
        if attn_mask is not None:
            raise ValueError("attn_mask is not supported: use causal=True for causal masking "
                             "and key_padding_mask for padding")
        key = query if key is None else key
        value = key if value is None else value
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        B, Nq, _ = query.shape
        Nk = key.shape[1]
        causal = self.causal or is_causal
        q = self.q_proj(query).view(B, Nq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(B, Nk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(B, Nk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
            key_padding_mask = key_padding_mask != 0  # float masks: any nonzero entry (e.g. -inf) ignores the key
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
        return (out if self.batch_first else out.transpose(0, 1)), None

