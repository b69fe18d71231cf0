"""Export a trained run as one self-contained model file, checked against PyTorch before it is kept.

    python -m cdseg.export ckpt_path=outputs/<run> format=onnx output=model.onnx
    python -m cdseg.export ckpt_path=last format=torchscript output=model.pt
    python predict.py model_file=model.onnx input=<folder> output=<folder>

The file holds :class:`~cdseg.inference.probability.ChangeProbability`: the run's input normalisation,
the network and the sigmoid. Inputs ``a`` and ``b`` are (N, C, H, W) uint8 (or float32 in [0, 1] with
``input_dtype=float32``), with dynamic N, H and W (each side at least the network's downsampling
factor); the output ``probability`` is (N, 1, H, W) float32. The run's threshold, its data options
and the source checkpoint travel in the file's metadata (:func:`cdseg.inference.exported.metadata`).
See conf/export.yaml.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from cdseg.config import int_problem, require_values
from cdseg.data.dataset import (
    DEFAULT_DIRS,
    DEFAULT_EXTENSIONS,
    DEFAULT_SPLITS,
    ChangeDetectionDataset,
    extensions_problem,
    find_pairs,
    folder_names,
)
from cdseg.data.preprocess import scale
from cdseg.errors import CdsegError, exit_1_on_error
from cdseg.inference.checkpoint import load_checkpoint
from cdseg.inference.exported import (
    EXPORT_EXTRA,
    FORMATS,
    INPUT_DTYPES,
    METADATA_KEY,
    ExportedModel,
    load_exported,
    metadata,
)
from cdseg.inference.probability import ChangeProbability
from cdseg.overrides import exit_on_unknown_keys

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
REAL_SIDE = 512  # real pairs are compared on their top-left corner of at most this side


class ExportError(CdsegError, ValueError):
    """An export request that cannot run as given, or an export that fails its parity check."""


def check_options(cfg: DictConfig) -> Path:
    """The output file, once every option has been checked; nothing is written before."""
    if cfg.format not in FORMATS:
        raise ExportError(f"format must be one of {sorted(FORMATS)}, got {cfg.format!r}")
    if cfg.input_dtype not in INPUT_DTYPES:
        raise ExportError(f"input_dtype must be one of {sorted(INPUT_DTYPES)}, got {cfg.input_dtype!r}")
    tolerance = cfg.tolerance
    wrong = (
        None
        if isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool) and tolerance > 0
        else f"tolerance must be a positive number, got {tolerance!r}"
    )
    wrong = wrong or int_problem("max_pairs", cfg.max_pairs, 0)
    wrong = wrong or (extensions_problem(cfg.extensions, "extensions") if cfg.extensions is not None else None)
    if wrong:
        raise ExportError(wrong)
    needed = ("onnx", "onnxscript", "onnxruntime") if cfg.format == "onnx" else ()
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"format=onnx needs {', '.join(missing)}: {EXPORT_EXTRA}")
    out = Path(cfg.output)
    if out.suffix != FORMATS[cfg.format]:
        raise ExportError(
            f"output={out}: a {cfg.format} file must end in {FORMATS[cfg.format]} (predict.py reads by it)"
        )
    if out.is_dir() or (out.exists() and not cfg.overwrite):
        raise ExportError(f"output={out} exists; choose another file or set overwrite=true")
    if not out.parent.is_dir():
        raise ExportError(f"output={out}: folder {out.parent} does not exist")
    return out


def example_inputs(model: ChangeProbability, channels: int, dtype: str, batch: int, h: int, w: int) -> tuple:
    """Two (batch, channels, h, w) random dates of the export's input type (seeded: reproducible)."""
    g = torch.Generator().manual_seed(h * 10_000 + w)
    a, b = (torch.randint(0, 256, (batch, channels, h, w), generator=g, dtype=torch.uint8) for _ in range(2))
    return (a, b) if dtype == "uint8" else (scale(a), scale(b))


def write_onnx(model: ChangeProbability, example: tuple, file: Path, meta: dict[str, Any]) -> None:
    dim = torch.export.Dim
    # Batch from 1; sides from the downsampling factor, the smallest the padding can reflect.
    sides = {0: dim("batch", min=1, max=2**16), 2: dim("height", min=model.min_side, max=2**17)}
    sides[3] = dim("width", min=model.min_side, max=2**17)
    for name in ("onnxscript", "onnx_ir"):  # the optimiser's per-initializer notes
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on axis names it merges
        program = torch.onnx.export(
            model,
            example,
            dynamo=True,
            input_names=["a", "b"],
            output_names=["probability"],
            dynamic_shapes={"a": sides, "b": sides},
            verbose=False,
        )
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    program.save(str(file), external_data=False)  # one file, so the rename moves all of it (models < 2 GB)


