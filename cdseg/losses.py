"""BCE-with-logits + soft Dice for binary change masks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.errors import ConfigError


def dice_sums(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[intersection, total]`` of soft Dice summed over every pixel of the batch, in float32:
    ``sum(p * t)`` and ``sum(p) + sum(t)`` with ``p = sigmoid(logits)``."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probs = torch.sigmoid(logits.float())
        target = target.float()
        return torch.stack([(probs * target).sum(), probs.sum() + target.sum()])


def dice_from_sums(sums: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (2 I + smooth) / (T + smooth)`` from :func:`dice_sums` (of a batch, or added over a split)."""
    return 1.0 - (2.0 * sums[0] + smooth) / (sums[1] + smooth)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over the whole batch, in float32.

    Args:
        logits: (B, 1, H, W) raw scores.
        target: (B, 1, H, W) in {0, 1}.
        smooth: added to numerator and denominator (in pixels).

    The intersection and the sizes are summed over the *batch*, not per sample. The per-sample
    form ``mean_i(1 - (2 I_i + eps) / (U_i + eps))`` gives every tile without change a loss near 1
    as soon as it predicts a few hundredths of probability anywhere, whatever the prediction
    elsewhere, so batches of empty tiles dominate the gradient with noise. Summed over the batch
    with ``smooth = 1``, a batch without change scores ``1 - 1 / (1 + sum(p))``: zero for a clean
    prediction and growing with the false-positive mass, and a batch with change is scored by
    its overlap as usual.
    """
    return dice_from_sums(dice_sums(logits, target), smooth)


class BCEDiceLoss(nn.Module):
    """``BCEWithLogits(pos_weight) + dice_weight * soft Dice``.

    Args:
        dice_weight: weight of the Dice term (0 disables it).
        pos_weight: weight of positive (change) pixels in BCE; ``None`` = 1. A common choice is
            the ratio of unchanged to changed pixels, capped (e.g. 5-10) for stability.
        smooth: Dice smoothing, see :func:`soft_dice_loss`.

    Evaluation scores a whole split with the same formula (:meth:`split_sums` added over the
    batches, then :meth:`from_sums`): the mean BCE over every pixel of the split plus the Dice of
    the split, whatever the batch size.
    """

    def __init__(self, dice_weight: float = 1.0, pos_weight: float | None = None, smooth: float = 1.0) -> None:
        super().__init__()
        # A negative weight would train towards the wrong answer without a word.
        for key, value, least in (
            ("dice_weight", dice_weight, 0),
            ("pos_weight", pos_weight, None),
            ("smooth", smooth, 0),
        ):
            if value is None and least is None:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not (number and (value > 0 if least is None else value >= least)):
                bound = "a number > 0 or null" if least is None else f"a number >= {least}"
                raise ConfigError(f"loss.{key} must be {bound}, got {value!r}")
        self.dice_weight = dice_weight
        self.smooth = smooth
        # Not saved in checkpoints: the run's config sets it (and a resume refuses another value).
        weight = torch.tensor(float(pos_weight)) if pos_weight is not None else None
        self.register_buffer("pos_weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # F.binary_cross_entropy_with_logits is autocast to float32 already.
        loss = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=self.pos_weight)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.smooth)
        return loss

    def split_sums(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(4,) float32 sums over the batch: BCE over its pixels, the pixels, Dice's intersection and total."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            bce = F.binary_cross_entropy_with_logits(
                logits.float(), target.float(), pos_weight=self.pos_weight, reduction="sum"
            )
        pixels = torch.full((), float(target.numel()), device=logits.device)  # a fill: no copy, no wait
        return torch.cat([torch.stack([bce, pixels]), dice_sums(logits, target)])

    def from_sums(self, sums: torch.Tensor) -> torch.Tensor:
        """The loss of everything :meth:`split_sums` was added over."""
        loss = sums[0] / sums[1]
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_from_sums(sums[2:], self.smooth)
        return loss
