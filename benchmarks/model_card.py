"""The model card: every model of conf/model/ at its default width, measured the same way.

    python benchmarks/model_card.py [--models tiny siamese_unet] [--datasets synthetic levir] [--seeds 0 1 2]
        [--epochs-synthetic 12] [--epochs-levir 30] [--out outputs/model-card/model_card.json]

For each model: parameters; forward GFLOPs of one 256x256 pair (``torch.utils.flop_counter``); CPU
training throughput at 256x256 (pairs/s of forward, backward and AdamW step, batch 4, median of
timed steps, measured before any training starts so nothing else runs beside it); then test F1 and
IoU after the same training budget, through ``train.py``'s ``train()`` and the composed config, for
each seed, reported as mean and standard deviation:

* ``synthetic``: the built-in set with the quick start's settings (``--epochs-synthetic`` epochs).
* ``levir``: real LEVIR-CD from ``../shared/data/levir-cd-samples`` (``--levir``): training on the
  sixteen 256x256 crops of each of the tiles test_1, test_2 and test_3 and on the nine 256x256 crops
  of other scenes in crops-256 (57 crops, 22 with change); validation on the whole 1024x1024 tile
  test_5, test on the whole tile test_4 (other scenes). Change is sparse in these tiles (about 1 % of
  the pixels of each evaluation tile), so seeds spread widely: read the standard deviation.

Prints a table and writes it, with the settings, the machine and the command, as JSON (atomically).
Figures belong in BENCHMARKS.md with the command that produced them; ``--out benchmarks/model_card.json``
replaces the recorded card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from timing import device_name, median_seconds
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdseg.atomic_write import write_png, write_text  # noqa: E402
from cdseg.losses import BCEDiceLoss  # noqa: E402
from cdseg.models import build_network  # noqa: E402
from train import train  # noqa: E402

LEVIR_TILES = {"train": ("test_1", "test_2", "test_3"), "val": ("test_5",), "test": ("test_4",)}


def compose_train(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def size_and_speed(name: str, size: int = 256, batch: int = 4, repeats: int = 3) -> dict[str, float]:
    """Parameters, forward GFLOPs of one size x size pair, and training pairs/s at batch ``batch``."""
    torch.manual_seed(0)
    net = build_network(compose_train(f"model={name}").model)
    params = sum(p.numel() for p in net.parameters())
    pair = torch.randn(2, 1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(pair[0], pair[1])
    a, b = torch.randn(batch, 3, size, size), torch.randn(batch, 3, size, size)
    target = (torch.rand(batch, 1, size, size) > 0.9).float()
    loss, optimizer = BCEDiceLoss(), torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()

    def step() -> None:
        optimizer.zero_grad()
        loss(net(a, b), target).backward()
        optimizer.step()

    seconds = median_seconds(step, repeats, warmup=1)
    return {
        "params_M": params / 1e6,
        "gflops_256": counter.get_total_flops() / 1e9,
        "train_pairs_per_s": batch / seconds,
    }


def levir_split(src: Path, dst: Path) -> Path:
    """The real split described in the module docstring, written once under ``dst``."""
    if (dst / "test" / "label").is_dir():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".levir-card.", dir=dst.parent))  # renamed into place when whole
    try:
        _write_split(src, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(dst)
    return dst


def _write_split(src: Path, tmp: Path) -> None:
    tiles, crops = src / "tiles-1024" / "test", src / "crops-256" / "test"
    every_tile = tuple(f"{t}_" for split in LEVIR_TILES.values() for t in split)
    for part in ("A", "B", "label"):
        for split in LEVIR_TILES:
            (tmp / split / part).mkdir(parents=True, exist_ok=True)
        for tile in LEVIR_TILES["train"]:
            image = np.asarray(Image.open(tiles / part / f"{tile}.png"))
            for top in range(0, 1024, 256):
                for left in range(0, 1024, 256):
                    crop = image[top : top + 256, left : left + 256]
                    write_png(tmp / "train" / part / f"{tile}_{top:04d}_{left:04d}.png", crop)
        for crop in sorted((crops / part).glob("*.png")):
            if not crop.name.startswith(every_tile):  # crops of other scenes only
                shutil.copy(crop, tmp / "train" / part / crop.name)
        for split in ("val", "test"):
            for tile in LEVIR_TILES[split]:
                shutil.copy(tiles / part / f"{tile}.png", tmp / split / part / f"{tile}.png")


def score(name: str, data: list[str], seed: int, epochs: int, out: Path) -> dict[str, float]:
    """Test F1 and IoU of one training run through train() with the composed config."""
    overrides = [f"model={name}", f"seed={seed}", f"trainer.max_epochs={epochs}", f"paths.output_dir={out}"]
    overrides += ["logger=csv", "~callbacks.sample_panels", "callbacks.progress_bar.refresh_rate=0", *data]
    test = train(compose_train(*overrides))["test"]
    return {"F1": test["test/F1"], "IoU": test["test/IoU"]}


def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for k in ("F1", "IoU"):
        values = [r[k] for r in runs]
        out[k] = statistics.mean(values)
        out[f"{k}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")))
    parser.add_argument("--datasets", nargs="*", default=["synthetic", "levir"], choices=["synthetic", "levir"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs-synthetic", type=int, default=12)
    parser.add_argument("--epochs-levir", type=int, default=30)
    parser.add_argument("--levir", type=Path, default=ROOT.parent / "shared" / "data" / "levir-cd-samples")
    parser.add_argument("--synthetic-data", nargs="*", default=[], help="extra overrides for the synthetic runs")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "model-card")
    # Not benchmarks/model_card.json, the card the README quotes: a partial run must not replace it.
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "model-card" / "model_card.json")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    data = {"synthetic": [*args.synthetic_data], "levir": []}
    if "levir" in args.datasets:
        if not args.levir.is_dir():
            parser.error(f"--levir {args.levir}: not found; the levir data set needs the LEVIR-CD samples")
        root = levir_split(args.levir, args.work / "levir-split")
        data["levir"] = [f"data.root={root}", "data.synthetic=null", "data.crop_size=null", "data.batch_size=8"]
        data["levir"] += ["data.eval_batch_size=1", "data.vflip=0.5", "data.rot90=true"]
    epochs = {"synthetic": args.epochs_synthetic, "levir": args.epochs_levir}

    card: dict[str, Any] = {
        "command": " ".join(["python benchmarks/model_card.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{device_name(cpu=True)}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        # Training runs on the accelerator Lightning picks (trainer.accelerator=auto); the throughput
        # column is measured on the CPU.
        "device": f"training: {device_name()}; throughput: CPU",
        "settings": {
            "seeds": args.seeds,
            "epochs": epochs,
            "levir_tiles": LEVIR_TILES,
        },
        "models": {},
    }
    # Sizes and speeds first, each alone on the machine, before any training.
    for name in args.models:
        card["models"][name] = size_and_speed(name)
    for name in args.models:
        for dataset in args.datasets:
            runs = [
                score(name, data[dataset], seed, epochs[dataset], args.work / f"{name}-{dataset}-{seed}")
                for seed in args.seeds
            ]
            card["models"][name][dataset] = summary(runs)
            write_text(args.out, json.dumps(card, indent=2) + "\n")  # what is done so far survives a stop
    print(table(card))
    return card


def table(card: dict[str, Any]) -> str:
    datasets = [d for d in ("synthetic", "levir") if any(d in m for m in card["models"].values())]
    head = ["model", "params (M)", "GFLOPs/256² pair", "train pairs/s (CPU, 256²)"]
    head += [f"{d} {k}" for d in datasets for k in ("F1", "IoU")]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in card["models"].items():
        cells = [f"`{name}`", f"{m['params_M']:.2f}", f"{m['gflops_256']:.2f}", f"{m['train_pairs_per_s']:.2f}"]
        cells += [f"{m[d][k]:.4f} ± {m[d][k + '_std']:.4f}" if d in m else "-" for d in datasets for k in ("F1", "IoU")]
        rows.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, card["settings"]["seeds"]))
    return "\n".join([*rows, "", f"mean ± standard deviation over seeds {seeds}; {card['machine']}; {card['command']}"])


if __name__ == "__main__":
    main()
