"""Train, validate and test a change detector.

    python train.py                                   # built-in synthetic data
    python train.py data=levir data.root=/path/to/LEVIR-CD
    python train.py -m model.base=16,32               # one run per value, under outputs/multirun/

Every run writes to its own folder: the composed config, TensorBoard logs, checkpoints
(best on val/F1 and last) and metrics.json with the best validation and the test metrics.
"""

from __future__ import annotations

import json
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from cdseg.callbacks import TrainingInterrupted
from cdseg.checkpoint_io import CheckpointError, SafeCheckpointIO, read_checkpoint
from cdseg.data import DatasetError
from cdseg.io import write_text
from cdseg.module import ChangeDetectionModule, NonFiniteError
from cdseg.precision import cpu_precision
from cdseg.resume import check_resumable, resume_checkpoint, resume_folder, resume_subdir, run_folder

# A resumed run continues in the folder of the run it resumes (hydra.run in conf/train.yaml).
OmegaConf.register_new_resolver("resume_folder", resume_folder, replace=True)
OmegaConf.register_new_resolver("resume_subdir", resume_subdir, replace=True)


class ConfigError(ValueError):
    """A configuration that cannot run as composed."""


def _cpu_only(cfg: DictConfig) -> bool:
    accelerator = cfg.trainer.get("accelerator", "auto")
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def _fix_precision(cfg: DictConfig) -> None:
    """On a CPU-only run, swap a GPU-only or emulated precision for one this CPU runs well."""
    if not _cpu_only(cfg):
        return
    precision, notice = cpu_precision(cfg.trainer.get("precision", "32-true"))
    if notice:
        print(f"notice: trainer.{notice}", file=sys.stderr)
        with open_dict(cfg):
            cfg.trainer.precision = precision


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


def _resume(cfg: DictConfig) -> tuple[Path | None, bool]:
    """The checkpoint ``ckpt_path=`` names (None for a fresh run), and whether the run continues in
    that checkpoint's run folder (then ``paths.output_dir``); refuses settings that change training."""
    if not cfg.get("ckpt_path"):
        return None, False
    ckpt_path = resume_checkpoint(str(cfg.ckpt_path), cfg.paths.runs_dir)
    run = run_folder(ckpt_path)
    if run is not None:  # the run's own folder, so its best checkpoint and score carry on
        with open_dict(cfg):
            cfg.paths.output_dir = str(run)
    print(f"resuming from {ckpt_path}", file=sys.stderr)
    run_config = (read_checkpoint(ckpt_path, peek=True).get("hyper_parameters") or {}).get("run_config")
    if run_config and _cpu_only(cfg):  # a GPU run's mixed precision falls back here as this run's did
        run_config["trainer"]["precision"] = cpu_precision(run_config["trainer"].get("precision", "32-true"))[0]
    changes = check_resumable(
        ckpt_path, run_config, OmegaConf.to_container(cfg, resolve=True), cfg.get("resume_strict", True)
    )
    for change in changes:
        print(f"warning: resuming with a changed setting (resume_strict=false): {change}", file=sys.stderr)
    # The datamodule positions its sampler inside the epoch itself (data.datamodule.resume_point),
    # and the checkpoint folder is meant to be the run's own.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    return ckpt_path, run is not None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then validate and test the best checkpoint; return and write the results.

    Returns:
        ``{"best_checkpoint": path, "val": {"val/F1": ...}, "test": {"test/F1": ...}, "output_dir": path}``
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"missing required value(s): {', '.join(missing)}; set them on the command line, e.g. {missing[0]}=..."
        )
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    _fix_precision(cfg)
    ckpt_path, in_run_folder = _resume(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = instantiate(cfg.data)
    module = ChangeDetectionModule(
        net=instantiate(cfg.model),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        threshold=cfg.threshold,
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    # SafeCheckpointIO: atomic checkpoint writes; resuming never unpickles code, and a moved run
    # folder keeps its best checkpoint and score.
    checkpoint_io = SafeCheckpointIO(run_checkpoint_dir=out / "checkpoints" if in_run_folder else None)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[checkpoint_io])

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    # The first ModelCheckpoint (conf/callbacks: the best epoch); other Checkpoint callbacks, such as
    # InterruptCheckpoint, keep no best model.
    best_ckpt = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    best = best_ckpt.best_model_path if best_ckpt else ""
    # Re-validating the best checkpoint gives all val/* metrics of that epoch, and proves it loads.
    if best:
        val = trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)[0]
    else:
        val = dict(trainer.callback_metrics)
    results: dict[str, Any] = {
        "output_dir": str(out),
        "best_checkpoint": best,
        "val": _scalars(val, "val/"),
        "test": {},
    }
    if cfg.get("test") and datamodule.has_split("test"):
        test = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
        results["test"] = _scalars(test, "test/")

    if trainer.is_global_zero:
        write_text(out / "metrics.json", json.dumps(results, indent=2) + "\n")
        hparams = _flat(OmegaConf.to_container(cfg, resolve=True))
        for lg in trainer.loggers:
            if isinstance(lg, TensorBoardLogger):
                lg.log_hyperparams(
                    hparams, metrics={f"hp/{k}": v for k, v in {**results["val"], **results["test"]}.items()}
                )
        _print_summary(results)
    return results


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a/b": value} with values TensorBoard's hparams accept."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}/"))
        elif k != "hydra":
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _print_summary(results: dict[str, Any]) -> None:
    lines = ["", f"run folder: {results['output_dir']}", f"best checkpoint: {results['best_checkpoint'] or '-'}"]
    for stage in ("val", "test"):
        if results[stage]:
            lines.append(f"{stage:>5}: " + "  ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in results[stage].items()))
    print("\n".join(lines))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        results = train(cfg)
    except TrainingInterrupted as e:
        print(f"{e}\nresume with: python train.py ckpt_path={Path(cfg.paths.output_dir)}", file=sys.stderr)
        raise SystemExit(128 + e.signum) from None
    except SIGTERMException:  # Lightning's own SIGTERM handling outside training batches (setup, testing)
        print("terminated (SIGTERM) outside training; resume from the run's last.ckpt", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except (
        ConfigError,
        CheckpointError,
        DatasetError,
        NonFiniteError,
        FileNotFoundError,
        FileExistsError,
        InstantiationException,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    return results["val"].get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
