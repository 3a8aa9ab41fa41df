"""Integrated gradients of Hugging Face models over a layer's output: :func:`token_attributions`.

How it differs from Captum's ``LayerIntegratedGradients`` (same integral, same rule):

* the layer's output at the input and at the baseline is computed once per text; at every step
  the layer's ``forward`` is replaced by the interpolated tensor, so the layer (and, for the
  default ``layer="embeddings"``, everything below it) never runs again.  For a deeper layer the
  modules the model calls before it still run at each step;
* texts are grouped by token length and the (step, text) rows of a group share forwards, so no
  FLOP goes to padding and no attention mask has padding in it;
* the attention mask is the text's own at every step, never interpolated; token type ids and
  position ids are the input's;
* for ``BertForSequenceClassification`` with ``layer="embeddings"`` (``fast_path=True``, the default)
  the integrand is hand-written and exact (:mod:`.bert_fast`): layer 0's Q/K/V are affine in α, the
  weighted gradient is summed before layer 0's last GEMM, the last layer runs on [CLS] only, and no
  autograd: 0.79× the GEMM FLOPs per point for MiniLM-L6;
* CPU float32 linear layers' forward and input gradient run through oneDNN where it is available
  (:mod:`.gemm`, or inside the hand-written integrand; ``fast_linear=False`` keeps torch's BLAS),
  as in the probe engine: on this project's AMD EPYC (family 25, Zen 4) oneDNN runs these GEMMs
  5-14% faster than MKL, 5% end to end at 1 and 2 threads (bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._sharding import run_sharded
from .._validate import is_int
from ..cpu_linear import onednn_available, replaced_forwards
from . import bert_fast
from .api import GRADIENT_METHODS, check_steps, max_level_for, refuse_transforms
from .engine import integrate_auto, integrate_fixed
from .gemm import onednn_linears_with_grad
from .quadrature import rule

DEFAULT_TOKEN_BUDGET = 8192  # tokens per forward (rows × length) when batch_size is not given


@dataclass
class TokenAttribution:
    """One text's attributions.

    ``scores[t]`` is Σ_h IG of token t (the attributions summed over the hidden dimension),
    ``word_scores`` the scores of the subwords of each word summed (special tokens left out);
    ``f_input``/``f_baseline`` the attributed output F at the text and at the baseline,
    ``delta`` = Σ scores − (F(x) − F(x')), ``steps`` the points evaluated."""

    text: str
    tokens: list[str]
    scores: torch.Tensor
    words: list[str]
    word_scores: torch.Tensor
    target: int | str
    f_input: float
    f_baseline: float
    delta: float
    steps: int
    attributions: torch.Tensor = field(repr=False)

    @property
    def error(self) -> float:
        return abs(self.delta)


class _Stop(Exception):
    pass


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """``"embeddings"``: the model's embeddings block (``*.embeddings``: word + position + type,
    normalised) or, without one, its input embeddings; ``"input_embeddings"``: the token
    embedding table; a dotted module name; or a module."""
    if isinstance(layer, nn.Module):
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name or a module, got {type(layer).__name__}")
    if layer == "embeddings":
        for name, m in model.named_modules():
            if name.split(".")[-1] == "embeddings" and not isinstance(m, nn.Embedding):
                return m
        return model.get_input_embeddings()
    if layer == "input_embeddings":
        return model.get_input_embeddings()
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"layer {layer!r} is not a submodule of {type(model).__name__}") from None


def model_kind(model: nn.Module) -> str:
    name = type(model).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal"
    if name.endswith("ForSequenceClassification"):
        return "classifier"
    raise TypeError(f"model must be a Hugging Face sequence classifier (*ForSequenceClassification) or causal LM "
                    f"(*ForCausalLM, *LMHeadModel), got {name}")


@dataclass
class _Encoded:
    text: str
    ids: list[int]
    n_prompt: int  # tokens before a continuation (all of them without one)
    token_type_ids: list[int] | None
    word_ids: list[int | None]
    offsets: list[tuple[int, int]] | None


def _encode(tokenizer, text: str, continuation: str | None) -> _Encoded:
    enc = tokenizer(text, return_offsets_mapping=getattr(tokenizer, "is_fast", False))
    ids = list(enc["input_ids"])
    tt = list(enc["token_type_ids"]) if "token_type_ids" in enc else None
    try:
        wid = enc.word_ids()
    except (ValueError, AttributeError):  # slow tokenizers: one word per non-special token
        special = set(tokenizer.all_special_ids)
        wid = [None if t in special else i for i, t in enumerate(ids)]
    offsets = [tuple(o) for o in enc["offset_mapping"]] if "offset_mapping" in enc else None
    n_prompt = len(ids)
    if continuation is not None:
        cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        if not cont:
            raise ValueError(f"target continuation {continuation!r} has no tokens")
        ids += cont
        if tt is not None:
            tt += [tt[-1]] * len(cont)
    if not ids:
        raise ValueError(f"text {text!r} has no tokens")
    return _Encoded(text, ids, n_prompt, tt, wid, offsets)


def _baseline_ids(tokenizer, e: _Encoded, baseline: str) -> list[int] | None:
    if baseline == "zero":
        return None
    if baseline == "pad":
        fill = tokenizer.pad_token_id
        if fill is None:
            raise ValueError("baseline='pad' needs a tokenizer with a pad token; use baseline='zero', 'mask' or a "
                             "tensor")
    elif baseline == "mask":
        fill = tokenizer.mask_token_id
        if fill is None:
            raise ValueError("baseline='mask' needs a tokenizer with a mask token; use baseline='pad', 'zero' or a "
                             "tensor")
    else:
        raise ValueError(f"baseline must be 'pad', 'mask', 'zero' or a tensor, got {baseline!r}")
    keep = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id}
    return [t if (t in keep or i >= e.n_prompt) else fill for i, t in enumerate(e.ids)]


