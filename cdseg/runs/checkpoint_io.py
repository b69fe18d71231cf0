"""Lightning's checkpoint IO, made atomic on save and safe on load."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cdseg.atomic_write import write_bytes
from cdseg.runs.checkpoint import read_checkpoint


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with two guarantees.

    * Saving is atomic: the file is serialised in memory, written and fsynced beside the target,
      then renamed over it. A kill at any point leaves the previous checkpoint intact. (Lightning's
      own save stages the file in the system temp folder, and the final move is a plain copy when
      that folder is on another filesystem, as it often is on clusters.)
    * Loading (resuming) uses :func:`cdseg.runs.checkpoint.read_checkpoint`, so it never runs code
      from the file.
    """

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
        return read_checkpoint(path)
