"""Reading a georeferenced pair for the model: the grid check (or B warped onto A's grid), the band and
dtype rules that turn any raster into the uint8 RGB the network was trained on, and nodata.

rasterio (the ``[geo]`` extra) is imported only when a scene is read, so the core runs without it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdseg.errors import CdsegError

INSTALL = 'pip install "cdseg[geo]"'
TIFF = (".tif", ".tiff")
# GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
GEOTIFF_TAGS = {33550, 33922, 34264, 34735}
STATS_SIDE = 1024  # a scene up to this side is read whole for the percentile stretch, a larger one sampled
STATS_WINDOWS, STATS_WINDOW = 16, 64  # ... in 16 x 16 windows of 64 px, spread evenly: 1 Mpx at full resolution


class GeoError(CdsegError, ValueError):
    """A georeferenced scene that cannot be predicted as given."""


def require_rasterio() -> Any:
    """The rasterio module, or a one-line :class:`GeoError` naming the install command."""
    try:
        import rasterio
        import rasterio.enums
        import rasterio.errors
        import rasterio.features
        import rasterio.vrt
        import rasterio.warp
        import rasterio.windows
    except ImportError:
        raise GeoError(f"georeferenced scenes need rasterio, which is not installed: {INSTALL}") from None
    return rasterio


def _has_geotiff_tags(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return bool(GEOTIFF_TAGS & set(getattr(image, "tag_v2", {})))
    except Exception:  # a TIFF Pillow cannot read (16-bit multiband, BigTIFF) can only be a scene
        return True


def is_georeferenced(path: str | Path) -> bool:
    """Whether ``path`` is a TIFF with a CRS or a geotransform. Other formats never are, so plain
    PNG pairs never import rasterio; without rasterio the GeoTIFF tags are read with Pillow."""
    path = Path(path)
    if path.suffix.lower() not in TIFF or not path.is_file():
        return False
    try:
        import rasterio
    except ImportError:
        return _has_geotiff_tags(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                return src.crs is not None or not src.transform.is_identity or bool(src.gcps[0])
        except rasterio.errors.RasterioIOError:
            return False  # the image path names the unreadable file


def _crs_name(crs: Any) -> str:
    return crs.to_string() if crs else "none"


def _affine(t: Any) -> str:
    return "(" + ", ".join(f"{v:.10g}" for v in tuple(t)[:6]) + ")"


def grid_differences(a: Any, b: Any) -> list[str]:
    """What differs between two datasets' grids, each with both values; empty when they share one.
    Transforms agree within a thousandth of a pixel (float noise of the writing software)."""
    found = []
    if a.crs != b.crs:
        found.append(f"CRS ({_crs_name(a.crs)} vs {_crs_name(b.crs)})")
    if (a.width, a.height) != (b.width, b.height):
        found.append(f"size ({a.width}x{a.height} vs {b.width}x{b.height} px)")
    pixel = math.sqrt(abs(a.transform.determinant)) or 1.0
    if not a.transform.almost_equals(b.transform, precision=1e-3 * pixel):
        found.append(f"transform ({_affine(a.transform)} vs {_affine(b.transform)})")
    return found


@contextmanager
def open_pair(a: Path, b: Path, align: str, resampling: str) -> Iterator[tuple[Any, Any]]:
    """``(A, B)`` datasets on A's grid. ``align="strict"`` refuses a B on another grid, naming what
    differs; ``"warp"`` reads B through a :class:`rasterio.vrt.WarpedVRT` onto A's grid, window by
    window (pixels outside B's footprint are nodata)."""
    rasterio = require_rasterio()
    with ExitStack() as stack:
        src = []
        for path in (a, b):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                    src.append(stack.enter_context(rasterio.open(path)))
            except rasterio.errors.RasterioIOError as e:
                raise GeoError(f"{path}: cannot be read as a raster ({e})") from None
        da, db = src
        for path, d in ((a, da), (b, db)):
            if d.crs is None and d.transform.is_identity and d.gcps[0]:
                raise GeoError(
                    f"{path} is placed by ground control points only, not on a grid: orthorectify it, or resample it "
                    "onto one (gdalwarp), first"
                )
        differences = grid_differences(da, db)
        if differences and align == "strict":
            raise GeoError(
                f"{a} and {b} are not on one grid: {', '.join(differences)}; "
                "set geo.align=warp to resample B onto A's grid"
            )
        if differences:
            if da.crs is None or db.crs is None:
                raise GeoError(
                    f"geo.align=warp needs a CRS on both dates: {a}: {_crs_name(da.crs)}, {b}: {_crs_name(db.crs)}"
                )
            # B's footprint in A's CRS against A's, each side ordered (a south-up grid has bottom > top).
            # Bounds that cross the antimeridian (left > right) are left to the check of valid pixels.
            left, bottom, right, top = rasterio.warp.transform_bounds(db.crs, da.crs, *db.bounds)
            bottom, top = sorted((bottom, top))
            a_left, a_right = sorted((da.bounds.left, da.bounds.right))
            a_bottom, a_top = sorted((da.bounds.bottom, da.bounds.top))
            if left <= right and (left >= a_right or right <= a_left or bottom >= a_top or top <= a_bottom):
                raise GeoError(f"{a} and {b} do not overlap: B's footprint lies outside A's")
            # Without a nodata value or an alpha band of its own, the VRT gets an alpha band, so that
            # B's footprint is its mask.
            alpha = db.nodata is None and rasterio.enums.ColorInterp.alpha not in db.colorinterp
            try:
                db = stack.enter_context(
                    rasterio.vrt.WarpedVRT(
                        db,
                        crs=da.crs,
                        transform=da.transform,
                        width=da.width,
                        height=da.height,
                        resampling=rasterio.enums.Resampling[resampling],
                        add_alpha=alpha,
                    )
                )
            except rasterio.errors.RasterioError as e:
                raise GeoError(f"{b} cannot be warped onto {a}'s grid: {e}") from None
        yield da, db


@dataclass
class DateReader:
    """One date's pixels as the model takes them: ``bands`` (1-based, as R, G, B) of ``src``, mapped
    to uint8 by ``lo``/``hi`` per band (``None``: taken as 0..255), nodata where all of those bands
    are masked (GDAL's mask: the nodata value, an alpha band or an internal mask; as GDAL's dataset
    mask, so a dark pixel with one channel at a nodata value of 0 stays valid) or any is not finite."""

    src: Any
    name: str
    bands: list[int]
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    def read(self, window: Any, out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``window`` (or the whole scene decimated to ``out_shape``) -> (3, h, w) uint8, (h, w) bool valid."""
        extra: dict[str, Any] = {"window": window}
        if out_shape is not None:
            extra = {"out_shape": (len(self.bands), *out_shape)}
        data = self.src.read(self.bands, **extra)
        valid = self.src.read_masks(self.bands, **extra).any(0)
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(0)
        if self.lo is None:
            image = np.clip(data, 0, 255).astype(np.uint8) if data.dtype != np.uint8 else data
        else:
            scaled = (data.astype(np.float32) - self.lo[:, None, None]) / (self.hi - self.lo)[:, None, None]
            image = np.clip(np.nan_to_num(scaled) * 255 + 0.5, 0, 255).astype(np.uint8)
        image[:, ~valid] = 0
        return image, valid

    def sample(self) -> np.ndarray:
        """(3, n) raw values of valid pixels at full resolution, as the blocks will read them: the whole
        scene up to ``STATS_SIDE``, else evenly spread windows. Never a decimated read, which GDAL
        serves from averaged overviews or a warp's resampling and whose narrower spread would stretch
        one date differently from the other on the same content."""
        rasterio = require_rasterio()
        h, w = self.src.height, self.src.width
        if max(h, w) <= STATS_SIDE:
            windows = [None]
        else:
            side = STATS_WINDOW
            rows = np.linspace(0, max(h - side, 0), STATS_WINDOWS).round().astype(int)
            cols = np.linspace(0, max(w - side, 0), STATS_WINDOWS).round().astype(int)
            windows = [rasterio.windows.Window(c, r, min(side, w), min(side, h)) for r in rows for c in cols]
        values = []
        for window in windows:
            data = self.src.read(self.bands, window=window)
            valid = self.src.read_masks(self.bands, window=window).any(0)
            if data.dtype.kind == "f":
                valid &= np.isfinite(data).all(0)
            values.append(data[:, valid])
        return np.concatenate(values, axis=1)


def check_bands(src: Any, name: str, bands: Sequence[int]) -> None:
    """Raise :class:`GeoError` naming the file when it lacks a band of ``bands`` (from its header alone)."""
    bands = [int(x) for x in bands]
    count = getattr(src, "src_dataset", src).count  # the file's bands: not the alpha a warp adds for its footprint
    if count == 1 and bands != [1, 1, 1]:
        raise GeoError(f"{name} has 1 band and the model takes RGB: set geo.bands=[1,1,1] to use it as grey")
    missing = [x for x in bands if not 1 <= x <= count]
    if missing:
        raise GeoError(f"{name} has {count} band(s), geo.bands asks for band(s) {missing} (1-based)")


def date_reader(
    src: Any,
    name: str,
    bands: Sequence[int],
    stretch: str,
    value_range: Sequence[float] | None,
    percentiles: Sequence[float],
) -> DateReader:
    """The reader of one date under the band and stretch rules (README, "Georeferenced scenes").

    Raises:
        GeoError: naming the file, for a band it lacks (a 1-band image included) or no valid pixel.
    """
    bands = [int(x) for x in bands]
    check_bands(src, name, bands)
    reader = DateReader(src, name, bands)
    dtype = np.dtype(src.dtypes[bands[0] - 1])
    if stretch == "auto":
        stretch = "none" if dtype == np.uint8 else "percentile"
    if stretch == "range":
        reader.lo, reader.hi = (np.full(len(bands), float(v)) for v in value_range)  # type: ignore[union-attr]
    elif stretch == "percentile":
        values = reader.sample()
        if values.shape[1] == 0:
            raise GeoError(f"{name}: no valid pixel (all nodata, or outside A's footprint after warping)")
        lo, hi = np.percentile(values.astype(np.float64), list(percentiles), axis=1)
        reader.lo, reader.hi = lo, np.maximum(hi, lo + 1e-6)
    return reader
