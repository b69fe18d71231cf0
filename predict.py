"""Change maps for image pairs of any size, from a checkpoint written by train.py.

    python predict.py ckpt_path=outputs/<run> input=/path/to/LEVIR-CD/test output=predictions
    python predict.py ckpt_path=<run>/checkpoints/last.ckpt a=before.png b=after.png output=out

Writes mask/, overlay/ and (with labels) error/, metrics.json and per_image.csv; see conf/predict.yaml.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision import tv_tensors
from tqdm import tqdm

from cdseg.data.dataset import DatasetError, Pair, find_pairs, load_image, load_label, validate_split
from cdseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from cdseg.inference.checkpoint import CheckpointError, load_checkpoint
from cdseg.inference.tiling import check_tiling, sliding_window
from cdseg.inference.visualize import error_map, overlay
from cdseg.io import write_npy, write_png, write_text
from cdseg.metrics import change_metrics, pixel_counts, scores_from_counts
from cdseg.precision import cpu_precision


class PredictError(ValueError):
    """A prediction request that cannot run as given."""


OUTPUTS = ("mask", "overlay", "error", "probs", "metrics.json", "per_image.csv")
PRECISIONS = {"32": None, "32-true": None, "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16}
PRECISIONS |= {"16": torch.float16, "16-mixed": torch.float16}


def check_options(cfg: DictConfig) -> None:
    """Every option checked before any file is touched."""
    try:
        check_tiling(cfg.tile_size, cfg.overlap, cfg.batch_size, cfg.blend)
    except ValueError as e:
        raise PredictError(str(e)) from None
    if cfg.save_probs not in (False, None, "png", "npy"):
        raise PredictError(f"save_probs must be false, png or npy, got {cfg.save_probs!r}")
    if cfg.threshold is not None and not 0 < cfg.threshold < 1:
        raise PredictError(f"threshold must be in (0, 1), got {cfg.threshold}")
    if str(cfg.precision) not in PRECISIONS:
        raise PredictError(f"precision must be one of {sorted(PRECISIONS)}, got {cfg.precision!r}")
    unknown = set(cfg.tta or []) - {"flip", "swap"}
    if unknown:
        raise PredictError(f"tta accepts flip and swap, got {sorted(unknown)}")


def collect_pairs(cfg: DictConfig) -> list[Pair]:
    """The pairs to predict, from ``input=`` (a folder) or ``a=``/``b=`` (one pair); validated."""
    if cfg.input and (cfg.a or cfg.b or cfg.label):
        raise PredictError("give either input=<folder> or a=<file> b=<file> [label=<file>], not both")
    if cfg.input:
        pairs = find_pairs(cfg.input, dict(cfg.dirs), list(cfg.extensions), require_label=False)
    elif cfg.a or cfg.b:
        if not (cfg.a and cfg.b):
            raise PredictError(f"a single pair needs both dates: a={cfg.a} b={cfg.b}")
        label = Path(cfg.label) if cfg.label else None
        pairs = [Pair(Path(cfg.b).name, Path(cfg.a), Path(cfg.b), label)]
    else:
        raise PredictError("nothing to predict: set input=<folder with A/ and B/>, or a=<file> b=<file>")
    stems: dict[str, str] = {}
    for p in pairs:
        other = stems.setdefault(Path(p.name).stem, p.name)
        if other != p.name:
            raise PredictError(f"{p.a.parent}: {other} and {p.name} would both be written as {Path(p.name).stem}.png")
    validate_split(pairs)  # every file decoded once: a bad pair fails before any work starts
    return pairs


def prepare_output(output: str, overwrite: bool, with_labels: bool, save_probs: str | bool) -> Path:
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise PredictError(f"output={out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise PredictError(f"output={out} exists and is not empty; choose another folder or set overwrite=true")
        # Replace a previous prediction whole, so no stale mask or metric survives beside the new ones;
        # files this script does not write are left alone.
        for name in OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.is_file():
                target.unlink()
    subdirs = ["mask", "overlay"] + (["error"] if with_labels else []) + (["probs"] if save_probs else [])
    for sub in subdirs:
        (out / sub).mkdir(parents=True, exist_ok=True)
    return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"device={name} asked for, but no CUDA device is available")
    return device


def make_predictor(net: nn.Module, device: torch.device, precision: str, tta: list[str]):
    """(N, C, h, w) x 2 -> (N, 1, h, w) probabilities, averaged over the requested augmentations."""
    precision = str(precision)
    if device.type == "cpu":
        precision, notice = cpu_precision(precision)
        if notice:
            print(f"notice: {notice}", file=sys.stderr)
    dtype = PRECISIONS[precision]
    flips = [(), (-1,), (-2,)] if "flip" in tta else [()]
    orders = [False, True] if "swap" in tta else [False]

    @torch.no_grad()
    def predict(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(a.shape[0], 1, *a.shape[-2:], device=a.device)
        for dims in flips:
            fa, fb = (x.flip(dims) if dims else x for x in (a, b))
            for swap in orders:
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    logits = net(fb, fa) if swap else net(fa, fb)
                p = torch.sigmoid(logits.float())
                total += p.flip(dims) if dims else p
        return total / (len(flips) * len(orders))

    return predict


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run the prediction described by ``cfg`` (conf/predict.yaml); return the summary."""
    check_options(cfg)
    pairs = collect_pairs(cfg)
    with_labels = all(p.label is not None for p in pairs)
    net, run_cfg = load_checkpoint(cfg.ckpt_path)
    print(f"checkpoint: {run_cfg['checkpoint_file']}", file=sys.stderr)
    device = resolve_device(cfg.device)
    net.to(device)
    predictor = make_predictor(net, device, cfg.precision, list(cfg.tta or []))
    out = prepare_output(cfg.output, cfg.overwrite, with_labels, cfg.save_probs)

    data_cfg = run_cfg.get("data", {})
    resize = data_cfg.get("resize")
    # Training's evaluation transform: resize (if the model was trained so) and normalisation;
    # absent keys take the datamodule's defaults.
    mean, std = data_cfg.get("mean", IMAGENET_MEAN), data_cfg.get("std", IMAGENET_STD)
    prepare = build_transforms(False, resize=resize, mean=mean, std=std)
    threshold = float(cfg.threshold if cfg.threshold is not None else run_cfg.get("threshold", 0.5))
    metrics = change_metrics(threshold) if with_labels else None
    rows, pixels = [], 0
    start = time.perf_counter()
    for pair in tqdm(pairs, desc="pairs", unit="pair", file=sys.stderr):
        a_img, b_img = load_image(pair.a), load_image(pair.b)
        h, w = a_img.shape[:2]
        x = prepare(
            {k: tv_tensors.Image(torch.from_numpy(v).permute(2, 0, 1)) for k, v in (("A", a_img), ("B", b_img))}
        )
        a, b = (x[k].as_subclass(torch.Tensor) for k in ("A", "B"))  # on the host; tiles go to the device
        probs = sliding_window(predictor, a, b, cfg.tile_size, cfg.overlap, cfg.batch_size, cfg.blend, device)
        if probs.shape != (h, w):  # a model trained on resized images predicted at that scale
            probs = F.interpolate(probs[None, None], size=(h, w), mode="bilinear")[0, 0]
        pred = (probs > threshold).numpy()
        pixels += h * w

        write_png(out / "mask" / _png(pair.name), pred.astype(np.uint8) * 255)
        write_png(out / "overlay" / _png(pair.name), overlay(b_img, pred))
        if cfg.save_probs == "png":
            write_png(out / "probs" / _png(pair.name), (probs.numpy() * 255).round().astype(np.uint8))
        elif cfg.save_probs == "npy":
            write_npy(out / "probs" / f"{Path(pair.name).stem}.npy", probs.numpy().astype(np.float32))
        if metrics is not None:
            target = load_label(pair.label)
            metrics.update(probs[None], torch.from_numpy(target)[None].long())
            write_png(out / "error" / _png(pair.name), error_map(pred, target))
            counts = pixel_counts(pred, target)
            rows.append({"name": pair.name, **counts, **scores_from_counts(**counts)})
    seconds = time.perf_counter() - start

    summary: dict[str, Any] = {
        "pairs": len(pairs),
        "megapixels": pixels / 1e6,
        "seconds": seconds,
        "megapixels_per_second": pixels / 1e6 / seconds,
        "checkpoint": run_cfg["checkpoint_file"],
        "threshold": threshold,
        "output": str(out),
    }
    if metrics is not None:
        totals = {k: sum(r[k] for r in rows) for k in ("TP", "FP", "FN", "TN")}
        summary["metrics"] = {k: float(v) for k, v in metrics.compute().items()}
        summary["counts"] = totals
        write_text(
            out / "metrics.json", json.dumps({**summary["metrics"], **totals, "threshold": threshold}, indent=2) + "\n"
        )
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text(out / "per_image.csv", buf.getvalue())
    _print_summary(summary)
    return summary


def _png(name: str) -> str:
    return f"{Path(name).stem}.png"


def _print_summary(s: dict[str, Any]) -> None:
    print(
        f"{s['pairs']} pair(s), {s['megapixels']:.2f} Mpx in {s['seconds']:.1f} s ({s['megapixels_per_second']:.2f} Mpx/s) -> {s['output']}"
    )
    if "metrics" in s:
        print("  ".join(f"{k} {v:.4f}" for k, v in s["metrics"].items()))


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    try:
        if missing:
            raise PredictError(f"missing required value(s): {', '.join(missing)}")
        predict(cfg)
    except (PredictError, CheckpointError, DatasetError) as e:  # expected failures: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
