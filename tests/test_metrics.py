from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdseg.data import ChangeDetectionDataModule
from cdseg.metrics import change_metrics
from cdseg.module import ChangeDetectionModule


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
