from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdseg.data import ChangeDetectionDataModule
from cdseg.metrics import ObjectMetrics, change_metrics
from cdseg.module import ChangeDetectionModule
from cdseg.scores import object_counts, object_scores


def reference(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Split-level scores from the four pixel counts, by hand."""
    pred, target = pred.astype(bool).ravel(), target.astype(bool).ravel()
    tp = float((pred & target).sum())
    fp = float((pred & ~target).sum())
    fn = float((~pred & target).sum())
    tn = float((~pred & ~target).sum())
    n = tp + fp + fn + tn
    oa = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n**2
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "F1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "IoU": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
        "precision": precision,
        "recall": recall,
        "OA": oa,
        "kappa": (oa - pe) / (1 - pe) if pe < 1 else 0.0,
    }


def test_collection_accumulates_over_batches_including_empty_masks() -> None:
    rng = np.random.default_rng(0)
    batches = []
    for i in range(5):
        target = rng.random((3, 1, 16, 16)) < (0 if i in (1, 3) else 0.2)  # two batches without change
        probs = np.clip(target * 0.6 + rng.random(target.shape) * 0.5, 0, 1)
        batches.append((probs.astype(np.float32), target))
    metrics = change_metrics(threshold=0.5)
    for probs, target in batches:
        metrics.update(torch.from_numpy(probs), torch.from_numpy(target).long())
    got = {k: float(v) for k, v in metrics.compute().items()}
    pred = np.concatenate([p for p, _ in batches]) >= 0.5
    want = reference(pred, np.concatenate([t for _, t in batches]))
    assert got == pytest.approx(want, abs=1e-6)
    # ...which is not what averaging per-batch F1 would give.
    per_batch = np.mean([reference(p >= 0.5, t)["F1"] for p, t in batches])
    assert abs(per_batch - want["F1"]) > 0.05


def test_split_without_change_scores_zero_not_nan() -> None:
    got = change_metrics()(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long))
    assert {k: float(v) for k, v in got.items()} == {
        "F1": 0,
        "IoU": 0,
        "precision": 0,
        "recall": 0,
        "OA": 1,
        "kappa": 0,
    }


def test_threshold_is_honoured() -> None:
    probs = torch.tensor([[0.3, 0.6, 0.8]])
    target = torch.tensor([[1, 1, 1]])
    assert float(change_metrics(0.5)(probs, target)["recall"]) == pytest.approx(2 / 3)
    assert float(change_metrics(0.7)(probs, target)["recall"]) == pytest.approx(1 / 3)


class RedDifference(torch.nn.Module):
    """A fixed 'network': change where the red band differs, so the expected output is known."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((b[:, :1] - a[:, :1]).abs() - 0.202) * 20 + self.dummy  # no pixel sits on the threshold


def test_module_metrics_equal_numpy_over_the_whole_split(tiny_data: Path) -> None:
    import lightning as L

    dm = ChangeDetectionDataModule(str(tiny_data), batch_size=3, mean=None, std=None)  # 8 val images: 3+3+2
    module = ChangeDetectionModule(RedDifference(), torch.nn.BCEWithLogitsLoss(), torch.optim.SGD)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False)
    got = trainer.validate(module, datamodule=dm, verbose=False)[0]

    preds, targets = [], []
    for name in sorted(p.name for p in (tiny_data / "val" / "A").iterdir()):
        a, b = (np.asarray(Image.open(tiny_data / "val" / d / name), np.float32) / 255 for d in ("A", "B"))
        preds.append(np.abs(b[..., 0] - a[..., 0]) > 0.202)
        targets.append(np.asarray(Image.open(tiny_data / "val" / "label" / name)) > 0)
    want = reference(np.stack(preds), np.stack(targets))
    assert {k: got[f"val/{k}"] for k in want} == pytest.approx(want, abs=1e-5)


