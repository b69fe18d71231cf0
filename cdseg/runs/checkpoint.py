"""Reading checkpoint files with plain torch: never running code from them, naming the file on failure."""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from cdseg.atomic_write import write_bytes
from cdseg.errors import CdsegError


class CheckpointError(CdsegError, ValueError):
    """A checkpoint that cannot be used, with the file named."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """A checkpoint, run folder or ``last`` that names nothing to load."""


def read_checkpoint(file: str | Path, peek: bool = False) -> dict[str, Any]:
    """``torch.load(file, weights_only=True)`` with an error naming the file instead of a pickle traceback.

    ``weights_only`` restricts unpickling to tensors and plain containers, so a crafted file cannot
    run code: it fails to load instead. ``peek`` maps the file instead of reading it, for a look at
    its counters and config without loading every tensor (the files of the legacy format, which
    cannot be mapped, are read whole).
    """
    if _exported(file):
        raise CheckpointError(
            f"{file}: an exported model (cdseg.export), not a checkpoint: predict.py takes it as model_file={file}"
        )
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=peek)
    except pickle.UnpicklingError as e:
        # torch's message goes on to suggest weights_only=False: the one thing not to do with a stranger's file
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"{file}: refusing to load: it holds objects other than tensors and plain values"
                f" (a pickled {found.group(1)})"
            ) from None
        raise CheckpointError(f"{file}: not a readable checkpoint (not saved by torch)") from None
    except Exception as e:  # noqa: BLE001 - a text or HTML file fails inside the unpickler with any error
        if peek:  # not mappable: read it whole, which also gives the error if it is unreadable
            return read_checkpoint(file)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        # An I/O or archive error says what is wrong; an unpickler's KeyError or IndexError says nothing
        known = isinstance(e, RuntimeError | EOFError | OSError | zipfile.BadZipFile | ValueError)
        detail = f": {first}" if known and first and "weights_only" not in first else ""
        raise CheckpointError(f"{file}: not a readable checkpoint (truncated, or not saved by torch){detail}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{file}: not a Lightning checkpoint (no state_dict)")
    if not peek and (damaged := _failed_checksum(file)):
        raise CheckpointError(
            f"{file}: damaged: {damaged} does not match the checksum written with it (the file changed"
            " after it was saved: a disk or copy error); restore it from a copy, or use another of the run's checkpoints"
        )
    return ckpt


def _failed_checksum(file: str | Path) -> str | None:
    """The first member of a checkpoint's zip archive whose bytes fail its CRC-32, else None.

    torch.load never checks these, so a flipped bit in a tensor loads as a wrong weight. A file of
    torch's legacy format (no zip) or one saved without checksums (CRC 0) cannot be checked."""
    try:
        archive = zipfile.ZipFile(file)
    except (OSError, zipfile.BadZipFile):
        return None
    with archive:
        for member in archive.infolist():
            if member.CRC == 0 and member.file_size:  # torch.serialization.set_crc32_options(False)
                continue
            try:
                with archive.open(member) as data:
                    while data.read(1 << 24):  # zipfile compares the CRC when the member is read to its end
                        pass
            except zipfile.BadZipFile:
                return member.filename
    return None


def _exported(file: str | Path) -> bool:
    """An ONNX file, or a TorchScript archive (a zip holding code/ and constants.pkl)."""
    if Path(file).suffix == ".onnx":
        return True
    try:
        with zipfile.ZipFile(file) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def run_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved config train.py stored in a checkpoint (None for a checkpoint written otherwise)."""
    return (checkpoint.get("hyper_parameters") or {}).get("run_config")


def write_threshold(file: str | Path, threshold: float) -> None:
    """Store a calibrated ``threshold`` in a train.py checkpoint (its hyperparameters and run config),
    rewriting the file atomically, so that predict.py applies it."""
    ckpt = read_checkpoint(file)
    hparams = ckpt.setdefault("hyper_parameters", {})
    hparams["threshold"] = threshold
    if hparams.get("run_config"):
        hparams["run_config"]["threshold"] = threshold
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    write_bytes(file, buffer.getbuffer(), durable=True)
