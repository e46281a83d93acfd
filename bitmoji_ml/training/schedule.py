"""The learning-rate schedule: a multiplier of the peak LR for every optimizer step.

`onecycle` warms up linearly from 4 % of the peak over the first 20 % of the steps, then follows
a cosine down to zero at the last step; `cosine` is the same without the warm-up; `constant`
stays at the peak.

Changing the number of epochs on `--resume` re-plans the rest of the schedule instead of
re-reading the old curve at a new length (which made the LR jump, e.g. from ~0 to 0.37x the
peak when a finished 20-epoch run was extended to 30): from the step where training resumes
(or the end of the warm-up, if it had not ended), the LR continues at the last value used and
follows a cosine down to zero at the new last step. A constant schedule stays constant.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

ONECYCLE_WARMUP = 0.2  # share of the steps spent warming up
WARMUP_START = 0.04  # first warm-up multiplier


def _half_cosine(done: int, length: int) -> float:
    """1 at `done` = 0, falling along a half cosine to 0 at `done` = `length` (and after)."""
    return 0.5 * (1 + math.cos(math.pi * min(1.0, done / max(1, length))))


@dataclasses.dataclass
class Schedule:
    """The planned curve plus any re-planned tails: (start step, end step, start multiplier)."""

    kind: str  # onecycle | cosine | constant
    total_steps: int
    warmup_steps: int
    tails: list[tuple[int, int, float]] = dataclasses.field(default_factory=list)

    @classmethod
    def planned(cls, kind: str, total_steps: int) -> Schedule:
        """The schedule of a new run of `total_steps` optimizer steps."""
        warmup = max(1, round(total_steps * ONECYCLE_WARMUP)) if kind == "onecycle" else 0
        return cls(kind, total_steps, warmup)

    @property
    def end_step(self) -> int:
        """The step at which the multiplier reaches zero (the run's last step)."""
        return self.tails[-1][1] if self.tails else self.total_steps

    def factor(self, step: int) -> float:
        """Multiplier of the peak learning rate for optimizer step `step` (0-based)."""
        if self.kind == "constant":
            return 1.0
        for start, end, value in reversed(self.tails):
            if step >= start:
                return value * _half_cosine(step - start, end - start)
        if step < self.warmup_steps:
            return WARMUP_START + (1 - WARMUP_START) * step / self.warmup_steps
        return _half_cosine(step - self.warmup_steps, self.total_steps - self.warmup_steps)

    def replanned(self, *, end_step: int, at_step: int) -> Schedule:
        """This schedule with its end moved to `end_step`, training having done `at_step` steps:
        a cosine from the last multiplier used down to zero at the new end (see the module)."""
        if self.kind == "constant" or end_step == self.end_step:
            return self
        # An unfinished warm-up still climbs to the peak, unless the new end comes first.
        start = max(at_step, self.warmup_steps) if end_step > self.warmup_steps else at_step
        value = self.factor(max(0, start - 1))
        return dataclasses.replace(self, tails=[*self.tails, (start, end_step, value)])

    def state_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Schedule:
        """The schedule `state_dict` described."""
        return cls(**{**state, "tails": [tuple(tail) for tail in state["tails"]]})
