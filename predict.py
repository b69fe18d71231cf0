"""Change maps for image pairs of any size, from a checkpoint written by train.py.

    python predict.py ckpt_path=outputs/<run> input=/path/to/LEVIR-CD/test output=predictions
    python predict.py ckpt_path=<run>/checkpoints/best-epoch011.ckpt a=before.png b=after.png output=out
    python predict.py model_file=model.onnx input=/path/to/LEVIR-CD/test output=predictions
    python predict.py ckpt_path=outputs/<run> a=before.tif b=after.tif output=scene  # GeoTIFFs

Writes mask/, overlay/ and (with labels) error/, metrics.json and per_image.csv; see conf/predict.yaml.
A georeferenced pair writes mask.tif, probability.tif and changes.geojson (cdseg/inference/geo.py).
"""

from __future__ import annotations

import csv
import io
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from cdseg.atomic_write import write_npy, write_png, write_text
from cdseg.config import require_values, threshold_problem
from cdseg.data.dataset import (
    DEFAULT_DIRS,
    ChangeDetectionDataset,
    Pair,
    extensions_problem,
    find_pairs,
    folder_names,
)
from cdseg.errors import CdsegError, ConfigError, exit_1_on_error
from cdseg.inference.checkpoint import run_data_options
from cdseg.inference.geo import OUTPUTS as SCENE_OUTPUTS
from cdseg.inference.geo import SceneOptions, check_scenes, predict_scenes
from cdseg.inference.geo_read import is_georeferenced
from cdseg.inference.predictor import TTA, Predictor, resolve_device
from cdseg.inference.tiling import check_tiling
from cdseg.inference.visualize import error_map, overlay
from cdseg.output_folder import listed, output_problem, write_problem, written_files
from cdseg.overrides import exit_on_unknown_keys
from cdseg.precision import AUTOCAST_DTYPES
from cdseg.scores import object_counts, object_scores, pixel_counts, scores_from_counts


class PredictError(CdsegError, ValueError):
    """A prediction request that cannot run as given."""


# What a prediction writes, by place: the files overwrite=true replaces; nothing else there is touched.
SUBFOLDERS = {"mask": ("*.png",), "overlay": ("*.png",), "error": ("*.png",), "probs": ("*.png", "*.npy")}
TOP_FILES = ("metrics.json", "per_image.csv")
OUTPUTS = (*SUBFOLDERS, *TOP_FILES)


def check_options(cfg: DictConfig) -> None:
    """Every option checked before any file is touched."""
    if bool(cfg.ckpt_path) == bool(cfg.model_file):
        raise PredictError(
            "give ckpt_path=<checkpoint, run folder or last> or model_file=<exported model>, one of them"
        )
    try:
        check_tiling(cfg.tile_size, cfg.overlap, cfg.batch_size, cfg.blend)
    except ValueError as e:
        raise PredictError(str(e)) from None
    if cfg.save_probs not in (False, None, "png", "npy"):
        raise PredictError(f"save_probs must be false, png or npy, got {cfg.save_probs!r}")
    wrong = (
        extensions_problem(cfg.extensions, "extensions")
        or folder_names("dirs", cfg.dirs, DEFAULT_DIRS)[1]
        or threshold_problem(cfg.threshold, optional=True)
    )
    if wrong:
        raise PredictError(wrong)
    if str(cfg.precision) not in AUTOCAST_DTYPES:
        raise PredictError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, got {cfg.precision!r}")
    if isinstance(cfg.tta, str):  # tta=flip: a list is meant, not its letters
        raise PredictError(f"tta takes a list: tta=[{cfg.tta}] (of {', '.join(TTA)})")
    unknown = set(cfg.tta or []) - set(TTA)
    if unknown:
        raise PredictError(f"tta accepts {' and '.join(TTA)}, got {sorted(unknown)}")
    try:
        resolve_device(cfg.device)
    except ConfigError as e:
        raise PredictError(str(e)) from None


