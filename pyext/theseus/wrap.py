"""BERT-of-Theseus (Xu et al., EMNLP 2020): compress a fine-tuned model by progressive module
replacing, for any Hugging Face model with a list of transformer layers.

The n predecessor layers are cut into k = n / ratio consecutive groups; successor layer g stands
for group g.  At each training forward, one Bernoulli(p) draw per group (shared by the whole
batch) decides whether the successor replaces its group:

    h ← successor_g(h)  with probability p,   else  h ← layer_{g·r+r−1}(… layer_{g·r}(h))

p follows a schedule (:mod:`kexue.theseus.schedulers`); once p = 1 the successor trains alone.
The predecessor layers stay frozen (``requires_grad=False``), and so by default do the
embeddings and the head, so no gradient is computed for a parameter that is not trained.  In
eval mode every group runs its successor, and :meth:`TheseusModel.successor` exports it as a
plain model of the same class with ``num_hidden_layers = k``.

Cost: a training step costs the forward of (1 − p)·n + p·k layers, and the backward of the layers
above the lowest successor that runs (the frozen predecessor layers pass activation gradients
down, never weight gradients).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator

import torch
from torch import nn

from .._validate import is_int
from .schedulers import ConstantReplacing, ReplacingScheduler

# Dotted paths, tried in order from the model and from its ``base_model``, to the list of
# transformer layers: BERT / RoBERTa / MiniLM / ELECTRA (encoder.layer), DistilBERT
# (transformer.layer), GPT-2 (h), Llama-style decoders (layers, model.layers), encoder-decoder
# stacks (decoder.layers, encoder.layers), T5-style (block).
LAYER_PATHS = ("encoder.layer", "transformer.layer", "transformer.h", "h", "model.layers", "layers",
               "decoder.layers", "encoder.layers", "block")


def _resolve(root: nn.Module, path: str) -> nn.Module | None:
    obj = root
    for part in path.split("."):
        if not part or not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def find_layers(model: nn.Module, layers_attr: str | None = None) -> tuple[str, nn.ModuleList]:
    """The dotted path (from ``model``) and the ``nn.ModuleList`` of the model's transformer layers.

    ``layers_attr`` names the list where no rule of :data:`LAYER_PATHS` finds it.
    """
    if layers_attr is not None:
        if not isinstance(layers_attr, str):
            raise TypeError(f"layers_attr must be a dotted attribute path (str), got {type(layers_attr).__name__}")
        found = _resolve(model, layers_attr)
        if not isinstance(found, nn.ModuleList) or len(found) == 0:
            what = "nothing" if found is None else type(found).__name__
            raise ValueError(f"layers_attr={layers_attr!r} names {what} on {type(model).__name__}; "
                             "it must name a non-empty nn.ModuleList of transformer layers")
        return layers_attr, found
    roots = [("", model)]
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module) and base is not model:
        prefix = next((name for name, mod in model.named_modules() if mod is base), None)
        if prefix is not None:
            roots.append((prefix + ".", base))
    for prefix, root in roots:
        for path in LAYER_PATHS:
            found = _resolve(root, path)
            if isinstance(found, nn.ModuleList) and len(found) > 0:
                return prefix + path, found
    raise ValueError(f"could not find the transformer layer list of {type(model).__name__} (tried "
                     f"{', '.join(LAYER_PATHS)} on the model and its base_model); pass layers_attr='path.to.layers' "
                     "naming its nn.ModuleList of layers")


def _set_layer_index(layer: nn.Module, index: int) -> None:
    """Renumber a layer copy for the KV cache: every ``layer_idx`` attribute inside it becomes ``index``."""
    for mod in layer.modules():
        if isinstance(getattr(mod, "layer_idx", None), int):
            mod.layer_idx = index


def _hidden(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class TheseusGroup(nn.Module):
    """``ratio`` consecutive predecessor layers and the successor layer that may replace them.

    Called like one of the model's layers; :attr:`use_successor` (set by :class:`TheseusModel`
    before each training forward) says which path runs; in eval mode the successor always runs
    (so ``wrapped.model(...)`` / ``wrapped.model.generate(...)`` after ``.eval()`` is the successor,
    whatever the last training draw was).  The predecessor path feeds each layer's hidden
    state (the first element when a layer returns a tuple) to the next, with the same extra
    arguments, and returns the last layer's output.
    """

    def __init__(self, predecessors: list[nn.Module], successor: nn.Module) -> None:
        super().__init__()
        self.predecessors = nn.ModuleList(predecessors)
        self.successor = successor
        self.use_successor = True
        self.keep_in_graph = False
        # set on the last group when every group runs its frozen predecessor: a zero leaf is
        # added so that loss.backward() still runs (and gives the successors no gradient at all)
        self.anchor_loss = False

    def forward(self, hidden_states, *args, **kwargs):
        if self.use_successor or not self.training:
            return self.successor(hidden_states, *args, **kwargs)
        out = hidden_states
        for i, layer in enumerate(self.predecessors):
            out = layer(out if i == 0 else _hidden(out), *args, **kwargs)
        if torch.is_grad_enabled():
            if self.keep_in_graph:
                out = self._add_zero(out, self._successor_zero())
            elif self.anchor_loss:
                out = self._add_zero(out, torch.zeros((), device=_hidden(out).device, requires_grad=True))
        return out

    def _successor_zero(self) -> torch.Tensor | None:
        """0·(one element of each trainable successor parameter): every successor parameter gets
        a zero gradient, as DDP's reducer expects of every parameter at every step."""
        terms = [p.reshape(-1)[:1].sum() for p in self.successor.parameters() if p.requires_grad]
        return torch.stack(terms).sum() * 0.0 if terms else None

    @staticmethod
    def _add_zero(out, zero: torch.Tensor | None):
        if zero is None:
            return out
        if isinstance(out, tuple):
            return (out[0] + zero.to(out[0].dtype), *out[1:])
        return out + zero.to(out.dtype)