def _words(e: _Encoded, scores: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    order: list[int] = []
    for w in e.word_ids[:e.n_prompt]:
        if w is not None and w not in order:
            order.append(w)
    ws = torch.zeros(len(order), dtype=scores.dtype)
    words = []
    for k, w in enumerate(order):
        pos = [i for i, v in enumerate(e.word_ids[:e.n_prompt]) if v == w]
        ws[k] = scores[pos].sum()
        if e.offsets is not None:
            words.append(e.text[e.offsets[pos[0]][0]:e.offsets[pos[-1]][1]])
        else:
            words.append(str(w))
    return words, ws


def _first_call_returns(layer: nn.Module, z: torch.Tensor):
    """A stand-in ``forward`` for ``layer``: its first call in a model forward returns ``z``, later
    calls (a layer used twice, e.g. GPT-2's token table also embedding token types) run the layer."""
    own = layer.forward
    calls = [0]

    def forward(*args, **kwargs):
        calls[0] += 1
        return z if calls[0] == 1 else own(*args, **kwargs)

    return forward


def _model_inputs(ids, mask, tt) -> dict:
    kw = {"input_ids": ids, "attention_mask": mask}
    if tt is not None:
        kw["token_type_ids"] = tt
    return kw


def _capture(model, layer, kw: dict) -> torch.Tensor:
    """The layer's output for these model inputs (the model stops right after the layer)."""
    store = {}

    def hook(_m, _i, out):
        store["out"] = out
        raise _Stop

    h = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(**kw)
    except _Stop:
        pass
    finally:
        h.remove()
    out = store.get("out")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"layer's output must be a tensor, got {type(out).__name__}")
    return out


