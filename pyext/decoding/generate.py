"""A model-agnostic decoder with termination statistics: :func:`generate` and :func:`non_termination_ratio`.

The model is a function ``step_fn(ids, state) -> (logits, state)``: ``ids`` (B, n) int64 are the
tokens to append (the prompts at the first call, with ``state=None``; then one token per row),
``logits`` (B, V) score the next token (log-probabilities, e.g. of a self-terminating head, are
logits too). The state is anything whose tensors have the rows on dim 0 (a tensor, or tuples,
lists and dicts of them; LSTM states with the batch on dim 1 need ``reorder_state``): the decoder
selects rows of it when rows finish (they leave the batch) and when beams are reordered.

Strategies (Welleck et al. 2020's incomplete decoding algorithms and their consistent variants):
  * "greedy": argmax each step;
  * "sample": :func:`kexue.sample` each step with ``**sample_kw`` (temperature, top_k, top_p, keep;
    ``keep=eos_id`` makes top-k / nucleus sampling consistent) and ``generator``; per-row tensors
    ((B,) temperature / top_k / top_p, (B, K) keep) go with the prompts in the order given;
  * "beam": beam search on the sum of log-probabilities (no length normalisation); a finished
    hypothesis (ending in eos) leaves the beam; a prompt is done once its best finished score is
    at least its best live score (no live beam can overtake it). At ``max_len`` the result is the
    best-scoring hypothesis, finished or not: it is non-terminated when a live beam scores higher.

A sequence is *terminated* when it emits eos within ``max_len`` generated tokens;
r_L = the fraction of sequences not terminated within L tokens (:func:`non_termination_ratio`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._validate import as_int, is_int
from .api import sample as fused_sample

STRATEGIES = ("greedy", "sample", "beam")


def select_rows(state: Any, index: torch.Tensor) -> Any:
    """Rows ``index`` of every tensor in ``state`` (dim 0), through tuples, lists and dicts."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # NamedTuple
        return type(state)(*(select_rows(s, index) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(select_rows(s, index) for s in state)
    if isinstance(state, dict):
        return {k: select_rows(v, index) for k, v in state.items()}
    raise TypeError(f"cannot select rows of a state of type {type(state).__name__}; pass reorder_state=")


@dataclass
class GenerateOutput:
    sequences: torch.Tensor  # (B, max_len) generated tokens (eos included), padded with pad_id
    lengths: torch.Tensor  # (B,) int64 number of generated tokens (eos included)
    terminated: torch.Tensor  # (B,) bool: eos emitted within max_len
    scores: torch.Tensor  # (B,) float64 sum of the log-probabilities of the generated tokens

    def non_termination_ratio(self, L: int | None = None) -> float:
        return non_termination_ratio(self, L)


def non_termination_ratio(out: GenerateOutput, L: int | None = None) -> float:
    """r_L: the fraction of sequences without eos within the first L generated tokens (L = max_len if None)."""
    if L is not None:
        L = as_int("L", L, minimum=1)
    ended = out.terminated if L is None else out.terminated & (out.lengths <= L)
    return float((~ended).double().mean()) if ended.numel() else 0.0


PER_ROW_DIM = {"temperature": 1, "top_k": 1, "top_p": 1, "keep": 2}  # a tensor of this dim is per row


def _per_row_names(sample_kw: dict, B: int) -> list[str]:
    """The sample_kw entries given per prompt ((B,) or (B, K) tensors), checked against B."""
    names = [n for n, v in sample_kw.items()
             if isinstance(v, torch.Tensor) and v.dim() == PER_ROW_DIM.get(n, -1)]
    for n in names:
        if sample_kw[n].shape[0] != B:
            raise ValueError(f"{n} has {sample_kw[n].shape[0]} rows but there are {B} prompts "
                             f"(a per-row {n} has one row per prompt, in the order given)")
    return names


def _rows_of(sample_kw: dict, names: list[str], rows: torch.Tensor) -> dict:
    """sample_kw with its per-row entries cut to ``rows`` (the others as they are)."""
    if not names:
        return sample_kw
    return {n: v.index_select(0, rows.to(v.device)) if n in names else v for n, v in sample_kw.items()}


def _as_batch(prompts) -> list[torch.Tensor]:
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or prompts.shape[1] == 0:
            raise ValueError(f"prompts must be (B, P) with P >= 1 or a list of 1-D tensors, got {tuple(prompts.shape)}")
        rows = list(prompts)
    elif isinstance(prompts, Sequence):
        rows = [torch.as_tensor(p) for p in prompts]
    else:
        raise TypeError(f"prompts must be a (B, P) tensor or a list of 1-D token tensors, got {type(prompts).__name__}")
    for i, r in enumerate(rows):
        if r.dim() != 1 or r.numel() == 0 or r.dtype != torch.int64:
            raise ValueError(f"prompts[{i}] must be a non-empty 1-D int64 tensor, got {tuple(r.shape)} {r.dtype}")
    return rows


def generate(
    step_fn: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]],
    prompts: torch.Tensor | Sequence[torch.Tensor],
    *,
    strategy: str = "greedy",
    beam_size: int = 1,
    max_len: int = 100,
    eos_id: int,
    pad_id: int | None = None,
    generator: torch.Generator | None = None,
    reorder_state: Callable[[Any, torch.Tensor], Any] = select_rows,
    **sample_kw,
) -> GenerateOutput:
    """Decodes every prompt up to ``max_len`` new tokens; prompts of equal length run as one batch.

    Example (a model that never stops by itself, and consistent sampling that does)::

        >>> import torch
        >>> from kexue.decoding import generate
        >>> def step_fn(ids, state):                     # eos (id 0): 1.5% of the mass
        ...     logits = torch.zeros(ids.shape[0], 10); logits[:, 0] = -2.0
        ...     return logits, state
        >>> g = torch.Generator().manual_seed(0)
        >>> out = generate(step_fn, torch.ones(8, 3, dtype=torch.long), strategy="sample", top_k=2,
        ...                keep=0, eos_id=0, max_len=2000, generator=g)
        >>> out.non_termination_ratio()
        0.0
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not is_int(max_len) or max_len < 1:
        raise ValueError(f"max_len must be an int >= 1, got {max_len!r}")
    if not is_int(beam_size) or beam_size < 1:
        raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
    if not is_int(eos_id) or eos_id < 0:
        raise ValueError(f"eos_id must be a token id (int >= 0), got {eos_id!r}")
    max_len, beam_size, eos_id = int(max_len), int(beam_size), int(eos_id)
    if sample_kw and strategy != "sample":
        raise ValueError(f"{sorted(sample_kw)} only apply to strategy='sample'")
    rows = _as_batch(prompts)
    pad = eos_id if pad_id is None else pad_id
    B = len(rows)
    seqs = torch.full((B, max_len), pad, dtype=torch.int64)
    lengths = torch.zeros(B, dtype=torch.int64)
    terminated = torch.zeros(B, dtype=torch.bool)
    scores = torch.zeros(B, dtype=torch.float64)
    per_row = _per_row_names(sample_kw, B)
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.numel(), []).append(i)
    for idx in groups.values():
        batch = torch.stack([rows[i] for i in idx])
        if strategy == "beam":
            res = _beam(step_fn, batch, beam_size, max_len, eos_id, pad, reorder_state)
        else:
            kw = _rows_of(sample_kw, per_row, torch.tensor(idx))
            res = _step_by_step(step_fn, batch, strategy, max_len, eos_id, pad, reorder_state, generator, kw, per_row)
        where = torch.tensor(idx)
        for dst, src in zip((seqs, lengths, terminated, scores), res, strict=True):
            dst[where] = src.to(dst.device)
    return GenerateOutput(seqs, lengths, terminated, scores)


def check_vocabulary(logits, eos_id: int) -> None:
    """The first step's logits are (batch, V) with eos_id < V: an eos the model cannot emit would
    make every sequence run to max_len silently."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"step_fn must return logits of shape (batch, V), got {getattr(logits, 'shape', logits)!r}")
    if eos_id >= logits.shape[-1]:
        raise ValueError(f"eos_id={eos_id} is out of range for the step_fn's vocabulary of V = {logits.shape[-1]}")