def _mix_seed(seed: int, step: int) -> int:
    """A 63-bit generator seed from (seed, step) (splitmix64 finaliser): distinct steps and seeds
    give unrelated streams, and every process computes the same value."""
    x = (seed * 0x9E3779B97F4A7C15 + step + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF


class TheseusModel(nn.Module):
    """A Hugging Face model whose layer list is replaced by Theseus groups; made by :func:`wrap`.

    Its ``forward`` takes the wrapped model's arguments (it has the same signature) and returns
    the same outputs, loss included.  Attributes: :attr:`model` (the wrapped model itself),
    :attr:`scheduler`, :attr:`groups`, :attr:`draw_step` (training forwards so far),
    :attr:`last_choices` (which groups ran their successor in the last forward).
    """

    def __init__(self, model: nn.Module, layers_path: str, groups: list[TheseusGroup],
                 scheduler: ReplacingScheduler, seed: int, sources: list[int], ratio: int) -> None:
        super().__init__()
        self.model = model
        self.layers_path = layers_path
        self.scheduler = scheduler
        self.seed = seed
        self.ratio = ratio
        self.successor_sources = sources
        self.draw_step = 0
        self.last_choices: torch.Tensor | None = None
        self._accepts = set(inspect.signature(model.forward).parameters)

    # the module list that now holds the groups
    @property
    def groups(self) -> nn.ModuleList:
        return _resolve(self.model, self.layers_path)

    @property
    def config(self):
        return getattr(self.model, "config", None)

    @property
    def num_successor_layers(self) -> int:
        return len(self.groups)

    def choices(self, step: int, p: float | None = None) -> torch.Tensor:
        """The draw at training forward ``step``: a bool per group, True where the successor runs.

        u_g ~ U[0, 1) from a CPU generator seeded by (seed, step); the successor runs where
        u_g < p (p = the scheduler's rate unless given), so p = 0 and p = 1 are exact.
        """
        p = self.scheduler.p if p is None else p
        gen = torch.Generator().manual_seed(_mix_seed(self.seed, step))
        return torch.rand(len(self.groups), generator=gen) < p

    def set_trainable(self, *, successor: bool = True, embeddings: bool = False, head: bool = False) -> None:
        """Which parts train (``requires_grad``); the predecessor layers never do.

        ``embeddings``: the input embeddings (and the embeddings block that holds them, e.g.
        BERT's position/type embeddings and LayerNorm).  ``head``: every other parameter outside
        the layer list (pooler, classifier or LM head, final norm).  A parameter shared by both
        (tied input/output embeddings) trains if either is set.
        """
        emb = _embedding_params(self.model)
        tied_head = _output_params(self.model) & emb
        in_layers = {id(p) for p in self.groups.parameters()}
        for p in self.model.parameters():
            if id(p) in in_layers:
                p.requires_grad_(False)
            elif id(p) in emb:
                p.requires_grad_(embeddings or (head and id(p) in tied_head))
            else:
                p.requires_grad_(head)
        for g in self.groups:
            for p in g.successor.parameters():
                p.requires_grad_(successor)

    def forward(self, *args, **kwargs):
        if self.training:
            use = self.choices(self.draw_step)
            self.draw_step += 1
        else:
            use = torch.ones(len(self.groups), dtype=torch.bool)
        groups = self.groups
        for g, flag in zip(groups, use.tolist(), strict=True):
            g.use_successor = flag
            g.anchor_loss = False
        if self.training and not bool(use.any()):
            groups[-1].anchor_loss = True
        self.last_choices = use
        mixed = not bool(use.all())
        if mixed and "use_cache" in self._accepts:
            # layers of both models would share KV-cache slots; a cache is of no use in training
            if kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
                raise ValueError("a KV cache (past_key_values / cache) cannot be used while predecessor and "
                                 "successor layers are mixed; call .eval() to run the successor alone")
            kwargs["use_cache"] = False
        return self.model(*args, **kwargs)

    def get_extra_state(self) -> dict:
        return {"draw_step": self.draw_step, "scheduler": self.scheduler.state_dict(), "seed": self.seed}

    def set_extra_state(self, state: dict) -> None:
        self.draw_step = int(state["draw_step"])
        self.seed = int(state["seed"])
        self.scheduler.load_state_dict(state["scheduler"])

    def successor(self):
        """The successor alone as a plain model of the wrapped model's class (see
        :func:`kexue.theseus.export.export_successor`)."""
        from .export import export_successor

        return export_successor(self)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)


