"""The one timing rule the benchmarks share, and how they name the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, after ``warmup`` calls that are not counted.
    On a GPU each call is timed to the end of its kernels, which run asynchronously."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def report(times: Mapping[str, list[float]], ratio: tuple[str, str], unit: str = "ms", label: str = "") -> None:
    """Print each contender's per-round medians from :func:`alternated` in ``unit`` (``s`` or ``ms``),
    with ``label`` after the unit, and the ratio ``ratio[0] / ratio[1]`` of their overall medians."""
    scale = {"s": 1.0, "ms": 1e3}[unit]
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        rounds = ", ".join(f"{x * scale:.4g}" for x in t)
        print(f"{name}: {rounds} {unit}{label} (median {medians[name] * scale:.4g})")
    print(f"ratio {ratio[0]} / {ratio[1]}: {medians[ratio[0]] / medians[ratio[1]]:.2f}x")


def in_turn(contenders: Iterable[T], i: int) -> list[T]:
    """The contenders in round ``i``'s order: as given in even rounds, reversed in odd ones, so that
    going first (a warm cache, heap growth) falls on each in turn."""
    return list(contenders)[:: 1 if i % 2 == 0 else -1]


def alternated(contenders: Mapping[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, list[float]]:
    """Each contender's :func:`median_seconds` (one warm-up call) in every round, the order reversed
    from one round to the next, so that a slow spell of a shared machine, or going first, hits all."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(rounds):
        for name in in_turn(contenders, i):
            times[name].append(median_seconds(contenders[name], repeats, warmup=1))
    return times


def device_name(cpu: bool = False) -> str:
    """The GPU's name, else (or with ``cpu``) the CPU's model and core count."""
    if torch.cuda.is_available() and not cpu:
        return torch.cuda.get_device_name()
    model = next(
        (line.split(":", 1)[1].strip() for line in read_text("/proc/cpuinfo").splitlines() if "model name" in line),
        platform.processor() or "unknown CPU",
    )
    return f"{model}, {os.cpu_count()} cores"


def read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