def _step_by_step(step_fn, prompts, strategy, max_len, eos_id, pad, reorder_state, generator, sample_kw,
                  per_row=()):
    B = prompts.shape[0]
    seqs = torch.full((B, max_len), pad, dtype=torch.int64)
    lengths = torch.full((B,), max_len, dtype=torch.int64)
    terminated = torch.zeros(B, dtype=torch.bool)
    scores = torch.zeros(B, dtype=torch.float64)
    active = torch.arange(B)  # rows of the outputs that are still decoding (the model's batch)
    logits, state = step_fn(prompts, None)
    check_vocabulary(logits, eos_id)
    for t in range(max_len):
        logp = torch.log_softmax(logits.double(), dim=-1)
        if strategy == "greedy":
            tok = logits.argmax(dim=-1).cpu()
        else:
            tok = fused_sample(logits, generator=generator, **sample_kw).cpu()
        seqs[active, t] = tok
        scores[active] += logp.gather(1, tok[:, None].to(logp.device))[:, 0].cpu()
        done = tok == eos_id
        if bool(done.any()):
            lengths[active[done]] = t + 1
            terminated[active[done]] = True
            keep_rows = (~done).nonzero()[:, 0]
            active = active[keep_rows]
            if active.numel() == 0 or t + 1 == max_len:
                break
            state = reorder_state(state, keep_rows.to(logits.device))
            sample_kw = _rows_of(sample_kw, per_row, keep_rows)  # (per-row parameters follow their rows)
            tok = tok[keep_rows]
        if t + 1 == max_len:
            break
        logits, state = step_fn(tok[:, None].to(prompts.device), state)
    return seqs, lengths, terminated, scores


