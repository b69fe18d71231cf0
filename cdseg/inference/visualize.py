"""Pure visualisation helpers: arrays in, uint8 RGB image out. Used by training callbacks and predict.py."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# Okabe-Ito colours, distinguishable with the common colour-vision deficiencies.
TP_COLOUR = (255, 255, 255)  # change found
FP_COLOUR = (230, 159, 0)  # false alarm (orange)
FN_COLOUR = (0, 114, 178)  # missed change (blue)


def to_uint8_image(
    x: np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """Undo normalisation: (C, H, W) float -> (H, W, 3) uint8 (the first three bands)."""
    x = np.asarray(x, dtype=np.float32)[:3]
    if mean is not None and std is not None:
        x = x * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    x = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool/{0,1} -> (H, W, 3) uint8, change white on black."""
    return np.repeat((np.asarray(mask) > 0).astype(np.uint8)[..., None] * 255, 3, axis=2)


def error_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(H, W) prediction and truth -> (H, W, 3) uint8: TP white, FP orange, FN blue, TN black."""
    pred, target = np.asarray(pred) > 0, np.asarray(target) > 0
    out = np.zeros((*pred.shape, 3), np.uint8)
    out[pred & target] = TP_COLOUR
    out[pred & ~target] = FP_COLOUR
    out[~pred & target] = FN_COLOUR
    return out


def sample_panel(a: np.ndarray, b: np.ndarray, target: np.ndarray, pred: np.ndarray, gap: int = 2) -> np.ndarray:
    """One row A | B | ground truth | prediction from (H, W, 3) uint8 dates and (H, W) masks."""
    tiles = [a, b, mask_to_rgb(target), mask_to_rgb(pred)]
    h = a.shape[0]
    spacer = np.full((h, gap, 3), 128, np.uint8)
    row = [tiles[0]]
    for t in tiles[1:]:
        row += [spacer, t]
    return np.concatenate(row, axis=1)


PANEL_TITLES = (("A", "A"), ("B", "B"), ("truth", "truth"), ("prediction", "pred"))  # (full, when narrow)


def title_strip(tile_width: int, gap: int = 2) -> np.ndarray:
    """A header naming the columns of :func:`sample_panel` rows of ``tile_width``-wide tiles:
    (h, W, 3) uint8, white text on dark grey, each title centred over its column."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, float(np.clip(tile_width / 200, 0.3, 0.8))
    height = int(26 * scale) + 8
    strip = np.full((height, len(PANEL_TITLES) * (tile_width + gap) - gap, 3), 40, np.uint8)
    for i, (full, short) in enumerate(PANEL_TITLES):
        title = full if cv2.getTextSize(full, font, scale, 1)[0][0] <= tile_width else short
        (w, h), _ = cv2.getTextSize(title, font, scale, 1)
        x = i * (tile_width + gap) + max((tile_width - w) // 2, 0)
        cv2.putText(strip, title, (x, (height + h) // 2), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def stack_rows(rows: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Stack equal-width (H_i, W, 3) rows vertically with grey gaps, padding narrower rows."""
    width = max(r.shape[1] for r in rows)
    out = []
    for i, r in enumerate(rows):
        if r.shape[1] < width:
            r = np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=128)
        if i:
            out.append(np.full((gap, width, 3), 128, np.uint8))
        out.append(r)
    return np.concatenate(out, axis=0)


def overlay(
    image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 40, 40), alpha: float = 0.35
) -> np.ndarray:
    """Tint the changed pixels of (H, W, 3) uint8 ``image`` and draw their outline (1 px) in ``colour``."""
    mask = np.asarray(mask) > 0
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    # Outline: changed pixels with at least one unchanged 4-neighbour.
    padded = np.pad(mask, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out[mask & ~interior] = colour
    return out.round().astype(np.uint8)