def test_the_split_loss_is_the_loss_of_the_whole_split_at_any_batch_size(tiny_data: Path) -> None:
    import lightning as L

    from cdseg.losses import BCEDiceLoss

    loss = BCEDiceLoss(pos_weight=3.0)
    got = {}
    for batch in (1, 3, 8):  # 8 val images: 8 batches, 3+3+2, one batch
        dm = ChangeDetectionDataModule(str(tiny_data), batch_size=batch, mean=None, std=None)
        module = ChangeDetectionModule(RedDifference(), loss, torch.optim.SGD)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False)
        got[batch] = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
        assert trainer.test(module, datamodule=dm, verbose=False)[0]["test/loss"] != got[batch]  # another split

    dates, masks = [], []
    for name in sorted(p.name for p in (tiny_data / "val" / "A").iterdir()):
        dates.append([np.asarray(Image.open(tiny_data / "val" / d / name), np.float32) / 255 for d in ("A", "B")])
        masks.append(np.asarray(Image.open(tiny_data / "val" / "label" / name)) > 0)
    a, b = (torch.from_numpy(np.stack([d[i] for d in dates])).permute(0, 3, 1, 2) for i in (0, 1))
    with torch.no_grad():
        whole = loss(RedDifference()(a, b), torch.from_numpy(np.stack(masks)).float()[:, None])
    assert got == pytest.approx({1: float(whole), 3: float(whole), 8: float(whole)}, rel=1e-5)


def _mask(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    for top, left, bottom, right in boxes:
        out[top:bottom, left:right] = True
    return out


def test_objects_are_matched_one_to_one_by_iou() -> None:
    truth = _mask((20, 20), (1, 1, 5, 5), (10, 10, 15, 15), (1, 15, 3, 18))
    pred = _mask(
        (20, 20),
        (1, 1, 5, 4),  # IoU 12/16 = 0.75 with the first true object: found
        (10, 10, 12, 12),  # IoU 4/25 with the second: too little, a false positive
        (17, 1, 19, 3),  # overlaps nothing: a false positive
    )
    counts = object_counts(pred, truth)
    assert counts == {"objects_true": 3, "objects_pred": 3, "obj_TP": 1, "obj_FP": 2, "obj_FN": 2}
    assert object_scores(**counts) == {"obj_precision": 1 / 3, "obj_recall": 1 / 3, "obj_F1": 1 / 3}


def test_a_predicted_object_matches_at_most_one_true_object() -> None:
    truth = _mask((10, 20), (2, 2, 8, 8), (2, 10, 8, 16))
    merged = _mask((10, 20), (2, 2, 8, 16))  # IoU 36/84 with each true object: neither is found
    assert object_counts(merged, truth) == {"objects_true": 2, "objects_pred": 1, "obj_TP": 0, "obj_FP": 1, "obj_FN": 2}
    wide = _mask((10, 20), (2, 2, 8, 11))  # IoU 36/54 with the first, 6/54 with the second: one match
    assert object_counts(wide, truth) == {"objects_true": 2, "objects_pred": 1, "obj_TP": 1, "obj_FP": 0, "obj_FN": 1}
    # Diagonal neighbours are one object (8-connectivity); an empty pair scores 0, or None when asked.
    diagonal = _mask((4, 4), (0, 0, 1, 1), (1, 1, 2, 2))
    assert object_counts(diagonal, diagonal) == {
        "objects_true": 1,
        "objects_pred": 1,
        "obj_TP": 1,
        "obj_FP": 0,
        "obj_FN": 0,
    }
    empty = object_counts(np.zeros((4, 4), bool), np.zeros((4, 4), bool))
    assert object_scores(**empty)["obj_F1"] == 0.0 and object_scores(**empty, undefined=None)["obj_F1"] is None


def test_object_metrics_sum_over_the_split() -> None:
    truth = np.stack([_mask((12, 12), (0, 0, 4, 4)), _mask((12, 12), (6, 6, 10, 10), (0, 8, 2, 12))])
    pred = np.stack([_mask((12, 12), (0, 0, 4, 4)), _mask((12, 12), (6, 6, 10, 10))])
    metric = ObjectMetrics()
    for i in range(2):  # one image per update: the counts add up
        metric.update(torch.from_numpy(pred[i : i + 1, None]).float(), torch.from_numpy(truth[i : i + 1, None]).long())
    assert metric.compute() == {
        "obj_precision": 1.0,
        "obj_recall": 2 / 3,
        "obj_F1": 0.8,
        "objects_true": 3,
        "objects_pred": 2,
    }


def test_split_sums_stay_float32_when_the_module_goes_half() -> None:
    from cdseg.metrics import SplitSums

    for dtype in (torch.float16, torch.bfloat16):  # what trainer.precision=16-true / bf16-true does to states
        sums = SplitSums(2).to(dtype=dtype)
        for _ in range(2):
            for _ in range(1000):
                sums.update(torch.tensor([1.0, 73728.0]))  # a 192^2 batch of two: past float16's range
            assert sums.compute().tolist() == [1000.0, 73728000.0] and sums.compute().dtype == torch.float32
            sums.reset()