def collect_pairs(cfg: DictConfig) -> ChangeDetectionDataset:
    """The pairs to predict, from ``input=`` (a folder) or ``a=``/``b=`` (one pair); every file decoded
    once, so a bad pair fails before any work starts. No transform: the predictor preprocesses."""
    if cfg.input and (cfg.a or cfg.b or cfg.label):
        raise PredictError("give either input=<folder> or a=<file> b=<file> [label=<file>], not both")
    if cfg.input:
        pairs = input_pairs(cfg)
    elif cfg.a or cfg.b:
        if not (cfg.a and cfg.b):
            raise PredictError(f"a single pair needs both dates: a={cfg.a} b={cfg.b}")
        pairs = [Pair(Path(cfg.b).name, Path(cfg.a), Path(cfg.b), Path(cfg.label) if cfg.label else None)]
    else:
        raise PredictError("nothing to predict: set input=<folder with A/ and B/>, or a=<file> b=<file>")
    return ChangeDetectionDataset(pairs)


def input_pairs(cfg: DictConfig) -> list[Pair]:
    """The pairs of ``input=``'s A/ and B/ (labels where there are)."""
    dirs = {**DEFAULT_DIRS, **(folder_names("dirs", cfg.dirs, DEFAULT_DIRS)[0] or {})}  # checked in check_options
    missing = next((Path(cfg.input) / dirs[d] for d in ("a", "b") if not (Path(cfg.input) / dirs[d]).is_dir()), None)
    if missing is not None:  # perhaps named as the run's data.dirs named them: say so
        data = {} if cfg.model_file or not cfg.ckpt_path else run_data_options(cfg.ckpt_path, cfg.runs_dir)
        trained = {**DEFAULT_DIRS, **(folder_names("data.dirs", data.get("dirs"), DEFAULT_DIRS)[0] or {})}
        if trained != dirs:
            named = ", ".join(f"{k}: {v}" for k, v in trained.items())
            raise PredictError(
                f"{missing}: folder not found; the run trained on data.dirs={{{named}}}: add dirs={{{named}}}"
            )
    return find_pairs(cfg.input, dirs, list(cfg.extensions), require_label=False)


def prepare_output(
    output: str, overwrite: bool, with_labels: bool, save_probs: str | bool, inputs: list[Path] = ()
) -> Path:
    """The output folder, new or emptied of a previous prediction's files (``overwrite``); never one
    that would take ``inputs`` (the folders the pairs are read from) with it."""
    out = Path(output)
    wrong = output_problem(out, "output")
    if wrong:
        raise PredictError(wrong)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise PredictError(f"output={out} exists and is not empty; choose another folder or set overwrite=true")
        held = [p for p in inputs for t in OUTPUTS if (out / t).resolve() in (p.resolve(), *p.resolve().parents)]
        if held:
            raise PredictError(
                f"output={out} with overwrite=true would delete {held[0]}, which holds the input pairs; "
                "choose another output folder"
            )
        clear_previous(out)
    for sub in ["mask", "overlay"] + (["error"] if with_labels else []) + (["probs"] if save_probs else []):
        (out / sub).mkdir(parents=True, exist_ok=True)
        wrong = output_problem(out / sub, "output")  # a folder kept from before may be read-only
        if wrong:
            raise PredictError(wrong)
    return out


def clear_previous(out: Path) -> None:
    """Delete a previous prediction's files from ``out`` (:data:`SUBFOLDERS`, :data:`TOP_FILES`), so no
    stale mask or metric survives beside the new ones; a :class:`PredictError`, with nothing deleted,
    where one of its folders holds anything else. Other files in ``out`` are left alone. A folder
    that is a link keeps its link: only the files in it go."""
    doomed, emptied = written_files(out, TOP_FILES)[0], []
    for sub, patterns in SUBFOLDERS.items():
        folder = out / sub
        if not folder.exists() and not folder.is_symlink():
            continue
        if not folder.is_dir():
            raise PredictError(
                f"output={out} with overwrite=true: {folder} is not a folder, and predict.py writes its {sub} files"
                " there; move it or choose another output folder"
            )
        doomed += _ours_alone(out, folder, written_files(folder, patterns))
        if not folder.is_symlink():
            emptied.append(folder)
    _delete(doomed, emptied)  # the folders are made again where this prediction writes into them


