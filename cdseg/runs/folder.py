"""A run folder: the one definition of its layout, and of which checkpoint a ``ckpt_path=`` value
(a file, a run folder, or ``last``) means for resuming and for evaluating.

    <run>/
      config.yaml          the composed, resolved config
      metrics.json         train.py's results: best-checkpoint val/*, test/*, the best checkpoint
      failed.txt           a sweep job that failed: why (the sweep summary lists it)
      checkpoints/         best-epochNNN.ckpt, last.ckpt, interrupted.ckpt (after Ctrl-C or SIGTERM)
      train.log  tensorboard/  .hydra/

Plain torch only (no Lightning): predict.py reads run folders too.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdseg.atomic_write import write_text
from cdseg.errors import ConfigError
from cdseg.runs.checkpoint import CheckpointError, CheckpointNotFound, read_checkpoint

LAST = "last"  # checkpoint names without ".ckpt", as ModelCheckpoint's filename takes them
INTERRUPTED = "interrupted"
SWEEPS = "multirun"  # sweep jobs live under <runs_dir>/multirun/; `last` leaves them out


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def run_suffix(name: str | None) -> str:
    """Hydra resolver for the run folder's name: ``_<name>`` after the time, or nothing. A name
    that is not a plain folder name is made one here; :func:`name_problem` refuses it first."""
    if not name:
        return ""
    return "_" + re.sub(r"[^A-Za-z0-9._-]", "-", str(name))


_CLAIMED: dict[str, str] = {}  # a new run's folder, once claimed, for every later resolution in this process


def claim_new_folder(path: str) -> str:
    """``path``, or ``path-2``, ``path-3``, ...: the first that this process creates. Folders are named
    to the second, so two runs started together (a shell loop, a job array) would otherwise share one
    and overwrite each other's config and checkpoints; ``os.mkdir`` lets exactly one of them have it."""
    if path not in _CLAIMED:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            candidate = path if n == 1 else f"{path}-{n}"
            try:
                Path(candidate).mkdir()
            except FileExistsError:
                continue
            _CLAIMED[path] = candidate
            break
    return _CLAIMED.get(path, path)


class FolderHoldsARun(ConfigError):
    """A new run or sweep asked to write where an earlier one left its results."""


def claimed_by_this_process(path: str | Path) -> bool:
    """``path`` is a folder :func:`claim_new_folder` created in this process."""
    return any(Path(p).resolve() == Path(path).resolve() for p in _CLAIMED.values())


def name_problem(name: Any, tags: Any) -> str | None:
    """What is wrong with the run's ``name`` and ``tags`` options (None when nothing)."""
    if name is not None and not (isinstance(name, str) and RUN_NAME.fullmatch(name)):
        return f"name must start with a letter or digit and use only letters, digits, '.', '_' and '-', got {name!r}"
    if isinstance(tags, str) or not isinstance(tags, Sequence) or not all(isinstance(t, str) for t in tags):
        return f"tags must be a list of strings, e.g. tags=[baseline,levir], got {tags!r}"
    return None


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.json"
        self.failure = self.path / "failed.txt"  # a sweep job that failed: why (cdseg/runs/sweep.py)
        self.checkpoints = self.path / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / f"{name}.ckpt"

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunFolder | None:
        """``<run>/checkpoints/<name>.ckpt`` -> ``<run>``, when ``<run>`` is a run folder (it has config.yaml)."""
        run = cls(Path(checkpoint).resolve().parent.parent)
        return run if run.checkpoints == Path(checkpoint).resolve().parent and run.config.is_file() else None

    def resumable(self) -> list[Path]:
        """The checkpoints a run continues from: last.ckpt and interrupted.ckpt, those that exist."""
        return [p for p in (self.checkpoint(LAST), self.checkpoint(INTERRUPTED)) if p.is_file()]

    def resume_point(self) -> Path | None:
        """The resumable checkpoint holding the most optimizer steps (last.ckpt on a tie).

        Steps, not file times: copying a run folder does not always keep modification times.
        """
        best, best_step = None, -1
        for path in self.resumable():
            step = int(read_checkpoint(path, peek=True).get("global_step", -1))
            if step > best_step:
                best, best_step = path, step
        return best

    def remove_if_refused(self, runs_dir: str | Path, since: float) -> bool:
        """Delete this folder when this process made all of it (the folder and everything in it
        modified at or after ``since``, a time taken before Hydra created it) and it holds no
        checkpoint and no metrics: what a run refused at start leaves. Then its parents up to
        ``runs_dir`` when they are left empty. True when it was deleted. A folder that held anything
        before (a resumed run's, or one named with ``paths.output_dir``) is never touched."""
        if not self.path.is_dir() or self.holds_results():
            return False
        if any(p.stat().st_mtime < since for p in (self.path, *self.path.rglob("*"))):
            return False
        shutil.rmtree(self.path)
        root, parent = Path(runs_dir).resolve(), self.path.resolve().parent
        while parent != root and root in parent.parents and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
        return True

    def holds_results(self) -> bool:
        """A run has trained here: it left checkpoints or metrics.json."""
        return self.metrics.exists() or any(self.checkpoints.glob("*.ckpt"))

    def refuse_a_new_run_over_results(self) -> None:
        """A new run (no ``ckpt_path=``) in a folder whose run left results would replace its
        config, checkpoints and metrics: refused, pointing at the alternatives."""
        if self.holds_results():
            raise FolderHoldsARun(
                f"{self.path} holds another run's checkpoints or metrics, which a new run would replace: "
                f"resume it with ckpt_path={self.path}, or start the new run in a folder of its own "
                "(leave paths.output_dir and hydra.run.dir unset, or name another)"
            )

    def best_checkpoint(self) -> Path | None:
        """metrics.json's best checkpoint, else last.ckpt (None when neither exists)."""
        if self.metrics.is_file():
            try:
                results = json.loads(self.metrics.read_text())
            except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise CheckpointError(
                    f"{self.metrics}: not readable as the run's results ({e}): mend it, or name a "
                    f"checkpoint file of {self.checkpoints} instead of the run folder"
                ) from None
            best = results.get("best_checkpoint") if isinstance(results, dict) else None
            # The folder may have been moved or copied since: look inside it.
            if best and (self.checkpoints / Path(best).name).is_file():
                return self.checkpoints / Path(best).name
        last = self.checkpoint(LAST)
        return last if last.is_file() else None

    def write_config(self, yaml: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.config, yaml)

    def write_metrics(self, results: dict[str, Any]) -> None:
        write_text(self.metrics, json.dumps(results, indent=2) + "\n")

    def write_failure(self, message: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.failure, message.rstrip() + "\n")


