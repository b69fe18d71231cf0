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
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the base rate on the warmup's last step only
    assert f[4] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 8)))
    assert f[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))  # halfway from step 3 to 11
    assert all(a > b for a, b in zip(f[3:11], f[4:12], strict=True))  # decays strictly
    assert f[11:] == pytest.approx([0.1, 0.1, 0.1])  # the floor on the run's last step (11), held after


def test_without_warmup_the_first_step_is_at_the_base_rate() -> None:
    f = factors(5, total_steps=5, warmup_steps=0, min_lr_ratio=0.0)
    assert f == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0])
    assert factors(2, total_steps=1, warmup_steps=0, min_lr_ratio=0.2) == pytest.approx([1.0, 0.2])


@pytest.mark.parametrize(
    ("options", "message"),
    [({"total_steps": -1}, r"set \+trainer.max_steps=N"), ({"total_steps": 5, "warmup_steps": 5}, "warmup_steps")],
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
    with pytest.raises(ConfigError, match=r"set \+trainer.max_steps=N .* trainer.max_epochs=-1"):
        train(make_cfg("scheduler=warmup_cosine"))


def test_the_levir_experiment_composes_the_recipe() -> None:
    from tests.conftest import compose_train

    cfg = compose_train("experiment=levir", "data.root=/x")
    assert (cfg.data.crop_size, cfg.data.batch_size, cfg.data.rot90, cfg.data.vflip) == (128, 32, True, 0.5)
    assert cfg.data.swap == 0.0 and cfg.data.color_jitter is None and cfg.data.eval_batch_size == 1
    assert cfg.loss.pos_weight == 3 and cfg.calibrate is True
    assert cfg.scheduler._target_ == "cdseg.schedules.WarmupCosine" and cfg.scheduler.total_steps == 40000
    assert cfg.trainer.max_steps == 40000 and cfg.trainer.max_epochs == -1 and cfg.trainer.precision == "16-mixed"
    # Validation by steps across epochs: an epoch of LEVIR's 445 tiles is only 14 steps at batch 32.
    assert cfg.trainer.check_val_every_n_epoch is None and cfg.trainer.val_check_interval == 1000
    assert cfg.callbacks.model_checkpoint.monitor == "val/F1"


def test_the_open_cd_experiment_is_the_recipe_with_open_cds_augmentation() -> None:
    from tests.conftest import compose_train

    recipe, opencd = (compose_train(f"experiment={name}", "data.root=/x") for name in ("levir", "levir_opencd"))
    assert (opencd.data.crop_size, opencd.data.batch_size, opencd.data.swap) == (256, 8, 0.5)
    assert opencd.data.color_jitter.brightness > 0 and opencd.loss.pos_weight is None and opencd.calibrate is False
    assert opencd.optimizer == recipe.optimizer and opencd.scheduler == recipe.scheduler
    assert opencd.trainer == recipe.trainer


def test_the_levir_experiment_trains_end_to_end(tiny_data: Path, tmp_path: Path) -> None:
    from tests.conftest import compose_train, tiny_overrides

    overrides = [o for o in tiny_overrides(tiny_data, tmp_path / "run") if not o.startswith("trainer.max_epochs")]
    cfg = compose_train(
        "experiment=levir", *overrides, "data.crop_size=32", "data.num_workers=0", "trainer.max_steps=4"
    )
    cfg.scheduler.warmup_steps = 1
    cfg.trainer.val_check_interval = 2  # steps, across epochs
    results = train(cfg)
    assert set(results["test"]) >= {"test/F1", "test/IoU"} and results["best_checkpoint"]


def test_fast_dev_run_checks_a_step_schedule_without_being_refused(make_cfg) -> None:
    # fast_dev_run sets max_epochs=1 itself: the guard against a run cut short must not count it
    results = train(
        make_cfg(
            "scheduler=warmup_cosine",
            "scheduler.warmup_steps=2",
            "+trainer.max_steps=50",
            "trainer.max_epochs=-1",
            "+trainer.fast_dev_run=true",
        )
    )
    assert "test/F1" in results["test"]  # it ran to the end


def test_the_plan_is_the_schedules_own_never_a_checkpoints() -> None:
    # What the guard against a run cut short reads: a checkpoint (of any version) must not bring back
    # an older plan, or extend_schedule's longer run would be checked against the shorter one.
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = WarmupCosine(optimizer, total_steps=12, warmup_steps=2)
    state = schedule.state_dict()
    assert "total_steps" not in state
    schedule.load_state_dict({**state, "total_steps": 6})
    assert schedule.total_steps == 12
