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


def available_bytes(proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory this process can still take: the kernel's MemAvailable, lowered by every memory limit of
    the cgroups it runs in (a container's, a SLURM job's, a systemd slice's; v2 and v1); None where
    nothing can be read."""
    found = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    found += cgroup_headroom(proc, cgroups)
    if not found and hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


# (folder under /sys/fs/cgroup, limit file, usage file, memory.stat key of the page cache the kernel can drop)
_CGROUP_FILES = {
    "v2": ("", "memory.max", "memory.current", "inactive_file"),
    "v1": ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}


def cgroup_headroom(proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")) -> list[int]:
    """Bytes left under each memory limit on the way from this process's cgroup up to the root, as
    listed in /proc/self/cgroup. Where the group's own folder is not mounted (a container's view), the
    levels that are, the root included, still count."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = ["0::/"]
    left = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        kind = "v2" if controllers == "" else "v1" if "memory" in controllers.split(",") else None
        if kind is None:
            continue
        sub, limit_file, usage_file, inactive_key = _CGROUP_FILES[kind]
        root = cgroups / sub
        folder = root / path.strip("/")
        for level in [folder, *folder.parents]:
            with contextlib.suppress(OSError, ValueError):
                limit = (level / limit_file).read_text().strip()
                if limit != "max" and int(limit) < 2**60:  # v1 writes "no limit" as a huge number
                    stat = dict(x.split() for x in (level / "memory.stat").read_text().splitlines())
                    used = int((level / usage_file).read_text())
                    left.append(int(limit) - used + int(stat.get(inactive_key, 0)))
            if level == root:
                break
    return left


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
