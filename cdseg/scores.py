"""Scores from counts, in numpy: pixel and object counts of a (prediction, truth) pair, and the
metrics computed from them. No torchmetrics (whose import pulls in torchvision), so predict.py starts
fast; :mod:`cdseg.metrics` accumulates the same quantities over a split during training."""

from __future__ import annotations

import cv2
import numpy as np


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

    def shown(key: str, value: float) -> str:
        return str(int(value)) if key.split("/")[-1].startswith("objects_") else f"{value:.4f}"  # counts

    return f"{stage:>5}: " + "  ".join(f"{k.split('/')[-1]} {shown(k, v)}" for k, v in scores.items())


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
        area_pred = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)[1:]
        area_true = np.bincount(true_labels.ravel(), minlength=n_true + 1)[1:]
        # Intersections of the overlapping (predicted, true) pairs only: a noisy map may have tens of
        # thousands of objects, and a dense pair table would not fit.
        both = (pred_labels > 0) & (true_labels > 0)
        keys = pred_labels[both].astype(np.int64) * (n_true + 1) + true_labels[both]
        keys, inter = np.unique(keys, return_counts=True)
        p, t = keys // (n_true + 1) - 1, keys % (n_true + 1) - 1
        ious = inter / (area_pred[p] + area_true[t] - inter)
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
