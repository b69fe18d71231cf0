"""Identical image pairs across and within splits, found by content hash.

A pair in both train and val (or test) makes the reported scores a measure of memory, not of
generalisation: that is an error. A pair twice in one split only weighs it double: a warning. A
pair is identified by the bytes of its two image files (A then B, so an exchanged copy is the same
pair too); labels are not compared.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cdseg.data.dataset import Pair


def _digest(path: Path) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def pair_key(pair: Pair, digests: Mapping[Path, bytes]) -> tuple[bytes, bytes]:
    a, b = digests[pair.a], digests[pair.b]
    return (a, b) if a <= b else (b, a)  # the same pair with its dates exchanged


def duplicate_pairs(splits: Mapping[str, Sequence[Pair]], workers: int = 4) -> tuple[list[str], list[str]]:
    """``(errors, warnings)``: one line per group of identical pairs, naming every file.

    Errors: a pair in train and in another split. Warnings: a pair twice in one split, or in val
    and test. Only files of equal size are read and hashed, in ``workers`` threads (hashlib releases
    the GIL).
    """
    paths = sorted({p for pairs in splits.values() for pair in pairs for p in (pair.a, pair.b)})
    # Only a file whose size another file shares can have a copy: the rest are told apart by their
    # path, and start-up reads none of their bytes.
    sizes = {p: p.stat().st_size for p in paths}
    shared = Counter(sizes.values())
    candidates = [p for p in paths if shared[sizes[p]] > 1]
    digests: dict[Path, bytes] = {p: b"unique:" + str(p).encode() for p in paths}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests.update(zip(candidates, pool.map(_digest, candidates), strict=True))
    groups: dict[tuple[bytes, bytes], list[tuple[str, Pair]]] = {}
    for split, pairs in splits.items():
        for pair in pairs:
            groups.setdefault(pair_key(pair, digests), []).append((split, pair))
    errors, warnings = [], []
    for group in groups.values():
        if len(group) < 2:
            continue
        where = {split for split, _ in group}
        files = ", ".join(f"{split}: {pair.a.name} + {pair.b.name}" for split, pair in group)
        if "train" in where and len(where) > 1:
            others = " and ".join(sorted(where - {"train"}))
            errors.append(
                f"the same image pair is in train and {others} ({files}): the scores would not measure generalisation"
            )
        elif len(where) > 1:
            warnings.append(f"the same image pair is in {' and '.join(sorted(where))} ({files})")
        else:
            warnings.append(f"the same image pair is {len(group)} times in {group[0][0]} ({files})")
    return errors, warnings
