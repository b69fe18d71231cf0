"""Training stops at once on a non-finite loss, naming the step and files, and saves nothing bad."""

from pathlib import Path

import pytest
import torch

from cdseg.losses import BCEDiceLoss
from cdseg.module import NonFiniteError
from train import train


class NaNAtStep(BCEDiceLoss):
    """BCE + Dice that turns NaN on its third training call (used through loss._target_)."""

    calls = 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = super().forward(logits, target)
        if self.training:
            NaNAtStep.calls += 1
            if NaNAtStep.calls == 3:
                return loss * float("nan")
        return loss


def test_nan_loss_stops_training_naming_step_and_files(make_cfg, tmp_path: Path) -> None:
    NaNAtStep.calls = 0
    cfg = make_cfg("loss._target_=tests.test_guards.NaNAtStep", "trainer.max_epochs=3")
    with pytest.raises(
        NonFiniteError,
        match=r"non-finite loss \(nan\) at global step 2 \(epoch 0, batch 2\); files of the batch: train_\d+\.png",
    ):
        train(cfg)
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt")), "a checkpoint was written"


def test_cli_exits_non_zero_on_nan(tiny_data: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT, tiny_overrides

    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *tiny_overrides(tiny_data, tmp_path / "run"),
            "loss._target_=tests.test_guards.NaNAtStep",
            f"paths.runs_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 1 and "error: non-finite loss" in proc.stderr


def test_checkpoint_with_non_finite_weights_is_refused(make_cfg) -> None:
    from cdseg.models import SiameseUNet
    from cdseg.module import ChangeDetectionModule

    module = ChangeDetectionModule(SiameseUNet(base=2), BCEDiceLoss(), torch.optim.SGD)
    with torch.no_grad():
        module.net.head.bias.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="net.head.bias"):
        module.on_save_checkpoint({})


def test_bf16_dice_on_a_1024_all_change_mask_stays_finite() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 1024, 1024, requires_grad=True)
    target = torch.ones(1, 1, 1024, 1024)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = BCEDiceLoss()(logits.to(torch.bfloat16), target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
