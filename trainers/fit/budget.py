"""When a training run ends, and its learning rate on the way: a number of optimizer steps, a
time budget, or both (whichever ends first).

    budget = Budget(steps=3000, seconds=parse_duration("20m"))
    budget.start()
    while not budget.over(step):
        lr = base_lr * cosine(budget.progress(step))
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_UNITS = {"s": 1, "m": 60, "h": 3600}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "90s", "20m", "2h" or "1h30m"; a ValueError naming the
    text otherwise."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(f"time budget {text!r} is not a duration such as 90s, 20m, 2h or 1h30m")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"time budget {text!r} must be longer than zero")
    return seconds


def cosine(progress: float) -> float:
    """The learning-rate factor at `progress` (0 to 1) through a run: CosineAnnealingLR's curve
    from 1 down to 0."""
    return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


@dataclass
class Budget:
    """A run's end: after `steps` optimizer steps (0: no limit), or after `seconds` of the run's
    wall time (None: no limit), whichever comes first. The clock runs from `start` (after the
    data is loaded) through training, validation and checkpoints, less what `exclude` takes out
    (compilation); `spent` carries the time of earlier processes of a resumed run."""

    steps: int
    seconds: float | None
    spent: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _since: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.steps < 0 or (self.steps == 0 and self.seconds is None):
            raise ValueError("a run needs a number of steps, a time budget, or both")

    def start(self) -> None:
        """Start counting."""
        self._since = self.clock()

    def exclude(self, seconds: float) -> None:
        """Take `seconds` (a compilation, say) out of the time spent."""
        self.spent -= seconds

    def elapsed(self) -> float:
        """Seconds of the run so far, this process and earlier ones."""
        return self.spent + (self.clock() - self._since if self._since is not None else 0.0)

    def step_fraction(self, step: int) -> float:
        """The fraction of the steps that `step` has done (0 without a number of steps)."""
        return min(step / self.steps, 1.0) if self.steps else 0.0

    def progress(self, step: int) -> float:
        """How far through the run `step` is, 0 to 1: the larger of the fraction of the steps
        and the fraction of the time spent."""
        fractions = [self.step_fraction(step)]
        if self.seconds is not None:
            fractions.append(self.elapsed() / self.seconds)
        return min(max(fractions), 1.0)

    def over(self, step: int) -> bool:
        """True once the steps are done or the time is spent."""
        return self.progress(step) >= 1.0

    def ended_by(self, step: int) -> str:
        """What ended the run at `step`: "steps" or "time budget"."""
        return "steps" if self.steps and step >= self.steps else "time budget"

    def left(self) -> str:
        """The training time left, as M:SS, or "" without a time budget."""
        if self.seconds is None:
            return ""
        seconds = max(int(self.seconds - self.elapsed()), 0)
        return f"{seconds // 60}:{seconds % 60:02d}"
