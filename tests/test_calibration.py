"""calibrate=true: the threshold of best validation F1 replaces the configured one for test and
predict.py, and the test split chooses nothing."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.functional.classification import binary_average_precision

from cdseg.atomic_write import write_png
from cdseg.metrics import curve_summary, pr_curve
from tests.conftest import compose_train
from train import train


class RedIsChange(nn.Module):
    """A fixed "network": the change probability of a pixel is date A's red value in [0, 1]."""

    def __init__(self, **_: object) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))  # something for the optimiser; it changes nothing

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.logit(a[:, :1].clamp(1e-4, 1 - 1e-4)) + 0 * self.unused


def _split(root: Path, split: str, count: int, cut: float, seed: int) -> None:
    """Random images whose label is red > cut: the F1-optimal threshold of RedIsChange is ``cut``."""
    rng = np.random.default_rng(seed)
    for part in ("A", "B", "label"):
        (root / split / part).mkdir(parents=True)
    for i in range(count):
        a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        write_png(root / split / "A" / f"{i}.png", a)
        write_png(root / split / "B" / f"{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        write_png(root / split / "label" / f"{i}.png", ((a[..., 0] / 255 > cut) * 255).astype(np.uint8))


def test_the_curve_summary_picks_the_f1_optimal_threshold() -> None:
    curve = pr_curve()
    probs = torch.linspace(0.0005, 0.9995, 1000).view(1, 1, 1, -1)  # no probability on a threshold
    curve.update(probs, (probs > 0.3).long())
    summary = curve_summary(curve)
    assert summary["best_threshold"] == pytest.approx(0.3, abs=0.005) and summary["best_F1"] == 1.0
    assert summary["AP"] == pytest.approx(1.0, abs=1e-3)
    # Every pixel changed: F1 peaks at threshold 0, which marks every pixel; the lowest real one is chosen.
    everything = pr_curve()
    everything.update(probs, torch.ones_like(probs).long())
    assert curve_summary(everything)["best_threshold"] == pytest.approx(0.005)
    # Probabilities saturated at exactly 1 still count: the curve closes at recall 0, as torchmetrics'.
    saturated, target = (
        torch.sigmoid(torch.tensor([20.0, 18, -20, -30, -5, -3])).view(1, 1, 1, -1),
        torch.tensor([1, 1, 0, 0, 0, 0]).view(1, 1, 1, -1),
    )
    curve = pr_curve()
    curve.update(saturated, target)
    assert curve_summary(curve)["AP"] == pytest.approx(
        float(binary_average_precision(saturated, target, thresholds=201))
    )
    assert curve_summary(curve)["AP"] == 1.0


def _config(data: Path, out: Path) -> object:
    return compose_train(
        f"data.root={data}",
        "data.synthetic=null",
        "data.batch_size=4",
        "data.mean=null",
        "data.std=null",
        "data.hflip=0",
        f"model._target_={__name__}.RedIsChange",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        f"paths.output_dir={out}",
        "calibrate=true",
    )


def test_calibration_takes_the_validation_optimum_whatever_the_test_split_favours(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _split(data, "train", 8, 0.5, 0)
    _split(data, "val", 4, 0.3, 1)  # validation favours 0.3
    _split(data, "test", 4, 0.7, 2)  # the test split would favour 0.7
    results = train(_config(data, tmp_path / "run"))
    assert results["threshold"] == pytest.approx(0.3, abs=0.005)
    assert results["val"]["val/F1"] == 1.0 and results["test"]["test/F1"] < 0.9  # scored at the val optimum
    test_optimum = results["curves"]["test"]["thresholds"][int(np.argmax(results["curves"]["test"]["F1"]))]
    assert test_optimum == pytest.approx(0.7, abs=0.005)  # what the test split would have chosen
    ckpt = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["threshold"] == results["threshold"]
    assert ckpt["hyper_parameters"]["run_config"]["threshold"] == results["threshold"]


def test_a_validation_split_without_change_keeps_the_configured_threshold(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    _split(data, "train", 8, 0.5, 0)
    _split(data, "val", 4, 1.0, 1)  # no changed pixel: every threshold scores F1 0
    results = train(_config(data, tmp_path / "run"))
    assert results["threshold"] == 0.5
    assert "no threshold gives a validation F1 above 0; keeping 0.5" in capsys.readouterr().err
