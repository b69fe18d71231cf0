"""Seeded synthetic change-detection scenes, written once in the LEVIR-CD layout.

Each pair shows the same patch of textured ground with roads, trees and buildings that cast
shadows. Between dates A and B some buildings are built or demolished: those footprints are the
label. Everything else that differs is a nuisance the model must learn to ignore: a global colour
and brightness shift (season, sensor), a smooth illumination field, a different sun angle (so
shadows move), 1-2 px misregistration, sensor noise, cars that move along the roads and trees
that change colour. A per-pixel colour difference with a threshold (``cdseg.baseline``) fires on
many of these, so it needs learning, not thresholding.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from cdseg.atomic_write import write_png
from cdseg.config import int_problem, raise_problems
from cdseg.data.dataset import DatasetError

META_FILE = "synthetic.json"
VERSION = 1  # bump when the generator's output changes, so stale caches are detected

_ROOF_COLOURS = np.array(
    [[170, 70, 55], [120, 120, 125], [200, 195, 185], [90, 110, 150], [150, 110, 80], [215, 215, 220]],
    dtype=np.float32,
)
_GROUND_COLOURS = np.array([[95, 120, 70], [125, 130, 85], [150, 130, 100], [110, 105, 90]], dtype=np.float32)


class SyntheticFolderTaken(DatasetError, FileExistsError):
    """``data.root`` holds something other than the synthetic data asked for; it is never overwritten."""


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; two caches are interchangeable exactly when their specs are equal."""

    size: int = 96
    train: int = 200
    val: int = 40
    test: int = 40
    seed: int = 0
    version: int = VERSION

    def __post_init__(self) -> None:
        raise_problems(
            [
                int_problem("data.synthetic.size", self.size, 8),
                *(int_problem(f"data.synthetic.{k}", getattr(self, k), 0) for k in ("train", "val", "test", "seed")),
            ]
        )


def _texture(rng: np.random.Generator, size: int, scales: tuple[float, ...]) -> np.ndarray:
    """Zero-mean multi-scale noise, (size, size) float32 with unit-ish amplitude."""
    out = np.zeros((size, size), np.float32)
    for s in scales:
        n = rng.standard_normal((size, size)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), s, borderType=cv2.BORDER_REFLECT)
        out += n / (n.std() + 1e-6)
    return out / len(scales)


def _rect(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    return cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), float(angle))).round().astype(np.int32)


def _ground(rng: np.random.Generator, size: int) -> np.ndarray:
    base = _GROUND_COLOURS[rng.integers(len(_GROUND_COLOURS))]
    img = np.empty((size, size, 3), np.float32)
    img[:] = base
    # Field patches of another ground colour.
    for _ in range(rng.integers(1, 4)):
        poly = _rect(*rng.uniform(0, size, 2), *rng.uniform(size * 0.3, size * 0.8, 2), rng.uniform(0, 90))
        colour = _GROUND_COLOURS[rng.integers(len(_GROUND_COLOURS))]
        cv2.fillPoly(img, [poly], colour.tolist())
    img += _texture(rng, size, (1.0, 3.0))[..., None] * rng.uniform(8, 16)
    return img


def _roads(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, int]]:
    roads = []
    for _ in range(rng.integers(1, 3)):
        p0 = rng.uniform(0, size, 2)
        theta = rng.uniform(0, np.pi)
        d = np.array([np.cos(theta), np.sin(theta)]) * size * 2
        roads.append((np.stack([p0 - d, p0 + d]).astype(np.int32), max(1, int(rng.integers(3, 6) * size / 96))))
    return roads


