"""Recipes compared on the model card's real LEVIR split at an equal number of optimizer steps.

    python benchmarks/levir_recipe.py [--configs defaults recipe] [--seeds 0 1 2] [--steps 240]
        [--val-every 8] [--precision 32-true] [--all "override ..."] [--set NAME="override ..."]
        [--set-defaults NAME="override ..."] [--levir ../shared/data/levir-cd-samples]
        [--work outputs/model-card] [--out outputs/model-card/levir_recipe.jsonl]

``defaults`` is ``data=levir`` as it stands (flips, rot90, AdamW, cosine by epoch); ``recipe`` is
``experiment=levir`` with its schedule shortened to ``--steps`` (warmup a tenth of them), ``opencd``
``experiment=levir_opencd`` (open-cd's augmentation) shortened the same way. Every
configuration validates every ``--val-every`` optimizer steps, whatever its batch size makes an epoch;
``--precision`` is every configuration's (32-true unless asked: ``experiment=levir``'s 16-mixed
would run as bf16-mixed on a CPU with bf16, the defaults as 32-true); ``--all`` adds overrides to
every configuration (e.g. a model). All train on the split of
``benchmarks/model_card.py`` (57 crops of 256x256; the defaults' batch 8 makes an epoch 8 steps) and
report the best checkpoint by val/F1 (tile test_5) on the test tile test_4. ``--set NAME="..."``
adds a configuration of extra overrides on top of ``recipe``, ``--set-defaults NAME="..."`` one on
top of ``defaults`` (whose length is set in epochs: give ``trainer.max_epochs`` with another batch
size). One JSON line per run is appended to ``--out``; the summary prints mean and standard deviation of test
F1 per configuration over the seeds run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from model_card import ROOT, compose_train, levir_split

from train import train

LOADER = ["data.num_workers=0", "data.pin_memory=false", "data.persistent_workers=false", "data.eval_batch_size=1"]
QUIET = ["logger=csv", "~callbacks.sample_panels", "callbacks.progress_bar.refresh_rate=0"]


def configs(
    steps: int,
    val_every: int,
    precision: str,
    common: list[str],
    extra: dict[str, list[str]],
    extra_defaults: dict[str, list[str]] | None = None,
) -> dict[str, list[str]]:
    length = [f"trainer.max_steps={steps}", f"scheduler.warmup_steps={steps // 10}"]
    recipe = ["experiment=levir", *length]
    defaults = ["data=levir", f"trainer.max_epochs={steps // 8}"]  # an epoch of 57 crops at batch 8: 8 steps
    # Validation by steps whatever the batch size; one precision for all (experiment=levir asks for
    # 16-mixed, which a bf16-capable CPU runs as bf16-mixed).
    validation = ["++trainer.check_val_every_n_epoch=null", f"++trainer.val_check_interval={val_every}"]
    common = [*validation, f"trainer.precision={precision}", *common]
    out = {"defaults": [*defaults, *common], "recipe": [*recipe, *common]}
    out["opencd"] = ["experiment=levir_opencd", *length, *common]
    out |= {name: [*recipe, *common, *overrides] for name, overrides in extra.items()}
    out |= {name: [*defaults, *common, *overrides] for name, overrides in (extra_defaults or {}).items()}
    return out


def named_overrides(items: list[str]) -> dict[str, list[str]]:
    """``["NAME=override ...", ...]`` -> ``{NAME: [override, ...]}``."""
    return {name: shlex.split(rest) for name, _, rest in (item.partition("=") for item in items)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["defaults", "recipe"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--val-every", type=int, default=8, help="optimizer steps between validations")
    parser.add_argument("--precision", default="32-true", help="trainer.precision of every configuration")
    parser.add_argument("--all", default="", metavar='"override ..."')
    parser.add_argument("--set", action="append", default=[], metavar='NAME="override ..."')
    parser.add_argument("--set-defaults", action="append", default=[], metavar='NAME="override ..."')
    parser.add_argument("--levir", type=Path, default=ROOT.parent / "shared" / "data" / "levir-cd-samples")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "model-card")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "model-card" / "levir_recipe.jsonl")
    args = parser.parse_args(argv)
    if not args.levir.is_dir():
        parser.error(f"--levir {args.levir}: not found; this benchmark needs the LEVIR-CD samples")
    extra, extra_defaults = named_overrides(args.set), named_overrides(args.set_defaults)
    table = configs(args.steps, args.val_every, args.precision, shlex.split(args.all), extra, extra_defaults)
    unknown = sorted(set(args.configs) - set(table))
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {sorted(table)}")
    if args.steps % 8 or args.steps % args.val_every:  # whole epochs of the defaults; a validated last step
        parser.error(f"--steps {args.steps} must be a multiple of 8 and of --val-every {args.val_every}")
    root = levir_split(args.levir, args.work / "levir-split")
    # What experiment=levir meant for a row: its config is read from the tree the run was made in.
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    commit = git.stdout.strip() or None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scores: dict[str, list[float]] = {name: [] for name in args.configs}
    for seed in args.seeds:  # seed-major, so a stopped run still leaves every config comparable
        for name in args.configs:
            run_dir = args.work / f"recipe-{name}-{seed}"
            overrides = [*table[name], f"data.root={root}", *LOADER, *QUIET]
            overrides += [f"seed={seed}", f"paths.output_dir={run_dir}"]
            start = time.perf_counter()
            result = train(compose_train(*overrides))
            row = {"config": name, "overrides": table[name], "seed": seed, "steps": args.steps, "commit": commit}
            row |= {"seconds": round(time.perf_counter() - start), **result["test"], "val/F1": result["val"]["val/F1"]}
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            scores[name].append(row["test/F1"])
            print(json.dumps(row), flush=True)
    for name, values in scores.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        runs = ", ".join(f"{v:.4f}" for v in values)
        print(f"{name}: test F1 {statistics.mean(values):.4f} ± {spread:.4f} over seeds {args.seeds} ({runs})")


if __name__ == "__main__":
    sys.exit(main())