def write_torchscript(model: ChangeProbability, example: tuple, file: Path, meta: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        # Tracing records the sizes as operations (the padding, the halving of the date batch); its
        # warnings about Python values taken from tensors concern branches fixed for all sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is in maintenance; the format stays readable
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(file), _extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})


def real_pairs(cfg: DictConfig, config: dict[str, Any]) -> tuple[str, list[tuple[str, torch.Tensor, torch.Tensor]]]:
    """``(where from, [(name, a, b)])``: up to ``max_pairs`` real pairs, each (1, 3, h, w) uint8."""
    data = config.get("data", {})
    folder = cfg.pairs
    if folder is None and data.get("root"):  # a synthetic run's generated split too: the data it knows
        splits = folder_names("data.splits", data.get("splits"), DEFAULT_SPLITS)[0] or {}
        folder = Path(data["root"]) / splits.get("val", "val")
        if not folder.is_dir():
            return f"none: the run's validation split {folder} is not on this machine", []
    if folder is None:
        return "none: the run names no data.root; pairs=<folder> compares real ones", []
    dirs = folder_names("data.dirs", data.get("dirs"), DEFAULT_DIRS)[0] or {}  # a folder named 2019 is "2019"
    extensions = list(cfg.extensions or data.get("extensions") or DEFAULT_EXTENSIONS)
    dataset = ChangeDetectionDataset(find_pairs(folder, dirs, extensions, require_label=False)[: cfg.max_pairs])
    out = []
    for i in range(len(dataset)):
        sample = dataset[i]
        a, b = (sample[k][None, :, :REAL_SIDE, :REAL_SIDE] for k in ("A", "B"))
        out.append((sample["name"], a, b))
    return str(folder), out


def parity(
    model: ChangeProbability, exported: ExportedModel, cases: list[tuple[str, torch.Tensor, torch.Tensor]]
) -> list[tuple[str, float]]:
    """Largest absolute difference in probability between the exported file and PyTorch, per case."""
    diffs = []
    with torch.no_grad():
        for name, a, b in cases:
            want = model(a, b)
            if exported.input_dtype == torch.float32:
                a, b = scale(a), scale(b)
            diffs.append((f"{name} {'x'.join(map(str, a.shape))}", float((exported(a, b) - want).abs().max())))
    return diffs


def export(cfg: DictConfig) -> dict[str, Any]:
    """Run the export described by ``cfg`` (conf/export.yaml); return the summary."""
    out = check_options(cfg)
    net, config = load_checkpoint(cfg.ckpt_path, cfg.runs_dir)
    reference = ChangeProbability.of_run(net, config).eval()  # as predict.py runs it (channels_last or not)
    model = copy.deepcopy(reference).to(memory_format=torch.contiguous_format)  # what the file holds
    channels = int(config["model"].get("in_channels", 3))
    side = max(64, 2 * model.min_side)
    example = example_inputs(model, channels, cfg.input_dtype, 2, side, side)
    meta = metadata(
        {"in_channels": channels, "min_side": model.min_side}, config["checkpoint_file"], config, cfg.input_dtype
    )
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")  # the loader reads the format by suffix
    try:
        (write_onnx if cfg.format == "onnx" else write_torchscript)(model, example, tmp, meta)
        exported, _ = load_exported(tmp)
        # Random pairs at two sizes, one of them odd (the padding path), and real ones.
        odd = (model.min_side * 3 + 1, model.min_side * 5 + 3)
        cases = [
            ("random", *example_inputs(model, channels, "uint8", 2, 256, 256)),
            ("random", *example_inputs(model, channels, "uint8", 1, *odd)),
        ]
        source, real = real_pairs(cfg, config) if channels == 3 else ("none: not a 3-band model", [])
        diffs = parity(reference, exported, cases + [(f"real {n}", a, b) for n, a, b in real])
        worst = max((d for _, d in diffs), key=lambda d: math.inf if math.isnan(d) else d)
        if not worst <= cfg.tolerance:  # NaN too: non-finite probabilities fail, whichever side gave them
            table = "; ".join(f"{n}: {d:.2e}" for n, d in diffs)
            raise ExportError(
                f"parity check failed: largest difference {worst:.2e} > tolerance {cfg.tolerance} ({table})"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(
        f"{config['checkpoint_file']} -> {out} ({cfg.format}, {cfg.input_dtype} inputs, {out.stat().st_size / 1e6:.1f} MB)"
    )
    print(f"parity with PyTorch, largest |p_exported - p_torch| (tolerance {cfg.tolerance}); real pairs: {source}")
    for name, d in diffs:
        print(f"  {name:<40} {d:.2e}")
    print(f"  {'largest':<40} {worst:.2e}")
    return {"output": str(out), "format": cfg.format, "parity": dict(diffs), "largest_difference": worst}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    with exit_1_on_error():
        require_values(cfg)
        export(cfg)


if __name__ == "__main__":
    exit_on_unknown_keys(CONF_DIR, "export")
    main()
