"""Train, validate and test a change detector.

    python train.py                                   # built-in synthetic data
    python train.py data=levir data.root=/path/to/LEVIR-CD
    python train.py -m model.base=16,32               # one run per value, under outputs/multirun/

Every run writes to its own folder (cdseg/runs/folder.py): the composed config, TensorBoard logs,
checkpoints (best on val/F1 and last) and metrics.json with the best validation and the test metrics.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from cdseg.config import build, check_types, comparable_settings, raise_problems, require_values, run_problems
from cdseg.errors import CdsegError
from cdseg.metrics import change_metrics, curve_summary
from cdseg.models import CONF_MODELS, stored_config_problem
from cdseg.models.network import build_network, runtime_problems
from cdseg.module import ChangeDetectionModule, NonFiniteError
from cdseg.overrides import exit_on_unknown_keys
from cdseg.precision import fix_precision
from cdseg.runs.checkpoint import read_checkpoint, write_threshold
from cdseg.runs.checkpoint_io import SafeCheckpointIO
from cdseg.runs.console import tee_console
from cdseg.runs.csv_logger import CSVLogger as ResumableCSVLogger
from cdseg.runs.folder import FolderHoldsARun, RunFolder, claimed_by_this_process, name_problem
from cdseg.runs.guards import (
    EndOnAValidation,
    LocalSweepOfDDP,
    ScheduleFitsTheRun,
    check_devices_and_optimisation,
    refuse_a_local_sweep_of_ddp,
    validation_interval_problem,
)
from cdseg.runs.interrupt import exit_on_stop_signal
from cdseg.runs.resume import (
    ExtendSchedule,
    RecordOverrides,
    SeedEachBatch,
    exit_if_finished,
    refuse_a_taken_folder,
    resume,
    resume_args,
)
from cdseg.scores import score_line


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then validate and test the best checkpoint; return and write the results.

    Returns:
        ``{"output_dir": path, "best_checkpoint": path, "val": {"val/F1": ...}, "test": {"test/F1": ...}}``
    """
    require_values(cfg)
    raise_problems([name_problem(cfg.get("name"), cfg.get("tags", []))])
    check_types(cfg)  # a wrongly typed option is named now, not as a traceback after the sanity check
    raise_problems(run_problems(cfg, list(change_metrics())))
    check_devices_and_optimisation(cfg)
    raise_problems(runtime_problems(cfg.model))
    _warn_if_predict_cannot_build(cfg.model)
    _quiet_what_is_not_about_the_run()
    L.seed_everything(cfg.seed, workers=True)
    fix_precision(cfg)  # on a CPU-only run, a GPU precision becomes one this CPU runs well
    ckpt_path = resume(cfg)  # None for a fresh run; a resumed run continues in its own folder
    run = RunFolder(cfg.paths.output_dir)
    # Only a run resumed in its own folder may add to that folder's results (a checkpoint file kept
    # elsewhere resumes into a new folder). Other DDP ranks and nodes join the folder the first one started.
    own_folder = ckpt_path is not None and RunFolder.of_checkpoint(ckpt_path) is not None
    if not own_folder and _first_process():
        run.refuse_a_new_run_over_results()
    run.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    rank_zero_only(print)(_start_line(cfg, run.path, resumed=ckpt_path is not None))

    datamodule = build(cfg.data)
    module = ChangeDetectionModule(
        net=build_network(cfg.model),
        loss=build(cfg.loss),
        optimizer=build(cfg.optimizer),
        scheduler=build(cfg.scheduler) if cfg.get("scheduler") else None,
        threshold=cfg.threshold,
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values()]
    if HydraConfig.initialized():  # a command line, recorded so that resuming starts from it
        callbacks.append(RecordOverrides(HydraConfig.get().overrides.task))
    if cfg.get("extend_schedule"):
        callbacks.append(ExtendSchedule())
    callbacks += [SeedEachBatch(cfg.seed), EndOnAValidation(), ScheduleFitsTheRun()]
    loggers = [build(c) for c in (cfg.get("logger") or {}).values()]
    for logger in loggers:
        if isinstance(logger, ResumableCSVLogger):
            # Resumed in its own folder, rows after the checkpoint's step are logged again from here;
            # a new run keeps none (a run that stopped before its first checkpoint may have left some).
            logger.resume_step = read_checkpoint(ckpt_path, peek=True).get("global_step") if own_folder else 0
    if not loggers:  # ~logger: no curves to draw, and LearningRateMonitor would refuse the trainer
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # Checkpoints are written atomically and loaded without running code from them.
    trainer: L.Trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[SafeCheckpointIO()])
    refuse_a_local_sweep_of_ddp(trainer)

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except ValueError:
        raise_problems([validation_interval_problem(trainer)])  # Lightning's refusal, by the keys that set it
        raise

    # Re-validating the best checkpoint gives all val/* metrics of that epoch, and proves it loads;
    # it and the test also record their precision-recall curves.
    module.record_curves = True
    best = _best_checkpoint(trainer)
    curves: dict[str, dict[str, Any]] = {}
    if best:
        val = _validate_quietly(trainer, module, datamodule, best)
        curves["val"] = curve_summary(module.val_curve)
        if cfg.get("calibrate") and curves["val"]["best_F1"] == 0:
            print(
                f"warning: calibrate=true: no threshold gives a validation F1 above 0; keeping {cfg.threshold}",
                file=sys.stderr,
            )
        elif cfg.get("calibrate"):  # the val-optimal threshold, for test and predict.py; test chooses nothing
            module.set_threshold(round(curves["val"]["best_threshold"], 6))
            module.val_curve.reset()
            val = _validate_quietly(trainer, module, datamodule, best)
            if trainer.is_global_zero:
                write_threshold(best, module.threshold)
    else:
        val = dict(trainer.callback_metrics)
        if cfg.get("calibrate"):
            print(f"warning: calibrate=true: no best checkpoint to calibrate; keeping {cfg.threshold}", file=sys.stderr)
    results: dict[str, Any] = {"output_dir": str(run.path), "best_checkpoint": best, "val": _scalars(val, "val/")}
    results["test"] = {}
    if cfg.get("test") and datamodule.has_split("test"):
        test = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
        results["test"] = _scalars(test, "test/")
        curves["test"] = curve_summary(module.test_curve)
    results["threshold"] = module.threshold
    for stage, summary in curves.items():
        results[stage][f"{stage}/AP"] = summary["AP"]
    results["curves"] = {s: {k: c[k] for k in ("thresholds", "precision", "recall", "F1")} for s, c in curves.items()}

    if trainer.is_global_zero:
        run.write_metrics(results)
        _log_hparams(trainer, cfg, results)
        _log_curves(trainer, curves)
        _print_summary(results)
    return results