def _beam(step_fn, prompts, beam_size, max_len, eos_id, pad, reorder_state):
    B = prompts.shape[0]
    out_seq = torch.full((B, max_len), pad, dtype=torch.int64)
    out_len = torch.full((B,), max_len, dtype=torch.int64)
    out_term = torch.zeros(B, dtype=torch.bool)
    out_score = torch.full((B,), float("-inf"), dtype=torch.float64)
    logits, state = step_fn(prompts, None)
    check_vocabulary(logits, eos_id)
    # live beams: rows of the model's batch; each has (prompt b, tokens so far, score)
    beam_prompt = torch.arange(B)
    beam_tokens = torch.zeros((B, 0), dtype=torch.int64)
    beam_score = torch.zeros(B, dtype=torch.float64)
    best_done = [(-float("inf"), None)] * B  # (score, tokens) of the best finished hypothesis
    for t in range(max_len):
        logp = torch.log_softmax(logits.double(), dim=-1).cpu()
        V = logp.shape[1]
        cand = beam_score[:, None] + logp  # (R, V)
        new_rows, new_tok, new_score = [], [], []
        for b in beam_prompt.unique().tolist():
            rows = (beam_prompt == b).nonzero()[:, 0]
            flat = cand[rows].reshape(-1)
            n = min(2 * beam_size, flat.numel())
            top_s, top_i = flat.topk(n)
            kept = 0
            for s, i in zip(top_s.tolist(), top_i.tolist(), strict=True):
                r, v = rows[i // V].item(), i % V
                if s == -float("inf"):
                    break
                if v == eos_id:
                    if s > best_done[b][0]:
                        best_done[b] = (s, torch.cat([beam_tokens[r], torch.tensor([eos_id])]))
                    continue
                new_rows.append(r)
                new_tok.append(v)
                new_score.append(s)
                kept += 1
                if kept == beam_size:
                    break
        rows_t = torch.tensor(new_rows, dtype=torch.int64)
        beam_prompt = beam_prompt[rows_t] if new_rows else beam_prompt[:0]
        beam_tokens = torch.cat([beam_tokens[rows_t], torch.tensor(new_tok, dtype=torch.int64)[:, None]], 1) \
            if new_rows else beam_tokens[:0]
        beam_score = torch.tensor(new_score, dtype=torch.float64)
        # prompts whose best finished hypothesis beats every live beam are done
        alive = torch.ones(len(new_rows), dtype=torch.bool)
        for b in beam_prompt.unique().tolist():
            m = beam_prompt == b
            if best_done[b][0] >= float(beam_score[m].max()):
                alive &= ~m
        rows_t, beam_prompt, beam_tokens, beam_score = (rows_t[alive], beam_prompt[alive], beam_tokens[alive],
                                                        beam_score[alive])
        if beam_prompt.numel() == 0 or t + 1 == max_len:
            break
        state = reorder_state(state, rows_t.to(logits.device))
        logits, state = step_fn(beam_tokens[:, -1:].to(prompts.device), state)
    for b in range(B):
        s_done, toks = best_done[b]
        m = beam_prompt == b
        s_live = float(beam_score[m].max()) if bool(m.any()) else -float("inf")
        if toks is not None and s_done >= s_live:
            out_seq[b, : toks.numel()] = toks
            out_len[b], out_term[b], out_score[b] = toks.numel(), True, s_done
        elif bool(m.any()):
            r = int(m.nonzero()[int(beam_score[m].argmax())])
            n = beam_tokens.shape[1]
            out_seq[b, :n] = beam_tokens[r]
            out_len[b], out_score[b] = n, s_live
    return out_seq, out_len, out_term, out_score
