"""Small building blocks shared by the change-detection architectures."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.errors import ConfigError

Fusion = Literal["concat_diff", "concat", "diff"]
# How many encoder-widths wide the fused feature map is, per fusion mode.
FUSION_FACTOR = {"concat_diff": 3, "concat": 2, "diff": 1}


def fusion_factor(mode: str) -> int:
    """How many feature widths ``fuse`` returns for ``mode``; an unknown mode is refused naming the option."""
    if mode not in FUSION_FACTOR:
        raise ConfigError(f"model.fusion must be one of {sorted(FUSION_FACTOR)}, got {mode!r}")
    return FUSION_FACTOR[mode]


def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(2B, ...) features of both dates, run as one batch -> the (B, ...) of date A and of date B.
    Slicing rather than ``chunk``, which an export with a dynamic batch would fix to its example size."""
    n = x.shape[0] // 2
    return x[:n], x[n:]


def fuse(fa: torch.Tensor, fb: torch.Tensor, mode: Fusion) -> torch.Tensor:
    """Fuse same-scale features of the two dates: (B, C, h, w) x 2 -> (B, k*C, h, w)."""
    if mode == "concat_diff":
        return torch.cat([fa, fb, torch.abs(fa - fb)], dim=1)
    if mode == "concat":
        return torch.cat([fa, fb], dim=1)
    return torch.abs(fa - fb)


class ChangeDetector(nn.Module):
    """Base of cdseg's networks: ``forward(a, b)`` takes two (B, C, H, W) dates of any H, W and
    returns (B, 1, H, W) change logits.

    Subclasses implement :meth:`logits` for inputs whose sides are multiples of ``stride`` (the
    product of their downsamplings). Other inputs are padded by reflection at the bottom and right
    (by replication, on both axes, when either side is too short to reflect its padding) and the
    logits cropped back, so every output pixel stays aligned with its input pixel.
    """

    stride = 1

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ValueError(f"dates A and B must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        h, w = a.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        # Padded even by zero pixels: no branch on the size, so an export with dynamic height and
        # width (cdseg.export) records one graph for every size.
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        a = F.pad(a, (0, pad_w, 0, pad_h), mode=mode)
        b = F.pad(b, (0, pad_w, 0, pad_h), mode=mode)
        return self.logits(a, b)[..., :h, :w]


def init_prior(head: nn.Conv2d, prior: float | None) -> None:
    """Start ``head``'s bias at the logit of ``prior``, the initial change probability of every pixel,
    so training does not spend its first hundreds of steps pulling the (mostly unchanged) background
    from p = 0.5 down. ``None`` keeps PyTorch's default initialisation."""
    if prior is None:
        return
    if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not 0 < prior < 1:
        raise ConfigError(f"model.prior must be a probability strictly between 0 and 1, or null; got {prior!r}")
    nn.init.constant_(head.bias, math.log(prior / (1 - prior)))


class ConvBNReLU(nn.Sequential):
    """Convolution (3x3 unless ``kernel_size`` says otherwise; no bias: BatchNorm follows), BatchNorm, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


def double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(in_ch, out_ch), ConvBNReLU(out_ch, out_ch))


class Encoder(nn.Module):
    """Four-scale VGG-style encoder.

    Contract: for input (B, C, H, W) with H and W divisible by 8 it returns four feature maps
    (B, base, H, W), (B, 2*base, H/2, W/2), (B, 4*base, H/4, W/4), (B, 8*base, H/8, W/8).
    """

    def __init__(self, in_channels: int = 3, base: int = 32) -> None:
        super().__init__()
        widths = [base, base * 2, base * 4, base * 8]
        self.stages = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.stages.append(double_conv(prev, w))
            prev = w
        self.pool = nn.MaxPool2d(2)
        self.widths = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.pool(x)
            x = stage(x)
            feats.append(x)
        return feats


class UpBlock(nn.Module):
    """Transposed-conv x2 upsampling, concatenation with the skip, two 3x3 convs."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
        self.conv = double_conv(out_ch + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))
