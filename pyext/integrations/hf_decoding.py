"""Hugging Face generation with kexue's decoding: :func:`consistent_generate` and :func:`self_terminating`.

Both are re-exported by :mod:`kexue.integrations.hf`.

* ``consistent_generate(model, input_ids, ...)`` samples every step through the fused
  :func:`kexue.sample` (temperature → top-k → top-p, eos kept: consistent sampling), with the
  model's KV cache. The route through ``model.generate`` itself is the warpers
  :class:`kexue.decoding.ConsistentTopKLogitsWarper` / ``ConsistentTopPLogitsWarper`` (with both
  top_k and top_p, chained warpers let top-p see eos: the authors' filter, not kexue.sample's;
  see :mod:`kexue.decoding.warpers`).
* ``self_terminating(model, eps, mode)`` puts a :class:`kexue.nn.SelfTerminatingHead` on the
  model's output layer through hooks: the model's logits become the ST (or NMST) log-probabilities,
  so ``model(...)`` trains it (the NLL of its outputs) and ``model.generate`` decodes with it, with
  or without the KV cache (greedy, sampling and beam search: the head's running state follows the
  cache's beam reordering). Positions are sequence columns (left padding counts as context);
  in ``generate`` and :func:`consistent_generate` the context defaults to the prompt (β = 1 there,
  as the authors do).
"""

from __future__ import annotations

import contextlib
import functools
import inspect

import torch

from ..decoding.api import sample as fused_sample
from ..nn.self_terminating import SelfTerminatingHead


