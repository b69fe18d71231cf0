"""What evaluation does to a pair (validation, test and predict.py alike): an optional whole-image
resize, scaling to [0, 1] and normalisation. Plain torch, so that prediction starts without importing
torchvision (about 1.3 s); the resize alone uses it, imported when a run was trained resized.

The arithmetic is torchvision's own (``ToDtype(scale=True)``, ``Normalize``, ``Resize(antialias=True)``),
so these tensors equal what the v2 pipeline gives, bit for bit (``tests/test_transforms.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cdseg.config import int_problem, raise_problems

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_OPTIONS = ("resize", "mean", "std")  # what evaluation does to a pair; the rest of a data config is loading


class EvalTransform:
    """``{"A": (3,H,W) uint8, "B": ..., ["mask": (1,H,W)]}`` -> float dates, resized if asked, scaled
    and normalised; the mask only resized (:func:`resize_mask`). Other keys pass through."""

    plain_tensors = True  # the dataset hands it plain tensors (no torchvision tv_tensors)

    def __init__(
        self,
        resize: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> None:
        raise_problems([resize_problem(resize)])
        self.size = None if resize is None else (list(resize) if isinstance(resize, Sequence) else [resize, resize])
        self.mean, self.std = mean, std

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(sample)
        for key in ("A", "B"):
            x = self.resize(sample[key].as_subclass(torch.Tensor))
            out[key] = normalise(scale(x), self.mean, self.std)
        if "mask" in sample and self.size is not None:
            out["mask"] = _resize(sample["mask"].as_subclass(torch.Tensor), self.size, mask=True)
        return out

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """A (C, H, W) date at the size evaluation sees, dtype kept (the image itself when not resized)."""
        return image if self.size is None else _resize(image, self.size, mask=False)


def scale(x: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [0, 1], as torchvision's ``ToDtype(float32, scale=True)``; float
    input is taken as already in [0, 1] (torchvision's convention) and returned as float32."""
    return x.to(torch.float32).mul(1.0 / 255) if x.dtype == torch.uint8 else x.to(torch.float32)


def normalise(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """(..., C, H, W) float -> ``(x - mean) / std`` per channel, as torchvision's ``Normalize``; no
    statistics, no change."""
    if mean is None or std is None:
        return x
    mean_ = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std_ = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub(mean_).div_(std_)


def _resize(x: torch.Tensor, size: list[int], mask: bool) -> torch.Tensor:
    if mask:
        return resize_mask(x, size)
    from torchvision.transforms.v2 import functional as F  # only a resized run pays for importing torchvision

    return F.resize_image(x, size, antialias=True)


def resize_mask(mask: torch.Tensor, size: list[int]) -> torch.Tensor:
    """A (C, H, W) or (B, C, H, W) mask resized to ``size`` by nearest-exact: each output pixel takes the
    input pixel under its centre, as the images' centre-aligned bilinear sees it. (torchvision resizes
    masks by legacy nearest, floor(i * scale), which shifts them up and left of the images: by 1.5 input
    pixels from 1024 to 256.)"""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    return F.resize_image(mask, size, interpolation=InterpolationMode.NEAREST_EXACT, antialias=False)


def resize_problem(resize: Any) -> str | None:
    """What is wrong with a ``data.resize`` value (None when nothing)."""
    size = list(resize) if isinstance(resize, Sequence) else [resize, resize]
    if resize is None or (len(size) == 2 and not any(int_problem("data.resize", s) for s in size)):
        return None
    return f"data.resize must be a positive integer, [H, W] or null, got {resize!r}"


def mean_std_problem(mean: Any, std: Any) -> str | None:
    """What is wrong with ``data.mean`` and ``data.std`` for a new run (None when nothing): three
    numbers each on the [0, 1] scale the images are scaled to first, every std positive. Either null
    means no normalisation (the datamodule says so when only one is). Evaluation does not check them:
    a checkpoint predicts with the statistics it was trained with."""
    if mean is None or std is None:
        return None
    for key, value in (("mean", mean), ("std", std)):
        numbers = isinstance(value, Sequence) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        )
        if not numbers or len(value) != 3:
            return f"data.{key} must be three numbers, one per RGB band, got {value!r}"
    if min(std) <= 0:
        return f"data.std must be positive, got {list(std)}"
    if max(*mean, *std) > 1:
        return (
            f"data.mean={list(mean)}, data.std={list(std)} look like statistics of 0-255 pixels; cdseg scales "
            "images to [0, 1] before normalising, so divide them by 255"
        )
    return None


def eval_transform(data_cfg: Mapping[str, Any]) -> EvalTransform:
    """The evaluation transform of a data config: validation, test and predict.py all preprocess
    through this one function, so prediction sees its inputs as training evaluated them.

    ``data_cfg`` is the datamodule's options or a checkpoint's ``run_config["data"]``; its
    ``resize``, ``mean`` and ``std`` are used, absent ones take the ImageNet defaults.
    """
    return EvalTransform(**{k: data_cfg[k] for k in EVAL_OPTIONS if k in data_cfg})
