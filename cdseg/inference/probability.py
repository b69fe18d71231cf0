"""A trained network as a deployable function of raw images: the run's input normalisation, the
network and the sigmoid in one ``nn.Module``. ``predict.py`` runs exactly this module, and
``cdseg.export`` writes exactly this module to ONNX or TorchScript, so both give the same numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cdseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, scale


class ChangeProbability(nn.Module):
    """Two dates -> change probabilities.

    Args:
        net: ``forward(a, b) -> (N, 1, H, W)`` logits for normalised float dates.
        mean, std: the run's per-channel statistics on the [0, 1] scale (``data.mean``, ``data.std``);
            ``None`` leaves the scaled values as they are.

    ``forward(a, b)`` takes two (N, C, H, W) dates, uint8 in [0, 255] or float in [0, 1], and returns
    (N, 1, H, W) float32 probabilities.
    """

    def __init__(
        self, net: nn.Module, mean: Sequence[float] | None = IMAGENET_MEAN, std: Sequence[float] | None = IMAGENET_STD
    ) -> None:
        super().__init__()
        self.net = net
        # (C, 1, 1) buffers rather than constants made in forward: they follow .to(device), and a
        # traced export does not freeze the device they were made on.
        normalised = mean is not None and std is not None
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1) if normalised else None, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1) if normalised else None, persistent=False)
        # Sides shorter than the network's downsampling are padded by replication, not reflection:
        # an export records one of the two, so exported models take sides of at least this many pixels.
        self.min_side = getattr(net, "stride", 1)

    @classmethod
    def of_run(cls, net: nn.Module, config: Mapping[str, Any]) -> ChangeProbability:
        """The module of a run's network, normalised as its ``data`` config says (ImageNet's by default)."""
        data = config.get("data", {})
        return cls(net, data.get("mean", IMAGENET_MEAN), data.get("std", IMAGENET_STD))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = (self.normalise(scale(x)) for x in (a, b))
        return torch.sigmoid(self.net(a, b).float())

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`cdseg.data.preprocess.normalise`'s arithmetic, with the statistics as buffers."""
        return x if self.mean is None else x.sub(self.mean).div_(self.std)
