"""Draw a run's validation and test precision-recall curves (its metrics.json ``curves``), with the
threshold the run used, as the PNG the README shows. OpenCV only, no plotting library.

    python train.py calibrate=true name=pr-curve
    python benchmarks/pr_curve_picture.py outputs/<date>/<time>_pr-curve docs/pr-curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from cdseg.atomic_write import write_png

SIZE, MARGIN = 520, 64  # plot side and margin, px
COLOURS = {"val": (31, 119, 180), "test": (214, 39, 40)}  # RGB
FONT = cv2.FONT_HERSHEY_SIMPLEX


def to_px(recall: float, precision: float) -> tuple[int, int]:
    return int(MARGIN + recall * SIZE), int(MARGIN + (1 - precision) * SIZE)


def draw(curves: dict, ap: dict[str, float], threshold: float, title: str) -> np.ndarray:
    """(H, W, 3) RGB picture: both curves, their AP, and the point of each at ``threshold``."""
    img = np.full((SIZE + 2 * MARGIN, SIZE + 2 * MARGIN + 180, 3), 255, np.uint8)
    for t in np.linspace(0, 1, 6):  # grid and ticks every 0.2
        x, y = to_px(t, t)
        cv2.line(img, (x, MARGIN), (x, MARGIN + SIZE), (225, 225, 225), 1)
        cv2.line(img, (MARGIN, y), (MARGIN + SIZE, y), (225, 225, 225), 1)
        cv2.putText(img, f"{t:.1f}", (x - 12, MARGIN + SIZE + 20), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
        cv2.putText(img, f"{t:.1f}", (MARGIN - 34, y + 5), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(img, (MARGIN, MARGIN), (MARGIN + SIZE, MARGIN + SIZE), (0, 0, 0), 1)
    cv2.putText(img, "recall", (MARGIN + SIZE // 2 - 25, MARGIN + SIZE + 45), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "precision", (6, MARGIN - 14), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (MARGIN, 28), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for row, (split, curve) in enumerate(curves.items()):
        colour = COLOURS[split]
        points = np.array([to_px(r, p) for r, p in zip(curve["recall"], curve["precision"], strict=True)], np.int32)
        cv2.polylines(img, [points], False, colour, 2, cv2.LINE_AA)
        # The curve counts p >= t, the metrics p > t: the grid point at the threshold is the one drawn.
        i = int(np.argmin(np.abs(np.asarray(curve["thresholds"]) - threshold)))
        cv2.circle(img, to_px(curve["recall"][i], curve["precision"][i]), 6, colour, -1, cv2.LINE_AA)
        y = MARGIN + 20 + 48 * row
        cv2.line(img, (MARGIN + SIZE + 16, y - 5), (MARGIN + SIZE + 40, y - 5), colour, 2, cv2.LINE_AA)
        cv2.putText(img, f"{split} AP {ap[split]:.3f}", (MARGIN + SIZE + 46, y), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        f1 = curve["F1"][i]
        cv2.putText(img, f"F1 {f1:.3f} at t", (MARGIN + SIZE + 46, y + 20), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(
        img, f"dots: t = {threshold:.3f}", (MARGIN + SIZE + 16, MARGIN + 130), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA
    )
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder whose metrics.json holds curves")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args()
    metrics = json.loads((args.run / "metrics.json").read_text())
    curves = {k: metrics["curves"][k] for k in ("val", "test") if k in metrics.get("curves", {})}
    if not curves:
        raise SystemExit(f"error: {args.run / 'metrics.json'} holds no curves (train with this version of train.py)")
    threshold = float(metrics.get("threshold", 0.5))
    ap = {k: metrics[k][f"{k}/AP"] for k in curves}
    write_png(args.out, draw(curves, ap, threshold, f"precision-recall, {args.run.name}"))
    print(f"{args.out}: val and test curves of {args.run}, threshold {threshold:.3f}")


if __name__ == "__main__":
    main()
