"""Resuming a run: the checkpoint ``ckpt_path=`` names, the run folder it continues in, the run's own
command-line overrides it starts from, the settings that must not change on the way, a schedule
extended on request, and a ModelCheckpoint that keeps the run's best across a move.

:func:`resume_args` rewrites train.py's command line before Hydra composes it, :func:`resume` is
train.py's one call after; the resolvers below let ``hydra.run.dir`` point a resumed run at its own
folder (conf/train.yaml).
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from cdseg.config import build, flatten
from cdseg.errors import ConfigError
from cdseg.precision import cpu_only, runnable_precision
from cdseg.runs.checkpoint import CheckpointError, read_checkpoint, run_config
from cdseg.runs.folder import FolderHoldsARun, RunFolder, checkpoint_to_resume, claim_new_folder, run_suffix

# What a resumed run may change: where it writes and logs, how long it trains, when it validates,
# how (not what) data is loaded, and the accelerator. Everything else (model, loss, optimizer,
# schedule, augmentation, batch size, seed, devices, precision, gradient accumulation and clipping)
# decides the weights, so by default it must equal the run's (resume_strict=false only warns).
# Inside MAY_CHANGE, what changes the training all the same: the checkpoint of an EMA run holds the
# averaged weights as its state_dict (the raw ones beside them), so resuming without the callback, or
# with another decay, would go on from the average rather than from where training was.
MUST_KEEP = ("callbacks.ema",)
MAY_CHANGE = (
    "paths",
    "ckpt_path",
    "name",
    "tags",
    "resume_strict",
    "extend_schedule",
    "calibrate",  # chooses the threshold after training; changes nothing trained
    "callbacks",
    "logger",
    "test",
    *(
        f"trainer.{k}"
        for k in (
            "max_epochs",
            "max_steps",
            "max_time",
            "min_epochs",
            "min_steps",
            "accelerator",
            "default_root_dir",
            "log_every_n_steps",
            "enable_progress_bar",
            "enable_model_summary",
            "num_sanity_val_steps",
            "check_val_every_n_epoch",
            "val_check_interval",
            "limit_val_batches",
            "limit_test_batches",
            "profiler",
        )
    ),
    "model.channels_last",  # how the network runs, not what it computes
    "model.compile",
    "data.root",
    "data.cache",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.eval_batch_size",
)
ABSENT = "<absent>"  # a key one side of the comparison lacks
# Options added after runs may have been recorded without them: a run lacking one ran as its default.
ADDED_LATER = {"data.augment_on": "host", "data.cache": None, "trainer.num_nodes": 1, "trainer.sync_batchnorm": False}
# Schedule options that follow the run's length (conf/scheduler): extend_schedule=true lets them change.
SCHEDULE_LENGTH = ("scheduler.T_max", "scheduler.total_steps")
# What one resuming command asks for, not a setting of the run: never replayed from the run's overrides.
# paths.output_dir too: a resumed run continues in its own folder, wherever the command is run from.
ONE_TIME = ("ckpt_path", "resume_strict", "extend_schedule", "paths.output_dir")
OVERRIDES = "cdseg_overrides"  # the checkpoint key holding the command-line overrides of the run


def refuse_a_taken_folder(args: Sequence[str]) -> None:
    """Before Hydra writes its record of the command: a new run (no ``ckpt_path=``) is refused
    (:class:`FolderHoldsARun`) when a folder the command line names, ``hydra.run.dir=`` (Hydra's
    record) or ``paths.output_dir=`` (the run), holds an earlier run's results; a new sweep, when its
    ``hydra.sweep.dir=`` holds an earlier sweep's. Folders given through interpolations are left to
    the run's own check, and commands that only print (``--cfg``, ``--help``) to Hydra."""
    if any(a in READ_ONLY_FLAGS for a in args):
        return  # prints a config or help, writes nothing
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # Hydra reports its own syntax errors
        return
    given = {o.key_or_group: o.value() for o in parsed if not o.is_sweep_override()}
    if given.get("ckpt_path") not in (None, ""):
        return  # resume() sends the run to its own folder; train() checks where a loose checkpoint goes
    sweep = any(a in ("-m", "--multirun") for a in args) or given.get("hydra.mode") == "MULTIRUN"
    if sweep or given.get("hparams_search") is not None:
        folder = given.get("hydra.sweep.dir")
        jobs = [j for j in Path(folder).iterdir() if j.is_dir()] if _literal(folder) and Path(folder).is_dir() else []
        if any(RunFolder(job).holds_results() for job in jobs):
            raise FolderHoldsARun(
                f"{folder} holds an earlier sweep's jobs and their results, which this sweep would replace: "
                "choose another hydra.sweep.dir (or leave it unset)"
            )
        return
    for key in ("hydra.run.dir", "paths.output_dir"):  # Hydra writes its record into the first
        if _literal(given.get(key)):
            RunFolder(given[key]).refuse_a_new_run_over_results()