def _embedding_params(model: nn.Module) -> set[int]:
    """ids of the input-embedding parameters: ``get_input_embeddings()`` and, where the base model
    has one, its ``embeddings`` block (BERT: word, position and type embeddings + LayerNorm)."""
    ids: set[int] = set()
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            emb = getter()
        except (NotImplementedError, AttributeError):
            emb = None
        if isinstance(emb, nn.Module):
            ids |= {id(p) for p in emb.parameters()}
    base = getattr(model, "base_model", model)
    for name in ("embeddings", "wpe", "embed_positions"):
        block = getattr(base, name, None)
        if isinstance(block, nn.Module):
            ids |= {id(p) for p in block.parameters()}
    return ids


def _output_params(model: nn.Module) -> set[int]:
    getter = getattr(model, "get_output_embeddings", None)
    out = getter() if callable(getter) else None
    return {id(p) for p in out.parameters()} if isinstance(out, nn.Module) else set()


def _with_signature(wrapped: TheseusModel, model: nn.Module) -> TheseusModel:
    """Give the wrapper the wrapped model's forward signature (the HF Trainer inspects it to keep
    the dataset's columns), through a one-off subclass."""
    try:
        sig = inspect.signature(type(model).forward)
    except (TypeError, ValueError):
        return wrapped

    def forward(self, *args, **kwargs):
        return TheseusModel.forward(self, *args, **kwargs)

    forward.__signature__ = sig
    forward.__doc__ = getattr(type(model).forward, "__doc__", None)
    cls = type(f"Theseus{type(model).__name__}", (TheseusModel,), {"forward": forward, "__module__": __name__})
    wrapped.__class__ = cls
    return wrapped


