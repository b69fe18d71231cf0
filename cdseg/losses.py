"""BCE-with-logits + soft Dice for binary change masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probs = torch.sigmoid(logits.float())
        target = target.float()
        inter = (probs * target).sum()
        total = probs.sum() + target.sum()
        return 1.0 - (2.0 * inter + smooth) / (total + smooth)


class BCEDiceLoss(nn.Module):
    """``BCEWithLogits(pos_weight) + dice_weight * soft Dice``.

    Args:
        dice_weight: weight of the Dice term (0 disables it).
        pos_weight: weight of positive (change) pixels in BCE; ``None`` = 1. A common choice is
            the ratio of unchanged to changed pixels, capped (e.g. 5-10) for stability.
        smooth: Dice smoothing, see :func:`soft_dice_loss`.
    """

    def __init__(self, dice_weight: float = 1.0, pos_weight: float | None = None, smooth: float = 1.0) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.register_buffer("pos_weight", torch.tensor(pos_weight) if pos_weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # F.binary_cross_entropy_with_logits is autocast to float32 already.
        loss = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=self.pos_weight)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.smooth)
        return loss