def _cache_kw(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _eos_ids(model, eos_token_id) -> list[int]:
    eos = eos_token_id if eos_token_id is not None else model.generation_config.eos_token_id
    if eos is None:
        raise ValueError("eos_token_id is needed (the model's generation_config has none)")
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


@torch.no_grad()
def consistent_generate(
    model,
    input_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    consistent: bool = True,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Sampling with :func:`kexue.sample` and the KV cache: (B, P + n) token ids, eos-finished rows padded.

    ``consistent=True`` keeps the eos ids in every candidate set (Welleck et al. 2020), so a row
    that would be cut off by top-k / top-p can still end. Prompts may be left-padded with an
    ``attention_mask`` (positions then count only real tokens, as HF's generate does).

    Example::

        >>> from transformers import AutoModelForCausalLM          # doctest: +SKIP
        >>> ids = consistent_generate(model, input_ids, top_k=50, top_p=0.9, max_new_tokens=64)  # doctest: +SKIP
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (B, P), got {tuple(input_ids.shape)}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    eos = _eos_ids(model, eos_token_id)
    if pad_token_id is None:  # (a pad id of 0 is an id, not "none": no `or` here)
        pad_token_id = model.generation_config.pad_token_id
    pad = eos[0] if pad_token_id is None else pad_token_id
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    st_hooks = getattr(model, "_kexue_st_hooks", None)  # a self_terminating model: the prompt is the context
    with st_hooks.decoding(input_ids.shape[1]) if st_hooks is not None else contextlib.nullcontext():
        return _consistent_loop(model, input_ids, attention_mask, max_new_tokens, temperature, top_k, top_p, eos,
                                pad, consistent, generator, backend)


def _consistent_loop(model, input_ids, attention_mask, max_new_tokens, temperature, top_k, top_p, eos, pad,
                     consistent, generator, backend):
    B = input_ids.shape[0]
    cache_kw = _cache_kw(model)
    ids, cur, cache = input_ids, input_ids, None
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    eos_t = torch.tensor(eos, device=input_ids.device)
    for _ in range(max_new_tokens):
        pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -cur.shape[1]:]
        out = model(input_ids=cur, attention_mask=attention_mask, position_ids=pos, use_cache=True,
                    logits_to_keep=1, **{cache_kw: cache})
        cache = getattr(out, "cache", None) if cache_kw == "cache" else out.past_key_values
        tok = fused_sample(out.logits[:, -1, :], temperature=temperature, top_k=top_k, top_p=top_p,
                           keep=eos if consistent else None, generator=generator, backend=backend)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        ids = torch.cat([ids, tok[:, None]], dim=1)
        done = done | torch.isin(tok, eos_t)
        if bool(done.all()):
            break
        cur = tok[:, None]
        attention_mask = torch.cat([attention_mask, (~done | torch.isin(tok, eos_t)).long()[:, None]], dim=1)
    return ids


class _HFSelfTerminating:
    """The hooks' shared state: the head, its running state and the cache length of the call."""

    def __init__(self, head: SelfTerminatingHead, context_len: int | None = None):
        self.head = head
        self.state = None
        self.past_len = 0
        self.fixed_context_len = context_len  # self_terminating(context_len=...), else the prompt
        self.context_len: int | None = None  # set while decoding (patched generate, consistent_generate)

    @contextlib.contextmanager
    def decoding(self, prompt_len: int):
        """One decoding call: a fresh running state and the context = the prompt (or the fixed one)."""
        self.state = None
        self.context_len = self.fixed_context_len if self.fixed_context_len is not None else prompt_len
        try:
            yield
        finally:
            self.context_len = None
            self.state = None

    def pre_forward(self, module, args, kwargs):
        kwargs["logits_to_keep"] = 0  # every new position reaches the head (it needs each β_t)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        self.past_len = int(cache.get_seq_length()) if cache is not None else 0
        if cache is not None and not getattr(cache, "_kexue_st_patched", False) and hasattr(cache, "reorder_cache"):
            original = cache.reorder_cache

            def reorder_cache(beam_idx, _original=original):
                result = _original(beam_idx)
                if self.state is not None:
                    self.state = SelfTerminatingHead.reorder_state(self.state, beam_idx.to(self.state.t.device))
                return result

            cache.reorder_cache = reorder_cache
            cache._kexue_st_patched = True
        return args, kwargs

    def post_head(self, module, inputs, z):
        state = None
        if self.past_len > 0:
            if self.state is None or int(self.state.t[0]) != self.past_len:
                raise RuntimeError("self_terminating: the head's state does not match the KV cache "
                                   f"({None if self.state is None else int(self.state.t[0])} positions vs "
                                   f"{self.past_len} cached)")
            state = self.state
        out, self.state = self.head.log_probs_from_logits(z, state, context_len=self.context_len)
        return out.to(z.dtype)


def self_terminating(model, eps: float = 1e-3, mode: str = "st", eos_token_id: int | None = None,
                     context_len: int | None = None):
    """Makes ``model``'s output layer self-terminating (in place; returns the model).

    ``model.self_terminating_head`` is the :class:`SelfTerminatingHead`; ``model.generate`` then
    uses it with the context = the prompt unless ``context_len`` is given;
    ``model.remove_self_terminating()`` undoes it.

    Example::

        >>> model = self_terminating(model, eps=1e-3)                    # doctest: +SKIP
        >>> out = model.generate(input_ids, max_new_tokens=200, do_sample=False)   # always stops  # doctest: +SKIP
    """
    eos = _eos_ids(model, eos_token_id)[0]
    lm_head = model.get_output_embeddings()
    head = SelfTerminatingHead(lm_head, eos, eps=eps, mode=mode, context_len=context_len or 0)
    hooks = _HFSelfTerminating(head, context_len)
    handles = [model.register_forward_pre_hook(hooks.pre_forward, with_kwargs=True),
               lm_head.register_forward_hook(hooks.post_head)]
    original_generate = model.generate

    @functools.wraps(original_generate)
    def generate(*args, **kwargs):
        ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
        if ids is None:  # a prompt given as embeddings only: (B, P, D)
            ids = kwargs.get("inputs_embeds")
            prompt_len = ids.shape[1] if ids is not None else 0
        else:
            prompt_len = ids.shape[-1]
        with hooks.decoding(prompt_len):
            return original_generate(*args, **kwargs)

    def remove():
        for h in handles:
            h.remove()
        del model.generate, model.self_terminating_head, model.remove_self_terminating, model._kexue_st_hooks

    model.generate = generate
    model._kexue_st_hooks = hooks  # (consistent_generate sets the context through it too)
    model.self_terminating_head = head
    model.remove_self_terminating = remove
    return model
