"""Change-class metrics, accumulated over a whole split with torchmetrics."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryCohenKappa,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryPrecisionRecallCurve,
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


OBJECT_IOU = 0.5  # a predicted object is found when its IoU with a true object reaches this


def object_counts(pred: np.ndarray, target: np.ndarray, iou: float = OBJECT_IOU) -> dict[str, int]:
    """Objects (8-connected components of the change class) of boolean (H, W) prediction and truth,
    matched one to one.

    Matching rule: every (predicted, true) pair of overlapping objects is a candidate; candidates are
    taken by decreasing IoU, and a pair whose IoU reaches ``iou`` is matched when neither object is
    matched yet. A matched predicted object is a true positive, an unmatched one a false positive, an
    unmatched true object a false negative.

    Returns:
        ``{"objects_true", "objects_pred", "obj_TP", "obj_FP", "obj_FN"}``.
    """
    n_pred, pred_labels = cv2.connectedComponents(np.asarray(pred, np.uint8), connectivity=8)
    n_true, true_labels = cv2.connectedComponents(np.asarray(target, np.uint8), connectivity=8)
    n_pred, n_true = n_pred - 1, n_true - 1  # label 0 is the background
    matched = 0
    if n_pred and n_true:
        # Intersections of every (predicted, true) pair, from one joint histogram of the labels.
        pairs = pred_labels.astype(np.int64).ravel() * (n_true + 1) + true_labels.ravel()
        joint = np.bincount(pairs, minlength=(n_pred + 1) * (n_true + 1)).reshape(n_pred + 1, n_true + 1)
        inter = joint[1:, 1:]
        area_pred, area_true = joint[1:].sum(1), joint[:, 1:].sum(0)
        p, t = np.nonzero(inter)
        ious = inter[p, t] / (area_pred[p] + area_true[t] - inter[p, t])
        used_pred, used_true = set(), set()
        for k in np.argsort(-ious, kind="stable"):
            if ious[k] < iou:
                break
            if p[k] not in used_pred and t[k] not in used_true:
                used_pred.add(p[k])
                used_true.add(t[k])
        matched = len(used_pred)
    return {
        "objects_true": n_true,
        "objects_pred": n_pred,
        "obj_TP": matched,
        "obj_FP": n_pred - matched,
        "obj_FN": n_true - matched,
    }


def object_scores(
    obj_TP: int, obj_FP: int, obj_FN: int, undefined: float | None = 0.0, **_: int
) -> dict[str, float | None]:  # noqa: N803
    """Object-level precision, recall and F1 from :func:`object_counts` (summed over images)."""

    def ratio(num: float, den: float) -> float | None:
        return num / den if den else undefined

    return {
        "obj_precision": ratio(obj_TP, obj_TP + obj_FP),
        "obj_recall": ratio(obj_TP, obj_TP + obj_FN),
        "obj_F1": ratio(2 * obj_TP, 2 * obj_TP + obj_FP + obj_FN),
    }


class ObjectMetrics(Metric):
    """:func:`object_counts` summed over every image of a split (and over DDP ranks); ``compute()``
    gives the counts and :func:`object_scores`. Update with (B, 1, H, W) probabilities and targets."""

    full_state_update = False

    def __init__(self, threshold: float = 0.5, iou: float = OBJECT_IOU) -> None:
        super().__init__()
        self.threshold, self.iou = threshold, iou
        for name in ("objects_true", "objects_pred", "obj_TP", "obj_FP", "obj_FN"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, probs: Tensor, target: Tensor) -> None:
        preds = (probs > self.threshold).cpu().numpy()
        truth = (target > 0).cpu().numpy()
        for p, t in zip(preds, truth, strict=True):
            for name, value in object_counts(p[0], t[0], self.iou).items():
                setattr(self, name, getattr(self, name) + value)

    def compute(self) -> dict[str, float]:
        counts = {
            name: int(getattr(self, name)) for name in ("objects_true", "objects_pred", "obj_TP", "obj_FP", "obj_FN")
        }
        return {
            **object_scores(**counts),
            "objects_true": counts["objects_true"],
            "objects_pred": counts["objects_pred"],
        }


CURVE_POINTS = 201  # thresholds 0, 0.005, ..., 1 of the binned precision-recall curve


def pr_curve() -> BinaryPrecisionRecallCurve:
    """A binned precision-recall curve: its state is one 2x2 count per threshold, whatever the split size."""
    return BinaryPrecisionRecallCurve(thresholds=CURVE_POINTS, validate_args=False)


def curve_summary(curve: BinaryPrecisionRecallCurve) -> dict[str, Any]:
    """The curve's points, its average precision, and the threshold of highest F1 (the lowest such
    threshold on a tie), from its accumulated counts.

    Every DDP rank must call it: the counts are summed over the ranks first.

    Returns:
        ``{"thresholds", "precision", "recall", "F1", "TP", "FP", "TN", "FN": lists, "AP",
        "best_threshold", "best_F1"}``.
    """
    with curve.sync_context():
        confmat = curve.confmat.double().clone()  # (T, 2, 2): [[TN, FP], [FN, TP]] of predictions >= threshold
    tp, fp, fn, tn = confmat[:, 1, 1], confmat[:, 0, 1], confmat[:, 1, 0], confmat[:, 0, 0]
    precision = torch.where(tp + fp > 0, tp / (tp + fp), torch.ones_like(tp))  # nothing predicted: 1
    recall = torch.where(tp + fn > 0, tp / (tp + fn), torch.zeros_like(tp))
    f1 = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), torch.zeros_like(tp))
    # Average precision: precision summed over the recall steps, from high thresholds to low.
    ap = float(torch.sum((recall[:-1] - recall[1:]) * precision[:-1])) if tp.numel() > 1 else 0.0
    best = int(torch.argmax(f1))
    thresholds = curve.thresholds.double()
    return {
        "thresholds": thresholds.tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "F1": f1.tolist(),
        **{name: counts.tolist() for name, counts in (("TP", tp), ("FP", fp), ("TN", tn), ("FN", fn))},
        "AP": ap,
        "best_threshold": float(thresholds[best]),
        "best_F1": float(f1[best]),
    }
