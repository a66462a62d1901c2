"""When a training run ends, and its learning rate on the way: a number of epochs, a time
budget, or both (whichever ends first).

    budget = Budget(epochs=0, seconds=parse_duration("20m"), steps_per_epoch=len(loader))
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
    """A run's end: after `epochs` epochs of `steps_per_epoch` steps (0: no limit), or after
    `seconds` of the run's wall time (None: no limit), whichever comes first. The clock runs
    from `start` (after the data is loaded) through training, validation and checkpoints, and
    `spent` carries the time of earlier processes of a resumed run."""

    epochs: int
    seconds: float | None
    steps_per_epoch: int
    spent: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _since: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.epochs < 0 or (self.epochs == 0 and self.seconds is None):
            raise ValueError("a run needs a number of epochs, a time budget, or both")

    def start(self) -> None:
        """Start counting."""
        self._since = self.clock()

    def elapsed(self) -> float:
        """Seconds of the run so far, this process and earlier ones."""
        return self.spent + (self.clock() - self._since if self._since is not None else 0.0)

    def progress(self, step: int) -> float:
        """How far through the run `step` is, 0 to 1: the larger of the fraction of the steps
        and the fraction of the time spent."""
        fractions = [0.0]
        if self.epochs:
            fractions.append(step / max(self.epochs * self.steps_per_epoch, 1))
        if self.seconds is not None:
            fractions.append(self.elapsed() / self.seconds)
        return min(max(fractions), 1.0)

    def over(self, step: int) -> bool:
        """True once the epochs are done or the time is spent."""
        return self.progress(step) >= 1.0

    def ended_by(self, step: int) -> str:
        """What ended the run at `step`: "epochs" or "time budget"."""
        if self.epochs and step >= self.epochs * self.steps_per_epoch:
            return "epochs"
        return "time budget"

    def left(self) -> str:
        """The training time left, as M:SS, or "" without a time budget."""
        if self.seconds is None:
            return ""
        seconds = max(int(self.seconds - self.elapsed()), 0)
        return f"{seconds // 60}:{seconds % 60:02d}"
