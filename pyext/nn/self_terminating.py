"""The self-terminating output layer (Welleck et al. 2020) and its non-monotonic variant NMST (Choi et al. 2023).

Wraps an ``lm_head`` (hidden → V logits z) and an eos id. With u_t = z_t[eos] (the eos logit,
u_eosᵀh_t), ε = ``eps`` and n_t = the number of positions after the context up to t
(n_t = t − context_len + 1 for t ≥ context_len, else 0; t the 0-based position)::

    ST:    log β_t = log(1 − ε) + log σ(u_t)       (β_t = 1 inside the context)
           log(1 − p_eos,t) = Σ_{t' ≤ t} log β_t'   (a cumulative sum: the product in log space)
    NMST:  λ_t = σ(u_t),  p_eos,t = (1 − λ_t)(1 − (1 − ε)^{n_t}) + λ_t
           log(1 − p_eos,t) = log σ(−u_t) + n_t · log(1 − ε)   (0 inside the context)

and every other token v gets log p_v = log(1 − p_eos,t) + log_softmax_{V∖{eos}}(z_t)_v. So
p(eos | y<t) ≥ 1 − (1 − ε)^{n_t} in both modes, and greedy or beam decoding must stop: the bound
passes 1/2 after ln 2 / −ln(1 − ε) steps (~69 at ε = 1e-2, ~6 931 at 1e-4).

``forward(h)`` returns log-probabilities (their NLL is the training loss); ``step(h_t, state)``
continues a sequence one position at a time (the state is log(1 − p_eos) of the last position
and the number of positions seen), and agrees with ``forward`` on the whole sequence.

Example::

    >>> import torch
    >>> from kexue.nn import SelfTerminatingHead
    >>> head = SelfTerminatingHead(torch.nn.Linear(16, 100), eos_token_id=0, eps=1e-2)
    >>> logp = head(torch.randn(2, 7, 16))          # (2, 7, 100), rows sum to 1 in exp
    >>> logp.exp().sum(-1).allclose(torch.ones(2, 7))
    True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .._validate import is_int, is_real

MODES = ("st", "nmst")


class STState(NamedTuple):
    log_keep: torch.Tensor  # (B,) log(1 − p_eos) at the last position seen (ST: Σ log β)
    t: torch.Tensor  # (B,) int64: positions seen so far


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − e^x) for x ≤ 0, accurate on both sides of −ln 2 (Mächler 2012); −inf at x = 0."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class SelfTerminatingHead(nn.Module):
    """ST / NMST output layer over an existing ``lm_head`` (see the module docstring for the math)."""

    def __init__(self, lm_head: nn.Module, eos_token_id: int, eps: float = 1e-3, mode: str = "st",
                 context_len: int = 0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not is_real(eps) or not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be a float in (0, 1), got {eps!r}")
        if not is_int(eos_token_id) or eos_token_id < 0:
            raise ValueError(f"eos_token_id must be a token id (int >= 0), got {eos_token_id!r}")
        if not is_int(context_len) or context_len < 0:
            raise ValueError(f"context_len must be an int >= 0, got {context_len!r}")
        self.lm_head = lm_head
        self.eos_token_id = int(eos_token_id)
        self.eps = float(eps)
        self.mode = mode
        self.context_len = int(context_len)

    def extra_repr(self) -> str:
        return f"eos_token_id={self.eos_token_id}, eps={self.eps}, mode={self.mode!r}, context_len={self.context_len}"

    def log_probs_from_logits(self, z: torch.Tensor, state: STState | None = None,
                              context_len: int | None = None) -> tuple[torch.Tensor, STState]:
        """(log-probs (B, T, V), state after the last position) from head logits z (B, T, V)."""
        B, T, V = z.shape
        eos = self.eos_token_id
        if not 0 <= eos < V:
            raise ValueError(f"eos_token_id={eos} is out of range for a head with V = {V} outputs")
        ctx = self.context_len if context_len is None else context_len
        zf = z if z.dtype == torch.float64 else z.float()
        if state is None:
            state = STState(zf.new_zeros(B), torch.zeros(B, dtype=torch.int64, device=z.device))
        pos = state.t[:, None] + torch.arange(T, device=z.device)  # (B, T) 0-based positions
        in_ctx = pos < ctx
        u = zf[..., eos]
        log1m_eps = math.log1p(-self.eps)
        if self.mode == "st":
            log_beta = torch.where(in_ctx, torch.zeros_like(u), log1m_eps + nn.functional.logsigmoid(u))
            log_keep = state.log_keep.to(zf.dtype)[:, None] + torch.cumsum(log_beta, dim=1)
        else:
            n = (pos - ctx + 1).clamp(min=0).to(zf.dtype)
            log_keep = torch.where(in_ctx, torch.zeros_like(u), nn.functional.logsigmoid(-u) + n * log1m_eps)
        rest = zf.index_fill(-1, torch.tensor([eos], device=z.device), float("-inf")).log_softmax(-1)
        out = rest + log_keep[..., None]
        out = out.index_copy(-1, torch.tensor([eos], device=z.device), log1mexp(log_keep)[..., None])
        last = log_keep[:, -1] if T else state.log_keep.to(zf.dtype)  # (T = 0: the state is unchanged)
        return out, STState(last, state.t + T)

    def forward(self, h: torch.Tensor, state: STState | None = None, return_state: bool = False):
        """Log-probabilities (B, T, V) for hidden states h (B, T, D) (or (T, D)), continuing ``state``."""
        if not isinstance(h, torch.Tensor) or h.dim() not in (2, 3):
            raise ValueError(f"h must have shape (B, T, D) or (T, D), got {getattr(h, 'shape', type(h))}")
        squeeze = h.dim() == 2
        z = self.lm_head(h[None] if squeeze else h)
        out, new_state = self.log_probs_from_logits(z, state)
        if squeeze:
            out = out[0]
        return (out, new_state) if return_state else out

    def step(self, h_t: torch.Tensor, state: STState | None = None) -> tuple[torch.Tensor, STState]:
        """One position: h_t (B, D) → (log-probs (B, V), new state)."""
        if not isinstance(h_t, torch.Tensor) or h_t.dim() != 2:
            raise ValueError(f"h_t must have shape (B, D), got {getattr(h_t, 'shape', type(h_t))}")
        out, new_state = self.log_probs_from_logits(self.lm_head(h_t[:, None]), state)
        return out[:, 0], new_state

    @staticmethod
    def reorder_state(state: STState, index: torch.Tensor) -> STState:
        """The state of rows ``index`` (beam search)."""
        return STState(state.log_keep.index_select(0, index), state.t.index_select(0, index))

    def eos_lower_bound(self, n: torch.Tensor | int) -> torch.Tensor:
        """1 − (1 − ε)^n: the guaranteed p(eos) after n positions past the context."""
        n = torch.as_tensor(n, dtype=torch.float64)
        if bool((n < 0).any()) or bool(torch.isnan(n).any()):
            raise ValueError(f"n must be a count of positions (>= 0), got {n.tolist()!r}")
        return -torch.expm1(n * math.log1p(-self.eps))
