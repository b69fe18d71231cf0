import pytest
import torch

from cdseg.losses import BCEDiceLoss, soft_dice_loss


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
