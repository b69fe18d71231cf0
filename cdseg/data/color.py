"""Photometric jitter for a CPU loader worker: torchvision's ``ColorJitter`` with the same options and
the same random draws, computed on a uint8 image in one float32 pass with NumPy and OpenCV.

torchvision's uint8 path converts to float and back for every operation and computes the hue shift
with about thirty tensor operations; on a 256x256 crop that is about 2.3 ms per date on one core of
this project's CPU, nine tenths of it in the hue, which alone capped the cached LEVIR pipeline near
130 samples/s per worker. Here every operation keeps torchvision's arithmetic, including its
truncation to whole grey levels after each step, and the hue goes through OpenCV's float HSV
conversion: outputs equal torchvision's except in a few pixels in ten thousand, by at most 3 grey
levels (tests/test_transforms.py), in about a tenth of the time.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
TO_UINT8 = np.float32(255 + 1 - 1e-3)  # torchvision's float -> uint8 scale (then truncation)


def _whole_levels(f: np.ndarray) -> np.ndarray:
    """In place: clamp to [0, 255] and truncate, as torchvision's ``.clamp_(0, 255).to(uint8)``."""
    np.clip(f, 0, 255, out=f)
    return np.trunc(f, out=f)


def _grey(f: np.ndarray) -> np.ndarray:
    """(3, H, W) float -> (H, W) grey, in torchvision's order of operations, floored as torchvision
    does for integer images."""
    return np.floor(f[0] * np.float32(GREY[0]) + f[1] * np.float32(GREY[1]) + f[2] * np.float32(GREY[2]))


def _blend(f: np.ndarray, other: np.ndarray | np.float32, ratio: float) -> np.ndarray:
    """In place: ``ratio * f + (1 - ratio) * other`` in whole grey levels (torchvision's ``_blend``)."""
    f *= np.float32(ratio)
    f += np.float32(1 - ratio) * other
    return _whole_levels(f)


def _hue(f: np.ndarray, factor: float) -> np.ndarray:
    """(3, H, W) float in whole grey levels -> hue rotated by ``factor`` turns, in whole grey levels."""
    f *= np.float32(1 / 255)
    h, s, v = cv2.split(cv2.cvtColor(cv2.merge(list(f)), cv2.COLOR_RGB2HSV))  # h in degrees, [0, 360)
    h += np.float32(factor * 360)
    h -= np.float32(360) * np.floor(h * np.float32(1 / 360))  # back into [0, 360)
    f = np.stack(cv2.split(cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2RGB)))
    f *= TO_UINT8
    return np.trunc(f, out=f)


def jitter_uint8(image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """(3, H, W) uint8 -> jittered (3, H, W) uint8, with ``v2.ColorJitter.make_params``' draws.
    Planar, as the tensors are: no transposes, and each plane contiguous."""
    f = image.astype(np.float32)
    for op in params["fn_idx"].tolist():
        if op == 0 and params["brightness_factor"] is not None:
            f = _blend(f, np.float32(0), params["brightness_factor"])
        elif op == 1 and params["contrast_factor"] is not None:
            f = _blend(f, _grey(f).mean(dtype=np.float32), params["contrast_factor"])
        elif op == 2 and params["saturation_factor"] is not None:
            f = _blend(f, _grey(f), params["saturation_factor"])
        elif op == 3 and params["hue_factor"] is not None:
            f = _hue(f, params["hue_factor"])
    return f.astype(np.uint8)


def _fast(inpt: Any) -> bool:
    return (
        isinstance(inpt, torch.Tensor)
        and inpt.dtype == torch.uint8
        and inpt.device.type == "cpu"
        and inpt.ndim == 3
        and inpt.shape[0] == 3
    )


class ColorJitter(v2.ColorJitter):
    """``v2.ColorJitter`` (same options, same draws from torch's generator), fast on one (3, H, W)
    uint8 CPU image; any other input goes through torchvision's own path."""

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) == 1 and _fast(inputs[0]):  # v2's input checks cost a third of the work here
            return self.transform(inputs[0], self.make_params(list(inputs)))
        return super().forward(*inputs)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _fast(inpt):
            return super().transform(inpt, params)
        out = torch.from_numpy(jitter_uint8(inpt.as_subclass(torch.Tensor).contiguous().numpy(), params))
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out