READ_ONLY_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i")


def _literal(value: Any) -> bool:
    """A folder given as a plain string (an interpolation is left to the run's own check)."""
    return isinstance(value, str) and bool(value) and "${" not in value


def resume_args(config_dir: str | Path, config_name: str, args: Sequence[str]) -> list[str]:
    """The command line ``args`` (after the script name), with the resumed run's own overrides first.

    A resuming command names only what it changes: the overrides the run was started with (as its
    checkpoint records them, or its folder's ``.hydra/overrides.yaml`` for an older checkpoint) come
    first, and an override of this command replaces the run's for the same key. Anything that cannot
    be read here leaves ``args`` as they are, for :func:`resume` to report.
    """
    args = list(args)
    given = [a for a in args if "=" in a and not a.startswith("-")]
    if any(a in ("-m", "--multirun") for a in args) or not any(a.startswith("ckpt_path=") for a in given):
        return args
    try:
        # Only where to look: other keys may exist only under the run's own group choices.
        where = [a for a in given if a.lstrip("+").startswith(("ckpt_path=", "paths."))]
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            cfg = compose(config_name, overrides=where)
        checkpoint = checkpoint_to_resume(str(cfg.ckpt_path), cfg.paths.runs_dir)
        merged = merge_overrides(run_overrides(checkpoint), given)
    except Exception:  # a bad ckpt_path or override: resume() and Hydra report it with their own messages
        return args
    # A search's trial records its search (hparams_search=, whose config sets hydra.mode=MULTIRUN):
    # resuming the trial is one run, not a new search.
    merged = [*merged, "hydra.mode=RUN"]
    # Hydra takes its overrides as one run of arguments: the merged ones replace this command's in place.
    first = args.index(given[0])
    return args[:first] + merged + [a for a in args[first:] if a not in given]


def run_overrides(checkpoint: Path) -> list[str]:
    """The command-line overrides that made the run ``checkpoint`` belongs to ([] when unknown)."""
    recorded = read_checkpoint(checkpoint, peek=True).get(OVERRIDES)
    if recorded is None:  # written before checkpoints carried them: the run folder's Hydra record
        run = RunFolder.of_checkpoint(checkpoint)
        file = run.path / ".hydra" / "overrides.yaml" if run else None
        recorded = OmegaConf.to_container(OmegaConf.load(file)) if file and file.is_file() else []
    return [str(o) for o in recorded]


def merge_overrides(recorded: Sequence[str], given: Sequence[str]) -> list[str]:
    """``recorded`` less the one-time options and the keys ``given`` sets again, then ``given``. A key
    the run appended (``+key=1``) stays appended when the command changes it (``key=2`` becomes
    ``++key=2``), and the command deleting it (``~key``) just drops it.

    Raises:
        hydra.errors.OverrideParseException: an override Hydra cannot parse.
    """
    parser = OverridesParser.create()

    def key(override: Any) -> tuple[str, str | None]:
        return override.key_or_group, override.package

    old = dict(zip(recorded, parser.parse_overrides(list(recorded)), strict=True))
    parsed = parser.parse_overrides(list(given))
    appended = {key(o) for o in old.values() if o.type == OverrideType.ADD}
    new = []
    for line, o in zip(given, parsed, strict=True):
        if key(o) in appended and o.type == OverrideType.DEL:
            continue  # the key exists only through the run's own "+": leaving that out deletes it
        if key(o) in appended and o.type == OverrideType.CHANGE:
            line = f"++{line}"
        new.append(line)
    changed = {key(o) for o in parsed}
    kept = [line for line, o in old.items() if key(o) not in changed and o.key_or_group not in ONE_TIME]
    return kept + new


