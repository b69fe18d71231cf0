"""Cut a dataset's large tiles into non-overlapping square chips, the 256x256 protocol of LEVIR-CD
papers (445/64/128 tiles of 1024x1024 become 7120/1024/2048 chips).

    python -m cdseg.data.tile SRC DST [--size 256] [--splits train val test] [--drop-remainder]

SRC is checked first as the dataset doctor checks it (``python -m cdseg.data.check``): a problem
anywhere, a split named in ``--splits`` that SRC lacks, a split that would give no chip, or a tile
whose sides ``--size`` does not divide (unless ``--drop-remainder``), writes nothing. Chips are
named ``<name>_<top>_<left>.png`` (pixel offsets) and written as PNG, labels as 0/255, into a
temporary folder that becomes DST only when every chip is written; an existing non-empty DST, or
one that cannot be written, is refused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cdseg.data.check import check_dataset
from cdseg.data.dataset import (
    DEFAULT_DIRS,
    DEFAULT_EXTENSIONS,
    DatasetError,
    Pair,
    extensions_problem,
    find_pairs,
    inspect_pair,
)
from cdseg.output_folder import output_problem, write_problem

SPLITS = ("train", "val", "test")  # those cut when --splits is not given, each where present


def chip_offsets(length: int, size: int) -> list[int]:
    """Starts of the whole chips along one side (a remainder shorter than ``size`` is left out)."""
    return list(range(0, length - size + 1, size))


def tile_pair(pair: Pair, out: Path, size: int, dirs: dict[str, str]) -> int:
    """Write the chips of one pair under ``out/{A,B,label}``; return how many."""
    info = inspect_pair(pair, keep=True)
    if info.problem or info.decoded is None:
        raise DatasetError(info.problem or f"{pair.a}: could not be read")
    h, w = info.size
    digits = max(4, len(str(max(h, w))))
    stem = Path(pair.name).stem
    planes = {dirs["a"]: info.decoded.a, dirs["b"]: info.decoded.b}
    if info.decoded.mask is not None:
        planes[dirs["label"]] = info.decoded.mask * 255
    count = 0
    for top in chip_offsets(h, size):
        for left in chip_offsets(w, size):
            name = f"{stem}_{top:0{digits}d}_{left:0{digits}d}.png"
            for folder, plane in planes.items():
                chip = plane[:, top : top + size, left : left + size].permute(1, 2, 0).numpy()
                chip = cv2.cvtColor(chip, cv2.COLOR_RGB2BGR) if chip.shape[2] == 3 else chip[..., 0]
                if not cv2.imwrite(str(out / folder / name), np.ascontiguousarray(chip)):  # no errno to tell why
                    raise DatasetError(f"{out / folder / name}: could not be written (is the disk full?)")
            count += 1
    return count


def tile_dataset(
    src: str | Path,
    dst: str | Path,
    size: int = 256,
    splits: Sequence[str] | None = None,
    dirs: dict[str, str] | None = None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    drop_remainder: bool = False,
    workers: int | None = None,
) -> dict[str, tuple[int, int]]:
    """Chip ``splits`` of ``src`` (None: each of :data:`SPLITS` that is present) into ``dst``.

    Returns:
        ``{split: (tiles, chips)}``.

    Raises:
        DatasetError: ``src`` has a problem the doctor reports, lacks a split of ``splits``, a split
            would give no chip, a side ``size`` does not divide, or ``dst`` exists and is not empty
            or cannot be written. Nothing is written then.
    """
    src, dst = Path(src), Path(dst)
    dirs = {**DEFAULT_DIRS, **(dirs or {})}
    if size < 1:
        raise DatasetError(f"--size must be a positive number of pixels, got {size}")
    wrong = extensions_problem(extensions, "--extensions") or output_problem(dst, beside=True)
    if wrong:
        raise DatasetError(wrong)
    if dst.exists() and any(dst.iterdir()):
        raise DatasetError(f"{dst}: exists and is not an empty folder; choose another destination")
    if splits is None:
        present = [s for s in SPLITS if (src / s).is_dir()]
    else:
        missing = [s for s in splits if not (src / s).is_dir()]
        if missing:
            found = sorted(p.name for p in src.iterdir() if p.is_dir()) if src.is_dir() else []
            raise DatasetError(f"{src}: split(s) {missing} not found (its folders: {found}); nothing written")
        present = list(dict.fromkeys(splits))
    if not present:
        raise DatasetError(f"{src}: none of the splits {list(SPLITS)} found")
    _, problems = check_dataset(src, present, dirs, extensions)
    if problems:
        raise DatasetError(f"{src}: {len(problems)} problem(s), nothing written:\n  " + "\n  ".join(problems))
    pairs = {s: find_pairs(src / s, dirs, extensions) for s in present}
    sizes = {p.a: _size(p.a) for s in present for p in pairs[s]}
    for split in present:
        if not sum((h // size) * (w // size) for h, w in (sizes[p.a] for p in pairs[split])):
            h, w = (max(sizes[p.a][i] for p in pairs[split]) for i in (0, 1))
            raise DatasetError(
                f"{src / split}: --size {size} is larger than its tiles (up to {w}x{h}), so it would give no chip;"
                " nothing written"
            )
    uneven = [p.a for s in present for p in pairs[s] if any(n % size for n in sizes[p.a])]
    if uneven and not drop_remainder:
        shown = ", ".join(f"{p} ({'x'.join(map(str, sizes[p][::-1]))})" for p in uneven[:5])
        raise DatasetError(
            f"{len(uneven)} tile(s) whose sides {size} does not divide: {shown}; "
            "choose a --size that divides them, or --drop-remainder to leave the edge strips out"
        )
    tmp = dst.with_name(f".{dst.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    try:
        for split in present:
            for folder in {dirs["a"], dirs["b"], dirs["label"]}:
                (tmp / split / folder).mkdir(parents=True)
            # Decoding and encoding release the GIL: threads keep every core busy.
            with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
                chips = sum(pool.map(lambda p, s=split: tile_pair(p, tmp / s, size, dirs), pairs[split]))
            counts[split] = (len(pairs[split]), chips)
        if dst.is_dir():
            dst.rmdir()  # empty, checked above
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dst)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and write_problem(e, dst.absolute().parent):
            raise DatasetError(write_problem(e, dst.absolute().parent)) from None
        raise
    return counts


def _size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header."""
    with Image.open(path) as img:
        return img.size[1], img.size[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--splits", nargs="+", help=f"default: each of {' '.join(SPLITS)} that is present")
    parser.add_argument("--dirs", nargs=3, metavar=("A", "B", "LABEL"), default=["A", "B", "label"])
    parser.add_argument("--extensions", nargs="+", default=list(DEFAULT_EXTENSIONS))
    parser.add_argument("--drop-remainder", action="store_true", help="leave out edge strips narrower than --size")
    args = parser.parse_args(argv)
    dirs = dict(zip(("a", "b", "label"), args.dirs, strict=True))
    try:
        counts = tile_dataset(args.src, args.dst, args.size, args.splits, dirs, args.extensions, args.drop_remainder)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, (tiles, chips) in counts.items():
        print(f"{split}: {tiles} tile(s) -> {chips} chip(s) of {args.size}x{args.size}")
    print(f"written to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