def _validate_quietly(trainer: L.Trainer, module: L.LightningModule, datamodule: Any, ckpt: str) -> dict[str, Any]:
    """Validate ``ckpt`` without logging: it is no new epoch, and the curves must not jump back to the
    best one. Its figures go to metrics.json and the hparams table (hp/val/*). A logger that takes
    every call and keeps nothing stands in, so that a callback which logs through
    ``trainer.logger.experiment`` (images, say) runs as it does in training."""
    loggers, trainer.loggers = trainer.loggers, [DummyLogger()]
    try:
        return trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
    finally:
        trainer.loggers = loggers


def _log_curves(trainer: L.Trainer, curves: dict[str, dict[str, Any]]) -> None:
    """The best checkpoint's val and test precision-recall curves, for TensorBoard's PR curves tab."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            for stage, c in curves.items():
                logger.experiment.add_pr_curve_raw(
                    f"{stage}/PR",
                    true_positive_counts=c["TP"],
                    false_positive_counts=c["FP"],
                    true_negative_counts=c["TN"],
                    false_negative_counts=c["FN"],
                    precision=c["precision"],
                    recall=c["recall"],
                    global_step=trainer.global_step,
                    num_thresholds=len(c["thresholds"]),
                )


_STARTED = time.time() - 1.0  # before Hydra makes the run folder; 1 s for coarse file-system clocks


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


@rank_zero_only
def _warn_if_predict_cannot_build(model: DictConfig) -> None:
    """A model predict.py and cdseg.export would refuse to build from this run's checkpoints (a class
    no config in conf/model/ names: cdseg.models.stored_config_problem) still trains: said before the
    run, not after it."""
    if problem := stored_config_problem(OmegaConf.to_container(model, resolve=True)):
        print(
            f"warning: predict.py and cdseg.export will refuse this run's checkpoints ({problem}): a model of "
            f"your own needs a config in {CONF_MODELS} that names it as its _target_",
            file=sys.stderr,
        )


def _quiet_what_is_not_about_the_run() -> None:
    """Lightning's product tips, and a deprecation Lightning triggers inside torch, say nothing about
    the user's run; its other messages (devices, the model summary, warnings about the run) stay."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in log.filters):
        log.addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def _start_line(cfg: DictConfig, path: Any, resumed: bool) -> str:
    """Where the run writes and the choices that define it, before any work."""
    model = str(cfg.model.get("_target_", "?")).rsplit(".", 1)[-1]
    width = f" base {cfg.model.base}" if cfg.model.get("base") is not None else ""
    length = _run_length(cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps"), cfg.trainer.get("max_time"))
    data = cfg.data.get("root")
    return (
        f"{'resuming' if resumed else 'run folder'}: {path}\n"
        f"  data {data}, batch {cfg.data.get('batch_size')}; model {model}{width}; {length}; "
        f"precision {cfg.trainer.get('precision')}; lr {cfg.optimizer.get('lr')}; seed {cfg.get('seed')}"
    )


def _run_length(epochs: int | None, steps: int | None, max_time: Any) -> str:
    """The run's length as the Trainer will read it: every limit set, the first one reached ending it."""
    if epochs is None:  # Lightning: no limit when a step or time limit is set, else 1000 epochs
        epochs = -1 if steps not in (None, -1) or max_time is not None else 1000
    limits = [
        f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in ((steps, "step"), (epochs, "epoch")) if n not in (None, -1)
    ]
    if max_time is not None:
        limits.append(f"max_time {max_time}")
    if not limits:
        return "no epoch or step limit"
    return " or ".join(limits) + (", whichever comes first" if len(limits) > 1 else "")


def _best_checkpoint(trainer: L.Trainer) -> str:
    """The first ModelCheckpoint's best file (conf/callbacks lists the best-epoch one first); other
    Checkpoint callbacks, such as the interrupt checkpoint, keep no best model."""
    first = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    return first.best_model_path if first else ""


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefix)}


