"""Resuming a run: which checkpoint ``ckpt_path=`` names, the run folder it continues in, and the
settings that must not change on the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdseg.checkpoint_io import CheckpointError, read_checkpoint

# Written by the last-epoch ModelCheckpoint and by InterruptCheckpoint; the one holding more steps
# is the resume point (last.ckpt on a tie).
RESUMABLE = ("last.ckpt", "interrupted.ckpt")

# What a resumed run may change: where it writes and logs, how long it trains, when it validates,
# how (not what) data is loaded, and the accelerator. Everything else (model, loss, optimizer,
# schedule, augmentation, batch size, seed, devices, precision, gradient accumulation and clipping)
# decides the weights, so by default it must equal the run's (resume_strict=false only warns).
MAY_CHANGE = (
    "paths",
    "ckpt_path",
    "resume_strict",
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
    "data.root",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.eval_batch_size",
)


def _most_trained(paths: list[Path]) -> Path | None:
    """The checkpoint of one run holding the most optimizer steps (the first listed on a tie).

    Steps, not file times: copying a run folder does not always keep modification times.
    """
    best, best_step = None, -1
    for path in paths:
        step = int(read_checkpoint(path, peek=True).get("global_step", -1))
        if step > best_step:
            best, best_step = path, step
    return best


def _resumable(run: Path) -> list[Path]:
    return [run / "checkpoints" / name for name in RESUMABLE if (run / "checkpoints" / name).is_file()]


def resume_checkpoint(spec: str, runs_dir: str | Path) -> Path:
    """The checkpoint a ``ckpt_path=`` value names.

    ``last``: the most recently written single run under ``runs_dir`` (sweep jobs under
    ``multirun/`` are left out: name one by its folder); a run folder: its checkpoint holding the
    most steps; a file: that file. Anything else raises ``FileNotFoundError``: resuming never
    silently starts afresh.
    """
    if spec == "last":
        runs_dir = Path(runs_dir)
        runs = {
            p.parent.parent
            for name in RESUMABLE
            for p in runs_dir.glob(f"**/checkpoints/{name}")
            if p.relative_to(runs_dir).parts[0] != "multirun"
        }
        if not runs:
            raise FileNotFoundError(
                f"ckpt_path=last: no run under {runs_dir}/ has checkpoints/last.ckpt or interrupted.ckpt; "
                "nothing to resume"
            )
        newest = max(runs, key=lambda run: max(p.stat().st_mtime_ns for p in _resumable(run)))
        return _most_trained(_resumable(newest))
    path = Path(spec)
    if path.is_dir():
        found = _most_trained(_resumable(path))
        if found is None:
            raise FileNotFoundError(f"ckpt_path={spec}: folder has no checkpoints/last.ckpt or interrupted.ckpt")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={spec}: no such checkpoint file or run folder; nothing to resume from")
    return path


def run_folder(checkpoint: Path) -> Path | None:
    """``<run>/checkpoints/<name>.ckpt`` -> ``<run>``, when ``<run>`` is a run folder (it has config.yaml)."""
    run = checkpoint.resolve().parent.parent
    if checkpoint.resolve().parent.name == "checkpoints" and (run / "config.yaml").is_file():
        return run
    return None


def resume_folder(spec: str | None, runs_dir: str, default: str) -> str:
    """Hydra resolver for ``hydra.run.dir``: the resumed run's own folder, else ``default``.

    Never raises: a bad ``ckpt_path`` is reported by ``train()``, with its own message.
    """
    if not spec:
        return default
    try:
        run = run_folder(resume_checkpoint(str(spec), runs_dir))
    except OSError:
        return default
    return str(run) if run else default


def resume_subdir(spec: str | None, stamp: str) -> str:
    """Hydra resolver for ``hydra.output_subdir``: ``.hydra``, or ``.hydra/resume-<stamp>`` when resuming."""
    return f".hydra/resume-{stamp}" if spec else ".hydra"


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


ABSENT = "<absent>"


def config_changes(run_config: dict[str, Any], config: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, run's value, this config's value)`` for each setting outside MAY_CHANGE that differs;
    a key one side lacks has the value ``ABSENT`` there."""
    before, after = _flat(run_config), _flat(config)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if any(key == p or key.startswith(p + ".") for p in MAY_CHANGE):
            continue
        old, new = before.get(key, ABSENT), after.get(key, ABSENT)
        if old != new:
            changes.append((key, old, new))
    return changes


def check_resumable(
    checkpoint: Path, run_config: dict[str, Any] | None, config: dict[str, Any], strict: bool = True
) -> list[str]:
    """Refuse to resume ``checkpoint`` (trained under ``run_config``) with settings that would change
    what it trains.

    Returns:
        the changes found, described (only when ``strict`` is false: then they are warnings).

    Raises:
        CheckpointError: naming every changed key with the run's value, ready to paste as overrides.
    """
    if not run_config:
        return []  # not written by train.py: nothing to compare against
    changes = config_changes(run_config, config)
    described = [f"{k} (run: {old!r}, now: {new!r})" for k, old, new in changes]
    if changes and strict:
        more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
        fix = " ".join(f"~{k}" if old == ABSENT else f"{k}={_override(old)}" for k, old, _ in changes[:8])
        raise CheckpointError(
            f"ckpt_path={checkpoint}: the run was trained with other settings: {', '.join(described[:8])}{more}. "
            f"Resume with the run's own values (add: {fix}), or resume_strict=false to go on regardless "
            "(the result is then not that of one uninterrupted run)"
        )
    return described


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
