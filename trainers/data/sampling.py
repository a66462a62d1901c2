"""The batches of a run counted in steps: which crops step k trains on, and their random draws,
are a function of the seed, k and the rank alone.

    loader = DataLoader(SeededItems(dataset), batch_sampler=StepBatches(len(dataset), 8,
                        first=resumed_step, last=total_steps, seed=0), persistent_workers=True)

One loader iterator serves the whole run (workers start once, however many passes), and a run
resumed at any step sees the batches and augmentations of an uninterrupted one, on any number
of processes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["SeededItems", "StepBatches", "steps_per_pass"]


def steps_per_pass(size: int, batch_size: int, world: int = 1) -> int:
    """Steps in one pass over `size` items: each rank's equal share (padded, as
    DistributedSampler pads) in full batches, at least one."""
    return max(1, -(-size // world) // batch_size)


class StepBatches(Sampler[list[tuple[int, int]]]):
    """Batches for steps `first` to `last` - 1 of a run over `size` items: each pass is a
    permutation seeded by (seed, pass), split between `world` ranks as DistributedSampler
    splits it, cut into batches of `batch_size` (an incomplete last batch is dropped unless it
    is the only one). Each index comes with the seed of its augmentation."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        first: int,
        last: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if size < 1:
            raise ValueError("a training set needs at least one item, got none")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.first, self.last, self.rank, self.world = first, last, rank, world
        self.per_pass = steps_per_pass(size, batch_size, world)

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The (index, seed) pairs of step `step`."""
        epoch, position = divmod(step, self.per_pass)
        mine = self._share(epoch)
        chosen = mine[position * self.batch_size : (position + 1) * self.batch_size]
        return [
            (index, _item_seed(self.seed, step, self.rank, i)) for i, index in enumerate(chosen)
        ]

    @functools.lru_cache(maxsize=2)  # noqa: B019 (a sampler lives as long as its run)
    def _share(self, epoch: int) -> list[int]:
        """This rank's items of pass `epoch`, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        total = -(-self.size // self.world) * self.world
        order = (order * -(-total // self.size))[:total]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.first, self.last):
            yield self.batch(step)


def _item_seed(seed: int, step: int, rank: int, slot: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank, slot]).generate_state(1)[0])


class SeededItems(Dataset):
    """`dataset[index]` for (index, seed) pairs, with torch's and NumPy's random generators
    seeded first, so an item's augmentation depends on its seed, not on the worker's history."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, pair: tuple[int, int]) -> object:
        index, seed = pair
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        return self.dataset[index]