def wrap(model: nn.Module, num_layers: int | None = None, ratio: int = 2, init: str = "first",
         scheduler: ReplacingScheduler | None = None, layers_attr: str | None = None, seed: int = 0, *,
         train_embeddings: bool = False, train_head: bool = False, ddp_keep_in_graph: bool = False) -> TheseusModel:
    """Prepare ``model`` for BERT-of-Theseus compression; returns a module that trains like it.

    Args:
        model: a Hugging Face model (any head), already fine-tuned: the predecessor.  It is
            changed in place (its layer list now holds the groups, its parameters are frozen);
            ``copy.deepcopy`` it first to keep the original.
        num_layers: k, the number of successor layers; or give ``ratio``.  n / k must be an int.
        ratio: predecessor layers per successor layer (used when ``num_layers`` is None).
        init: successor g starts as a copy of predecessor layer g (``"first"``, as the paper) or
            of the last layer of its group, g·ratio + ratio − 1 (``"every_nth"``).
        scheduler: the replacement rate p_t; default ``ConstantReplacing(0.5)`` (never switches).
        layers_attr: dotted path of the ``nn.ModuleList`` of layers, where no rule finds it.
        seed: the draws at training forward t come from a generator seeded by (seed, t), so every
            DDP rank makes the same choice.
        train_embeddings, train_head: also train the input embeddings / the rest outside the
            layers (pooler, head, final norm); the paper freezes both.
        ddp_keep_in_graph: a successor that sits out a step gets a zero gradient instead of none,
            so ``DistributedDataParallel`` works without ``find_unused_parameters=True``.  With
            Adam the zero gradient still decays its moments and applies a momentum update; leave
            it off outside DDP.

    Returns:
        A :class:`TheseusModel`: call it like ``model``; step ``.scheduler`` once per optimiser
        step; ``.eval()`` runs the successor alone; ``.successor()`` exports it.

    Example::

        import torch, transformers
        from kexue import theseus
        cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4,
                                      num_attention_heads=2, intermediate_size=64)
        model = transformers.BertForSequenceClassification(cfg)          # the fine-tuned predecessor
        sched = theseus.LinearReplacing(base=0.3, slope=0.01)
        wrapped = theseus.wrap(model, ratio=2, scheduler=sched)
        opt = torch.optim.AdamW(wrapped.trainable_parameters(), lr=1e-4)
        ids, labels = torch.randint(0, 100, (8, 12)), torch.randint(0, 2, (8,))
        for _ in range(3):
            loss = wrapped(input_ids=ids, labels=labels).loss
            loss.backward(); opt.step(); opt.zero_grad(); sched.step()
        small = wrapped.successor()                     # a BertForSequenceClassification, 2 layers
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a Hugging Face model), got {type(model).__name__}")
    if isinstance(model, TheseusModel) or any(isinstance(m, TheseusGroup) for m in model.modules()):
        raise ValueError("model is already wrapped by kexue.theseus.wrap")
    if init not in ("first", "every_nth"):
        raise ValueError(f"init must be 'first' or 'every_nth', got {init!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if scheduler is None:
        scheduler = ConstantReplacing(0.5)
    if not isinstance(scheduler, ReplacingScheduler):
        raise TypeError("scheduler must be a kexue.theseus ReplacingScheduler (ConstantReplacing, LinearReplacing), "
                        f"got {type(scheduler).__name__}")
    path, layers = find_layers(model, layers_attr)
    n = len(layers)
    if num_layers is not None:
        if not is_int(num_layers) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        if n % num_layers:
            raise ValueError(f"num_layers={num_layers} does not divide the {n} layers of {type(model).__name__}")
        ratio = n // num_layers
    elif not is_int(ratio) or ratio < 1:
        raise ValueError(f"ratio must be an int >= 1, got {ratio!r}")
    elif n % ratio:
        raise ValueError(f"ratio={ratio} does not divide the {n} layers of {type(model).__name__} "
                         f"(found at {path!r}); use a divisor of {n}")
    k = n // ratio
    sources = [g if init == "first" else g * ratio + ratio - 1 for g in range(k)]
    groups = []
    for g in range(k):
        successor = copy.deepcopy(layers[sources[g]])
        _set_layer_index(successor, g)
        groups.append(TheseusGroup([layers[i] for i in range(g * ratio, (g + 1) * ratio)], successor))
    parent_path, _, attr = path.rpartition(".")
    parent = _resolve(model, parent_path) if parent_path else model
    setattr(parent, attr, nn.ModuleList(groups))
    wrapped = TheseusModel(model, path, groups, scheduler, seed, sources, ratio)
    wrapped.set_trainable(embeddings=train_embeddings, head=train_head)
    for g in groups:
        g.keep_in_graph = ddp_keep_in_graph
    wrapped.train(model.training)
    return _with_signature(wrapped, model)
