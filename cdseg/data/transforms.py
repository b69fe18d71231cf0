"""Synchronized augmentation for change detection, built on torchvision.transforms.v2.

A sample is ``{"A": Image, "B": Image, "mask": Mask}``. v2 transforms draw their random
parameters once per call and apply them to every tv_tensor in the sample (a ``Mask`` is never
interpolated; :class:`Resize` takes the pixel under each centre), so A, B and the mask stay aligned.
Only photometric jitter is drawn per date (:class:`PerDate`), because real acquisitions differ in
colour independently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cdseg.config import bool_problem, int_problem, probability_problem, raise_problems
from cdseg.data.color import ColorJitter
from cdseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, resize_mask, resize_problem


class RandomCropUpTo(v2.Transform):
    """Random ``size`` x ``size`` crop; a side shorter than ``size`` is kept whole, not padded."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = next(F.get_size(x) for x in flat_inputs if isinstance(x, tv_tensors.Image))
        ch, cw = min(self.size, h), min(self.size, w)
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        return {"top": top, "left": left, "height": ch, "width": cw}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.crop(inpt, **params)


def jitter_problem(options: Any) -> str | None:
    """What is wrong with ``data.color_jitter`` (None when nothing), in torchvision's own words."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        return f"data.color_jitter must be null or a mapping such as {{brightness: 0.3, hue: 0.05}}, got {options!r}"
    try:
        v2.ColorJitter(**options)
    except (TypeError, ValueError) as e:
        return f"data.color_jitter={dict(options)!r}: {e}"
    return None


class Resize(v2.Resize):
    """``v2.Resize`` (antialiased bilinear) whose masks are resized by :func:`resize_mask`, aligned
    with the images, rather than v2's legacy nearest."""

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__(list(size) if isinstance(size, Sequence) else [size, size], antialias=True)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return tv_tensors.wrap(resize_mask(inpt.as_subclass(torch.Tensor), self.size), like=inpt)
        return super().transform(inpt, params)


class RandomRot90(v2.Transform):
    """Rotate by k * 90 degrees, k uniform in {0, 1, 2, 3}: exact, no interpolation.

    A non-square input only turns by 0 or 180 degrees, so every sample keeps its shape and
    batches of equal-shaped crops still stack.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = next(F.get_size(x) for x in flat_inputs if isinstance(x, tv_tensors.Image))
        k = int(torch.randint(0, 4, ()))
        return {"k": k if h == w else 2 * (k % 2)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["k"] == 0 or not isinstance(inpt, torch.Tensor):
            return inpt
        return tv_tensors.wrap(torch.rot90(inpt, params["k"], dims=(-2, -1)), like=inpt)


class RandomSwap(nn.Module):
    """Swap the two dates with probability p (the label of a symmetric change is unchanged)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, sample: dict) -> dict:
        if torch.rand(()) < self.p:
            sample = {**sample, "A": sample["B"], "B": sample["A"]}
        return sample


class PerDate(nn.Module):
    """Apply ``transform`` to A and to B separately, each with its own random parameters."""

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, sample: dict) -> dict:
        return {**sample, "A": self.transform(sample["A"]), "B": self.transform(sample["B"])}


@dataclass(frozen=True)
class Augment:
    """Training augmentation: the one definition of its options. The data config's keys of the same
    names (conf/datamodule.yaml) are passed here by the datamodule.

    Attributes:
        crop_size: random square training crop (LEVIR protocol: 256 from 1024 tiles), evaluation
            then runs on the full image; a side shorter than the crop is kept whole.
        hflip, vflip: flip probabilities.
        rot90: random multiples of 90 degrees.
        swap: probability of exchanging A and B.
        color_jitter: ``v2.ColorJitter`` arguments (brightness, contrast, saturation, hue; each a
            number or a [min, max] range), drawn independently for A and B (computed by
            :class:`cdseg.data.color.ColorJitter`, its fast equivalent on uint8 CPU images).
    """

    crop_size: int | None = None
    hflip: float = 0.5
    vflip: float = 0.0
    rot90: bool = False
    swap: float = 0.0
    color_jitter: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        # Wrongly typed options fail here, naming the key, rather than deep inside a DataLoader.
        raise_problems(
            [
                int_problem("data.crop_size", self.crop_size, 1, optional=True),
                *(probability_problem(f"data.{k}", getattr(self, k)) for k in ("hflip", "vflip", "swap")),
                bool_problem("data.rot90", self.rot90),
                jitter_problem(self.color_jitter),
            ]
        )

    def jitter_ranges(self) -> dict[str, tuple[float, float]]:
        """Each jitter factor's [min, max] as ``v2.ColorJitter`` draws it (a number v means [1-v, 1+v],
        for hue [-v, v]); factors that do nothing are left out."""
        if not self.color_jitter:
            return {}
        jitter = v2.ColorJitter(**self.color_jitter)
        names = ("brightness", "contrast", "saturation", "hue")
        return {k: tuple(getattr(jitter, k)) for k in names if getattr(jitter, k) is not None}

    def steps(self) -> list[nn.Module]:
        """The random transforms, in order: crop, flips, rotation, date exchange, per-date jitter."""
        steps: list[nn.Module] = []
        if self.crop_size:
            steps.append(RandomCropUpTo(self.crop_size))
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip(self.hflip))
        if self.vflip:
            steps.append(v2.RandomVerticalFlip(self.vflip))
        if self.rot90:
            steps.append(RandomRot90())
        if self.swap:
            steps.append(RandomSwap(self.swap))
        if self.color_jitter:
            steps.append(PerDate(ColorJitter(**self.color_jitter)))
        return steps


def host_crop(augment: Augment, resize: int | Sequence[int] | None = None) -> nn.Module:
    """What the host still does for ``data.augment_on=device``: the resize and the random crop, on
    uint8 (the rest runs on the batch: :mod:`cdseg.data.device_augment`)."""
    steps: list[nn.Module] = []
    if resize is not None:
        steps.append(Resize(resize))
    if augment.crop_size:
        steps.append(RandomCropUpTo(augment.crop_size))
    return v2.Compose(steps) if steps else v2.Identity()


def build_transforms(
    augment: Augment | None = None,
    resize: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> v2.Compose:
    """The pipeline of one stage: resize, augmentation (training only), scaling, normalisation.

    Args:
        augment: the training augmentation; ``None`` for evaluation.
        resize: whole-image resize (int = square side, or [H, W]); the seed's way to fit large tiles.
        mean, std: per-band normalisation after scaling to [0, 1]; ``None`` keeps [0, 1].
    """
    steps: list[nn.Module] = []
    if resize is not None:
        raise_problems([resize_problem(resize)])
        steps.append(Resize(resize))
    if augment is not None:
        steps += augment.steps()
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    if mean is not None and std is not None:
        steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)
