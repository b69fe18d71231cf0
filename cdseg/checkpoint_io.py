"""Checkpoint files on disk: written atomically, read without running code from them."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cdseg.io import write_bytes


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file named."""


def read_checkpoint(file: str | Path, peek: bool = False) -> dict[str, Any]:
    """``torch.load(file, weights_only=True)`` with an error naming the file instead of a pickle traceback.

    ``weights_only`` restricts unpickling to tensors and plain containers, so a crafted file cannot
    run code: it fails to load instead. ``peek`` maps the file instead of reading it, for a look at
    its counters and config without loading every tensor (the files of the legacy format, which
    cannot be mapped, are read whole).
    """
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=peek)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{file}: refusing to load: it holds objects other than tensors and plain values ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        if peek:  # not mappable: read it whole, which also gives the error if it is unreadable
            return read_checkpoint(file)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{file}: not a readable checkpoint (truncated, or not saved by torch): {first}"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{file}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def relocate(checkpoint: dict[str, Any], checkpoint_dir: str | Path) -> None:
    """Point the ModelCheckpoint states of a moved or copied run at its ``checkpoints`` folder.

    Lightning keeps a best score only when the checkpoint folder is the one it was saved from;
    rewriting the recorded folder (and the paths under it) keeps the best checkpoint and its score.
    Only states recorded in the run's own ``checkpoints`` folder (from the run config the checkpoint
    holds) move; a ModelCheckpoint writing elsewhere is left as it was.
    """
    run_config = (checkpoint.get("hyper_parameters") or {}).get("run_config") or {}
    old_run = (run_config.get("paths") or {}).get("output_dir")
    if not old_run:
        return
    old_dir = os.path.realpath(os.path.join(old_run, "checkpoints"))
    new_dir = os.path.realpath(checkpoint_dir)
    if old_dir == new_dir:
        return
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not (key.startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("dirpath") == old_dir):
            continue

        def move(path: Any) -> Any:
            if isinstance(path, str) and path.startswith(old_dir + os.sep):
                return os.path.join(new_dir, os.path.relpath(path, old_dir))
            return path

        state["dirpath"] = new_dir
        for name in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if name in state:
                state[name] = move(state[name])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with two guarantees.

    * Saving is atomic: the file is serialised in memory, written and fsynced beside the target,
      then renamed over it. A kill at any point leaves the previous checkpoint intact. (Lightning's
      own save stages the file in the system temp folder, and the final move is a plain copy when
      that folder is on another filesystem, as it often is on clusters.)
    * Loading (resuming) uses :func:`read_checkpoint`, so it never runs code from the file.
    """

    def __init__(self, run_checkpoint_dir: str | Path | None = None) -> None:
        """``run_checkpoint_dir``: when resuming, the run's ``checkpoints`` folder; callback states
        recorded under another folder (the run was moved or copied) are re-pointed at it."""
        super().__init__()
        self.run_checkpoint_dir = run_checkpoint_dir

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction is the atomic unit there
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A process killed mid-save leaves its temporary file behind: the next save of this name
        # (only rank 0 writes checkpoints) clears it.
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        write_bytes(path, buffer.getbuffer(), durable=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        checkpoint = read_checkpoint(path)
        if self.run_checkpoint_dir is not None:
            relocate(checkpoint, self.run_checkpoint_dir)
        return checkpoint