def _log_hparams(trainer: L.Trainer, cfg: DictConfig, results: dict[str, Any]) -> None:
    """The run's settings with its final metrics, for TensorBoard's hparams table."""
    hparams = comparable_settings(cfg)
    metrics = {f"hp/{k}": v for k, v in {**results["val"], **results["test"]}.items()}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, metrics=metrics)


def _print_summary(results: dict[str, Any]) -> None:
    lines = ["", f"run folder: {results['output_dir']}", f"best checkpoint: {results['best_checkpoint'] or '-'}"]
    lines.append(f"threshold: {results['threshold']:g}")
    for stage in ("val", "test"):
        if results[stage]:
            lines.append(score_line(stage, results[stage]))
    print("\n".join(lines))


def _clean_up_a_refusal(cfg: DictConfig) -> None:
    """A run refused at start leaves no folder (a resume whose checkpoint is not found included); a
    refused resume of a run leaves no Hydra record of this command beside the run's own."""
    run = RunFolder(cfg.paths.output_dir)
    if run.remove_if_refused(cfg.paths.runs_dir, since=_STARTED) or not cfg.get("ckpt_path"):
        return
    if any(p.stat().st_mtime >= _STARTED for p in run.checkpoints.glob("*.ckpt")):
        return  # it trained before it failed: the record of its command stays
    subdir = str(HydraConfig.get().output_subdir or "")
    if subdir.startswith(".hydra/resume-"):
        shutil.rmtree(run.path / subdir, ignore_errors=True)


