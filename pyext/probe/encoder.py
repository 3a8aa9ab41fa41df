"""Reading chosen rows of chosen hidden layers out of a Hugging Face encoder, doing no more work
than those rows need.

``hidden_states[l]`` (Hugging Face indexing: 0 = embeddings output, l = output of layer l) is
read at positions ``positions (K, R)`` of each of the K sequences.  The forward stops at the
highest requested layer (a hook raises once that layer's input is known), and for BERT-family
layers (BERT, RoBERTa, ELECTRA, MiniLM, XLM-R: ``attention.self.{query,key,value}``,
``attention.output``, ``intermediate``, ``output``) that last layer is computed for the R read
rows only: keys and values of all T tokens, but queries, attention output, the feed-forward and
the layer norms for R rows.  Cost of the last layer drops from ≈ 24·T·D² + 4·T²·D FLOPs per
sequence to ≈ 4·T·D² (keys, values) + 20·R·D² + 4·R·T·D.  For the same BERT-family models
the first layer's query/key/value projections run once per distinct (token, position) of the
batch (:func:`shared_first_projections`).  Any other encoder falls back to a full forward with
``output_hidden_states=True`` and a gather.  Float32 linear layers on the CPU run through
oneDNN (:mod:`kexue.cpu_linear`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import as_int
from ..cpu_linear import onednn_linears, replaced_forwards


class _Stop(Exception):
    """Raised by a hook once every requested layer has been read."""


def _get(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def encoder_parts(model: nn.Module) -> tuple[nn.Module | None, nn.ModuleList | None]:
    """(embeddings module, list of transformer layers) of a BERT-like model, or (None, None)."""
    base = getattr(model, "base_model", model)
    for emb_path, layers_path in (("embeddings", "encoder.layer"), ("embeddings", "transformer.layer"),
                                  ("embeddings", "encoder.layers")):
        emb, layers = _get(base, emb_path), _get(base, layers_path)
        if isinstance(emb, nn.Module) and isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return emb, layers
    return None, None


def num_layers(model: nn.Module) -> int:
    _, layers = encoder_parts(model)
    if layers is not None:
        return len(layers)
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(n, int):
        raise ValueError(f"cannot tell how many layers {type(model).__name__} has")
    return n


def layer_argument(layer) -> int | list[int]:
    """A public ``layer=`` argument as an int (int, numpy integer, 0-d tensor) or a list of ints."""
    if isinstance(layer, (list, tuple, range)):
        return [as_int(f"layer[{i}]", x) for i, x in enumerate(layer)]
    try:
        return as_int("layer", layer)
    except TypeError:
        raise TypeError(f"layer must be an int (hidden_states index) or a list of ints, got "
                        f"{type(layer).__name__} {layer!r}") from None


def normalize_layers(model: nn.Module, layer: int | Sequence[int]) -> list[int]:
    """Hidden-state indices in [0, L] (negative ones count from the end, -1 = last layer)."""
    L = num_layers(model)
    layer = layer_argument(layer)
    many = not isinstance(layer, int)
    out = []
    for x in (layer if many else [layer]):
        if not isinstance(x, int) or not -(L + 1) <= x <= L:
            raise ValueError(f"layer must be an int in [{-(L + 1)}, {L}] (hidden_states index), got {x!r}")
        out.append(x % (L + 1))
    if not out:
        raise ValueError("layer is an empty list")
    return out


def _restrictable(layer: nn.Module) -> bool:
    sa = _get(layer, "attention.self")
    return (sa is not None and all(hasattr(sa, a) for a in ("query", "key", "value", "num_attention_heads",
                                                            "attention_head_size"))
            and isinstance(_get(layer, "attention.output"), nn.Module)
            and isinstance(getattr(layer, "intermediate", None), nn.Module)
            and isinstance(getattr(layer, "output", None), nn.Module)
            and getattr(sa, "position_embedding_type", "absolute") == "absolute"
            and not getattr(sa, "is_causal", False) and not hasattr(layer, "crossattention"))


def bert_layer_rows(layer: nn.Module, hidden: torch.Tensor, key_mask: torch.Tensor,
                    positions: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """A BERT-family layer evaluated at ``positions (K, R)`` only: (K, R, D).

    hidden (K, T, D) is the layer input, key_mask (K, T) bool marks real (non-padding) tokens.
    ``valid`` (K, R) bool, optional: only these rows are computed (the query, output and FFN
    products, 20·D² FLOPs per row); the others are returned as 0.  The probe pads each word's
    read positions to the longest word's, so most of its rows would otherwise be duplicates.
    """
    sa = layer.attention.self
    K, T, D = hidden.shape
    R = positions.shape[1]
    nh, dh = sa.num_attention_heads, sa.attention_head_size
    rows = hidden.gather(1, positions[..., None].expand(K, R, D)).reshape(K * R, D)
    sel = None if valid is None else valid.reshape(-1).nonzero().squeeze(1)

    def scatter(x: torch.Tensor) -> torch.Tensor:  # rows at sel -> all K·R rows, 0 elsewhere
        return x if sel is None else x.new_zeros(K * R, x.shape[-1]).index_copy_(0, sel, x)

    rows_c = rows if sel is None else rows.index_select(0, sel)
    q = scatter(sa.query(rows_c)).view(K, R, nh, dh).transpose(1, 2)
    k = sa.key(hidden).view(K, T, nh, dh).transpose(1, 2)
    v = sa.value(hidden).view(K, T, nh, dh).transpose(1, 2)
    scale = getattr(sa, "scaling", dh ** -0.5)
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], scale=scale)
    ctx = ctx.transpose(1, 2).reshape(K * R, nh * dh)
    if sel is not None:
        ctx = ctx.index_select(0, sel)
    att = layer.attention.output(ctx, rows_c)
    return scatter(layer.output(layer.intermediate(att), att)).view(K, R, D)


def _gather(h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return h.gather(1, positions[..., None].expand(*positions.shape, h.shape[-1]))


def _shareable_first_layer(model: nn.Module, emb: nn.Module, layer: nn.Module) -> bool:
    """The first layer's query/key/value inputs are a function of (token id, position) only:
    BERT-family embeddings (word + absolute position + token type, layer norm) fed straight in."""
    cfg = getattr(model, "config", None)
    return (_restrictable(layer) and all(hasattr(emb, a) for a in ("word_embeddings", "position_embeddings"))
            and getattr(cfg, "position_embedding_type", "absolute") == "absolute"
            and getattr(cfg, "model_type", "") in ("bert", "roberta", "xlm-roberta", "electra", "camembert"))


@contextmanager
def shared_first_projections(emb: nn.Module, layer: nn.Module, input_ids: torch.Tensor):
    """Within the context, the first layer's query, key and value projections are computed once
    per distinct (token id, position) of the batch and gathered for every row.

    The probe's batches hold many copies of one sentence with a word or two masked, so a batch
    of K sequences of T tokens has about 2·T distinct rows, not K·T: this removes nearly all of
    the first layer's 3·2·D² FLOPs per token (about 4-5% of a 6-layer encoder's work), exactly
    (each distinct row is projected by the same GEMM as before).  The caller must make sure the
    projections' inputs depend on (token id, position) only (:func:`_shareable_first_layer`)."""
    K, T = input_ids.shape
    key = (input_ids.long() * T + torch.arange(T, device=input_ids.device)).reshape(-1)
    uniq, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((len(uniq),), key.numel(), dtype=torch.long, device=key.device)
    first.scatter_reduce_(0, inverse, torch.arange(key.numel(), device=key.device), reduce="amin")
    sa = layer.attention.self
    embedded: list[torch.Tensor] = []  # the embeddings' output of this forward

    def remember(module, args, output):
        embedded[:] = [output[0] if isinstance(output, tuple) else output]

    def shared(inner):  # inner: the projection's forward as it was (its own, or a routed one)
        def forward(x: torch.Tensor) -> torch.Tensor:
            if not embedded or x is not embedded[0] or x.shape[:2] != (K, T):
                return inner(x)  # another input (e.g. gathered rows): as usual
            rows = x.reshape(K * T, -1).index_select(0, first)
            return inner(rows).index_select(0, inverse).reshape(K, T, -1)
        return forward

    handle = emb.register_forward_hook(remember)
    try:
        with replaced_forwards({lin: shared(lin.forward) for lin in (sa.query, sa.key, sa.value)}):
            yield
    finally:
        handle.remove()


