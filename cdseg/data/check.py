"""Dataset doctor: the checks training runs before it starts, as a report.

    python -m cdseg.data.check ROOT [--splits train val test] [--dirs A B label] [--extensions .png .tif]

Per split: pair count, image sizes, unmatched names, unreadable or inconsistent files, label value
sets, the share of changed pixels and of tiles without change; then identical pairs across splits (a
problem when train shares one with val or test) and within one (a warning), and a suggested
``loss.pos_weight``.
Exit status 0 when the data is usable for training (train and val present, or every split named
in --splits, and no problem anywhere), 1 otherwise, with every problem listed.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cdseg.data.dataset import (
    DEFAULT_EXTENSIONS,
    Pair,
    PairInfo,
    extensions_problem,
    inspect_pairs,
    scan_split,
    split_as_root,
)
from cdseg.data.duplicates import duplicate_pairs

REQUIRED = ("train", "val")  # what training needs; test is optional


@dataclass
class SplitReport:
    name: str
    pairs: int = 0
    sizes: Counter = field(default_factory=Counter)
    label_values: Counter = field(default_factory=Counter)
    changed: int = 0
    pixels: int = 0
    empty_tiles: int = 0
    problems: list[str] = field(default_factory=list)
    found: list[Pair] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.name}: {self.pairs} pair(s)"]
        if self.sizes:
            out.append("  sizes: " + ", ".join(f"{w}x{h} ({n})" for (h, w), n in self.sizes.most_common()))
        if len(self.sizes) > 1:  # usable, but not as it is in one batch: what training will ask for
            out.append(
                "  note: sizes differ, so pairs cannot share a batch as they are: train with a data.crop_size no "
                "larger than the smallest (validation and test then need data.eval_batch_size=1), or data.resize"
            )
        if self.label_values:
            sets = ", ".join(f"{{{', '.join(map(str, v))}}} ({n})" for v, n in self.label_values.most_common())
            out.append(f"  label values: {sets}")
        if self.pixels:
            out.append(
                f"  changed pixels: {100 * self.changed / self.pixels:.2f} %   "
                f"tiles without change: {100 * self.empty_tiles / max(self.pairs, 1):.1f} %"
            )
        out += [f"  problem: {p}" for p in self.problems] or ["  problems: none"]
        return out


def check_split(root: Path, split: str, dirs: dict[str, str], extensions: Sequence[str]) -> SplitReport:
    report = SplitReport(split)
    pairs, report.problems = scan_split(root / split, dirs, extensions, require_label=True)
    infos: list[PairInfo] = inspect_pairs(pairs) if pairs else []
    report.pairs, report.found = len(pairs), list(pairs)
    for info in infos:
        if info.problem:
            report.problems.append(info.problem)
            continue
        h, w = info.size
        report.sizes[info.size] += 1
        report.label_values[info.label_values] += 1
        report.changed += info.changed
        report.pixels += h * w
        report.empty_tiles += info.changed == 0
    return report


def check_dataset(
    root: str | Path,
    splits: Sequence[str] = ("train", "val", "test"),
    dirs: dict[str, str] | None = None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    required: Sequence[str] = REQUIRED,
) -> tuple[list[str], list[str]]:
    """Report lines and the list of problems (empty when the dataset is usable); a split of
    ``splits`` that is not there is a problem when it is ``required``, else a line."""
    root = Path(root)
    dirs = dirs or {}
    wrong = extensions_problem(extensions, "--extensions")
    if wrong:  # every split would read as empty: the rule train.py's data.extensions follows
        return [], [wrong]
    if not root.is_dir():
        return [], [f"{root}: dataset root not found"]
    lines, problems = [], []
    reports = {}
    for split in splits:
        if not (root / split).is_dir():
            if split in required:
                why = "training needs it" if split in REQUIRED else "it was named in --splits"
                problems.append(
                    f"{root / split}: {split} split not found; {why}{split_as_root(root, dirs, 'the root')}"
                )
            else:
                lines.append(f"{split}: absent (optional)")
            continue
        reports[split] = check_split(root, split, dirs, extensions)
        lines += reports[split].lines()
        problems += [f"{split}: {p}" for p in reports[split].problems]
    errors, warnings = duplicate_pairs({split: r.found for split, r in reports.items()})
    problems += errors
    lines += [f"warning: {w}" for w in warnings]
    train = reports.get("train")
    if train and train.changed:
        ratio = (train.pixels - train.changed) / train.changed
        lines.append(
            f"suggested loss.pos_weight: {ratio:.1f} (unchanged / changed training pixels); "
            f"{min(ratio, 10):.1f} if capped at 10, as large weights can make BCE + Dice unstable"
        )
    elif train:
        problems.append("train: no changed pixel in any label; there is nothing to learn")
    return lines, problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a change-detection dataset in the LEVIR-CD layout.")
    parser.add_argument("root")
    parser.add_argument(
        "--splits",
        nargs="+",
        help="split folders to check, each then required (default: train val, and test if present)",
    )
    parser.add_argument("--dirs", nargs=3, metavar=("A", "B", "LABEL"), default=["A", "B", "label"])
    parser.add_argument("--extensions", nargs="+", default=list(DEFAULT_EXTENSIONS))
    args = parser.parse_args(argv)
    dirs = dict(zip(("a", "b", "label"), args.dirs, strict=True))
    wrong = extensions_problem(args.extensions, "--extensions")
    if wrong:
        print(f"error: {wrong}", file=sys.stderr)
        return 1
    splits = args.splits or ["train", "val", "test"]
    lines, problems = check_dataset(args.root, splits, dirs, args.extensions, args.splits or REQUIRED)
    print("\n".join(lines))
    if problems:
        print(f"\nNOT USABLE: {len(problems)} problem(s)")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    print("\nusable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