def token_attributions(model: nn.Module, tokenizer, texts: str | Sequence[str], *,
                       target: None | int | str | Sequence[int | str | None] = None,
                       layer: str | nn.Module = "embeddings", baseline: str | torch.Tensor = "pad",
                       n_steps: int | str = "auto", tol: float | Sequence[float] = 1e-2, method: str = "gausslegendre",
                       max_steps: int = 257, batch_size: int | None = None,
                       fast_linear: bool | None = None,
                       fast_path: bool = True) -> TokenAttribution | list[TokenAttribution] | None:
    r"""Integrated gradients of a Hugging Face model's output over its tokens.

    IG_t = Σ_h (e_th − e'_th) ∫₀¹ ∂F(e' + α(e − e'))/∂e_th dα, with e the output of ``layer``
    (default: the embeddings block) for the text and e' for the baseline, and F:

    * a sequence classifier: the logit of class ``target`` (default: the predicted class);
    * a causal LM: with ``target`` an int (a token id) or None (the predicted token), the logit
      of the next token after the text; with ``target`` a string, the log-probability of that
      continuation, Σ_j log p(c_j | text, c_<j) (the continuation's own tokens are not
      attributed: the baseline keeps them).

    ``baseline``: ``"pad"`` (special tokens such as [CLS]/[SEP] kept, the rest [PAD]), ``"mask"``
    (the same with [MASK]), ``"zero"`` (e' = 0), or a float tensor broadcastable to the layer's
    output of one text (length × hidden).  ``n_steps``: ``"auto"`` (nested Clenshaw–Curtis rules refined
    per text until |Σ IG − (F(x) − F(x'))| ≤ ``tol``·|F(x) − F(x')| (``tol``: one number, or one per
    text), at most ``max_steps``
    points) or an int (Captum's ``method`` rule, ``gausslegendre`` by default);
    ``method="gradient" | "gradient_x_input"`` gives those instead (with ``n_steps`` ignored).
    ``batch_size``: rows (step × text) per forward, default a budget of 8 192 tokens.
    ``fast_linear``: CPU float32 linear layers through oneDNN (None, the default: where oneDNN is
    available; see the module docstring), or torch's BLAS (False).
    ``fast_path``: for a ``BertForSequenceClassification`` in eval mode with ``layer="embeddings"``,
    a hand-written exact integrand (:mod:`kexue.attribution.bert_fast`: layer 0's Q/K/V affine in
    α, the last layer on [CLS] only, no autograd); ``False`` forces the autograd integrand.

    Texts of equal token length share forwards (no padding); the attention mask is never
    interpolated.  Under ``torchrun`` (torch.distributed initialised, world size > 1) the texts
    are shared among the ranks and gathered on rank 0 (other ranks return None).

    Returns a :class:`TokenAttribution` for a string, a list of them for a list.  Not
    differentiable (scores carry no graph; inside a torch.func transform it raises).

    Example::

        >>> from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
        >>> tok = BertTokenizerFast.from_pretrained(kexue.probe.models.default_model_path())  # doctest: +SKIP
        >>> model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()  # doctest: +SKIP
        >>> r = token_attributions(model, tok, "a gripping, funny film", target=1)  # doctest: +SKIP
        >>> r.tokens, r.scores, r.delta                                                # doctest: +SKIP
    """
    refuse_transforms("kexue.attribution.token_attributions")
    single = isinstance(texts, str)
    tlist = [texts] if single else list(texts)
    if not all(isinstance(t, str) for t in tlist):
        raise TypeError("texts must be a string or a list of strings")
    tols = [float(t) for t in tol] if isinstance(tol, (list, tuple, torch.Tensor)) else [tol] * len(tlist)
    if len(tols) != len(tlist):
        raise ValueError(f"tol is a list of {len(tols)} entries for {len(tlist)} texts")
    if method not in GRADIENT_METHODS:
        check_steps(n_steps, method, torch.tensor(tols, dtype=torch.float64), max_steps)
    if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    kind = model_kind(model)
    mod = resolve_layer(model, layer)
    targets = list(target) if isinstance(target, (list, tuple)) else [target] * len(tlist)
    if len(targets) != len(tlist):
        raise ValueError(f"target is a list of {len(targets)} entries for {len(tlist)} texts")
    for t in targets:
        if isinstance(t, str) and kind != "causal":
            raise ValueError("a string target (a continuation) needs a causal LM")
    enc = [_encode(tokenizer, t, tg if isinstance(tg, str) else None) for t, tg in zip(tlist, targets, strict=True)]
    fast_linear = onednn_available() if fast_linear is None else bool(fast_linear)

    def work(mine: list[int]) -> list[TokenAttribution]:
        return _attribute_texts(model, tokenizer, mod, kind, [enc[n] for n in mine], [targets[n] for n in mine],
                                baseline, n_steps, [tols[n] for n in mine], method, max_steps, batch_size, fast_linear,
                                fast_path)

    result = run_sharded([len(e.ids) for e in enc], work)
    if result is None:  # a rank other than 0
        return None
    return result[0] if single else result