def clear_previous_scenes(out: Path, inputs: list[Path]) -> None:
    """Delete a previous scene prediction's files from ``out`` and from its scene folders (those
    holding one of them), and each scene folder so emptied, so no stale scene survives beside the new
    ones; a :class:`PredictError`, with nothing deleted, where a scene folder holds anything else or
    one of those files is an input. Other files and folders in ``out`` are left alone."""
    doomed, emptied = written_files(out, SCENE_OUTPUTS)[0], []
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        found = written_files(folder, SCENE_OUTPUTS)
        if not found[0]:  # not a scene's folder
            continue
        doomed += _ours_alone(out, folder, found)
        if not folder.is_symlink():
            emptied.append(folder)
    taken = {f.resolve() for f in inputs}
    held = next((f for f in doomed if f.resolve() in taken), None)
    if held is not None:
        raise PredictError(
            f"output={out} with overwrite=true would delete {held}, an input; choose another output folder"
        )
    _delete(doomed, emptied)


def _ours_alone(out: Path, folder: Path, found: tuple[list[Path], list[Path]]) -> list[Path]:
    """The files of :func:`cdseg.output_folder.written_files`' split of ``folder`` that predict.py
    wrote; a :class:`PredictError` when it holds anything else, which overwrite=true never deletes."""
    ours, others = found
    if others:
        raise PredictError(
            f"output={out} with overwrite=true: {folder} also holds {listed(others)}, which predict.py does not"
            " write and will not delete; move them or choose another output folder"
        )
    return ours


def _delete(files: list[Path], folders: list[Path]) -> None:
    for file in files:
        file.unlink(missing_ok=True)
    for folder in folders:
        if not any(folder.iterdir()):  # a file browser's litter stays, and its folder with it
            folder.rmdir()


def predictions(
    predictor: Predictor, dataset: ChangeDetectionDataset, prefetch: int = 4
) -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
    """``(sample, (H, W) probabilities)`` for every pair, in order. Consecutive pairs of one size that
    fit a single window share a forward pass (:meth:`Predictor.per_pass` at a time); larger ones go
    window by window. Pairs are decoded ``prefetch`` ahead in threads (decoding releases the GIL)."""
    group: list[dict[str, Any]] = []

    def flush() -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
        if group:
            yield from zip(group, predictor.many([(s["A"], s["B"]) for s in group]), strict=True)
            group.clear()

    with ThreadPoolExecutor(max_workers=2) as pool:
        ahead = deque(pool.submit(dataset.__getitem__, i) for i in range(min(prefetch, len(dataset))))
        for i in range(len(dataset)):
            sample = ahead.popleft().result()  # uint8 (3, H, W) dates, float (1, H, W) mask with labels
            if i + prefetch < len(dataset):
                ahead.append(pool.submit(dataset.__getitem__, i + prefetch))
            if group and (
                sample["A"].shape != group[0]["A"].shape or len(group) == predictor.per_pass(*group[0]["A"].shape[-2:])
            ):
                yield from flush()
            if predictor.one_window(*sample["A"].shape[-2:]):
                group.append(sample)
            else:
                yield from flush()
                yield sample, predictor(sample["A"], sample["B"])
        yield from flush()


def load_predictor(cfg: DictConfig) -> tuple[Predictor, float]:
    """The predictor ``cfg`` asks for, and the threshold: ``threshold=``, else the model's own."""
    tiling = {k: cfg[k] for k in ("tile_size", "overlap", "batch_size", "blend")}
    options = {"device": cfg.device, "precision": cfg.precision, "tta": cfg.tta or (), **tiling}
    if cfg.model_file:
        predictor = Predictor.from_model_file(cfg.model_file, **options)
    else:
        predictor = Predictor.from_checkpoint(cfg.ckpt_path, cfg.runs_dir, **options)
    threshold = float(cfg.threshold if cfg.threshold is not None else predictor.config.get("threshold", 0.5))
    source = (
        "threshold="
        if cfg.threshold is not None
        else "stored with the model"
        if "threshold" in predictor.config
        else "the default"
    )
    what = "model file" if cfg.model_file else "checkpoint"
    print(f"{what}: {predictor.config['checkpoint_file']}; threshold {threshold:g} ({source})", file=sys.stderr)
    if "swap" in (cfg.tta or ()) and predictor.config.get("data", {}).get("swap") == 0:
        print(
            "warning: tta includes swap, but this model was trained without exchanging the dates (data.swap=0),"
            " so B-to-A changes are new to it and may score far worse (README, predict.py options); tta=[flip] is safe",
            file=sys.stderr,
        )
    return predictor, threshold


