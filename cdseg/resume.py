"""Resuming a run: which checkpoint ``ckpt_path=`` names, the run folder it continues in, and the
settings that must not change on the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdseg.checkpoint_io import CheckpointError, read_checkpoint

# Written by InterruptCheckpoint and by the last-epoch ModelCheckpoint; the newer one is the resume point.
RESUMABLE = ("interrupted.ckpt", "last.ckpt")

# What a resumed run may change: where it writes and logs, how long and on what hardware it trains,
# how (not what) data is loaded. Everything else decides the weights, so it must equal the run's.
MAY_CHANGE = (
    "paths",
    "ckpt_path",
    "trainer",
    "callbacks",
    "logger",
    "test",
    "data.root",
    "data.synthetic",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.eval_batch_size",
)


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime_ns, default=None)


def resume_checkpoint(spec: str, runs_dir: str | Path) -> Path:
    """The checkpoint a ``ckpt_path=`` value names.

    ``last``: the newest resumable checkpoint of any run under ``runs_dir``; a run folder: its newest
    resumable checkpoint; a file: that file. Anything else raises ``FileNotFoundError``: resuming
    never silently starts afresh.
    """
    if spec == "last":
        found = _newest([p for name in RESUMABLE for p in Path(runs_dir).glob(f"**/checkpoints/{name}")])
        if found is None:
            raise FileNotFoundError(
                f"ckpt_path=last: no run under {runs_dir}/ has checkpoints/last.ckpt or interrupted.ckpt; "
                "nothing to resume"
            )
        return found
    path = Path(spec)
    if path.is_dir():
        found = _newest([path / "checkpoints" / name for name in RESUMABLE if (path / "checkpoints" / name).is_file()])
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


def check_resumable(checkpoint: Path, config: dict[str, Any]) -> None:
    """Refuse to resume ``checkpoint`` under settings that would change what it trains.

    Raises:
        CheckpointError: naming every changed key with the run's value, ready to paste as overrides.
    """
    run_config = (read_checkpoint(checkpoint).get("hyper_parameters") or {}).get("run_config")
    if not run_config:
        return  # not written by train.py: nothing to compare against
    changes = config_changes(run_config, config)
    if changes:
        listed = ", ".join(f"{k} (run: {old!r}, now: {new!r})" for k, old, new in changes[:8])
        more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
        fix = " ".join(f"~{k}" if old == ABSENT else f"{k}={_override(old)}" for k, old, _ in changes[:8])
        raise CheckpointError(
            f"ckpt_path={checkpoint}: the run was trained with other settings: {listed}{more}. "
            f"Resume with the run's own values (add: {fix})"
        )


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
