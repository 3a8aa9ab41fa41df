"""kexue.theseus inside a ``transformers.Trainer``, end to end (needs ``accelerate``, as Trainer does).

A tiny random BERT classifier is wrapped, trained for a few optimiser steps by ``Trainer`` with
:class:`kexue.theseus.TheseusCallback`; the callback must step the replacement schedule once per
optimiser step, the draws must follow the seeded schedule, only the successor must change, and the
successor exported after training must reload (``save_pretrained`` / ``from_pretrained``) and give
the wrapped model's eval outputs.
"""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from kexue import theseus  # noqa: E402

transformers.logging.set_verbosity_error()
VOCAB, LAYERS, N, BATCH = 40, 4, 24, 4


class _Rows(torch.utils.data.Dataset):
    """Random token rows with labels, as dicts (what a tokenised dataset gives the Trainer)."""

    def __init__(self, n: int, t: int = 6, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, t), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.labels[i], "unused_column": i}


def _tiny_bert():
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=LAYERS, num_attention_heads=2,
                                  intermediate_size=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                  num_labels=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.BertForSequenceClassification(cfg)


class _RecordChoices(transformers.TrainerCallback):
    """The draw of every optimiser step, read after the step (one forward per step here)."""

    def __init__(self, wrapped) -> None:
        self.wrapped, self.seen = wrapped, []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append((self.wrapped.draw_step, self.wrapped.last_choices.clone()))


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_steps_the_schedule_and_exports_a_reloadable_successor(tmp_path, accumulation):
    steps = 5
    predecessor = _tiny_bert()
    sched = theseus.ConstantReplacing(0.5, replacing_steps=3)
    wrapped = theseus.wrap(copy.deepcopy(predecessor), ratio=2, scheduler=sched, seed=3)
    before = {k: v.clone() for k, v in wrapped.state_dict().items() if isinstance(v, torch.Tensor)}
    record = _RecordChoices(wrapped)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=steps, per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=accumulation, learning_rate=1e-2, warmup_steps=0, report_to=[],
        save_strategy="no", logging_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
        seed=0)
    trainer = transformers.Trainer(model=wrapped, args=args, train_dataset=_Rows(N),
                                   callbacks=[theseus.TheseusCallback(wrapped)])
    # the recorder must run after the Theseus callback: it reads the schedule of the next step
    trainer.add_callback(record)
    trainer.train()

    # one scheduler step per optimiser step; one draw per forward (micro-batch)
    assert trainer.state.global_step == steps
    assert sched.step_count == steps and sched.p == 1.0
    assert wrapped.draw_step == steps * accumulation
    for opt_step, (draw_step, choices) in enumerate(record.seen):
        assert draw_step == (opt_step + 1) * accumulation
        # the last forward of optimiser step s drew with the rate of step s
        assert torch.equal(choices, wrapped.choices(draw_step - 1, p=sched.value(opt_step)))
    assert [bool(c.all()) for _, c in record.seen[3:]] == [True, True]  # p = 1 from step 3 on

    # only the successor layers changed
    after = wrapped.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed and all(".successor." in k for k in changed), sorted(changed)

    # the exported successor reloads and gives the wrapped model's eval outputs
    small = wrapped.successor()
    small.save_pretrained(tmp_path / "small")
    loaded = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "small").eval()
    assert loaded.config.num_hidden_layers == LAYERS // 2
    rows = _Rows(6, seed=1)
    x = {"input_ids": rows.ids, "attention_mask": torch.ones_like(rows.ids)}
    wrapped.eval()
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, wrapped(**x).logits)
        assert not torch.equal(loaded(**x).logits, predecessor.eval()(**x).logits)
