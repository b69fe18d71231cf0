"""Change-class metrics, accumulated over a whole split with torchmetrics."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryCohenKappa,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)


class CohenKappa(BinaryCohenKappa):
    """Cohen's kappa that is 0, not NaN, when chance agreement is 1 (truth and prediction one class)."""

    def compute(self) -> Tensor:
        return torch.nan_to_num(super().compute(), nan=0.0)


def change_metrics(threshold: float = 0.5) -> MetricCollection:
    """F1, IoU, precision, recall, overall accuracy (OA) and Cohen's kappa of the change class.

    Feed probabilities (not logits) of shape (B, 1, H, W) and integer targets of the same shape.
    Every metric sums true/false positives/negatives over all pixels of all batches and computes
    once at the end, so the result is the split-level score, not a mean of per-batch scores.
    Zero-division rule: a score whose denominator is zero is 0, never NaN (precision with no
    predicted change, F1/IoU/recall on a split without change, kappa when chance agreement is 1).
    """
    # Targets come from validated masks, so the per-update value checks (a torch.unique over
    # every pixel) are skipped.
    args = {"threshold": threshold, "validate_args": False}
    return MetricCollection(
        {
            "F1": BinaryF1Score(**args),
            "IoU": BinaryJaccardIndex(**args),
            "precision": BinaryPrecision(**args),
            "recall": BinaryRecall(**args),
            "OA": BinaryAccuracy(**args),
            "kappa": CohenKappa(**args),
        }
    )


def pixel_counts(pred: np.ndarray, target: np.ndarray) -> dict[str, int]:
    """TP, FP, FN, TN of boolean (H, W) prediction and truth."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    return {
        "TP": int(np.count_nonzero(pred & target)),
        "FP": int(np.count_nonzero(pred & ~target)),
        "FN": int(np.count_nonzero(~pred & target)),
        "TN": int(np.count_nonzero(~pred & ~target)),
    }


def scores_from_counts(TP: int, FP: int, FN: int, TN: int, undefined: float | None = 0.0) -> dict[str, float | None]:  # noqa: N803
    """The metrics of :func:`change_metrics` from pixel counts. A score whose denominator is zero is
    ``undefined``: 0.0 by default, torchmetrics' rule; None where "no score" must stay visible (a
    tile without change predicted without change has no F1, rather than the worst one)."""

    def ratio(num: float, den: float) -> float | None:
        return num / den if den else undefined

    n = TP + FP + FN + TN
    oa = (TP + TN) / n if n else undefined
    chance = ((TP + FP) * (TP + FN) + (FN + TN) * (FP + TN)) / (n * n) if n else None
    kappa = ratio(oa - chance, 1 - chance) if oa is not None and chance is not None else undefined
    return {
        "F1": ratio(2 * TP, 2 * TP + FP + FN),
        "IoU": ratio(TP, TP + FP + FN),
        "precision": ratio(TP, TP + FP),
        "recall": ratio(TP, TP + FN),
        "OA": oa,
        "kappa": kappa,
    }


def score_line(stage: str, scores: dict[str, float]) -> str:
    """`` test: F1 0.8498  IoU 0.7389 ...`` from ``{"test/F1": ...}`` (or ``{"F1": ...}``) scores."""
    return f"{stage:>5}: " + "  ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in scores.items())
