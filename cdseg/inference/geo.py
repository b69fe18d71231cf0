"""Georeferenced scenes: a GeoTIFF pair in, a tiled GeoTIFF mask and probability map and the changed
regions as GeoJSON polygons out, read, predicted and written block by block so that memory is bounded
by the block, not the scene (README, "Georeferenced scenes").

Only the predictor's call API is used: ``predictor(a, b)`` with (3, h, w) uint8 tensors ->
(h, w) probabilities, whatever built the predictor.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cdseg.inference.geo_polygons import PixelArea, regions, write_geojson
from cdseg.inference.geo_read import GeoError, check_bands, date_reader, open_pair, require_rasterio

OUTPUTS = ("mask.tif", "probability.tif", "changes.geojson")
MASK_NODATA = 255  # mask.tif: 0 unchanged, 1 changed, 255 nodata
RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")
STRETCHES = ("auto", "none", "range", "percentile")
# GDAL's block cache, in MB; its default is 5 % of the machine's memory, which would grow with the scene.
GDAL_CACHE_MB = 256


@dataclass(frozen=True)
class SceneOptions:
    """The ``geo:`` options of conf/predict.yaml, checked (:meth:`from_config`)."""

    align: str = "strict"
    resampling: str = "bilinear"
    bands: tuple[int, ...] = (1, 2, 3)
    bands_b: tuple[int, ...] | None = None
    stretch: str = "auto"
    range: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (2.0, 98.0)
    block_size: int = 2048
    halo: int = 128
    min_area: float = 0.0
    geojson_crs: str = "wgs84"

    @classmethod
    def from_config(cls, geo: Mapping[str, Any]) -> SceneOptions:
        """``geo`` (a mapping; ``scene`` is predict.py's) -> options, or a :class:`GeoError` naming the key."""
        o = {k: v for k, v in dict(geo).items() if k != "scene"}
        unknown = set(o) - set(cls.__dataclass_fields__)
        if unknown:
            raise GeoError(f"unknown geo option(s) {sorted(unknown)}")
        d = {f.name: f.default for f in cls.__dataclass_fields__.values()} | o
        stretch_range = d["stretch"] != "range" or _pair(d["range"])
        checks = [  # (key, valid, what is expected)
            ("align", d["align"] in ("strict", "warp"), "strict or warp"),
            ("resampling", d["resampling"] in RESAMPLING, f"one of {list(RESAMPLING)}"),
            ("stretch", d["stretch"] in STRETCHES, f"one of {list(STRETCHES)}"),
            ("range", stretch_range, "[min, max] with min < max when geo.stretch=range"),
            ("percentiles", _pair(d["percentiles"], 0, 100), "[low, high] within [0, 100], low < high"),
            ("block_size", _size(d["block_size"]) and d["block_size"] % 16 == 0, "a positive multiple of 16"),
            ("halo", _size(d["halo"], 0), "a non-negative integer"),
            ("min_area", isinstance(d["min_area"], (int, float)) and d["min_area"] >= 0, "a non-negative number"),
            ("geojson_crs", d["geojson_crs"] in ("wgs84", "native"), "wgs84 or native"),
            ("bands", _bands(d["bands"]), "3 band numbers, 1-based"),
            ("bands_b", d["bands_b"] is None or _bands(d["bands_b"]), "null or 3 band numbers, 1-based"),
        ]
        problems = [f"geo.{key} must be {expected}, got {d[key]!r}" for key, ok, expected in checks if not ok]
        if problems:
            raise GeoError("; ".join(problems))
        for key in ("bands", "bands_b", "range", "percentiles"):
            if o.get(key) is not None:
                o[key] = tuple(o[key])
        o["min_area"] = float(o.get("min_area") or 0)
        return cls(**o)


def _pair(value: Any, low: float = -np.inf, high: float = np.inf) -> bool:
    return isinstance(value, Sequence) and len(value) == 2 and low <= value[0] < value[1] <= high


def _size(value: Any, least: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _bands(value: Any) -> bool:
    return isinstance(value, Sequence) and len(value) == 3 and all(_size(v) for v in value)


def blocks(height: int, width: int, size: int, halo: int) -> Iterator[tuple[Any, Any]]:
    """``(core, read)`` windows covering the scene row by row: ``size``-px cores, each read with
    ``halo`` px of context on every side that lies inside the scene."""
    window = require_rasterio().windows.Window
    for top in range(0, height, size):
        for left in range(0, width, size):
            h, w = min(size, height - top), min(size, width - left)
            y0, x0 = max(0, top - halo), max(0, left - halo)
            y1, x1 = min(height, top + h + halo), min(width, left + w + halo)
            yield window(left, top, w, h), window(x0, y0, x1 - x0, y1 - y0)


def _profile(src: Any, dtype: str, nodata: float, block: int) -> dict[str, Any]:
    tile = min(512, block & -block)  # the largest power of two dividing the block: whole tiles per write
    return {
        "driver": "GTiff",
        "width": src.width,
        "height": src.height,
        "count": 1,
        "dtype": dtype,
        "crs": src.crs,
        "transform": src.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": tile,
        "blockysize": tile,
        "compress": "deflate",
        "predictor": 3 if dtype == "float32" else 1,  # floating-point prediction shrinks smooth maps
        "BIGTIFF": "IF_SAFER",
    }


def predict_scene(
    predictor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    a: Path,
    b: Path,
    out: Path,
    options: SceneOptions,
    threshold: float,
) -> dict[str, Any]:
    """Predict one scene into ``out``/mask.tif, probability.tif and changes.geojson; return its summary.

    Every output is written under a temporary name and renamed once all three are complete.
    """
    rasterio = require_rasterio()
    start = time.perf_counter()
    with ExitStack() as stack:
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        src_a, src_b = stack.enter_context(open_pair(a, b, options.align, options.resampling))
        _check_crs_for_geojson(a, src_a, options)
        rule = {"stretch": options.stretch, "value_range": options.range, "percentiles": options.percentiles}
        dates = [
            date_reader(src_a, str(a), options.bands, **rule),
            date_reader(src_b, str(b), options.bands_b or options.bands, **rule),
        ]
        tmp = {name: _temporary(out / name) for name in OUTPUTS}
        stack.callback(lambda: [Path(p).unlink(missing_ok=True) for p in tmp.values()])  # left only on failure
        valid_pixels = changed_pixels = 0
        with (
            rasterio.open(tmp["mask.tif"], "w", **_profile(src_a, "uint8", MASK_NODATA, options.block_size)) as mask,
            rasterio.open(
                tmp["probability.tif"], "w", **_profile(src_a, "float32", np.nan, options.block_size)
            ) as prob,
        ):
            mask.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 255, 255, 255), MASK_NODATA: (0, 0, 0, 0)})
            grid = list(blocks(src_a.height, src_a.width, options.block_size, options.halo))
            for core, read in tqdm(grid, desc=f"blocks of {a.name}", unit="block", file=sys.stderr):
                (image_a, valid_a), (image_b, valid_b) = (d.read(read) for d in dates)
                rows = slice(core.row_off - read.row_off, core.row_off - read.row_off + core.height)
                cols = slice(core.col_off - read.col_off, core.col_off - read.col_off + core.width)
                valid = (valid_a & valid_b)[rows, cols]  # nodata in either date is nodata in the outputs
                probs = np.full(valid.shape, np.nan, np.float32)
                if valid.any():  # a block of nodata (a scene's border) is never predicted
                    p = predictor(torch.from_numpy(image_a), torch.from_numpy(image_b))
                    probs = np.where(valid, p.numpy()[rows, cols], np.nan).astype(np.float32)
                    if not np.isfinite(probs[valid]).all():  # NaN would be written as valid and unchanged
                        raise GeoError(
                            f"{a} and {b}: the model gave non-finite probabilities in the block at row"
                            f" {core.row_off}, column {core.col_off}; the checkpoint may hold non-finite (NaN or"
                            " infinite) weights, or a 16-bit precision overflowed (try precision=32)"
                        )
                changed = probs > threshold
                valid_pixels += int(valid.sum())
                changed_pixels += int(changed.sum())
                mask.write(np.where(valid, changed, MASK_NODATA).astype(np.uint8), 1, window=core)
                prob.write(probs, 1, window=core)
        if not valid_pixels:  # every output would be nodata: say so rather than write it
            raise GeoError(f"{a} and {b}: no pixel is valid in both dates (all nodata where the other has data)")
        area = PixelArea(src_a.transform, src_a.crs)
        with (
            rasterio.open(tmp["mask.tif"]) as mask,
            rasterio.open(tmp["probability.tif"]) as prob,
            open(tmp["changes.geojson"], "w") as f,
        ):
            found = regions(mask, prob, options.block_size, area)
            counts = write_geojson(f, found, src_a.crs, options.geojson_crs, options.min_area, area.unit)
        for name, path in tmp.items():
            os.chmod(path, 0o644)
            os.replace(path, out / name)
        stretch = {
            k: None if d.lo is None else [d.lo.tolist(), d.hi.tolist()] for k, d in zip("AB", dates, strict=True)
        }
        return {
            "a": str(a),
            "b": str(b),
            "size": [src_a.width, src_a.height],
            "crs": src_a.crs.to_string() if src_a.crs else None,
            "valid_pixels": valid_pixels,
            "changed_pixels": changed_pixels,
            **counts,
            "area_unit": area.unit,
            "stretch": stretch,
            "seconds": time.perf_counter() - start,
            "output": str(out),
        }


