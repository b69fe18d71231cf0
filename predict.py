"""Change maps for image pairs of any size, from a checkpoint written by train.py.

    python predict.py ckpt_path=outputs/<run> input=/path/to/LEVIR-CD/test output=predictions
    python predict.py ckpt_path=<run>/checkpoints/last.ckpt a=before.png b=after.png output=out

Writes mask/, overlay/ and (with labels) error/, metrics.json and per_image.csv; see conf/predict.yaml.
"""

from __future__ import annotations

import csv
import io
import json
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
from cdseg.inference.tiling import sliding_window
from cdseg.inference.visualize import error_map, overlay
from cdseg.io import write_npy, write_png, write_text
from cdseg.metrics import change_metrics, pixel_counts, scores_from_counts


class PredictError(ValueError):
    """A prediction request that cannot run as given."""


def collect_pairs(cfg: DictConfig) -> list[Pair]:
    """The pairs to predict, from ``input=`` (a folder) or ``a=``/``b=`` (one pair); validated."""
    if cfg.input and (cfg.a or cfg.b):
        raise PredictError("give either input=<folder> or a=<file> b=<file>, not both")
    if cfg.input:
        pairs = find_pairs(cfg.input, dict(cfg.dirs), list(cfg.extensions), require_label=False)
    elif cfg.a and cfg.b:
        label = Path(cfg.label) if cfg.label else None
        pairs = [Pair(Path(cfg.b).name, Path(cfg.a), Path(cfg.b), label)]
    else:
        raise PredictError("nothing to predict: set input=<folder with A/ and B/>, or a=<file> b=<file>")
    validate_split(pairs)  # every file decoded once: a bad pair fails before any work starts
    return pairs


def prepare_output(output: str, overwrite: bool, with_labels: bool, save_probs: str | bool) -> Path:
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise PredictError(f"output={out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PredictError(f"output={out} exists and is not empty; choose another folder or set overwrite=true")
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
    dtype = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}.get(precision, "bad")
    if dtype == "bad":
        raise PredictError(f"precision must be 32, bf16 or 16, got {precision!r}")
    if dtype is torch.float16 and device.type == "cpu":
        print("notice: precision=16 needs a GPU; using 32 on the CPU", file=sys.stderr)
        dtype = None
    unknown = set(tta) - {"flip", "swap"}
    if unknown:
        raise PredictError(f"tta accepts flip and swap, got {sorted(unknown)}")
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
    pairs = collect_pairs(cfg)
    with_labels = all(p.label is not None for p in pairs)
    net, run_cfg = load_checkpoint(cfg.ckpt_path)
    device = resolve_device(cfg.device)
    net.to(device)
    predictor = make_predictor(net, device, cfg.precision, list(cfg.tta or []))
    out = prepare_output(cfg.output, cfg.overwrite, with_labels, cfg.save_probs)

    data_cfg = run_cfg.get("data", {})
    # The same normalisation as training's evaluation transform (absent keys: the datamodule's defaults).
    normalise = build_transforms(False, mean=data_cfg.get("mean", IMAGENET_MEAN), std=data_cfg.get("std", IMAGENET_STD))
    resize = data_cfg.get("resize")
    threshold = float(cfg.threshold if cfg.threshold is not None else run_cfg.get("threshold", 0.5))
    metrics = change_metrics(threshold) if with_labels else None
    rows, pixels = [], 0
    start = time.perf_counter()
    for pair in tqdm(pairs, desc="pairs", unit="pair", file=sys.stderr):
        a_img, b_img = load_image(pair.a), load_image(pair.b)
        h, w = a_img.shape[:2]
        x = normalise(
            {k: tv_tensors.Image(torch.from_numpy(v).permute(2, 0, 1)) for k, v in (("A", a_img), ("B", b_img))}
        )
        a, b = (x[k].as_subclass(torch.Tensor).to(device) for k in ("A", "B"))
        if resize is not None:  # a model trained on resized images predicts at that scale
            size = [resize, resize] if isinstance(resize, int) else list(resize)
            a, b = (F.interpolate(t[None], size=size, mode="bilinear", antialias=True)[0] for t in (a, b))
        probs = sliding_window(predictor, a, b, cfg.tile_size, cfg.overlap, cfg.batch_size, cfg.blend)
        if resize is not None:
            probs = F.interpolate(probs[None, None], size=(h, w), mode="bilinear")[0, 0]
        probs = probs.cpu()
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
        "checkpoint": str(cfg.ckpt_path),
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
    except (PredictError, CheckpointError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