def _attribute_texts(model, tokenizer, layer, kind, enc: list[_Encoded], targets, baseline, n_steps, tols, method,
                     max_steps, batch_size, fast_linear, fast_path=True) -> list[TokenAttribution]:
    device = next(model.parameters()).device
    groups: dict[int, list[int]] = {}
    for n, e in enumerate(enc):
        groups.setdefault(len(e.ids), []).append(n)
    out: list[TokenAttribution | None] = [None] * len(enc)
    shared_weights = None  # the fast integrand's weights, built once for all length groups
    for L, members in groups.items():
        es = [enc[n] for n in members]
        ids = torch.tensor([e.ids for e in es], device=device)
        mask = torch.ones_like(ids)
        # segment ids for encoders that have them; decoder LMs take none (GPT-2 would embed them)
        has_tt = es[0].token_type_ids is not None and kind != "causal"
        tt = torch.tensor([e.token_type_ids for e in es], device=device) if has_tt else None
        kw = _model_inputs(ids, mask, tt)
        e_x = _capture(model, layer, kw)
        if isinstance(baseline, torch.Tensor):
            try:
                e_b = torch.broadcast_to(baseline.to(device=device, dtype=e_x.dtype), e_x.shape[1:]).expand_as(e_x)
            except RuntimeError:
                raise ValueError(f"baseline has shape {tuple(baseline.shape)}, which does not broadcast to the layer's "
                                 f"output {tuple(e_x.shape[1:])} for a text of {L} tokens") from None
        else:
            bids = [_baseline_ids(tokenizer, e, baseline) for e in es]
            if bids[0] is None:
                e_b = torch.zeros_like(e_x)
            else:
                e_b = _capture(model, layer, _model_inputs(torch.tensor(bids, device=device), mask, tt))
        # a continuation is kept in every baseline: only the text itself is attributed
        is_cont = torch.tensor([[i >= e.n_prompt for i in range(L)] for e in es], device=device)
        if bool(is_cont.any()):
            e_b = torch.where(is_cont.unsqueeze(-1), e_x, e_b)
        # what is attributed, per text: a class / next-token index, or a continuation's positions
        tgt = torch.zeros(len(es), dtype=torch.long)
        cont = torch.zeros(len(es), L, dtype=torch.bool)
        need_pred = [j for j, n in enumerate(members) if targets[n] is None]
        f_x_known = torch.full((len(es),), float("nan"), dtype=torch.float64)
        if need_pred:
            with torch.no_grad():
                logits = model(**_model_inputs(ids[need_pred], mask[need_pred],
                                               None if tt is None else tt[need_pred])).logits
            last = logits[:, -1] if kind == "causal" else logits
            pred = last.argmax(-1).cpu()
            tgt[need_pred] = pred
            if kind == "classifier":  # F(x) of these texts: the predicted class's logit, already here
                f_x_known[need_pred] = last.max(-1).values.double().cpu()
        for j, n in enumerate(members):
            t = targets[n]
            if isinstance(t, str):
                cont[j, es[j].n_prompt:] = True
            elif t is not None:
                if not is_int(t):
                    raise TypeError(f"target must be an int, a string or None, got {type(t).__name__}")
                size = model.config.vocab_size if kind == "causal" else model.config.num_labels
                if not -size <= t < size:
                    raise ValueError(f"target {t} is out of range for the model's {size} outputs")
                tgt[j] = t
        cont_d, tgt_d = cont.to(device), tgt.to(device)
        ids_next = torch.roll(ids, -1, dims=1)

        def score(logits, ex, tgt_d=tgt_d, cont_d=cont_d, ids_next=ids_next):
            if kind == "classifier":
                return logits[torch.arange(len(ex), device=device), tgt_d[ex]]
            if bool(cont_d[ex].any()):
                acc = torch.promote_types(logits.dtype, torch.float32)  # 16-bit logits: log-softmax in float32
                lp = torch.log_softmax(logits.to(acc), -1)  # position p predicts token p + 1
                tok_lp = lp.gather(-1, ids_next[ex].unsqueeze(-1)).squeeze(-1)
                m = torch.roll(cont_d[ex], -1, dims=1)
                m[:, -1] = False
                nxt = logits[torch.arange(len(ex), device=device), -1, tgt_d[ex]]
                has = cont_d[ex].any(1)
                return torch.where(has, (tok_lp * m).sum(1), nxt.to(acc))
            return logits[torch.arange(len(ex), device=device), -1, tgt_d[ex]]

        def evaluate(ex, alphas, e_x=e_x, e_b=e_b, ids=ids, mask=mask, tt=tt, score=score, grad=True):
            a = alphas.to(device=device, dtype=e_x.dtype).view(-1, 1, 1)
            z = (e_b[ex] + a * (e_x[ex] - e_b[ex])).requires_grad_(grad)
            with torch.set_grad_enabled(grad), replaced_forwards({layer: _first_call_returns(layer, z)}), \
                    onednn_linears_with_grad(model, fast_linear):
                logits = model(**_model_inputs(ids[ex], mask[ex], None if tt is None else tt[ex])).logits
                f = score(logits, ex)
                if not grad:
                    return (), f
                (g,) = torch.autograd.grad(f.sum(), z)
            return (g,), f.detach()

        if fast_path and kind == "classifier" and bert_fast.support(model, layer) is None:
            if shared_weights is None:
                shared_weights = bert_fast.BertWeights(model)
            evaluate = bert_fast.BertClassifierIntegrand(model, e_x, e_b, tgt_d, fast_linear,  # noqa: F811
                                                         weights=shared_weights)
        rows = batch_size or max(1, DEFAULT_TOKEN_BUDGET // L)
        shape, G = e_x.shape[1:], len(es)
        diff = (e_x - e_b).to(torch.float64)
        if method in GRADIENT_METHODS:
            one = torch.ones(1, dtype=torch.float64)
            (g,) = integrate_fixed(evaluate, [shape], [e_x.dtype], G, one, one, rows, device)
            attr = g.to(torch.float64) * (e_x.to(torch.float64) if method == "gradient_x_input" else 1)
            steps = torch.ones(G, dtype=torch.long)
            f_x = _values(evaluate, G, 1.0, device, f_x_known)
            f_b = torch.full((G,), float("nan"), dtype=torch.float64)
        elif n_steps == "auto":
            st = integrate_auto(evaluate, [shape], G, lambda ex, d=diff: (d[ex],),
                                torch.tensor([tols[n] for n in members], dtype=torch.float64),
                                max_level_for(max_steps), 1,
                                rows, device)
            attr = st.integrals[0] * diff
            steps, f_x, f_b = st.steps, st.f_input, st.f_baseline
        else:
            alphas, weights = rule(method, n_steps)
            (g,) = integrate_fixed(evaluate, [shape], [e_x.dtype], G, alphas, weights, rows, device)
            attr = g.to(torch.float64) * diff
            steps = torch.full((G,), n_steps, dtype=torch.long)
            f_x = _values(evaluate, G, 1.0, device, f_x_known)
            f_b = _values(evaluate, G, 0.0, device)
        attr = attr.cpu()
        for j, n in enumerate(members):
            e = es[j]
            a = attr[j, :e.n_prompt]
            sc = a.flatten(1).sum(1) if a.dim() > 1 else a
            words, ws = _words(e, sc)
            delta = float(attr[j].sum() - (f_x[j] - f_b[j]))
            tg = targets[n] if isinstance(targets[n], str) else int(tgt[j])
            dt = e_x.dtype  # results in the layer's dtype (sums were float64)
            out[n] = TokenAttribution(e.text, tokenizer.convert_ids_to_tokens(e.ids[:e.n_prompt]), sc.to(dt), words,
                                      ws.to(dt), tg, float(f_x[j]), float(f_b[j]), delta, int(steps[j]), a.to(dt))
    return out  # type: ignore[return-value]


def _values(evaluate, G: int, alpha: float, device, known: torch.Tensor | None = None) -> torch.Tensor:
    """F at α for every text of a group: one no-grad forward row each (only for the texts whose
    value is not ``known``, i.e. NaN there)."""
    out = torch.full((G,), float("nan"), dtype=torch.float64) if known is None else known.clone()
    todo = torch.nonzero(out.isnan()).flatten()
    if len(todo):
        _, f = evaluate(todo.to(device), torch.full((len(todo),), alpha, dtype=torch.float64), grad=False)
        out[todo] = f.double().cpu()
    return out
