import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdseg.losses import BCEDiceLoss, soft_dice_loss
from cdseg.models import SiameseUNet
from cdseg.module import ChangeDetectionModule, ModelContractError
from train import train


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_loss_is_finite_and_float32_under_autocast(dtype) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 1, 3, padding=1)
    x = torch.randn(2, 3, 64, 64) * 50  # large logits: saturated sigmoids
    target = (torch.rand(2, 1, 64, 64) > 0.7).float()
    loss_fn = BCEDiceLoss(dice_weight=1.0, pos_weight=3.0)
    with torch.autocast("cpu", dtype=dtype):
        logits = conv(x)
        assert logits.dtype == dtype
        loss = loss_fn(logits, target)
        dice = soft_dice_loss(logits, target)
    assert loss.dtype == torch.float32 and dice.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())


def test_all_change_mask_at_large_size_stays_finite() -> None:
    logits = torch.full((1, 1, 512, 512), 30.0, dtype=torch.bfloat16)
    target = torch.ones(1, 1, 512, 512)
    assert torch.isfinite(BCEDiceLoss()(logits, target))
    assert soft_dice_loss(logits, target) < 1e-3


def test_dice_on_empty_tiles_rewards_clean_predictions() -> None:
    empty = torch.zeros(4, 1, 32, 32)
    clean = torch.full_like(empty, -15.0)  # p ~ 3e-7 everywhere
    noisy = clean.clone()
    noisy[:, :, :4, :4] = 15.0  # 64 false-positive pixels
    assert soft_dice_loss(clean, empty) < 0.01
    assert soft_dice_loss(noisy, empty) > 0.9
    # The per-sample form scores the clean prediction near 1 too: what the batch form avoids.
    p = torch.sigmoid(clean).flatten(1)
    per_sample = 1 - ((2 * (p * 0).sum(1) + 1e-6) / (p.sum(1) + 1e-6)).mean()
    assert per_sample > 0.9


def test_dice_scores_overlap() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1
    perfect = (target * 2 - 1) * 20
    half = perfect.clone()
    half[..., 4:8, 4:12] = -20
    assert soft_dice_loss(perfect, target) < 0.01
    assert soft_dice_loss(half, target) == pytest.approx(1 - (2 * 32 + 1) / (32 + 64 + 1), abs=1e-3)


def test_pos_weight_weighs_missed_change() -> None:
    target = torch.ones(1, 1, 4, 4)
    logits = torch.zeros(1, 1, 4, 4)
    plain = BCEDiceLoss(dice_weight=0.0)(logits, target)
    weighted = BCEDiceLoss(dice_weight=0.0, pos_weight=4.0)(logits, target)
    assert weighted == pytest.approx(4 * plain)


class DoubledLoss(BCEDiceLoss):
    """A user's loss that reuses BCEDiceLoss's option checks but trains on something else."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(logits, target)


class TwoChannels(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(6, 2, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([a, b], 1))


def _module(net: torch.nn.Module, loss: torch.nn.Module) -> ChangeDetectionModule:
    return ChangeDetectionModule(net, loss, optimizer=partial(torch.optim.SGD, lr=0.1))


def _batch() -> dict:
    return {
        "A": torch.rand(2, 3, 8, 8),
        "B": torch.rand(2, 3, 8, 8),
        "mask": torch.zeros(2, 1, 8, 8),
        "name": ["x", "y"],
    }


def test_val_loss_is_the_split_formula_only_for_the_loss_that_defines_it() -> None:
    net = SiameseUNet(base=4)
    assert _module(net, BCEDiceLoss()).split_loss
    # The subclass inherits split_sums, which would score evaluation with BCE + Dice, not its own forward.
    assert not _module(net, DoubledLoss()).split_loss


def test_a_network_or_loss_that_breaks_the_contract_is_named() -> None:
    with pytest.raises(ModelContractError, match=r"TwoChannels returned \(2, 2, 8, 8\) .* one channel of logits"):
        _module(TwoChannels(), BCEDiceLoss()).training_step(_batch(), 0)
    per_pixel = torch.nn.BCEWithLogitsLoss(reduction="none")
    with pytest.raises(ModelContractError, match=r"BCEWithLogitsLoss returned \(2, 1, 8, 8\): a loss must return one"):
        _module(SiameseUNet(base=4), per_pixel).training_step(_batch(), 0)


def test_a_val_split_without_change_is_named_once(make_cfg, tiny_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    for label in (root / "val" / "label").iterdir():
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(label)
    with pytest.warns(UserWarning, match="the val split has no changed pixels") as record:
        train(make_cfg(f"data.root={root}", "trainer.max_epochs=2"))
    assert sum("no changed pixels" in str(w.message) for w in record) == 1


def test_a_loss_of_ones_own_is_a_config_group_choice(make_cfg, tmp_path: Path) -> None:
    # A user's config folder on Hydra's search path, holding conf/loss/<name>.yaml.
    (tmp_path / "conf" / "loss").mkdir(parents=True)
    (tmp_path / "conf" / "loss" / "plain_bce.yaml").write_text("_target_: torch.nn.BCEWithLogitsLoss\n")
    cfg = make_cfg(f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "loss=plain_bce")
    assert dict(cfg.loss) == {"_target_": "torch.nn.BCEWithLogitsLoss"}  # nothing of the default loss left
    results = train(cfg)
    assert results["val"]["val/loss"] > 0 and results["test"]["test/loss"] > 0
