"""Classical baseline: change-vector magnitude + Otsu threshold, no learning.

    python -m cdseg.baseline ROOT [--split test] [--out DIR [--overwrite]]

For every pair, the per-pixel Euclidean distance between the RGB vectors of A and B is
thresholded with Otsu's method (per image); the result is scored with the same split-level
metrics as the trained models, printed like train.py's summary and, with ``--out``, written to
``DIR/metrics.json`` in train.py's format (``{"<split>": {"<split>/F1": ...}, ...}``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from cdseg.atomic_write import write_text
from cdseg.data.dataset import ChangeDetectionDataset, DatasetError
from cdseg.metrics import change_metrics
from cdseg.scores import score_line

METHOD = "change-vector magnitude + Otsu (no learning)"


def cva_otsu(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 dates -> (H, W) bool change mask."""
    magnitude = np.linalg.norm(b.astype(np.float32) - a.astype(np.float32), axis=2)
    scaled = cv2.normalize(magnitude, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _, mask = cv2.threshold(scaled, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return mask.astype(bool)


def evaluate(root: str, split: str = "test") -> dict[str, float]:
    """Split-level metrics of :func:`cva_otsu` on ``root/split``."""
    dataset = ChangeDetectionDataset(f"{root}/{split}")
    metrics = change_metrics()
    for i in range(len(dataset)):
        sample = dataset[i]  # no transform: uint8 (3, H, W)
        pred = cva_otsu(sample["A"].permute(1, 2, 0).numpy(), sample["B"].permute(1, 2, 0).numpy())
        metrics.update(torch.from_numpy(pred).float()[None], sample["mask"].long())
    return {k: float(v) for k, v in metrics.compute().items()}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root holding <split>/{A,B,label}")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, help="folder to write metrics.json into")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR/metrics.json")
    args = parser.parse_args(argv)
    target = args.out / "metrics.json" if args.out else None
    if target and target.exists() and not args.overwrite:
        raise SystemExit(f"error: {target} exists; pass --overwrite to replace it")
    try:
        scores = evaluate(args.root, args.split)
    except DatasetError as e:
        raise SystemExit(f"error: {e}") from None
    split = args.split
    results: dict[str, object] = {"method": METHOD, "data": f"{args.root}/{split}", "best_checkpoint": None}
    results |= {"val": {}, "test": {}, split: {f"{split}/{k}": v for k, v in scores.items()}}
    print(f"{METHOD} on {args.root}/{split}\n{score_line(split, scores)}")
    if target:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
