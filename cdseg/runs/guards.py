"""Refusals at the start of a run, for settings that would otherwise fail late or train wrongly without
a word: what only the built trainer, or the length of an epoch, can tell."""

from __future__ import annotations

import math

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cdseg.config import build
from cdseg.errors import ConfigError


class EndOnAValidation(L.Callback):
    """Validating every N training batches (``check_val_every_n_epoch: null``), checkpoints are written
    only at validations: a run must end on one, or its last batches are neither validated nor saved,
    and a run shorter than N keeps nothing at all. Checked once the length of an epoch is known."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interval = trainer.val_check_interval
        if (
            trainer.check_val_every_n_epoch is not None
            or not isinstance(interval, int)
            or not trainer.limit_val_batches
        ):
            return
        lengths = {}
        if trainer.max_steps > 0:
            lengths[trainer.max_steps * trainer.accumulate_grad_batches] = f"trainer.max_steps={trainer.max_steps}"
        if trainer.max_epochs and trainer.max_epochs > 0 and trainer.num_training_batches != float("inf"):
            epochs = trainer.max_epochs * int(trainer.num_training_batches)
            lengths[epochs] = (
                f"trainer.max_epochs={trainer.max_epochs} x {trainer.num_training_batches} batches an epoch"
            )
        accumulate, per_epoch = trainer.accumulate_grad_batches, trainer.num_training_batches
        if accumulate > 1 and per_epoch != float("inf") and int(per_epoch) % accumulate:
            raise ConfigError(
                f"an epoch of {per_epoch} batches is not a multiple of trainer.accumulate_grad_batches={accumulate}: "
                "validating by batches across epochs, some validations, and the checkpoints they write, would fall "
                "inside an optimizer step, whose gradients no checkpoint holds. Change the batch size or the "
                "accumulation, or validate by epochs"
            )
        if not lengths:
            return
        end = min(lengths)
        if end % interval:
            lost = (
                "it would never validate, so it would keep no checkpoint"
                if end < interval
                else f"its last {end % interval} batches would be neither validated nor checkpointed"
            )
            raise ConfigError(
                f"validation runs every {interval} training batches (trainer.val_check_interval), but this run is "
                f"{end} batches long ({lengths[end]}): {lost}. Make the run's length a multiple of the interval"
            )


class ScheduleFitsTheRun(L.Callback):
    """A schedule planned over ``trainer.max_steps`` (scheduler=warmup_cosine) in a run that
    ``trainer.max_epochs`` ends sooner would stop part way down its decay, without a word. Checked
    once the length of an epoch is known."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        per_epoch = trainer.num_training_batches
        if trainer.fast_dev_run:  # a check of the code path, one batch long by design
            return
        if not (trainer.max_epochs and trainer.max_epochs > 0) or per_epoch == float("inf"):
            return
        steps_per_epoch = math.ceil(int(per_epoch) / trainer.accumulate_grad_batches)
        by_epochs = trainer.max_epochs * steps_per_epoch
        for config in trainer.lr_scheduler_configs:
            planned = getattr(config.scheduler, "total_steps", None)
            if isinstance(planned, int) and by_epochs < planned:
                raise ConfigError(
                    f"the learning-rate schedule plans {planned} optimizer steps (trainer.max_steps), but "
                    f"trainer.max_epochs={trainer.max_epochs} ends the run after {by_epochs} "
                    f"({steps_per_epoch} an epoch), part way down it: set trainer.max_epochs=-1, so that the "
                    "run's length is set in steps"
                )


def check_devices_and_optimisation(cfg: DictConfig) -> None:
    """Refuse a GPU asked for where there is none; then build the optimiser and the schedule once on a
    stand-in parameter, so that their own checks (a negative learning rate, a schedule's bad length)
    fail now, naming the group, rather than as a traceback from inside the trainer once data is loaded."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu) needs a GPU, and this machine has none that PyTorch "
            "sees; use trainer=cpu, or leave trainer.accelerator=auto"
        )
    group = "optimizer"
    try:
        optimizer = build(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
        group = "scheduler"
        if cfg.get("scheduler"):
            build(cfg.scheduler)(optimizer=optimizer)
    except (ValueError, TypeError, ZeroDivisionError) as e:
        raise ConfigError(f"{group}: {e}") from None


class LocalSweepOfDDP(ConfigError):
    """A ``-m`` sweep whose jobs Lightning would run as DDP by re-running the command line: each extra
    rank would run a sweep of its own. The whole sweep stops at once."""


def refuse_a_local_sweep_of_ddp(trainer: L.Trainer) -> None:
    """Lightning's subprocess launcher starts the extra ranks by running this command line again, ``-m``
    included; under Hydra's basic launcher every rank would then run the whole sweep."""
    relaunches = type(getattr(trainer.strategy, "launcher", None)).__name__ == "_SubprocessScriptLauncher"
    if not (relaunches and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return
    if str(HydraConfig.get().launcher.get("_target_", "")).endswith("BasicLauncher"):
        raise LocalSweepOfDDP(
            f"a -m sweep of DDP jobs ({trainer.world_size} processes each): Lightning would start each extra rank "
            "by running this command line again, -m included, and every rank would run a sweep of its own. Run "
            "each job without -m, or submit the sweep with a cluster launcher (hydra/launcher=submitit_slurm)"
        )


def validation_interval_problem(trainer: L.Trainer) -> str | None:
    """Lightning refuses a validation interval in batches longer than an epoch while validation
    counts epochs, with a ValueError from inside its fit loop once it has measured the epoch; this
    names the problem by the keys that set it (None when that was not the failure)."""
    interval, every = trainer.val_check_interval, trainer.check_val_every_n_epoch
    per_epoch = getattr(trainer.fit_loop, "max_batches", float("inf"))
    # As Lightning's check: an epoch of no batches returns before it.
    if not (isinstance(interval, int) and every is not None and trainer.limit_val_batches and interval > per_epoch > 0):
        return None
    return (
        f"trainer.val_check_interval={interval} batches is longer than an epoch ({per_epoch} batches) while "
        f"trainer.check_val_every_n_epoch={every} counts epochs: set trainer.check_val_every_n_epoch=null to "
        f"validate every {interval} batches across epochs, or trainer.val_check_interval to at most {per_epoch}"
    )