def scene_pairs(cfg: DictConfig) -> list[tuple[str, Path, Path]] | None:
    """The pairs to predict as georeferenced scenes (``cdseg/inference/geo.py``), or None for images.
    ``geo.scene=auto``: ``a=``/``b=`` when either is a TIFF with a CRS or a geotransform; ``true``:
    that pair, or every pair of ``input=``, whatever the format; ``false``: never."""
    mode = cfg.geo.scene
    if mode not in ("auto", True, False):
        raise PredictError(f"geo.scene must be auto, true or false, got {mode!r}")
    if mode is False or (cfg.input and (cfg.a or cfg.b)) or not (cfg.input or (cfg.a and cfg.b)):
        return None  # collect_pairs names what is missing or conflicting
    if cfg.input:
        pairs = input_pairs(cfg)
        if mode == "auto" and pairs and is_georeferenced(pairs[0].a):  # a choice, not a silent drop
            raise PredictError(
                f"{pairs[0].a} is georeferenced: set geo.scene=true to predict every pair of {cfg.input} as a"
                " scene (GeoTIFF and GeoJSON outputs, no scores), or geo.scene=false to predict them as images"
            )
        if mode is not True:
            return None
        return [(p.name, p.a, p.b) for p in pairs]
    if mode is True or is_georeferenced(cfg.a) or is_georeferenced(cfg.b):
        if cfg.label:
            raise PredictError(f"label={cfg.label}: a georeferenced scene is predicted, not scored; leave label out")
        return [(Path(cfg.b).name, Path(cfg.a), Path(cfg.b))]
    return None


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run the prediction described by ``cfg`` (conf/predict.yaml); return the summary.

    Raises:
        KeyboardInterrupt: Ctrl-C; its message says how many pairs or scenes were written, and where.
    """
    check_options(cfg)
    wrong = output_problem(cfg.output, "output")  # before the model loads, as the options are
    if wrong:
        raise PredictError(wrong)
    scenes = scene_pairs(cfg)
    if scenes is not None:
        options = SceneOptions.from_config(cfg.geo)  # checked before the model loads,
        check_scenes(scenes, options)  # as are the files and their grids
        predictor, threshold = load_predictor(cfg)
        resize = predictor.config.get("data", {}).get("resize")
        if resize is not None:  # each block would be squeezed to that size: the scale would follow the block
            raise PredictError(
                f"{predictor.config['checkpoint_file']} was trained with data.resize={resize}; a scene is predicted"
                " block by block at its own resolution, so it needs a run trained without data.resize"
            )
        if cfg.overwrite and Path(cfg.output).is_dir():
            clear_previous_scenes(Path(cfg.output), [f for _, a, b in scenes for f in (a, b)])
        with written_into(cfg.output):
            return predict_scenes(predictor, scenes, cfg.output, options, threshold, cfg.overwrite, bool(cfg.input))
    dataset = collect_pairs(cfg)
    with_labels = all(p.label is not None for p in dataset.pairs)
    predictor, threshold = load_predictor(cfg)
    inputs = sorted({f.parent for p in dataset.pairs for f in (p.a, p.b, p.label) if f is not None})
    out = prepare_output(cfg.output, cfg.overwrite, with_labels, cfg.save_probs, inputs)
    start = time.perf_counter()
    with written_into(out):
        rows, pixels = write_pairs(cfg, predictor, dataset, out, threshold, with_labels)
        seconds = time.perf_counter() - start
        summary: dict[str, Any] = {
            "pairs": len(dataset),
            "megapixels": pixels / 1e6,
            "seconds": seconds,
            "megapixels_per_second": pixels / 1e6 / seconds,
            "checkpoint": predictor.config["checkpoint_file"],
            "threshold": threshold,
            "output": str(out),
        }
        if with_labels:
            summary |= write_metrics(rows, out, threshold)
    print(
        f"{len(dataset)} pair(s), {pixels / 1e6:.2f} Mpx in {seconds:.1f} s ({pixels / 1e6 / seconds:.2f} Mpx/s) -> {out}"
    )
    if with_labels:
        print("  ".join(f"{k} {v:.4f}" for k, v in summary["metrics"].items()))
    return summary


@contextmanager
def written_into(output: str | Path) -> Iterator[None]:
    """A failed write into ``output`` that its user can fix (a full disk, a folder made read-only
    meanwhile) as a :class:`PredictError` naming the file; any other error as it is."""
    try:
        yield
    except OSError as e:
        wrong = write_problem(e, output, "output")
        if wrong is None:
            raise
        raise PredictError(wrong) from None


def write_pairs(
    cfg: DictConfig,
    predictor: Predictor,
    dataset: ChangeDetectionDataset,
    out: Path,
    threshold: float,
    with_labels: bool,
) -> tuple[list[dict[str, Any]], int]:
    """Every pair's files into ``out``; with labels, each pair's scores (the rows of per_image.csv).
    Returns the rows and the pixels predicted."""
    rows, pixels, written = [], 0, 0
    progress = tqdm(total=len(dataset), desc="pairs", unit="pair", file=sys.stderr)
    try:
        for sample, probs in predictions(predictor, dataset):
            progress.update()
            if not torch.isfinite(probs).all():  # NaN compares false: it would be written as no change
                pair = dataset.pairs[written]
                raise PredictError(
                    f"{pair.a} and {pair.b}: the model gave non-finite probabilities; the checkpoint may hold"
                    " non-finite (NaN or infinite) weights, or a 16-bit precision overflowed (try precision=32)"
                )
            pred = (probs > threshold).numpy()
            pixels += pred.size
            name = f"{Path(sample['name']).stem}.png"
            write_png(out / "mask" / name, pred.astype(np.uint8) * 255)
            write_png(out / "overlay" / name, overlay(sample["B"].permute(1, 2, 0).numpy(), pred))
            if cfg.save_probs == "png":
                write_png(out / "probs" / name, (probs.numpy() * 255).round().astype(np.uint8))
            elif cfg.save_probs == "npy":
                write_npy(out / "probs" / f"{Path(name).stem}.npy", probs.numpy().astype(np.float32))
            if with_labels:
                target = sample["mask"][0] > 0
                write_png(out / "error" / name, error_map(pred, target.numpy()))
                counts = pixel_counts(pred, target.numpy())
                objects = object_counts(pred, target.numpy())
                # A score with a zero denominator stays empty, so sorting by F1 does not rank clean tiles last.
                scores = {**scores_from_counts(**counts, undefined=None), **object_scores(**objects, undefined=None)}
                rows.append({"name": sample["name"], **counts, **objects, **scores})
            written += 1
    except KeyboardInterrupt:
        left = "; metrics.json not written" if with_labels else ""
        raise KeyboardInterrupt(
            f"{written} of {len(dataset)} pair(s) written to {out} (each file complete{left});"
            " rerun with overwrite=true to predict them all"
        ) from None
    finally:
        progress.close()
    return rows, pixels


def write_metrics(rows: list[dict[str, Any]], out: Path, threshold: float) -> dict[str, Any]:
    """metrics.json and per_image.csv; the summary's ``metrics`` and ``counts``."""
    # Split-level scores from the counts summed over every pair, as training's torchmetrics
    # collection computes them (equal to 1e-6: tests/test_predict.py).
    pixel_totals = {k: sum(r[k] for r in rows) for k in ("TP", "FP", "FN", "TN")}
    objects = {k: sum(r[k] for r in rows) for k in ("objects_true", "objects_pred", "obj_TP", "obj_FP", "obj_FN")}
    summary = {"metrics": {**scores_from_counts(**pixel_totals), **object_scores(**objects)}}
    summary["counts"] = {**pixel_totals, **objects}
    scores = {**summary["metrics"], **summary["counts"], "threshold": threshold}
    write_text(out / "metrics.json", json.dumps(scores, indent=2) + "\n")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "per_image.csv", table.getvalue())
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_1_on_error():
        require_values(cfg)
        try:
            predict(cfg)
        except KeyboardInterrupt as e:  # as train.py ends on Ctrl-C: a line and 128 + SIGINT, no traceback
            said = str(e) or "every file written so far is complete"
            print(f"interrupted: {said}", file=sys.stderr)
            raise SystemExit(128 + signal.SIGINT) from None


if __name__ == "__main__":
    exit_on_unknown_keys(Path(__file__).parent / "conf", "predict")  # before Hydra: names the nearest keys
    main()
