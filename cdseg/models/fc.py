"""The encoder and decoder shared by the three fully convolutional change detectors of Daudt, Le Saux
and Boulch, "Fully Convolutional Siamese Networks for Change Detection" (ICIP 2018): FC-EF,
FC-Siam-conc and FC-Siam-diff.

Encoder: four stages of 3x3 convolutions (2, 2, 3 and 3 of them; widths base, 2, 4 and 8 x base),
each followed by BatchNorm, ReLU and Dropout2d, and a 2x2 max-pool after every stage (stride 16).
Decoder: per stage, a 3x3 stride-2 transposed convolution, the concatenation with that scale's skip
features, and as many 3x3 convolutions as the encoder stage had; the last one of the first stage is
the 1-channel head. The published code writes the decoder's convolutions as stride-1 transposed
convolutions, which are 3x3 convolutions with the same parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from cdseg.models.blocks import ChangeDetector, init_prior

DEPTHS = (2, 2, 3, 3)  # convolutions per stage, as published


def conv_bn_relu_drop(in_ch: int, out_ch: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True), nn.Dropout2d(dropout)
    )


class FCEncoder(nn.Module):
    """(B, C, H, W) -> the four stages' features (B, base * 2^i, H / 2^i, W / 2^i), i = 0..3, and the
    pooled output of the last stage (B, 8 * base, H / 16, W / 16)."""

    def __init__(self, in_channels: int, base: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        self.widths = [base, 2 * base, 4 * base, 8 * base]
        self.stages = nn.ModuleList()
        prev = in_channels
        for width, depth in zip(self.widths, DEPTHS, strict=True):
            self.stages.append(
                nn.Sequential(*(conv_bn_relu_drop(prev if i == 0 else width, width, dropout) for i in range(depth)))
            )
            prev = width
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
            x = self.pool(x)
        return feats, x


class FCDecoder(nn.Module):
    """Bottleneck (B, 8 * base, H/16, W/16) and per-stage skips (B, skip_factor * base * 2^i, ...) ->
    (B, 1, H, W) logits. ``skip_factor``: how many encoder widths a skip holds (1 for the early-fusion
    and difference skips, 2 for the concatenated ones)."""

    def __init__(self, base: int = 16, skip_factor: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        self.ups = nn.ModuleList()
        self.stages = nn.ModuleList()
        for i in reversed(range(4)):
            width, depth = widths[i], DEPTHS[i]
            out = widths[i - 1] if i else None  # the first stage ends in the head
            self.ups.append(nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1))
            convs = [conv_bn_relu_drop(width * (1 + skip_factor), width, dropout)]
            convs += [conv_bn_relu_drop(width, width, dropout) for _ in range(depth - 2)]
            convs.append(conv_bn_relu_drop(width, out, dropout) if out else nn.Conv2d(width, 1, 3, padding=1))
            self.stages.append(nn.Sequential(*convs))

    @property
    def head(self) -> nn.Conv2d:
        return self.stages[-1][-1]

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for up, stage, skip in zip(self.ups, self.stages, reversed(skips), strict=True):
            x = stage(torch.cat([up(x), skip], dim=1))
        return x


class FCNet(ChangeDetector):
    """What the three FC networks share: the encoder, the decoder and their arguments.

    Args:
        in_channels: bands per date.
        base: width of the first stage (16 as published).
        dropout: Dropout2d probability after every convolution (0.2 as published).
        prior: initial change probability of the head (:func:`cdseg.models.blocks.init_prior`).
    """

    stride = 16  # four 2x poolings
    dates_per_input = 1  # 2: early fusion, both dates stacked into one encoder input
    skip_factor = 1  # encoder widths per decoder skip: 2 when the skips concatenate both dates

    def __init__(self, in_channels: int = 3, base: int = 16, dropout: float = 0.2, prior: float | None = 0.05) -> None:
        super().__init__()
        self.encoder = FCEncoder(self.dates_per_input * in_channels, base, dropout)
        self.decoder = FCDecoder(base, self.skip_factor, dropout)
        init_prior(self.decoder.head, prior)
