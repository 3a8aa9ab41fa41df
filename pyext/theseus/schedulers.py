"""Replacement-rate schedules of BERT-of-Theseus: the probability p_t that a successor module
stands in for its predecessor layers at training step t.

* :class:`ConstantReplacing`: p_t = p for t < replacing_steps, then 1 (the successor alone);
* :class:`LinearReplacing`: the curriculum p_t = min(1, slope·t + base) of the paper (Xu et al.,
  2020, eq. 5; its README uses base = 0.3, slope = 0.0006).

Both count steps from 0 and advance with :meth:`step` (one call per optimiser step; the Hugging
Face ``Trainer`` does it through :class:`kexue.theseus.TheseusCallback`).  Their state is the step
count (``state_dict`` / ``load_state_dict``), so a resumed run continues the schedule.
"""

from __future__ import annotations

import math

from .._validate import is_int, is_real


def _check_probability(name: str, value) -> float:
    if not is_real(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


class ReplacingScheduler:
    """Base class: ``p`` is the replacement rate at the current step, ``value(t)`` at any step."""

    def __init__(self) -> None:
        self.step_count = 0

    def value(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def p(self) -> float:
        """The replacement rate now (at step :attr:`step_count`)."""
        return self.value(self.step_count)

    def step(self) -> float:
        """Advance one training step; returns the new rate."""
        self.step_count += 1
        return self.p

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])


class ConstantReplacing(ReplacingScheduler):
    """p_t = ``p`` while t < ``replacing_steps``, then 1: the successor is fine-tuned alone.

    ``replacing_steps=None`` keeps ``p`` for ever (the successor still runs alone in eval mode).
    ``replacing_steps`` must be ≥ 1: the authors' default of 0 skips the replacing phase
    altogether, which is plain fine-tuning of the truncated successor.

    Example::

        sched = ConstantReplacing(0.5, replacing_steps=2500)
        sched.value(0), sched.value(2499), sched.value(2500)   # 0.5, 0.5, 1.0
    """

    def __init__(self, p: float = 0.5, replacing_steps: int | None = None) -> None:
        super().__init__()
        self.rate = _check_probability("p", p)
        if replacing_steps is not None and (not is_int(replacing_steps)
                                            or replacing_steps < 1):
            raise ValueError(f"replacing_steps must be an int >= 1 or None, got {replacing_steps!r} "
                             "(0 would skip the replacing phase: fine-tune kexue.theseus.wrap(...).successor() "
                             "directly for that)")
        self.replacing_steps = replacing_steps

    def value(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.replacing_steps is not None and step >= self.replacing_steps:
            return 1.0
        return self.rate

    def __repr__(self) -> str:
        return f"ConstantReplacing(p={self.rate}, replacing_steps={self.replacing_steps})"


class LinearReplacing(ReplacingScheduler):
    """The curriculum p_t = min(1, ``slope``·t + ``base``): easy (mostly predecessor) to hard.

    It reaches 1 at step ceil((1 − base) / slope); from there the successor trains alone.

    Example::

        sched = LinearReplacing(base=0.3, slope=0.0006)
        sched.value(0), sched.value(1000), sched.value(1167)   # 0.3, 0.9, 1.0
    """

    def __init__(self, base: float = 0.3, slope: float = 0.0006) -> None:
        super().__init__()
        self.base = _check_probability("base", base)
        if not is_real(slope) or not math.isfinite(slope) or slope < 0:
            raise ValueError(f"slope must be a finite number >= 0, got {slope!r}")
        self.slope = float(slope)

    def value(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return min(1.0, self.slope * step + self.base)

    @property
    def steps_to_one(self) -> float:
        """The first step at which p = 1 (``inf`` for slope 0 and base < 1)."""
        if self.base >= 1.0:
            return 0
        return math.inf if self.slope == 0 else math.ceil((1.0 - self.base) / self.slope)

    def __repr__(self) -> str:
        return f"LinearReplacing(base={self.base}, slope={self.slope})"
