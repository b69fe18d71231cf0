"""Siamese U-Net: one shared encoder for both dates, fused at every scale, U-Net decoder."""

from __future__ import annotations

import torch
from torch import nn

from cdseg.models.blocks import (
    ChangeDetector,
    ConvBNReLU,
    Encoder,
    Fusion,
    UpBlock,
    fuse,
    fusion_factor,
    halves,
    init_prior,
)


class SiameseUNet(ChangeDetector):
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
    change logits (:class:`cdseg.models.blocks.ChangeDetector`).
    """

    stride = 8  # three 2x poolings

    def __init__(
        self, in_channels: int = 3, base: int = 32, fusion: Fusion = "concat_diff", prior: float | None = 0.05
    ) -> None:
        super().__init__()
        k = fusion_factor(fusion)
        self.fusion = fusion
        self.encoder = Encoder(in_channels, base)  # shared by both dates
        self.fuse4 = ConvBNReLU(base * 8 * k, base * 8)
        self.up3 = UpBlock(base * 8, base * 4 * k, base * 4)
        self.up2 = UpBlock(base * 4, base * 2 * k, base * 2)
        self.up1 = UpBlock(base * 2, base * k, base)
        self.head = nn.Conv2d(base, 1, kernel_size=1)
        init_prior(self.head, prior)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Both dates in one batch through the shared encoder: (2B, C, H, W).
        feats = self.encoder(torch.cat([a, b], dim=0))
        s1, s2, s3, s4 = (fuse(*halves(f), self.fusion) for f in feats)
        x = self.fuse4(s4)  # (B, 8*base, H/8, W/8)
        x = self.up3(x, s3)  # (B, 4*base, H/4, W/4)
        x = self.up2(x, s2)  # (B, 2*base, H/2, W/2)
        x = self.up1(x, s1)  # (B, base, H, W)
        return self.head(x)
