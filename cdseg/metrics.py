"""Change-class metrics, accumulated over a whole split with torchmetrics."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryPrecisionRecallCurve, BinaryStatScores

from cdseg.scores import OBJECT_IOU, object_counts, object_scores, scores_from_counts

SCORES = tuple(scores_from_counts(0, 0, 0, 0))  # F1, IoU, precision, recall, OA, kappa


class CountScore(BinaryStatScores):
    """One score of :func:`cdseg.scores.scores_from_counts` (``F1``, ``kappa``, ...) from the four
    pixel counts of the split, in exact integers on the host once per split, with its zero-division
    rule (0, never NaN). Every score shares one set of counts, updated once per batch (torchmetrics'
    compute groups), where the confusion matrix of torchmetrics' IoU and kappa would add a second
    pass and, on a GPU, a wait for the device (``bincount``)."""

    def __init__(self, score: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score = score

    def compute(self) -> Tensor:
        tp, fp, tn, fn = (int(x.sum()) for x in self._final_state())
        return torch.tensor(scores_from_counts(tp, fp, fn, tn)[self.score], device=self.tp.device)


def change_metrics(threshold: float = 0.5) -> MetricCollection:
    """F1, IoU, precision, recall, overall accuracy (OA) and Cohen's kappa of the change class.

    Feed probabilities (not logits) of shape (B, 1, H, W), or predictions already thresholded as
    integers (what training does: then no value check waits for the device), and integer targets of
    the same shape. Every metric sums true/false positives/negatives over all pixels of all batches
    and computes once at the end, so the result is the split-level score, not a mean of per-batch
    scores. Zero-division rule: a score whose denominator is zero is 0, never NaN (precision with
    no predicted change, F1/IoU/recall on a split without change, kappa when chance agreement is 1).
    """
    # Targets come from validated masks, so the per-update value checks (a torch.unique over
    # every pixel) are skipped. One score per key of scores_from_counts: a score added there is
    # logged, monitored and reported everywhere.
    args = {"threshold": threshold, "validate_args": False}
    return MetricCollection({name: CountScore(name, **args) for name in SCORES})


class SplitSums(Metric):
    """A vector of ``size`` sums added over every batch of a split (and over DDP ranks): the
    loss's :meth:`cdseg.losses.BCEDiceLoss.split_sums`, from which the split's loss is computed."""

    full_state_update = False

    def __init__(self, size: int) -> None:
        super().__init__()
        self.add_state("sums", default=torch.zeros(size), dist_reduce_fx="sum")

    def update(self, sums: Tensor) -> None:
        # Float32 whatever the module's dtype: under trainer.precision=16-true or bf16-true Lightning
        # casts every floating state with .to(dtype), and a half sum overflows (a 192^2 batch of two
        # is 73,728 pixels, over float16's 65,504) or stops growing (bfloat16, past 256 equal terms).
        self.sums = self.sums.float() + sums.to(self.sums.device, torch.float32)

    def compute(self) -> Tensor:
        return self.sums


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
    # Average precision: precision summed over the recall steps, from high thresholds to low, closed
    # at recall 0 (pixels still counted at threshold 1 are probabilities saturated at exactly 1).
    closed_recall = torch.cat([recall, recall.new_zeros(1)])
    ap = float(torch.sum((closed_recall[:-1] - closed_recall[1:]) * precision))
    # The metrics count a pixel as changed when its probability is above the threshold, the curve at
    # or above it: the last threshold (1) would select nothing there, and the first (0) every pixel,
    # which is no detector at all (an undertrained model's F1 can peak there): neither is chosen.
    best = 1 + int(torch.argmax(f1[1:-1]))
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
