"""Export the successor of a :class:`~kexue.theseus.wrap.TheseusModel` as a plain Hugging Face
model: the wrapped model's class, its embeddings and head, the k successor layers, and a config
with ``num_hidden_layers = k`` (and ``layer_types`` cut to the layers kept), so that
``save_pretrained`` / ``from_pretrained`` round-trip with no kexue installed.
"""

from __future__ import annotations

import copy

from torch import nn


def _set_layer_count(config, k: int, sources: list[int], n: int) -> None:
    config.num_hidden_layers = k  # GPT-2 (n_layer), DistilBERT (n_layers) map the name through attribute_map
    if getattr(config, "num_hidden_layers", None) != k:
        raise ValueError(f"could not set num_hidden_layers = {k} on {type(config).__name__}")
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == n:
        config.layer_types = [layer_types[i] for i in sources]


def export_successor(wrapped) -> nn.Module:
    """The successor alone: a new model of ``type(wrapped.model)``, in eval mode, every parameter
    trainable, sharing no storage with ``wrapped``.

    Example::

        small = wrapped.successor()
        small.save_pretrained("successor/")      # then AutoModel...from_pretrained("successor/")
    """
    model = wrapped.model
    groups = wrapped.groups
    n = sum(len(g.predecessors) for g in groups)
    k = len(groups)
    parent_path, _, attr = wrapped.layers_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    successors = nn.ModuleList([g.successor for g in groups])
    setattr(parent, attr, successors)  # the model as it would be with the successor layers only
    try:
        out = copy.deepcopy(model)
    finally:
        setattr(parent, attr, groups)
    config = getattr(out, "config", None)
    if config is not None:
        _set_layer_count(config, k, list(wrapped.successor_sources), n)
    for p in out.parameters():
        p.requires_grad_(True)
    return out.eval()
