"""Output folders: the checks every command that writes one (predict.py, python -m cdseg.data.tile)
makes before any work, so that a folder it cannot write fails at once, not after the work is done;
and the one-line report of a write that fails all the same."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

# Failed writes a user can fix (permissions, a read-only or full file system); any other is a bug.
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})
# What macOS's Finder and Windows' Explorer write into any folder they show: neither a command's
# output nor a user's work, so they neither block an overwrite nor get deleted by one.
LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def output_problem(path: str | Path, key: str | None = None, beside: bool = False) -> str | None:
    """What stops ``path`` from being made or written into as an output folder, or None: it is a file
    (or a link to nothing), a file stands where a folder above it would be, or the nearest existing
    folder is not writable. ``beside``: the folder is written beside ``path`` and renamed into place,
    so it is ``path``'s parent that must be writable. ``key`` names the option (``output``)."""
    path = Path(path)
    name = f"{key}={path}" if key else str(path)
    if path.is_symlink() and not path.exists():
        return f"{name} is a link to {os.readlink(path)}, which does not exist"
    if path.exists() and not path.is_dir():
        return f"{name} exists and is not a folder"
    start = path.absolute().parent if beside else path.absolute()
    existing = next(p for p in (start, *start.parents) if p.exists())
    if not existing.is_dir():
        return f"{name}: {existing} is a file, so no folder can be made below it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{name}: {existing} is not writable (no permission, or a read-only file system)"
    return None


def write_problem(error: OSError, folder: str | Path, key: str | None = None) -> str | None:
    """The one-line report of ``error``, raised while writing into ``folder``, when its user can fix
    it (no permission, a read-only or full file system); None for any other error, or one about a
    file outside ``folder`` (an input)."""
    if error.errno not in WRITE_ERRNOS:
        return None
    folder = Path(folder).absolute()
    file = Path(error.filename).absolute() if error.filename else folder
    if folder != file and folder not in file.parents:
        return None
    name = f"{key}={folder}" if key else str(folder)
    return f"{name}: could not write {file}: {error.strerror}"


def written_files(folder: Path, patterns: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """``folder``'s entries split into the files a command writes there (``patterns``: glob patterns
    of their names; an atomic write's temporary file counts too) and everything else, but for the
    files a file browser leaves (:data:`LITTER`), which are neither."""
    patterns = [*patterns, *(f".{p}.*.tmp" for p in patterns)]  # cdseg.atomic_write's temporary names
    ours, others = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name in LITTER:
            continue
        is_file = entry.is_symlink() or not entry.is_dir()
        (ours if is_file and any(fnmatchcase(entry.name, p) for p in patterns) else others).append(entry)
    return ours, others


def listed(paths: Sequence[Path], shown: int = 3) -> str:
    """``a, b, c and 4 more``: a few names of a long list, for a one-line message."""
    names = ", ".join(p.name for p in paths[:shown])
    return names + (f" and {len(paths) - shown} more" if len(paths) > shown else "")
