"""Hugging Face transformers: ``attn_implementation="kexue_linear"``.

``register()`` (run on import of this module) adds an attention function and a mask function
under the name "kexue_linear" to transformers' registries, so any model whose attention layers
go through ``ALL_ATTENTION_FUNCTIONS`` (BERT, GPT-2, Llama, ...) runs on linear attention::

    import kexue.integrations.hf  # registers "kexue_linear"
    model = AutoModel.from_config(config, attn_implementation="kexue_linear")

Semantics: query i attends to the keys that are not padding (and, for causal layers, the keys at
or before it) through :func:`kexue.linear_attention` with feature map φ; the softmax scaling and
attention dropout have no counterpart and are ignored.  The mask function hands over the 2D
padding mask (True = keep), so padding works with no N×N mask.  With a KV cache (generation),
the cached keys are folded into a state (:func:`kexue.linear_attention.linear_attention_state`)
and the new queries run causally from it: exact, but O(cache length) per step; for O(1)
decoding keep a state and call :func:`kexue.linear_attention_step`.
"""

from __future__ import annotations

import torch

from .._dispatch import BACKENDS
from .._validate import as_float
from ..linear_attention.api import (
    FeatureMap,
    linear_attention,
    linear_attention_readout,
    linear_attention_state,
)
from ..linear_attention.feature_maps import FEATURE_MAPS

NAME = "kexue_linear"


def _key_padding(attention_mask: torch.Tensor | None, nk: int) -> torch.Tensor | None:
    """True where a key is padding, from a 2D keep-mask or a 4D (B, 1, Nq, Nk) bool/additive mask."""
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        keep = attention_mask.bool()
    elif attention_mask.dim() == 4:
        m = attention_mask if attention_mask.dtype == torch.bool else attention_mask > torch.finfo(
            attention_mask.dtype).min / 2
        keep = m.any(dim=-2)[:, 0]  # a key is padding when no query may see it
    else:
        raise ValueError(f"attention_mask must be 2D or 4D, got shape {tuple(attention_mask.shape)}")
    pad = ~keep[:, -nk:]
    return pad if bool(pad.any()) else None


def make_attention_function(feature_map: FeatureMap = "elu", eps: float = 1e-6, backend: str = "auto"):
    """An attention function with transformers' signature, backed by kexue.linear_attention.

    The options are checked here, when the function is made, not at the model's first forward."""
    eps = as_float("eps", eps, minimum=0.0)
    if not (feature_map is None or callable(feature_map) or feature_map in FEATURE_MAPS):
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, a callable or None; got {feature_map!r}")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {backend!r}")

    def kexue_linear_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = bool(getattr(module, "is_causal", False))
        nq, nk = query.shape[2], key.shape[2]
        pad = _key_padding(attention_mask, nk)
        kw = dict(feature_map=feature_map, eps=eps)
        if nq == nk:
            out = linear_attention(query, key, value, causal=is_causal, key_padding_mask=pad, backend=backend, **kw)
        elif not is_causal:  # cross-attention: every query reads the whole key sequence
            state = linear_attention_state(key, value, num_heads=query.shape[1], feature_map=feature_map,
                                           key_padding_mask=pad)
            out = linear_attention_readout(query, state, **kw)
        else:  # KV cache: the queries are the last nq positions
            pre = nk - nq
            state = linear_attention_state(key[:, :, :pre], value[:, :, :pre], num_heads=query.shape[1],
                                           feature_map=feature_map,
                                           key_padding_mask=None if pad is None else pad[:, :pre])
            out = linear_attention(query, key[:, :, pre:], value[:, :, pre:], causal=True, initial_state=state,
                                   key_padding_mask=None if pad is None else pad[:, pre:], backend=backend, **kw)
        return out.transpose(1, 2).contiguous(), None

    return kexue_linear_attention


def padding_mask_function(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                          attention_mask=None, **kwargs):
    """transformers mask function: hand over the 2D padding mask (True = keep), or None."""
    if attention_mask is None:
        return None
    attention_mask = attention_mask[:, -kv_length:].bool()
    return None if bool(attention_mask.all()) else attention_mask


def register(name: str = NAME, feature_map: FeatureMap = "elu", eps: float = 1e-6, backend: str = "auto") -> str:
    """Registers ``name`` as an ``attn_implementation`` in transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, make_attention_function(feature_map, eps, backend))
    AttentionMaskInterface.register(name, padding_mask_function)
    return name


register()


# Decoding (issue 13): consistent sampling through kexue.sample, the self-terminating head.
from .hf_decoding import consistent_generate, self_terminating  # noqa: E402, F401