def resume(cfg: DictConfig) -> Path | None:
    """The checkpoint ``ckpt_path=`` names (None for a fresh run), checked against this config.

    A checkpoint in a run folder continues in that folder (``cfg.paths.output_dir`` is set to it), so
    the run's best checkpoint and score, its curves and its log carry on.

    Raises:
        CheckpointNotFound: nothing to resume from; resuming never silently starts afresh.
        CheckpointError: a setting that changes what is trained differs from the run's
            (``resume_strict=false`` warns instead).
    """
    if not cfg.get("ckpt_path"):
        if cfg.get("extend_schedule"):
            raise ConfigError("extend_schedule=true extends the schedule of a resumed run: name it with ckpt_path=")
        return None
    ckpt_path = checkpoint_to_resume(str(cfg.ckpt_path), cfg.paths.runs_dir)
    run = RunFolder.of_checkpoint(ckpt_path)
    if run is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(run.path)
    checkpoint = read_checkpoint(ckpt_path, peek=True)
    gone = _missing_best(checkpoint, run) if run is not None else None
    if gone:  # found out only when the finished run tests it, otherwise
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: the run's best checkpoint so far, {gone}, is missing from {run.checkpoints}. "
            f"Put it back, or resume from a copy of {ckpt_path.name} outside the run folder (a new run folder, "
            "whose best checkpoint is chosen afresh)"
        )
    print(f"resuming from {ckpt_path}", file=sys.stderr)
    if checkpoint.get(OVERRIDES):
        print(f"  the run's own overrides: {' '.join(checkpoint[OVERRIDES])}", file=sys.stderr)
    recorded = run_config(checkpoint)
    if recorded:  # a GPU run's mixed precision falls back on this CPU as this command's did
        trainer = recorded["trainer"]
        trainer["precision"] = runnable_precision(trainer.get("precision", "32-true"), cpu_only(cfg))
    config = OmegaConf.to_container(cfg, resolve=True)
    extend = bool(cfg.get("extend_schedule"))
    for change in check_resumable(ckpt_path, recorded, config, cfg.get("resume_strict", True), extend):
        print(f"warning: resuming with a changed setting (resume_strict=false): {change}", file=sys.stderr)
    # The datamodule positions its sampler inside the epoch itself (data.datamodule.resume_point),
    # and the checkpoint folder is meant to be the run's own.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    return ckpt_path


