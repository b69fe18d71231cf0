"""Atomic file writes: a temporary file beside the target, renamed into place, so a reader or a crash
never sees half a file."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np


def write_bytes(path: str | Path, data: bytes | memoryview, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``durable`` also flushes it to disk before the rename, so
    the new file survives a power cut too (worth it for checkpoints, not for thousands of PNGs)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        if durable:  # the rename itself lives in the folder
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_png(path: str | Path, image: np.ndarray) -> None:
    """(H, W) or (H, W, 3) RGB uint8 array -> PNG."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes(path, buf.tobytes())


def write_npy(path: str | Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(path, buf.getvalue())
