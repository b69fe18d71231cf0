"""One training step's metric update: the confusion-matrix design against change_metrics, same process.

    python benchmarks/metrics_update.py [--batch 8] [--size 256] [--repeats 20] [--rounds 3] [--device cpu]

``confusion matrix``: F1, precision, recall and OA from the four counts, IoU and kappa from torchmetrics'
confusion matrix (two compute groups, given probabilities, so each group checks their range first).
``change_metrics``: cdseg's collection, all six from the four counts (one compute group), given the
predictions thresholded as training does. Both are checked to give the same six scores, then alternated
over ``--rounds`` rounds of ``--repeats`` updates; prints each one's medians and their ratio. On a GPU the
second also waits for the device once less per step for each check and ``bincount`` it drops.
"""

from __future__ import annotations

import argparse

import torch
from timing import alternated, report
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryCohenKappa, BinaryJaccardIndex

from cdseg.metrics import change_metrics


def confusion_matrix_collection(threshold: float) -> MetricCollection:
    """change_metrics with IoU and kappa from torchmetrics' confusion matrix, as they were."""
    args = {"threshold": threshold, "validate_args": False}
    own = dict(change_metrics(threshold).items())
    return MetricCollection({**own, "IoU": BinaryJaccardIndex(**args), "kappa": BinaryCohenKappa(**args)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = (args.batch, 1, args.size, args.size)
    probs = torch.rand(shape, device=args.device)
    target = (torch.rand(shape, device=args.device) > 0.9).long()
    old, new = confusion_matrix_collection(0.5).to(args.device), change_metrics(0.5).to(args.device)
    old.update(probs, target)
    new.update((probs > 0.5).long(), target)
    scores = {name: (float(old.compute()[name]), float(new.compute()[name])) for name in old}
    assert all(abs(a - b) < 1e-6 for a, b in scores.values()), scores
    times = alternated(
        {
            "confusion matrix": lambda: old.update(probs, target),
            "change_metrics": lambda: new.update((probs > 0.5).long(), target),
        },
        args.rounds,
        args.repeats,
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"batch {args.batch} x {args.size}^2, {args.rounds} alternated rounds of {args.repeats} updates")
    print("same scores: " + ", ".join(f"{k} {a:.6f}" for k, (a, _) in scores.items()))
    report(times, ("confusion matrix", "change_metrics"), label=" per update")


if __name__ == "__main__":
    main()