def _first_process() -> bool:
    """Global rank 0 as the environment tells it before the trainer exists (Lightning's launchers,
    torchrun and SLURM set it; a node started by hand sets NODE_RANK)."""
    return rank_zero_only.rank == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _one_folder(cfg: DictConfig) -> None:
    """A run named with ``paths.output_dir=`` lives there, but Hydra made a folder of its own for the
    command's record (``hydra.run.dir``): the record joins the run folder (beside an earlier one) when
    this command's run is there, and Hydra's folder, which this command made, goes."""
    hydra_cfg = HydraConfig.get()
    own, run = Path(hydra_cfg.runtime.output_dir), Path(cfg.paths.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN or not _first_process() or not own.is_dir():
        return
    # Only the folder this process claimed for the command (a hydra.run.dir of the user's is theirs),
    # and never one that holds the run.
    if not claimed_by_this_process(own) or own.resolve() in (run.resolve(), *run.resolve().parents):
        return
    record = own / str(hydra_cfg.output_subdir or ".hydra")
    started_here = RunFolder(run).config.is_file() and RunFolder(run).config.stat().st_mtime >= _STARTED
    if record.is_dir() and started_here:
        target = run / ".hydra"
        if target.exists():
            target = target / f"run-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        shutil.move(str(record), str(target))
    RunFolder(own).remove_if_refused(cfg.paths.runs_dir, since=_STARTED)  # only what this command made


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return _main(cfg)
    finally:
        _one_folder(cfg)


def _main(cfg: DictConfig) -> float | None:
    # Everything the run says, on the console and in its folder's <job>.log (appended by each command).
    with tee_console(Path(cfg.paths.output_dir) / f"{HydraConfig.get().job.name}.log"):
        try:
            with exit_on_stop_signal():  # Ctrl-C or SIGTERM: exit 130 or 143 with the resume command
                results = train(cfg)
        except Exception as e:
            if isinstance(e, LocalSweepOfDDP):  # every job would fail alike: the sweep stops here
                print(f"error: {e}", file=sys.stderr)
                _clean_up_a_refusal(cfg)
                raise SystemExit(1) from None
            sweep = HydraConfig.get().mode == RunMode.MULTIRUN
            # The job is listed as failed in the sweep summary; the other jobs go on. A folder an
            # earlier job left its results in keeps them, and its status.
            if sweep and not isinstance(e, FolderHoldsARun):
                RunFolder(cfg.paths.output_dir).write_failure(f"{type(e).__name__}: {e}")
            if not isinstance(e, CdsegError):
                if not sweep:
                    raise
                traceback.print_exc()  # an unexpected failure: its traceback, in the job's log too
                return None
            print(f"error: {e}", file=sys.stderr)
            if sweep:
                return None
            if not isinstance(e, NonFiniteError):  # what stopped a run before it trained leaves nothing behind
                _clean_up_a_refusal(cfg)
            raise SystemExit(1) from None
    return results["val"].get(cfg.optimized_metric)


if __name__ == "__main__":
    conf = Path(__file__).parent / "conf"
    sys.argv[1:] = resume_args(conf, "train", sys.argv[1:])  # a resumed run's own overrides, then this command's
    exit_on_unknown_keys(conf, "train")  # before Hydra: names the nearest keys (of the run's own groups too)
    exit_if_finished(conf, "train", sys.argv[1:])  # and writes nothing
    try:  # before Hydra writes its record into a folder the command names
        if _first_process():  # the others join the folder the first one started
            refuse_a_taken_folder(sys.argv[1:])
    except FolderHoldsARun as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    main()
