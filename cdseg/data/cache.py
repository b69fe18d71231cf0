"""``data.cache=ram``: the memory the decoded splits need, checked against what the machine has
before any image is decoded."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cdseg.data.dataset import DatasetError, Pair, decoded_bytes

CACHE_MODES = (None, "ram")
HEADROOM = 0.8  # the share of available memory the cache may take; training needs the rest


def available_bytes() -> int | None:
    """Memory this process can still take: the kernel's MemAvailable, lowered by a cgroup (container)
    limit; None where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            # The page cache the kernel can drop (the files just read) is counted as used there.
            stat = dict(line.split() for line in Path("/sys/fs/cgroup/memory.stat").read_text().splitlines())
            found.append(int(limit) - used + int(stat.get("inactive_file", 0)))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


def check_cache_memory(splits: Mapping[str, Sequence[Pair]], copies: int = 1, available: int | None = None) -> str:
    """The line announcing the cache's size; raises when it would not fit.

    Args:
        splits: the pairs of each split to cache.
        copies: processes on this machine holding a cache of their own (DDP ranks of one node).
        available: bytes free (default: :func:`available_bytes`).

    Raises:
        DatasetError: the decoded splits need more than ``HEADROOM`` of the available memory.
    """
    sizes = {name: decoded_bytes(pairs) for name, pairs in splits.items()}
    need = sum(sizes.values()) * copies
    available = available_bytes() if available is None else available
    each = ", ".join(f"{name} {len(splits[name])} pairs {gb(size)}" for name, size in sizes.items())
    per = f" x {copies} processes" if copies > 1 else ""
    line = f"data.cache=ram: the decoded splits take {gb(need)} ({each}{per})"
    if available is not None and need > HEADROOM * available:
        raise DatasetError(
            f"{line}, more than {HEADROOM:.0%} of the {gb(available)} this machine has available; "
            "use data.cache=null (images are then decoded per sample), or a machine with more memory"
        )
    return line + (f"; {gb(available)} available" if available is not None else "")


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"
