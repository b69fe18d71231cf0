"""A sampler that makes each epoch's order and augmentation a pure function of (seed, epoch), and
splits a split across distributed ranks without duplicating or dropping samples.

Lightning calls ``set_epoch`` before every epoch. The sampler yields ``(index, sample_seed)``
pairs and the dataset seeds the random transforms of that sample from ``sample_seed``. So the same
seed gives the same batches in the same order with the same crops and flips whatever the number of
workers, whether they persist between epochs, and whether the run was interrupted and resumed (no
random state has to survive in the checkpoint). A run resumed mid-epoch calls ``skip`` to drop the
samples that epoch had already trained on.

With several ranks, rank r takes every ``world_size``-th sample starting at r. Training pads the
epoch by repeating its first samples so all ranks run the same number of steps (DDP needs that for
its gradient all-reduce); evaluation does not pad, so every sample is scored exactly once and the
metrics, summed over ranks by torchmetrics, equal those of a single process.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class SeededSampler(Sampler[tuple[int, int]]):
    def __init__(
        self, length: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1, pad: bool = True
    ) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0
        self._skip: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, epoch: int, num_samples: int) -> None:
        """Leave out this rank's first ``num_samples`` of ``epoch``, once: the next pass over that epoch.

        ``len()`` still counts the whole epoch, as the trainer's restored batch counter does.
        """
        self._skip = (epoch, num_samples) if num_samples > 0 else None

    def __len__(self) -> int:
        if self.pad:
            return -(-self.length // self.world_size)
        return len(range(self.rank, self.length, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=g) if self.shuffle else torch.arange(self.length)
        sample_seeds = torch.randint(0, 2**62, (self.length,), generator=g)
        items = list(zip(order.tolist(), sample_seeds.tolist(), strict=True))
        if self.pad and items and self.length % self.world_size:
            # Cyclically, as DistributedSampler does: a split smaller than the world still fills every rank.
            total = len(self) * self.world_size
            items = (items * -(-total // self.length))[:total]
        items = items[self.rank :: self.world_size]
        if self._skip is not None and self._skip[0] == self.epoch:
            items = items[self._skip[1] :]
            self._skip = None
        return iter(items)