def _temporary(path: Path) -> str:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return name


def check_scenes(pairs: Sequence[tuple[str, Path, Path]], options: SceneOptions) -> None:
    """Raise :class:`GeoError` for what stops a scene before any work: rasterio missing, an unreadable
    date, two dates on different grids (unless warped), a band a date lacks; every scene's problem in
    one message. Cheap: only the headers are read."""
    require_rasterio()
    problems = []
    for _, a, b in pairs:
        try:
            with open_pair(a, b, options.align, options.resampling) as (src_a, src_b):
                _check_crs_for_geojson(a, src_a, options)
                check_bands(src_a, str(a), options.bands)
                check_bands(src_b, str(b), options.bands_b or options.bands)
        except GeoError as e:
            problems.append(str(e))
    if problems:
        raise GeoError("\n".join(problems))


def _check_crs_for_geojson(a: Path, src_a: Any, options: SceneOptions) -> None:
    if options.geojson_crs == "wgs84" and src_a.crs is None:
        raise GeoError(f"{a} has no CRS, so its polygons cannot be mapped to EPSG:4326: set geo.geojson_crs=native")


def predict_scenes(
    predictor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pairs: Sequence[tuple[str, Path, Path]],
    output: str | Path,
    options: SceneOptions,
    threshold: float,
    overwrite: bool = False,
    subfolders: bool = False,
) -> dict[str, Any]:
    """:func:`predict_scene` for each ``(name, a, b)``, into ``output`` (one pair) or ``output/<stem>/``
    (``subfolders``). ``output`` must be new or empty unless ``overwrite``, which replaces the files of
    :data:`OUTPUTS` and leaves anything else there alone (predict.py first removes a previous
    prediction's scene folders).

    Raises:
        KeyboardInterrupt: Ctrl-C, its message saying how many scenes were written: each whole, the
            one under way not at all.
    """
    require_rasterio()
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise GeoError(f"output={out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise GeoError(f"output={out} exists and is not empty; choose another folder or set overwrite=true")
    scenes = []
    for name, a, b in pairs:
        folder = out / Path(name).stem if subfolders else out
        made = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise GeoError(f"output={out}: {folder} cannot be made, a file stands in its way") from None
        try:
            scenes.append(predict_scene(predictor, a, b, folder, options, threshold))
        except BaseException as e:
            if made and not any(folder.iterdir()):  # no empty folder to refuse the next run over
                folder.rmdir()
            if isinstance(e, KeyboardInterrupt):
                raise KeyboardInterrupt(
                    f"{len(scenes)} of {len(pairs)} scene(s) written to {out} (each scene's files complete);"
                    " rerun with overwrite=true to predict them all"
                ) from None
            raise
        s = scenes[-1]
        print(
            f"{name}: {s['size'][0]}x{s['size'][1]} px, {s['changed_pixels']} changed, {s['polygons']} polygon(s)"
            f" ({s['below_min_area']} under geo.min_area) in {s['seconds']:.1f} s -> {folder}"
        )
    return {"scenes": scenes, "threshold": threshold, "output": str(out)}