def latest_run(runs_dir: str | Path) -> RunFolder | None:
    """The single run under ``runs_dir`` whose last.ckpt or interrupted.ckpt was written last."""
    runs_dir = Path(runs_dir)
    runs = [
        RunFolder(path)
        for path in {p.parent.parent for p in runs_dir.glob("**/checkpoints/*.ckpt")}
        if path.relative_to(runs_dir).parts[0] != SWEEPS and RunFolder(path).resumable()
    ]
    return max(runs, key=lambda run: max(p.stat().st_mtime_ns for p in run.resumable()), default=None)


def _latest(runs_dir: str | Path, nothing_to: str) -> RunFolder:
    run = latest_run(runs_dir)
    if run is None:
        raise CheckpointNotFound(
            f"ckpt_path=last: no run under {runs_dir}/ has checkpoints/last.ckpt or interrupted.ckpt; {nothing_to}"
        )
    return run


def checkpoint_to_resume(spec: str, runs_dir: str | Path) -> Path:
    """What ``train.py ckpt_path=<spec>`` continues from: a checkpoint file; a run folder's checkpoint
    with the most steps; ``last``: that of the run under ``runs_dir`` written last (sweep jobs left
    out: name one by its folder). Nothing to resume from is an error: never a silent fresh start."""
    path = _latest(runs_dir, "nothing to resume").path if spec == LAST else Path(spec)
    if path.is_dir():
        found = RunFolder(path).resume_point()
        if found is None:
            raise CheckpointNotFound(f"ckpt_path={spec}: folder has no checkpoints/last.ckpt or interrupted.ckpt")
        return found
    if not path.is_file():
        raise CheckpointNotFound(f"ckpt_path={spec}: no such checkpoint file or run folder; nothing to resume from")
    return path


def checkpoint_to_evaluate(spec: str | Path, runs_dir: str | Path | None = None) -> Path:
    """What ``predict.py ckpt_path=<spec>`` loads: a checkpoint file; a run folder's best checkpoint
    (else its last.ckpt); with ``runs_dir``, ``last``: the best of the run ``checkpoint_to_resume``
    would continue."""
    path = _latest(runs_dir, "nothing to load").path if spec == LAST and runs_dir is not None else Path(spec)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointNotFound(f"{path}: no such checkpoint file or run folder")
    found = RunFolder(path).best_checkpoint()
    if found is None:
        raise CheckpointNotFound(f"{path}: run folder without metrics.json's best checkpoint or checkpoints/last.ckpt")
    return found
