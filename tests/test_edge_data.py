"""Data at the edges of what training accepts, end to end through train() and the real config."""

import json
import math
from pathlib import Path

import numpy as np
import torch

from cdseg.atomic_write import write_png
from cdseg.data.synthetic import SyntheticSpec, generate
from tests.conftest import compose_train, tiny_overrides
from train import train

METRICS = ("F1", "IoU", "precision", "recall", "OA", "kappa")


def test_images_whose_size_is_not_a_multiple_of_8_train_validate_and_test(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate(root, SyntheticSpec(size=45, train=8, val=4, test=4, seed=3))
    # Whole 45x45 images (no crop) through the 4-level U-Net, which pads to 48 and crops back: the
    # loss and the metrics compare logits and masks pixel for pixel, so a misfit would raise.
    out = tmp_path / "run"
    results = train(compose_train(*tiny_overrides(root, out), "data.crop_size=null", "data.batch_size=4"))
    for stage in ("val", "test"):
        assert all(math.isfinite(results[stage][f"{stage}/{m}"]) for m in METRICS), results[stage]


def test_a_validation_split_without_change_scores_zero_not_nan(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate(root, SyntheticSpec(size=48, train=8, val=4, test=4, seed=3))
    for label in (root / "val" / "label").glob("*.png"):
        write_png(label, np.zeros((48, 48), np.uint8))
    out = tmp_path / "run"
    results = train(compose_train(*tiny_overrides(root, out)))
    val = results["val"]
    # Documented rule (cdseg.metrics.change_metrics): a score with a zero denominator is 0. With no
    # changed pixel, recall, F1 and IoU have none whatever is predicted.
    assert val["val/recall"] == val["val/F1"] == val["val/IoU"] == 0.0
    assert all(math.isfinite(v) for v in val.values()), val
    assert 0.0 <= val["val/OA"] <= 1.0
    written = json.loads((out / "metrics.json").read_text(), parse_constant=_reject)
    assert written["val"] == val
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (best,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint{'monitor': 'val/F1'")]
    assert best["best_model_score"] is not None and math.isfinite(float(best["best_model_score"]))


def _reject(constant: str) -> None:
    raise AssertionError(f"metrics.json holds {constant}")
