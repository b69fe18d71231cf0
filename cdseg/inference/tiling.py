"""Sliding-window inference for images of any size: overlapping tiles, blended seams, bounded memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch

from cdseg.config import int_problem

Blend = Literal["gaussian", "mean"]


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with windows of ``tile``; the last window ends at ``length``.

    Windows never leave the image, so a tile sees exactly the context the whole image would give
    its pixels (no artificial padding inside the image).
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_weights(height: int, width: int, blend: Blend, sigma_scale: float = 0.125) -> torch.Tensor:
    """(height, width) weights of one tile: all ones (``mean``) or a Gaussian peaked at the centre.

    The Gaussian lets each pixel's estimate come mostly from the tile where it is most central,
    far from the tile border where context is missing. It is floored so no weight is zero.
    """
    if blend == "mean":
        return torch.ones(height, width)
    if blend != "gaussian":
        raise ValueError(f"blend must be 'gaussian' or 'mean', got {blend!r}")

    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-0.5 * (x / max(n * sigma_scale, 1e-6)) ** 2)

    w = axis(height)[:, None] * axis(width)[None, :]
    return (w / w.max()).clamp_min(1e-3)


def _windows(h: int, w: int, th: int, tw: int, overlap: int) -> Iterator[tuple[int, int]]:
    for top in tile_starts(h, th, max(th - overlap, 1)):
        for left in tile_starts(w, tw, max(tw - overlap, 1)):
            yield top, left


def check_tiling(tile_size: int, overlap: int, batch_size: int | str, blend: str) -> None:
    """Raise ValueError naming the option that is out of range."""
    for problem in (int_problem("tile_size", tile_size), int_problem("overlap", overlap, 0)):
        if problem:
            raise ValueError(problem)
    if not overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size), got overlap={overlap}, tile_size={tile_size}")
    if batch_size != "auto" and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer or auto, got {batch_size!r}")
    if blend not in ("gaussian", "mean"):
        raise ValueError(f"blend must be 'gaussian' or 'mean', got {blend!r}")


def _trim(weight: torch.Tensor, margin: int, top: bool, left: bool, bottom: bool, right: bool) -> torch.Tensor:
    """Zero the weight within ``margin`` px of the window sides that lie inside the image.

    Those pixels lack context in this window; a neighbouring window covers them centrally.
    """
    if margin == 0 or not (top or left or bottom or right):
        return weight
    weight = weight.clone()
    if top:
        weight[:margin] = 0
    if bottom:
        weight[-margin:] = 0
    if left:
        weight[:, :margin] = 0
    if right:
        weight[:, -margin:] = 0
    return weight


@torch.no_grad()
def sliding_window(
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    a: torch.Tensor,
    b: torch.Tensor,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    blend: Blend = "gaussian",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Change probabilities of one pair, tile by tile.

    Args:
        predict: (N, C, th, tw) x 2 -> (N, 1, th, tw) probabilities.
        a, b: (C, H, W) dates. They and the (H, W) accumulators stay where they are (the host,
            typically); only each batch of windows moves to ``device`` (default: ``a``'s).
        tile_size: side of the square window; a side of the image shorter than it is taken whole,
            so an image smaller than a tile is predicted in one pass.
        overlap: pixels shared by neighbouring windows (must be smaller than ``tile_size``). The
            outer ``overlap // 4`` px of a window's sides inside the image get no weight and the
            rest of the overlap is blended, so a network whose receptive field reaches at most
            ``overlap // 4`` px from a pixel gives exactly the whole-image result.
        batch_size: windows per forward pass; memory is bounded by it, not by the image.
        blend: how overlapping windows are averaged.

    Returns:
        (H, W) float32 probabilities on the input's device.
    """
    check_tiling(tile_size, overlap, batch_size, blend)
    device = torch.device(device) if device is not None else a.device
    _, h, w = a.shape
    th, tw = min(tile_size, h), min(tile_size, w)
    weight = blend_weights(th, tw, blend).to(a.device)
    margin = overlap // 4
    acc = torch.zeros(h, w, device=a.device)
    norm = torch.zeros(h, w, device=a.device)
    windows = list(_windows(h, w, th, tw, overlap))
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        ta = torch.stack([a[:, y : y + th, x : x + tw] for y, x in chunk]).to(device)
        tb = torch.stack([b[:, y : y + th, x : x + tw] for y, x in chunk]).to(device)
        probs = predict(ta, tb).float()[:, 0].to(acc.device)  # (N, th, tw)
        for (y, x), p in zip(chunk, probs, strict=True):
            wgt = _trim(weight, margin, top=y > 0, left=x > 0, bottom=y + th < h, right=x + tw < w)
            acc[y : y + th, x : x + tw] += p * wgt
            norm[y : y + th, x : x + tw] += wgt
    return acc / norm