def _road_mask(roads: list[tuple[np.ndarray, int]], size: int, margin: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    for line, width in roads:
        cv2.line(mask, tuple(line[0]), tuple(line[1]), 1, width + 2 * margin)
    return mask


def _buildings(rng: np.random.Generator, size: int, taken: np.ndarray, n: int) -> list[dict]:
    """Place up to n non-overlapping rotated rectangles off the roads."""
    out = []
    taken = taken.copy()
    for _ in range(n * 6):
        if len(out) == n:
            break
        w, h = rng.uniform(size / 14, size / 5, 2)
        poly = _rect(*rng.uniform(0, size, 2), w, h, rng.choice([0.0, rng.uniform(0, 90)]))
        fp = np.zeros_like(taken)
        cv2.fillPoly(fp, [poly], 1)
        if fp.sum() < 12 or (fp & taken).any():
            continue
        cv2.dilate(fp, np.ones((5, 5), np.uint8), dst=fp)
        taken |= fp
        out.append({"poly": poly, "roof": _ROOF_COLOURS[rng.integers(len(_ROOF_COLOURS))] * rng.uniform(0.85, 1.1)})
    return out


def _render(
    rng: np.random.Generator,
    ground: np.ndarray,
    roads: list[tuple[np.ndarray, int]],
    trees: list[tuple[np.ndarray, float]],
    buildings: list[dict],
    sun: np.ndarray,
    tree_tint: np.ndarray,
) -> np.ndarray:
    size = ground.shape[0]
    img = ground.copy()
    for line, width in roads:
        grey = float(rng.uniform(85, 110))
        cv2.line(img, tuple(line[0]), tuple(line[1]), (grey, grey, grey + 3), width)
    # Cars: small bright boxes on the roads, placed afresh for every date.
    road = _road_mask(roads, size, 0).astype(bool)
    ys, xs = np.nonzero(road)
    for _ in range(rng.integers(0, 6) if len(ys) else 0):
        i = rng.integers(len(ys))
        car = _rect(xs[i], ys[i], 2 * size / 96 + 1, 4 * size / 96 + 1, rng.uniform(0, 180))
        cv2.fillPoly(img, [car], rng.uniform(30, 240, 3).tolist())
    for centre, radius in trees:
        cv2.circle(img, tuple(centre), int(radius + 1), (tree_tint * 0.6).tolist(), -1)  # tree shadow
        cv2.circle(img, tuple(centre - 1), int(radius), tree_tint.tolist(), -1)
    # Shadows first (ground darkened along the sun direction), then roofs on top.
    shadow = np.zeros((size, size), np.uint8)
    for b in buildings:
        for t in np.linspace(0, 1, 4):
            cv2.fillPoly(shadow, [b["poly"] + (sun * t).round().astype(np.int32)], 1)
    img[shadow.astype(bool)] *= 0.45
    for b in buildings:
        cv2.fillPoly(img, [b["poly"]], b["roof"].tolist())
        # A ridge line gives roofs an internal edge like real gable roofs.
        p = b["poly"].astype(np.float32)
        mid = ((p[0] + p[1]) / 2, (p[2] + p[3]) / 2)
        cv2.line(img, tuple(mid[0].astype(int)), tuple(mid[1].astype(int)), (b["roof"] * 0.8).tolist(), 1)
    return img


def make_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic pair: A and B (size, size, 3) uint8 RGB, label (size, size) uint8 in {0, 255}."""
    ground = _ground(rng, size)
    roads = _roads(rng, size)
    trees = [
        (rng.uniform(0, size, 2).astype(np.int32), rng.uniform(1.5, 4) * size / 96) for _ in range(rng.integers(0, 12))
    ]
    buildings = _buildings(rng, size, _road_mask(roads, size, 2), int(rng.integers(3, 10)))
    rng.shuffle(buildings)
    n_changed = int(rng.binomial(len(buildings), 0.4))
    changed, kept = buildings[:n_changed], buildings[n_changed:]
    demolished = [b for b in changed if rng.random() < 0.3]
    built = [b for b in changed if not any(b is d for d in demolished)]

    # Sun direction and shadow length differ between dates, so shadows alone change.
    angle_a = rng.uniform(0, 2 * np.pi)
    sun_a = np.array([np.cos(angle_a), np.sin(angle_a)]) * rng.uniform(2, 5) * size / 96
    angle_b = angle_a + rng.uniform(-0.6, 0.6)
    sun_b = np.array([np.cos(angle_b), np.sin(angle_b)]) * rng.uniform(2, 5) * size / 96
    tree_a = np.array([50, 85, 40], np.float32) * rng.uniform(0.8, 1.2)
    tree_b = tree_a * rng.uniform(0.7, 1.4, 3)  # season: leaves change colour

    a = _render(rng, ground, roads, trees, kept + demolished, sun_a, tree_a)
    b = _render(rng, ground, roads, trees, kept + built, sun_b, tree_b)
    label = np.zeros((size, size), np.uint8)
    for bld in changed:
        cv2.fillPoly(label, [bld["poly"]], 255)

    # Date B: colour/brightness shift, smooth illumination field, misregistration.
    b = b * rng.uniform(0.8, 1.2, 3) + rng.uniform(-20, 20, 3)
    b *= 1 + 0.15 * _texture(rng, size, (size / 4,))[..., None]
    shift = np.float32([[1, 0, rng.uniform(-2, 2)], [0, 1, rng.uniform(-2, 2)]])
    b = cv2.warpAffine(b, shift, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    label = cv2.warpAffine(label, shift, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)

    # Independent sensor noise on both dates.
    a += rng.normal(0, rng.uniform(2, 6), a.shape)
    b += rng.normal(0, rng.uniform(2, 6), b.shape)
    return np.clip(a, 0, 255).astype(np.uint8), np.clip(b, 0, 255).astype(np.uint8), label


def generate(root: str | Path, spec: SyntheticSpec) -> None:
    """Write the dataset described by ``spec`` to ``root`` (which must not exist)."""
    root = Path(root)
    for split_id, split in enumerate(("train", "val", "test")):
        if getattr(spec, split) == 0:
            continue  # no folder: an absent split is skipped, an empty one is an error
        for sub in ("A", "B", "label"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(getattr(spec, split)):
            # One generator per image: image i is the same whatever the split sizes are.
            rng = np.random.default_rng([spec.seed, split_id, i])
            a, b, label = make_pair(rng, spec.size)
            name = f"{split}_{i:04d}.png"
            write_png(root / split / "A" / name, a)
            write_png(root / split / "B" / name, b)
            write_png(root / split / "label" / name, label)
    (root / META_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")


def ensure_synthetic(root: str | Path, **spec_kwargs: int) -> Path:
    """Return ``root`` holding the synthetic dataset for this spec, generating it on first use.

    Generation happens in a temporary sibling folder that is renamed into place, so an
    interrupted run never leaves a half-written dataset behind. An existing folder generated with
    other settings is never overwritten: that is an error naming both specs.
    """
    root = Path(root)
    spec = SyntheticSpec(**spec_kwargs)
    meta = root / META_FILE
    if root.exists():
        if not meta.exists():
            raise SyntheticFolderTaken(
                f"{root} exists but holds no {META_FILE}: it is not a synthetic dataset written by cdseg. "
                "Point data.root at another folder."
            )
        found = json.loads(meta.read_text())
        if found != asdict(spec):
            raise SyntheticFolderTaken(
                f"{root} holds synthetic data generated with {found}, but {asdict(spec)} was asked for. "
                "Delete the folder or choose another data.root."
            )
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate(tmp, spec)
        os.replace(tmp, root)
    except BaseException as error:  # an interrupt or a failed draw too: no half-written folder is left
        shutil.rmtree(tmp, ignore_errors=True)
        if not (isinstance(error, OSError) and (root / META_FILE).exists()):  # a concurrent writer won the rename
            raise
    return root
