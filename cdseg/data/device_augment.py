"""``data.augment_on=device``: the training augmentation applied to whole batches on the accelerator.

The host then only crops (so only crops cross the bus, as uint8); flips, 90-degree rotations, the
exchange of the dates and the per-date photometric jitter run here, each sample drawing its own
parameters with the same distributions as :class:`cdseg.data.transforms.Augment` on the host
(``tests/test_device_augment.py`` compares the two), followed by scaling and normalisation.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cdseg.data.transforms import Augment

_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def batch_generator(device: torch.device, seed: int, epoch: int, names: Sequence[str]) -> torch.Generator:
    """A generator seeded by the run's seed, the epoch and the batch's samples: the same batch of the
    same epoch draws the same parameters, also after a resume, whatever the step counters say."""
    key = zlib.crc32(f"{seed}:{epoch}:{','.join(names)}".encode())
    return torch.Generator(device=device).manual_seed(key)


def _uniform(n: int, low: float, high: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def _where(flag: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(flag.view(-1, *([1] * (x.dim() - 1))), x, y)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).unsqueeze(1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_divisor, (maxc - g) / cr_divisor, (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    table = torch.stack(
        [torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 1
    )  # (B, 6, 3, H, W)
    return table.gather(1, i[:, None, None].expand(-1, 1, 3, -1, -1)).squeeze(1)


def _jitter(x: torch.Tensor, ranges: Mapping[str, tuple[float, float]], g: torch.Generator) -> torch.Tensor:
    """Per-sample ColorJitter on (B, 3, H, W) floats in [0, 1]: each sample its own factors, uniform in
    ``ranges`` (:meth:`Augment.jitter_ranges`), and its own order."""
    n, device = x.shape[0], x.device
    factors = {}
    for name in ("brightness", "contrast", "saturation", "hue"):
        if name in ranges:
            shape = (-1, 1, 1) if name == "hue" else (-1, 1, 1, 1)
            factors[name] = _uniform(n, *ranges[name], g, device).view(shape)
    # v2.ColorJitter applies its four operations in a random order per call.
    order = torch.argsort(torch.rand(n, 4, generator=g, device=device), dim=1)
    ops = ("brightness", "contrast", "saturation", "hue")
    for position in range(4):
        for op_index, op in enumerate(ops):
            if op not in factors:
                continue
            chosen = order[:, position] == op_index
            # Skipping an op nobody drew saves work on the CPU; on an accelerator the test would wait
            # for the device (twice per op and position), and at batches of dozens every op is drawn.
            if device.type == "cpu" and not chosen.any():
                continue
            x = _where(chosen, color_op(op, x, factors[op]), x)
    return x


def color_op(op: str, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_<op> on (B, 3, H, W) floats in [0, 1], with a factor per sample ((B, 1, 1, 1),
    or (B, 1, 1) for hue)."""
    if op == "brightness":
        y = x * f
    elif op == "contrast":
        y = torch.lerp(_grey(x).mean((2, 3), keepdim=True).expand_as(x), x, f)
    elif op == "saturation":
        y = torch.lerp(_grey(x).expand_as(x), x, f)
    else:
        hsv = _rgb_to_hsv(x)
        y = _hsv_to_rgb(torch.stack((torch.fmod(hsv[:, 0] + f + 1.0, 1.0), hsv[:, 1], hsv[:, 2]), 1))
    return y.clamp(0.0, 1.0)


class DeviceAugment:
    """:class:`Augment`'s flips, rotations, date exchange and jitter (not its crop, done on the host) on
    a batch ``{"A": (B,3,H,W) uint8, "B": ..., "mask": (B,1,H,W)}``, then scaling to [0, 1] and
    normalisation by ``mean``/``std``."""

    def __init__(self, augment: Augment, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.augment, self.mean, self.std = augment, mean, std
        self.jitter = augment.jitter_ranges()
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # copied to a device once

    def normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``std`` as (1, 3, 1, 1) tensors on ``device``."""
        if device not in self._norm:
            self._norm[device] = tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (self.mean, self.std))
        return self._norm[device]

    def __call__(self, batch: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
        aug, a, b, mask = self.augment, batch["A"], batch["B"], batch.get("mask")
        n, device = a.shape[0], a.device
        stack = torch.cat([a, b] + ([mask.to(a.dtype)] if mask is not None else []), 1)  # one geometry for all
        for p, dim in ((aug.hflip, -1), (aug.vflip, -2)):
            if p:
                stack = _where(torch.rand(n, generator=g, device=device) < p, stack.flip(dim), stack)
        if aug.rot90:
            k = torch.randint(0, 4, (n,), generator=g, device=device)
            turns = range(4)
            if stack.shape[-1] != stack.shape[-2]:  # as on the host: a non-square crop turns by 0 or 180 only
                k, turns = 2 * (k % 2), (0, 2)
            rotated = stack
            for i in turns[1:]:
                rotated = _where(k == i, torch.rot90(stack, i, (-2, -1)), rotated)
            stack = rotated
        a, b = stack[:, :3], stack[:, 3:6]
        if aug.swap:
            swap = torch.rand(n, generator=g, device=device) < aug.swap
            a, b = _where(swap, b, a), _where(swap, a, b)
        a, b = (x.float() / 255.0 for x in (a, b))
        if self.jitter:
            a, b = _jitter(a, self.jitter, g), _jitter(b, self.jitter, g)
        if self.mean is not None and self.std is not None:
            mean, std = self.normalisation(device)
            a, b = (a - mean) / std, (b - mean) / std
        out = {**batch, "A": a, "B": b}
        if mask is not None:
            out["mask"] = stack[:, 6:].to(mask.dtype)
        return out
