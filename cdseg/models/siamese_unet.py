"""Siamese U-Net: one shared encoder for both dates, fused at every scale, U-Net decoder."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.models.blocks import ConvBNReLU, Encoder, UpBlock

Fusion = Literal["concat_diff", "concat", "diff"]
# How many encoder-widths wide the fused feature map is, per fusion mode.
_FUSION_FACTOR = {"concat_diff": 3, "concat": 2, "diff": 1}


def fuse(fa: torch.Tensor, fb: torch.Tensor, mode: Fusion) -> torch.Tensor:
    """Fuse same-scale features of the two dates: (B, C, h, w) x 2 -> (B, k*C, h, w)."""
    if mode == "concat_diff":
        return torch.cat([fa, fb, torch.abs(fa - fb)], dim=1)
    if mode == "concat":
        return torch.cat([fa, fb], dim=1)
    return torch.abs(fa - fb)


class SiameseUNet(nn.Module):
    """Siamese U-Net change detector.

    Args:
        in_channels: bands per date (3 for RGB).
        base: width of the first encoder stage; stages are base, 2*base, 4*base, 8*base.
        fusion: ``concat_diff`` = concat([FA, FB, |FA-FB|]) (default), ``concat`` = [FA, FB],
            ``diff`` = |FA-FB|.
        prior: initial change probability of every pixel; the head's bias starts at its logit so
            training does not spend its first hundreds of steps pulling the (mostly unchanged)
            background from p = 0.5 down. ``None`` keeps PyTorch's default initialisation.

    ``forward(a, b)`` takes two (B, in_channels, H, W) tensors of any H, W and returns (B, 1, H, W)
    change logits. Inputs whose sides are not multiples of 8 are padded by reflection and the
    logits are cropped back, so every output pixel stays aligned with its input pixel.
    """

    stride = 8  # three 2x poolings

    def __init__(
        self, in_channels: int = 3, base: int = 32, fusion: Fusion = "concat_diff", prior: float | None = 0.05
    ) -> None:
        super().__init__()
        if fusion not in _FUSION_FACTOR:
            raise ValueError(f"model.fusion must be one of {sorted(_FUSION_FACTOR)}, got {fusion!r}")
        k = _FUSION_FACTOR[fusion]
        self.fusion = fusion
        self.encoder = Encoder(in_channels, base)  # shared by both dates
        self.fuse4 = ConvBNReLU(base * 8 * k, base * 8)
        self.up3 = UpBlock(base * 8, base * 4 * k, base * 4)
        self.up2 = UpBlock(base * 4, base * 2 * k, base * 2)
        self.up1 = UpBlock(base * 2, base * k, base)
        self.head = nn.Conv2d(base, 1, kernel_size=1)
        if prior is not None:
            nn.init.constant_(self.head.bias, math.log(prior / (1 - prior)))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ValueError(f"dates A and B must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        h, w = a.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            # Reflection needs pad < side; replicate covers tiny inputs.
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            a = F.pad(a, (0, pad_w, 0, pad_h), mode=mode)
            b = F.pad(b, (0, pad_w, 0, pad_h), mode=mode)
        # Both dates in one batch through the shared encoder: (2B, C, H, W).
        feats = self.encoder(torch.cat([a, b], dim=0))
        s1, s2, s3, s4 = (fuse(*f.chunk(2, dim=0), self.fusion) for f in feats)
        x = self.fuse4(s4)  # (B, 8*base, H/8, W/8)
        x = self.up3(x, s3)  # (B, 4*base, H/4, W/4)
        x = self.up2(x, s2)  # (B, 2*base, H/2, W/2)
        x = self.up1(x, s1)  # (B, base, H, W)
        return self.head(x)[..., :h, :w]
