"""The warmup + cosine schedule: its shape, and that training steps it per optimizer step."""

import math
from pathlib import Path

import pytest
import torch

from cdseg.errors import ConfigError
from cdseg.schedules import WarmupCosine
from train import train


def factors(steps: int, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    schedule = WarmupCosine(optimizer, **options)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"] / 2.0)
        optimizer.step()
        schedule.step()
    return out


def test_warmup_then_cosine_to_the_floor() -> None:
    f = factors(14, total_steps=12, warmup_steps=4, min_lr_ratio=0.1)
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[4] == pytest.approx(1.0) and f[8] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert all(a >= b for a, b in zip(f[4:], f[5:], strict=False))  # decays monotonically
    assert f[12:] == pytest.approx([0.1, 0.1])  # held at the floor after total_steps


@pytest.mark.parametrize(
    ("options", "message"),
    [({"total_steps": -1}, "set trainer.max_steps"), ({"total_steps": 5, "warmup_steps": 5}, "warmup_steps")],
)
def test_bad_lengths_are_named(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        factors(1, **options)


def test_training_steps_it_every_optimizer_step(make_cfg, tmp_path: Path) -> None:
    # 24 pairs in batches of 8: 3 steps an epoch; 6 steps are two epochs.
    cfg = make_cfg(
        "scheduler=warmup_cosine", "scheduler.warmup_steps=2", "+trainer.max_steps=6", "trainer.max_epochs=-1"
    )
    results = train(cfg)
    ckpt = torch.load(Path(results["output_dir"]) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (state,) = ckpt["lr_schedulers"]
    assert ckpt["global_step"] == 6 and state["last_epoch"] == 6
    assert state["_last_lr"][0] == pytest.approx(cfg.optimizer.lr * cfg.scheduler.min_lr_ratio)


def test_without_max_steps_the_schedule_is_refused(make_cfg) -> None:
    with pytest.raises(ConfigError, match="set trainer.max_steps"):
        train(make_cfg("scheduler=warmup_cosine"))