def _missing_best(checkpoint: dict[str, Any], run: RunFolder) -> str | None:
    """The file name of the best checkpoint a monitoring ModelCheckpoint recorded, when the run folder
    no longer holds it."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key.startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("monitor"):
            best = state.get("best_model_path")
            if best and not (run.checkpoints / Path(best).name).is_file():
                return Path(best).name
    return None


def finished(cfg: DictConfig) -> str | None:
    """A message when ``ckpt_path=`` names a run that already trained as far as this config asks
    (it wrote metrics.json and its checkpoint reached ``trainer.max_epochs``/``max_steps``), else None."""
    if not cfg.get("ckpt_path"):
        return None
    try:
        ckpt_path = checkpoint_to_resume(str(cfg.ckpt_path), cfg.paths.runs_dir)
        run = RunFolder.of_checkpoint(ckpt_path)
        if run is None or not run.metrics.is_file():
            return None
        ckpt = read_checkpoint(ckpt_path, peek=True)
    except (OSError, CheckpointError):  # resume() reports these with their own messages
        return None
    # Epochs whose training finished (a checkpoint written mid-epoch does not count its epoch).
    progress = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    epochs, steps = int(progress.get("processed", ckpt.get("epoch", -1) + 1)), int(ckpt.get("global_step", 0))
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps", -1) or -1
    by_steps = max_steps > 0 and steps >= max_steps  # Lightning stops at whichever limit comes first
    by_epochs = max_epochs not in (None, -1) and epochs >= max_epochs
    script = Path(sys.argv[0]).name or "train.py"
    stopped = _stopped_early(ckpt, _early_stopping_keys(cfg))
    if stopped and not (by_steps or by_epochs):
        return (
            f"{run.path}: this run was stopped early after {epochs} epochs ({stopped}; its results are in "
            f"{run.metrics}); nothing was trained or written. To train it on regardless, resume it without "
            f"early stopping: python {script} ckpt_path={run.path} '~callbacks.early_stopping'"
        )
    if not (by_steps or by_epochs):
        return None
    done = f"{steps} of {max_steps} steps" if by_steps else f"{epochs} of {max_epochs} epochs"
    longer = f"trainer.max_steps={2 * max_steps}" if by_steps else f"trainer.max_epochs={2 * max_epochs}"
    if _schedule_follows_length(cfg):
        longer += " extend_schedule=true"
    return (
        f"{run.path}: this run is finished ({done}; its results are in {run.metrics}); nothing was trained "
        f"or written. To train it longer, raise the limit, e.g. python {script} ckpt_path={run.path} {longer}"
    )


def _early_stopping_keys(cfg: DictConfig) -> set[str]:
    """The checkpoint keys (Lightning's ``state_key``) under which this command's EarlyStopping
    callbacks would take up a checkpoint's state."""
    callbacks = (cfg.get("callbacks") or {}).values()
    return {build(c).state_key for c in callbacks if str(c.get("_target_", "")).endswith("EarlyStopping")}


def _stopped_early(ckpt: dict, keys: set[str]) -> str | None:
    """What stopped the run early, from the EarlyStopping state this command would take up (None
    when nothing did)."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if key not in keys or not isinstance(state, dict):
            continue
        if state.get("stopping_reason", 0):  # Lightning's reason, whatever it was (patience, a threshold)
            return str(state.get("stopping_reason_message") or "EarlyStopping").rstrip(". ").split(". Signaling")[0]
        if "patience" in state and int(state.get("wait_count", 0)) >= int(state["patience"]):  # older Lightning
            return f"no improvement in the last {state['patience']} validations"
    return None


def _schedule_follows_length(cfg: DictConfig) -> bool:
    scheduler = cfg.get("scheduler") or {}
    return any(key.split(".", 1)[1] in scheduler for key in SCHEDULE_LENGTH)


def exit_if_finished(config_dir: str | Path, config_name: str, args: list[str]) -> None:
    """Before Hydra creates anything: when the command resumes a finished run, say so and exit 0."""
    if any(a in ("-m", "--multirun") for a in args) or not any(a.startswith("ckpt_path=") for a in args):
        return
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            cfg = compose(config_name, overrides=[a for a in args if not a.startswith("-")])
        message = finished(cfg)
    except Exception:  # anything Hydra or resume() reports better, later
        return
    if message:
        print(message, file=sys.stderr)
        raise SystemExit(0)


def config_changes(
    recorded: dict[str, Any], config: dict[str, Any], may_change: Sequence[str] = MAY_CHANGE
) -> list[tuple[str, Any, Any]]:
    """``(key, run's value, this config's value)`` for each setting outside ``may_change`` that
    differs; a key one side lacks has the value ``ABSENT`` there."""
    before, after = flatten(recorded), flatten(config)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if any(key == p or key.startswith(p + ".") for p in may_change) and not any(
            key == p or key.startswith(p + ".") for p in MUST_KEEP
        ):
            continue
        old, new = before.get(key, ADDED_LATER.get(key, ABSENT)), after.get(key, ABSENT)
        if old != new:
            changes.append((key, old, new))
    return changes


def check_resumable(
    checkpoint: Path,
    recorded: dict[str, Any] | None,
    config: dict[str, Any],
    strict: bool = True,
    extend_schedule: bool = False,
) -> list[str]:
    """Refuse to resume ``checkpoint`` (trained under ``recorded``) with settings that would change
    what it trains; ``extend_schedule`` lets the schedule's length change (:class:`ExtendSchedule`).

    Returns:
        the changes found, described (only when ``strict`` is false: then they are warnings).

    Raises:
        CheckpointError: naming every changed key with the run's value, ready to paste as overrides.
    """
    if not recorded:
        return []  # not written by train.py: nothing to compare against
    changes = config_changes(recorded, config, MAY_CHANGE + (SCHEDULE_LENGTH if extend_schedule else ()))
    described = [f"{k} (run: {old!r}, now: {new!r})" for k, old, new in changes]
    if changes and strict:
        lengths = [f"{k} (run: {old!r}, now: {new!r})" for k, old, new in changes if k in SCHEDULE_LENGTH]
        if len(lengths) == len(changes):  # only a longer run: keeping the old length is no answer (cosine rises again)
            raise CheckpointError(
                f"ckpt_path={checkpoint}: the run's learning-rate schedule ends at its planned length, "
                f"{', '.join(lengths)}. To train past it, add extend_schedule=true: from here on the learning rate "
                "follows the schedule of a run of the new length"
            )
        more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
        fixes = list(dict.fromkeys(_restore(recorded, config, k) for k, _, _ in changes))  # one per mapping
        fix = " ".join(fixes[:8]) + (" ..." if len(fixes) > 8 else "")
        raise CheckpointError(
            f"ckpt_path={checkpoint}: the run was trained with other settings: {', '.join(described[:8])}{more}. "
            f"Resume with the run's own values (add: {fix}), or resume_strict=false to go on regardless "
            "(the result is then not that of one uninterrupted run)"
            + (". A schedule's length may follow the run's with extend_schedule=true" if lengths else "")
        )
    return described


def _restore(recorded: dict[str, Any], config: dict[str, Any], key: str) -> str:
    """The override that gives ``key`` the run's value again. Where one side holds a mapping and the
    other does not (data.color_jitter: {brightness: 0.3, ...} against null), the whole mapping: a
    leaf under a null cannot be set on its own."""
    parts = key.split(".")
    differ = [
        i
        for i in range(1, len(parts))
        if isinstance(_get(recorded, parts[:i]), dict) != isinstance(_get(config, parts[:i]), dict)
    ]
    depth = differ[0] if differ else len(parts)
    path, old = ".".join(parts[:depth]), _get(recorded, parts[:depth])
    old = ADDED_LATER.get(path, ABSENT) if old is ABSENT else old
    if old is ABSENT:
        return f"~{path}"
    return f"{'++' if _get(config, parts[:depth]) is ABSENT else ''}{path}={_override(old)}"


def _get(node: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def _override(value: Any) -> str:
    """A value as it is written on a Hydra command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_override(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override(v)}" for k, v in value.items()) + "}"
    return str(value)


