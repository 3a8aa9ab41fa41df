"""A ``transformers.TrainerCallback`` that steps a Theseus replacement scheduler (needs transformers)."""

from __future__ import annotations

from transformers import TrainerCallback

from .schedulers import ReplacingScheduler


class TheseusCallback(TrainerCallback):
    """Advance ``scheduler`` (or ``wrapped.scheduler``) once per optimiser step of a ``Trainer``.

    Example::

        wrapped = kexue.theseus.wrap(model, scheduler=kexue.theseus.LinearReplacing(0.3, 6e-4))
        trainer = transformers.Trainer(model=wrapped, args=args, train_dataset=train,
                                       callbacks=[kexue.theseus.TheseusCallback(wrapped)])
    """

    def __init__(self, scheduler_or_wrapped) -> None:
        scheduler = getattr(scheduler_or_wrapped, "scheduler", scheduler_or_wrapped)
        if not isinstance(scheduler, ReplacingScheduler):
            raise TypeError("TheseusCallback takes a kexue.theseus scheduler or a wrapped model, got "
                            f"{type(scheduler_or_wrapped).__name__}")
        self.scheduler = scheduler

    def on_step_end(self, args, state, control, **kwargs):
        self.scheduler.step()
        return control
