"""An exponential moving average of the weights (EMA): what `--ema DECAY` validates and saves
in place of the last step's weights.

    average = WeightAverage(model, decay=0.99)
    ...                             # after each optimizer step:
    average.update()
    validate(average.model, ...)    # a smoothed copy, steadier than the weights of any one step

The decay is warmed up as in timm's ModelEmaV3 (`min(decay, (1 + n) / (10 + n))` at the n-th
update), so that a short run, or a fine-tune that starts from another model's weights, does not
keep much of its starting point. Floating-point buffers (BatchNorm's running statistics) are
averaged with the weights; integer ones are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """A copy of `model` whose every tensor follows the model's by an exponential moving
    average, updated by `update()` after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"an average's decay must be in (0, 1), got {decay!r}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        # state_dict() shares storage with the tensors: the pairs are formed once.
        averaged, current = self.model.state_dict().values(), model.state_dict().values()
        self._pairs = list(zip(averaged, current, strict=True))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current tensors by one step."""
        self.updates += 1
        weight = 1 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        for averaged, current in self._pairs:
            if averaged.is_floating_point():
                averaged.lerp_(current, weight)
            else:
                averaged.copy_(current)

    def state_dict(self) -> dict:
        """What a checkpoint keeps to resume the average: its tensors and its update count."""
        return {"weights": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