def resume_folder(spec: str | None, runs_dir: str, default: str) -> str:
    """Hydra resolver for ``hydra.run.dir``: the resumed run's own folder, else a new one named
    ``default`` (:func:`claim_new_folder`: ``default-2`` if another run took it first).

    Never raises: a bad ``ckpt_path`` is reported by :func:`resume`, with its own message; a folder
    that cannot be created, by Hydra.
    """
    run = None
    if spec:
        try:
            run = RunFolder.of_checkpoint(checkpoint_to_resume(str(spec), runs_dir))
        except (OSError, CheckpointError):
            run = None
    if run:
        return str(run.path)
    return new_folder(default)


def new_folder(path: str) -> str:
    """Hydra resolver for ``hydra.sweep.dir``, and the new-run case of :func:`resume_folder`:
    :func:`claim_new_folder`, so that two sweeps started in the same second get a folder each. A
    folder that cannot be created is left for Hydra to report."""
    try:
        return claim_new_folder(path)
    except OSError:
        return path


def resume_subdir(spec: str | None, stamp: str) -> str:
    """Hydra resolver for ``hydra.output_subdir``: ``.hydra``, or ``.hydra/resume-<stamp>`` when resuming."""
    return f".hydra/resume-{stamp}" if spec else ".hydra"