@contextmanager
def eval_mode(model: nn.Module):
    """Dropout off for the duration (the caller's train/eval state is restored)."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def read_hidden_rows(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     positions: torch.Tensor, layers: Sequence[int], *, restrict: bool = True,
                     share_first: bool = True, valid: torch.Tensor | None = None) -> list[torch.Tensor]:
    """``hidden_states[l][k, positions[k, r]]`` for each l in ``layers`` (normalised indices):
    a list of (K, R, D) tensors, in the order of ``layers``.  ``share_first``: project the
    distinct rows of the first layer's input once (:func:`shared_first_projections`).
    ``valid`` (K, R) bool, optional: the rows the caller reads; the restricted top layer
    computes only these (:func:`bert_layer_rows`), and the other rows are unspecified.  Float32
    linear layers on the CPU run through oneDNN (:mod:`kexue.cpu_linear`: 2.2× torch's default
    GEMM on AMD CPUs, the same float32 products to rounding)."""
    emb, mods = encoder_parts(model)
    top = max(layers)
    got: dict[int, torch.Tensor] = {}
    if mods is None:  # unknown architecture: full forward, then gather
        with onednn_linears(model):
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return [_gather(out.hidden_states[l], positions) for l in layers]

    def producer(l: int) -> nn.Module:
        return emb if l == 0 else mods[l - 1]

    def capture(l: int, stop: bool):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            got[l] = _gather(h, positions)
            if stop:
                raise _Stop
        return hook

    handles = []
    restrict_top = restrict and top >= 1 and _restrictable(mods[top - 1])
    try:
        for l in sorted(set(layers)):
            if l < top or not restrict_top:
                handles.append(producer(l).register_forward_hook(capture(l, stop=(l == top))))
        if restrict_top:
            key_mask = attention_mask.bool()
            last = mods[top - 1]

            def pre_hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                got[top] = bert_layer_rows(last, hidden, key_mask, positions, valid)
                raise _Stop

            handles.append(last.register_forward_pre_hook(pre_hook, with_kwargs=True))
        share = share_first and input_ids.shape[0] > 1 and _shareable_first_layer(model, emb, mods[0])
        try:
            with onednn_linears(model), (shared_first_projections(emb, mods[0], input_ids) if share
                                         else nullcontext()):
                model(input_ids=input_ids, attention_mask=attention_mask)
        except _Stop:
            pass
    finally:
        for h in handles:
            h.remove()
    missing = [l for l in layers if l not in got]
    if missing:
        raise RuntimeError(f"hidden layer(s) {missing} were not produced by the forward of {type(model).__name__}")
    return [got[l] for l in layers]
