"""A sampler that makes each epoch's order and augmentation a pure function of (seed, epoch).

Lightning calls ``set_epoch`` before every epoch. The sampler yields ``(index, sample_seed)``
pairs and the dataset seeds the random transforms of that sample from ``sample_seed``. So the same
seed gives the same batches in the same order with the same crops and flips whatever the number of
workers, whether they persist between epochs, and whether the run was interrupted and resumed at an
epoch boundary (no random state has to survive in the checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class SeededSampler(Sampler[tuple[int, int]]):
    def __init__(self, length: int, shuffle: bool, seed: int = 0) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=g) if self.shuffle else torch.arange(self.length)
        sample_seeds = torch.randint(0, 2**62, (self.length,), generator=g)
        return iter(zip(order.tolist(), sample_seeds.tolist(), strict=True))