OmegaConf.register_new_resolver("resume_folder", resume_folder, replace=True)
OmegaConf.register_new_resolver("run_suffix", run_suffix, replace=True)  # from folder.py
OmegaConf.register_new_resolver("resume_subdir", resume_subdir, replace=True)
# Cached like Hydra's own ${now:}: a sweep's jobs inherit the value resolved once, where they run too.
OmegaConf.register_new_resolver("new_folder", new_folder, replace=True, use_cache=True)


class RecordOverrides(L.Callback):
    """Writes the command line's overrides into every checkpoint (under :data:`OVERRIDES`), so that
    resuming starts from them (:func:`resume_args`)."""

    def __init__(self, overrides: Sequence[str]) -> None:
        self.overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ONE_TIME]

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[OVERRIDES] = list(self.overrides)


class SeedEachBatch(L.Callback):
    """Seeds the global generators (torch, on every device) before each training batch from (seed,
    epoch, batch, rank), so that what draws from them in training (the FC models' dropout) is the same
    in a resumed run as in an uninterrupted one, as the sampler makes every augmentation. Each rank
    draws its own masks."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        key = ((self.seed * 1_000_003 + trainer.current_epoch) * 1_000_003 + batch_idx) * 1_009 + trainer.global_rank
        torch.manual_seed(key % 2**63)


class ExtendSchedule(L.Callback):
    """``extend_schedule=true``: a resumed run's learning-rate schedules continue as the schedules this
    command built (e.g. a cosine over the new ``trainer.max_epochs``) rather than the checkpoint's.

    After Lightning restores a scheduler, it is reset to this command's fresh one and stepped as many
    times as the checkpoint's had been, so from the resume point on every learning rate equals that of
    an uninterrupted run of the new length, whatever the schedule.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Called before the checkpoint's optimizer and scheduler states are loaded.
        self._fresh = [copy.deepcopy(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.ckpt_path:
            return
        for config, fresh in zip(trainer.lr_scheduler_configs, self._fresh, strict=True):
            scheduler = config.scheduler
            if not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
                raise ConfigError(
                    f"extend_schedule=true re-plans schedules that follow the step count; "
                    f"{type(scheduler).__name__} follows a metric"
                )
            steps = scheduler.last_epoch
            # The learning rates the fresh schedule starts from (its step 0, not always the base rate).
            for group, lr in zip(scheduler.optimizer.param_groups, fresh["_last_lr"], strict=True):
                group["lr"] = lr
            scheduler.load_state_dict(fresh)
            with warnings.catch_warnings():  # stepping the schedule alone, as on a dummy optimiser
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(steps):
                    scheduler.step()


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint writing into ``<run_dir>/checkpoints``, keeping the run's best
    checkpoint and score when the run folder was moved or copied before resuming.

    Lightning restores the best score only when the folder recorded in the checkpoint is the one it
    saves into now. A resumed checkpoint that lies in this callback's own folder is the same run,
    moved, so the recorded paths are re-pointed here first. A checkpoint resumed from elsewhere (a
    lone file) starts best-checkpoint tracking afresh, as in Lightning.
    """

    def __init__(self, run_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(dirpath=RunFolder(run_dir).checkpoints, **kwargs)
        self._resumed_here = False

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's own key, so checkpoints stay interchangeable with the plain callback's.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        run = RunFolder.of_checkpoint(trainer.ckpt_path) if trainer.ckpt_path else None
        self._resumed_here = run is not None and os.path.realpath(run.checkpoints) == self.dirpath

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if self._resumed_here and old and old != self.dirpath:

            def move(path: Any) -> Any:
                if isinstance(path, str) and path.startswith(old + os.sep):
                    return os.path.join(self.dirpath, os.path.relpath(path, old))
                return path

            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = move(state_dict[key])
            state_dict["best_k_models"] = {move(k): v for k, v in state_dict.get("best_k_models", {}).items()}
            state_dict["dirpath"] = self.dirpath
        super().load_state_dict(state_dict)
