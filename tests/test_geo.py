"""Georeferenced scenes: GeoTIFF pairs built here (two CRSs, a nodata border, scenes larger than a
block), their outputs' georeferencing and nodata, the grid check and warping, the band and 16-bit
rules, block-by-block prediction against the whole array, and polygons against the mask."""

from __future__ import annotations

import errno
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from cdseg.errors import CdsegError
from cdseg.inference.geo import OUTPUTS, SceneOptions, check_scenes, predict_scenes
from cdseg.inference.geo_read import GeoError, is_georeferenced, require_rasterio
from cdseg.inference.predictor import Predictor
from predict import predict
from tests.conftest import ROOT

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import Resampling, reproject, transform_geom  # noqa: E402

UTM31 = "EPSG:32631"
ORIGIN = from_origin(500000, 5000000, 0.5, 0.5)  # 0.5 m pixels near 45 N


def write_tif(path: Path, data: np.ndarray, crs: str | None = UTM31, transform=ORIGIN, nodata=None) -> Path:
    """(C, H, W) array -> a tiled GeoTIFF."""
    profile = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1], "width": data.shape[2]}
    profile |= {"dtype": data.dtype.name, "crs": crs, "transform": transform, "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def scene(height: int = 150, width: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth uint8 date A and a B with bright buildings added (one crossing block seams)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    a = np.stack([80 + 40 * np.sin(x / 17 + c) + 30 * np.cos(y / 23) for c in range(3)]).astype(np.uint8)
    a = np.clip(a + rng.integers(0, 6, a.shape), 0, 255).astype(np.uint8)
    b = a.copy()
    for top, left, h, w in [(20, 30, 40, 70), (100, 10, 12, 12), (90, 150, 30, 8), (5, 180, 6, 6)]:
        b[:, top : top + h, left : left + w] = 230
    return a, b


def difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A stub model for tests about files, not the network: |B - A| / 255, mean over bands."""
    return (b.float() - a.float()).abs().mean(0) / 255


def predict_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("predict", overrides=list(overrides))


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), src.profile


def components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    count, labels = cv2.connectedComponents((mask == 1).astype(np.uint8), connectivity=4)
    return count - 1, labels


def ring_area(ring: list) -> float:
    x, y = np.asarray(ring, float).T
    return 0.5 * (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def polygon_area(geometry: dict) -> float:
    exterior, *holes = geometry["coordinates"]
    return abs(ring_area(exterior)) - sum(abs(ring_area(h)) for h in holes)


def test_outputs_carry_the_inputs_georeferencing_and_nodata(trained_run: dict, tmp_path: Path) -> None:
    a, b = scene()
    a[:, :, :12] = 0  # A's nodata border (no data west of the swath)
    b[:, -7:, :] = 0  # B's, on another side
    write_tif(tmp_path / "a.tif", a, nodata=0)
    write_tif(tmp_path / "b.tif", b, nodata=0)
    out = tmp_path / "out"
    cfg = predict_cfg(
        f"ckpt_path={trained_run['best_checkpoint']}",
        f"a={tmp_path / 'a.tif'}",
        f"b={tmp_path / 'b.tif'}",
        f"output={out}",
        "geo.block_size=64",
        "geo.halo=32",
    )
    summary = predict(cfg)
    assert sorted(p.name for p in out.iterdir()) == ["changes.geojson", "mask.tif", "probability.tif"]
    mask, mask_profile = read(out / "mask.tif")
    probs, prob_profile = read(out / "probability.tif")
    for profile, dtype in ((mask_profile, "uint8"), (prob_profile, "float32")):
        assert profile["crs"] == UTM31 and profile["transform"] == ORIGIN
        assert (profile["width"], profile["height"], profile["dtype"]) == (200, 150, dtype)
        assert profile["tiled"] and profile["compress"] == "deflate"
    assert mask_profile["nodata"] == 255 and np.isnan(prob_profile["nodata"])
    nodata = np.zeros(mask.shape, bool)
    nodata[:, :12] = nodata[-7:, :] = True  # nodata in either date is nodata in both outputs
    assert (mask == 255).tolist() == nodata.tolist() and np.isnan(probs).tolist() == nodata.tolist()
    assert set(np.unique(mask[~nodata])) <= {0, 1}
    assert ((probs[~nodata] > summary["threshold"]) == (mask[~nodata] == 1)).all()
    assert summary["scenes"][0]["valid_pixels"] == (~nodata).sum()


def test_a_scene_larger_than_a_block_matches_the_whole_array(trained_run: dict, tmp_path: Path) -> None:
    a, b = scene(seed=3)
    write_tif(tmp_path / "a.tif", a)
    write_tif(tmp_path / "b.tif", b)
    predictor = Predictor.from_checkpoint(trained_run["best_checkpoint"], tmp_path, device="cpu")
    whole = predictor(torch.from_numpy(a), torch.from_numpy(b)).numpy()  # one window: no seams at all
    threshold = float(np.median(whole))  # half the pixels changed, so the masks' agreement means something
    pairs = [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")]
    errors = {}
    for halo in (0, 32):  # 12 blocks of 64 px, read with and without context
        out = tmp_path / f"halo{halo}"
        predict_scenes(predictor, pairs, out, SceneOptions(block_size=64, halo=halo, geojson_crs="native"), threshold)
        blocked, _ = read(out / "probability.tif")
        errors[halo] = np.abs(blocked - whole).max()
    mask, _ = read(tmp_path / "halo32" / "mask.tif")
    assert errors[32] < 1e-4 and errors[32] < errors[0] / 10  # the halo is what removes the seams
    assert ((mask == 1) == (whole > threshold)).mean() > 0.999


@pytest.mark.parametrize("block", [32, 48, 256])
def test_polygons_are_the_masks_regions_with_their_area(tmp_path: Path, block: int) -> None:
    a, b = scene()
    b[:, 70:130, 60:120] = 230  # a square with a hole, across several blocks
    b[:, 90:100, 85:95] = a[:, 90:100, 85:95]
    b[:, 140, 100] = b[:, 141, 101] = 230  # diagonal neighbours: two polygons under 4-connectivity
    write_tif(tmp_path / "a.tif", a)
    write_tif(tmp_path / "b.tif", b)
    options = SceneOptions(block_size=block, halo=8, geojson_crs="native")
    predict_scenes(difference, [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")], tmp_path / "out", options, 0.3)
    mask, _ = read(tmp_path / "out" / "mask.tif")
    probs, _ = read(tmp_path / "out" / "probability.tif")
    collection = json.loads((tmp_path / "out" / "changes.geojson").read_text())
    features = collection["features"]
    count, labels = components(mask)
    assert count == len(features) == 7
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32631"
    assert collection["area_unit"] == "square metre"
    pixel_area = 0.25
    assert sum(f["properties"]["pixels"] for f in features) == (mask == 1).sum()
    assert sum(f["properties"]["area"] for f in features) == pytest.approx((mask == 1).sum() * pixel_area)
    expected = sorted(
        (int((labels == k).sum()), round(float(probs[labels == k].mean()), 4)) for k in range(1, count + 1)
    )
    found = sorted((f["properties"]["pixels"], round(f["properties"]["mean_probability"], 4)) for f in features)
    assert found == expected
    for f in features:  # each outline encloses exactly its pixels
        assert polygon_area(f["geometry"]) == pytest.approx(f["properties"]["area"])
    assert any(len(f["geometry"]["coordinates"]) == 2 for f in features)  # the hole survives the seams


def test_min_area_and_the_geographic_polygons(tmp_path: Path) -> None:
    a, b = scene()
    write_tif(tmp_path / "a.tif", a)
    write_tif(tmp_path / "b.tif", b)
    pairs = [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")]
    summary = predict_scenes(difference, pairs, tmp_path / "out", SceneOptions(block_size=64, min_area=10), 0.3)
    features = json.loads((tmp_path / "out" / "changes.geojson").read_text())["features"]
    # 40x70, 12x12 and 30x8 px kept; the 6x6 one is 9 m2 at 0.25 m2 a pixel
    assert sorted(f["properties"]["pixels"] for f in features) == [144, 240, 2800]
    assert summary["scenes"][0]["below_min_area"] == 1
    lon, lat = np.concatenate([np.asarray(f["geometry"]["coordinates"][0]) for f in features]).T
    assert 2.99 < lon.min() < lon.max() < 3.01 and 45.1 < lat.min() < lat.max() < 45.2  # RFC 7946: lon/lat


def test_a_geographic_scene_reports_square_metres(tmp_path: Path) -> None:
    a, b = scene()
    grid = from_origin(3.0, 45.2, 5e-6, 5e-6)
    write_tif(tmp_path / "a.tif", a, crs="EPSG:4326", transform=grid)
    write_tif(tmp_path / "b.tif", b, crs="EPSG:4326", transform=grid)
    options = SceneOptions(block_size=64, geojson_crs="native")
    predict_scenes(difference, [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")], tmp_path / "out", options, 0.3)
    collection = json.loads((tmp_path / "out" / "changes.geojson").read_text())
    assert collection["area_unit"] == "square metre"
    for f in collection["features"]:  # against the outline's area on a UTM projection (scale ~ 1 at 3 E)
        utm = transform_geom("EPSG:4326", UTM31, f["geometry"])
        assert f["properties"]["area"] == pytest.approx(polygon_area(utm), rel=2e-3)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"crs": "EPSG:32632"}, "CRS (EPSG:32631 vs EPSG:32632)"),
        ({"transform": from_origin(500010, 5000000, 0.5, 0.5)}, "transform ((0.5, 0, 500000, 0, -0.5, 5000000) vs"),
        ({"size": (150, 190)}, "size (200x150 vs 190x150 px)"),
    ],
)
def test_pairs_on_different_grids_are_refused_naming_the_difference(tmp_path: Path, change: dict, named: str) -> None:
    a, b = scene()
    write_tif(tmp_path / "a.tif", a)
    size = change.pop("size", None)
    write_tif(tmp_path / "b.tif", b[:, : size[0], : size[1]] if size else b, **change)
    pairs = [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")]
    with pytest.raises(GeoError, match="are not on one grid") as e:
        predict_scenes(difference, pairs, tmp_path / "out", SceneOptions(), 0.3)
    assert named in str(e.value) and "geo.align=warp" in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing written, not even a temporary file or the folder


def test_warp_resamples_b_from_another_crs_onto_a_grid(tmp_path: Path) -> None:
    a, b = scene()
    write_tif(tmp_path / "a.tif", a)
    # B as another provider would deliver it: geographic coordinates, its own pixel grid.
    grid = from_origin(2.99995, 45.15352, 7e-6, 5e-6)  # covers A with a margin
    b_geo = np.zeros((3, 150, 200), np.uint8)
    reproject(b, b_geo, src_transform=ORIGIN, src_crs=UTM31, dst_transform=grid, dst_crs="EPSG:4326",
              resampling=Resampling.bilinear, dst_nodata=0)  # fmt: skip
    write_tif(tmp_path / "b.tif", b_geo, crs="EPSG:4326", transform=grid, nodata=0)
    pairs = [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")]
    options = SceneOptions(align="warp", block_size=64)
    predict_scenes(difference, pairs, tmp_path / "out", options, 0.3)
    mask, profile = read(tmp_path / "out" / "mask.tif")
    assert profile["crs"] == UTM31 and profile["transform"] == ORIGIN and mask.shape == (150, 200)
    truth = (np.abs(b.astype(int) - a.astype(int)).mean(0) / 255 > 0.3)[mask != 255]
    found = mask[mask != 255] == 1
    assert (truth & found).sum() / (truth | found).sum() > 0.9  # resampling moves outlines by a pixel at most
    assert (mask == 255).mean() < 0.02  # B's resampled nodata edge only
    # Without a nodata value the warp adds an alpha band for B's footprint: not a band to read.
    write_tif(tmp_path / "b.tif", b_geo, crs="EPSG:4326", transform=grid)
    with pytest.raises(GeoError, match=r"b.tif has 3 band\(s\), geo.bands asks for band\(s\) \[4\]"):
        predict_scenes(difference, pairs, tmp_path / "out", replace(options, bands_b=(1, 2, 4)), 0.3, True)


def test_bands_and_16_bit_data_follow_the_rules(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(200, 3800, (4, 100, 130)).astype(np.uint16)  # blue, green, red, near-infrared
    a[:, :, :5] = 0
    write_tif(tmp_path / "a.tif", a, nodata=0)
    write_tif(tmp_path / "b.tif", a, nodata=0)
    seen: list[torch.Tensor] = []

    def recording(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return torch.zeros(x.shape[-2:])

    pairs = [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")]

    def run(**options) -> np.ndarray:
        seen.clear()
        predict_scenes(recording, pairs, tmp_path / "out", SceneOptions(block_size=256, halo=0, **options), 0.5, True)
        return seen[0].numpy()

    fed = run(bands=(3, 2, 1), stretch="range", range=(0, 4000))
    expected = np.clip(a[[2, 1, 0]] / 4000 * 255 + 0.5, 0, 255).astype(np.uint8)
    expected[:, :, :5] = 0  # nodata is fed as 0
    assert np.array_equal(fed, expected)
    fed = run(bands=(3, 2, 1))  # stretch=auto: 2-98 percentiles of each band, valid pixels only
    lo, hi = np.percentile(a[[2, 1, 0], :, 5:].reshape(3, -1), [2, 98], axis=1)
    expected = np.clip((a[[2, 1, 0]] - lo[:, None, None]) / (hi - lo)[:, None, None] * 255 + 0.5, 0, 255)
    assert np.abs(fed[:, :, 5:].astype(int) - expected[:, :, 5:].astype(np.uint8)).max() <= 1
    # The stretch is one per date, never per block: blocks of 32 see the same mapping.
    seen.clear()
    predict_scenes(recording, pairs, tmp_path / "out", SceneOptions(block_size=32, halo=0, bands=(3, 2, 1)), 0.5, True)
    assert np.array_equal(seen[6].numpy(), fed[:, 32:64, 32:64])  # 5 blocks a row: row 1, column 1
    write_tif(tmp_path / "grey.tif", a[:1], nodata=0)
    grey = [("grey.tif", tmp_path / "grey.tif", tmp_path / "grey.tif")]
    with pytest.raises(GeoError, match=r"grey.tif has 1 band .* geo.bands=\[1,1,1\]"):
        predict_scenes(recording, grey, tmp_path / "out", SceneOptions(), 0.5, True)
    predict_scenes(recording, grey, tmp_path / "out", SceneOptions(bands=(1, 1, 1)), 0.5, True)
    with pytest.raises(GeoError, match=r"a.tif has 4 band\(s\), geo.bands asks for band\(s\) \[5\]"):
        predict_scenes(recording, pairs, tmp_path / "out", SceneOptions(bands=(5, 2, 1)), 0.5, True)


def test_options_and_outputs_are_checked(tmp_path: Path) -> None:
    with pytest.raises(GeoError, match="geo.align must be strict or warp, got 'reproject'"):
        SceneOptions.from_config({"align": "reproject"})
    with pytest.raises(
        GeoError, match=r"geo.range must be \[min, max\] with min < max when geo.stretch=range, got None"
    ):
        SceneOptions.from_config({"stretch": "range"})
    with pytest.raises(GeoError, match="geo.block_size must be a positive multiple of 16, got 100"):
        SceneOptions.from_config({"block_size": 100})
    assert SceneOptions.from_config(predict_cfg("ckpt_path=x", "output=y").geo) == SceneOptions()
    a, b = scene(60, 60)
    write_tif(tmp_path / "a.tif", a)
    write_tif(tmp_path / "b.tif", b)
    pairs = [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")]
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(GeoError, match="exists and is not empty; .* overwrite=true"):
        predict_scenes(difference, pairs, out, SceneOptions(), 0.3)
    predict_scenes(difference, pairs, out, SceneOptions(), 0.3, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["changes.geojson", "mask.tif", "notes.txt", "probability.tif"]


def test_every_scenes_missing_band_is_named_before_any_scene_is_predicted(tmp_path: Path) -> None:
    a, b = scene(40, 40)
    for name, image in (("a", a), ("b", b), ("grey", a[:1]), ("grey2", b[:1])):
        write_tif(tmp_path / f"{name}.tif", image)
    pairs = [
        (n, tmp_path / "a.tif", tmp_path / f"{b_}.tif") for n, b_ in (("s1", "b"), ("s2", "grey"), ("s3", "grey2"))
    ]
    with pytest.raises(GeoError) as error:
        check_scenes(pairs, SceneOptions())
    assert str(error.value).count("has 1 band and the model takes RGB") == 2 and "grey2.tif" in str(error.value)
    out = tmp_path / "out"
    with pytest.raises(GeoError):  # reached only at scene s2: scene s1 is written, no empty folder for s2
        predict_scenes(difference, pairs, out, SceneOptions(), 0.3, subfolders=True)
    assert sorted(p.name for p in out.iterdir()) == ["s1"]


def test_only_georeferenced_tiffs_take_the_scene_path(tmp_path: Path) -> None:
    a, _ = scene(40, 40)
    cv2.imwrite(str(tmp_path / "plain.png"), a.transpose(1, 2, 0))
    cv2.imwrite(str(tmp_path / "plain.tif"), a.transpose(1, 2, 0))
    write_tif(tmp_path / "geo.tif", a)
    write_tif(tmp_path / "grid_only.tif", a, crs=None)  # a geotransform without a CRS is georeferenced too
    found = {name: is_georeferenced(tmp_path / name) for name in ("plain.png", "plain.tif", "geo.tif", "grid_only.tif")}
    assert found == {"plain.png": False, "plain.tif": False, "geo.tif": True, "grid_only.tif": True}


def test_without_rasterio_a_scene_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = scene(40, 40)
    write_tif(tmp_path / "a.tif", a)
    write_tif(tmp_path / "b.tif", b)
    for name in [m for m in sys.modules if m == "rasterio" or m.startswith("rasterio.")]:
        monkeypatch.setitem(sys.modules, name, None)  # import rasterio now raises ImportError
    with pytest.raises(GeoError) as e:
        require_rasterio()
    assert str(e.value) == 'georeferenced scenes need rasterio, which is not installed: pip install "cdseg[geo]"'
    assert is_georeferenced(tmp_path / "a.tif")  # read from the GeoTIFF tags without GDAL
    cfg = predict_cfg(
        "ckpt_path=unused", f"a={tmp_path / 'a.tif'}", f"b={tmp_path / 'b.tif'}", f"output={tmp_path / 'o'}"
    )
    monkeypatch.setattr("predict.load_predictor", lambda cfg: (Stub(), 0.5))
    with pytest.raises(GeoError, match=r'pip install "cdseg\[geo\]"'):
        predict(cfg)


class Stub:
    """:func:`difference` with the predictor's ``config``."""

    def __init__(self, data: dict | None = None) -> None:
        self.config = {"data": data or {}, "checkpoint_file": "run/checkpoints/best.ckpt"}

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return difference(a, b)


def test_a_pixel_is_nodata_only_where_all_its_bands_are(tmp_path: Path) -> None:
    a, b = scene(40, 40)
    a[:, :5, :] = 0  # a nodata strip: every band at the nodata value
    a[0, 20:25, 20:25] = 0  # dark red channel only: a valid pixel, as GDAL's dataset mask has it
    write_tif(tmp_path / "a.tif", a, nodata=0)
    write_tif(tmp_path / "b.tif", b, nodata=0)
    predict_scenes(difference, [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")], tmp_path / "o", SceneOptions(), 0.5)
    mask, _ = read(tmp_path / "o" / "mask.tif")
    assert (mask[:5] == 255).all() and (mask[5:] != 255).all()


def test_scene_requests_that_would_mislead_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = scene(40, 40)
    for part, image in (("A", a), ("B", b)):
        (tmp_path / "in" / part).mkdir(parents=True)
        write_tif(tmp_path / "in" / part / "x.tif", image)
    folder = predict_cfg("ckpt_path=unused", f"input={tmp_path / 'in'}", f"output={tmp_path / 'o'}")
    with pytest.raises(CdsegError, match=r"x.tif is georeferenced: set geo.scene=true .* or geo.scene=false"):
        predict(folder)
    pair = predict_cfg(
        "ckpt_path=unused", f"a={tmp_path / 'in/A/x.tif'}", f"b={tmp_path / 'in/B/x.tif'}", f"output={tmp_path / 'o'}"
    )
    monkeypatch.setattr("predict.load_predictor", lambda cfg: (Stub({"resize": 64}), 0.5))
    with pytest.raises(CdsegError, match=r"trained with data.resize=64; .* needs a run trained without data.resize"):
        predict(pair)
    for part, image in (("A", a), ("B", b)):  # x.tif and x.tiff: both would be written to o/x/
        write_tif(tmp_path / "in" / part / "x.tiff", image)
    both = predict_cfg("ckpt_path=unused", f"input={tmp_path / 'in'}", f"output={tmp_path / 'o'}", "geo.scene=true")
    with pytest.raises(CdsegError, match=r"x.tif, x.tiff: one name, 2 images"):
        predict(both)
    assert not (tmp_path / "o").exists()


def test_a_scene_on_two_grids_is_refused_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = scene(40, 40)
    write_tif(tmp_path / "a.tif", a)
    write_tif(tmp_path / "b.tif", b, crs="EPSG:32632")

    def never(cfg):  # loading a model (seconds for a large one) is wasted on a pair that cannot run
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("predict.load_predictor", never)
    cfg = predict_cfg(
        "ckpt_path=unused", f"a={tmp_path / 'a.tif'}", f"b={tmp_path / 'b.tif'}", f"output={tmp_path / 'o'}"
    )
    with pytest.raises(GeoError, match="are not on one grid: CRS"):
        predict(cfg)


def test_the_stretch_reads_full_resolution_pixels_not_averaged_overviews(tmp_path: Path, monkeypatch) -> None:
    from cdseg.inference import geo_read

    monkeypatch.setattr(geo_read, "STATS_SIDE", 128)  # a 400 px scene is then sampled, as a large one would be
    rng = np.random.default_rng(0)
    image = np.stack([cv2.GaussianBlur(rng.normal(0, 1, (400, 400)).astype(np.float32), (0, 0), 1.0) for _ in range(3)])
    image = (2000 + 600 * image / image.std()).clip(1, 65535).astype(np.uint16)
    write_tif(tmp_path / "a.tif", image, nodata=0)
    write_tif(tmp_path / "b.tif", image, nodata=0)
    with rasterio.open(tmp_path / "b.tif", "r+") as dst:  # the same pixels, with averaged overviews (a COG's)
        dst.build_overviews([2, 4, 8], Resampling.average)
    with geo_read.open_pair(tmp_path / "a.tif", tmp_path / "b.tif", "strict", "bilinear") as (a, b):
        stretch = [geo_read.date_reader(d, n, [1, 2, 3], "percentile", None, (2, 98)) for d, n in ((a, "a"), (b, "b"))]
    assert np.array_equal(stretch[0].lo, stretch[1].lo) and np.array_equal(stretch[0].hi, stretch[1].hi)


def test_pairs_that_cannot_give_a_scene_are_refused_and_an_rgba_b_warps(tmp_path: Path) -> None:
    from rasterio.control import GroundControlPoint

    a, b = scene()
    write_tif(tmp_path / "a.tif", a)
    run = SceneOptions(align="warp", block_size=64)
    elsewhere = from_origin(600000, 5000000, 0.5, 0.5)  # 100 km east of A: no common pixel
    write_tif(tmp_path / "far.tif", b, transform=elsewhere)
    with pytest.raises(GeoError, match="do not overlap: B's footprint lies outside A's"):
        predict_scenes(difference, [("far.tif", tmp_path / "a.tif", tmp_path / "far.tif")], tmp_path / "o1", run, 0.3)
    # A south-up grid (its bottom above its top) over the same place as a north-up B: they overlap.
    south_up = rasterio.Affine(ORIGIN.a, 0, ORIGIN.c, 0, -ORIGIN.e, ORIGIN.f - a.shape[1] * -ORIGIN.e)
    write_tif(tmp_path / "south.tif", a[:, ::-1], transform=south_up)
    write_tif(tmp_path / "north.tif", b, transform=from_origin(ORIGIN.c + 3, ORIGIN.f, ORIGIN.a, -ORIGIN.e))
    flipped = predict_scenes(
        difference, [("n.tif", tmp_path / "south.tif", tmp_path / "north.tif")], tmp_path / "o0", run, 0.3
    )
    assert flipped["scenes"][0]["valid_pixels"] > 0.9 * a.shape[1] * a.shape[2]
    # B with an alpha band of its own (and no nodata value), on a grid shifted by 3 m: warped, its alpha the footprint.
    rgba = np.concatenate([b, np.full((1, *b.shape[1:]), 255, np.uint8)])
    rgba[3, :, :20] = 0  # 20 transparent columns
    shifted = from_origin(ORIGIN.c + 3, ORIGIN.f, ORIGIN.a, -ORIGIN.e)
    profile = {"driver": "GTiff", "count": 4, "height": b.shape[1], "width": b.shape[2], "dtype": "uint8"}
    with rasterio.open(
        tmp_path / "rgba.tif", "w", crs=UTM31, transform=shifted, photometric="RGB", alpha="YES", **profile
    ) as dst:
        dst.write(rgba)
    summary = predict_scenes(
        difference, [("rgba.tif", tmp_path / "a.tif", tmp_path / "rgba.tif")], tmp_path / "o2", run, 0.3
    )
    assert 0 < summary["scenes"][0]["valid_pixels"] < b.shape[1] * (b.shape[2] - 20)
    # Ground control points only, no grid: refused, not predicted as a plain image or without its place.
    gcps = [GroundControlPoint(0, 0, 500000, 5000000), GroundControlPoint(150, 200, 500100, 4999925)]
    with rasterio.open(tmp_path / "gcp.tif", "w", gcps=gcps, crs=UTM31, **{**profile, "count": 3}) as dst:
        dst.write(b)
    assert is_georeferenced(tmp_path / "gcp.tif")
    with pytest.raises(GeoError, match="gcp.tif is placed by ground control points only"):
        predict_scenes(difference, [("gcp.tif", tmp_path / "gcp.tif", tmp_path / "gcp.tif")], tmp_path / "o3", run, 0.3)
    # Every pixel nodata in one date: said, not written as an all-nodata mask.
    write_tif(tmp_path / "empty.tif", np.zeros_like(b), nodata=0)
    with pytest.raises(GeoError, match="no pixel is valid in both dates"):
        predict_scenes(difference, [("e.tif", tmp_path / "a.tif", tmp_path / "empty.tif")], tmp_path / "o4", run, 0.3)
    assert not (tmp_path / "o4" / "mask.tif").exists()


def test_non_finite_probabilities_are_refused_not_written_as_no_change(tmp_path: Path) -> None:
    a, b = scene(60, 60)
    write_tif(tmp_path / "a.tif", a)
    write_tif(tmp_path / "b.tif", b)

    def broken(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # what NaN weights give
        return torch.full(x.shape[-2:], float("nan"))

    pairs = [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")]
    with pytest.raises(GeoError, match=r"b.tif: the model gave non-finite probabilities .* non-finite .* weights"):
        predict_scenes(broken, pairs, tmp_path / "o", SceneOptions(block_size=32), 0.5)
    assert not (tmp_path / "o").exists()


def test_an_output_that_cannot_be_made_or_written_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = scene(40, 40)
    write_tif(tmp_path / "a.tif", a)
    write_tif(tmp_path / "b.tif", b)
    (tmp_path / "file").write_text("mine")
    (tmp_path / "locked").mkdir()
    access = os.access  # root passes any permission check: the folder reads as read-only instead
    monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p) != tmp_path / "locked" and access(p, mode, **k))
    monkeypatch.setattr("predict.load_predictor", lambda cfg: pytest.fail("the model was loaded"))
    pair = ["ckpt_path=unused", f"a={tmp_path / 'a.tif'}", f"b={tmp_path / 'b.tif'}"]
    with pytest.raises(CdsegError, match=r"file is a file, so no folder can be made below it"):
        predict(predict_cfg(*pair, f"output={tmp_path / 'file' / 'o'}"))
    with pytest.raises(CdsegError, match=r"locked is not writable"):
        predict(predict_cfg(*pair, f"output={tmp_path / 'locked' / 'o'}"))
    assert (tmp_path / "file").read_text() == "mine" and not any((tmp_path / "locked").iterdir())


def test_a_failed_write_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = scene(40, 40)
    write_tif(tmp_path / "a.tif", a)
    write_tif(tmp_path / "b.tif", b)

    def full(path: Path) -> str:  # what a full disk says when the first output is begun
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("cdseg.inference.geo._temporary", full)
    monkeypatch.setattr("predict.load_predictor", lambda cfg: (Stub(), 0.5))
    cfg = predict_cfg("ckpt_path=unused", f"a={tmp_path / 'a.tif'}", f"b={tmp_path / 'b.tif'}", f"output={tmp_path}/o")
    with pytest.raises(CdsegError, match=r"output=.*o: could not write .*mask.tif: No space left on device"):
        predict(cfg)


def test_overwrite_replaces_every_previous_scene_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = scene(40, 40)
    for part, names in (("A", ("s1", "s2")), ("B", ("s1", "s2"))):
        (tmp_path / "in" / part).mkdir(parents=True)
        for n in names:
            write_tif(tmp_path / "in" / part / f"{n}.tif", a if part == "A" else b)
    monkeypatch.setattr("predict.load_predictor", lambda cfg: (Stub(), 0.5))
    out = tmp_path / "out"
    args = ["ckpt_path=unused", f"output={out}", "geo.scene=true", "overwrite=true"]
    predict(predict_cfg(*args, f"input={tmp_path / 'in'}"))
    (out / "notes").mkdir()
    (out / "notes" / "read.me").write_text("mine")
    (out / "s2" / "analysis.ipynb").write_text("mine")
    one = [f"a={tmp_path / 'in/A/s1.tif'}", f"b={tmp_path / 'in/B/s1.tif'}"]
    with pytest.raises(CdsegError, match=r"s2 also holds analysis.ipynb, which predict.py does not write"):
        predict(predict_cfg(*args, *one))
    assert sorted(p.name for p in (out / "s2").iterdir()) == ["analysis.ipynb", *sorted(OUTPUTS)]  # nothing deleted
    (out / "s2" / "analysis.ipynb").unlink()
    predict(predict_cfg(*args, *one))  # one scene, written into out itself
    assert sorted(p.name for p in out.iterdir()) == sorted(["notes", *OUTPUTS])  # no stale s1/ or s2/ beside it
    assert (out / "notes" / "read.me").read_text() == "mine"


def ring_areas(features: list) -> tuple[list, list]:
    """Signed areas of every exterior ring and every hole."""
    exteriors = [ring_area(f["geometry"]["coordinates"][0]) for f in features]
    holes = [ring_area(h) for f in features for h in f["geometry"]["coordinates"][1:]]
    return exteriors, holes


@pytest.mark.parametrize("south_up", [False, True])
@pytest.mark.parametrize("geojson_crs", ["native", "wgs84"])
def test_rings_wind_as_rfc_7946_asks_whatever_way_the_rows_run(tmp_path: Path, south_up: bool, geojson_crs) -> None:
    a, b = scene()
    b[:, 70:130, 60:120] = 230  # a square with a hole, across blocks
    b[:, 90:100, 85:95] = a[:, 90:100, 85:95]
    grid = rasterio.Affine(ORIGIN.a, 0, ORIGIN.c, 0, -ORIGIN.e, ORIGIN.f - 150 * -ORIGIN.e) if south_up else ORIGIN
    write_tif(tmp_path / "a.tif", a, transform=grid)
    write_tif(tmp_path / "b.tif", b, transform=grid)
    options = SceneOptions(block_size=64, halo=8, geojson_crs=geojson_crs)
    predict_scenes(difference, [("b.tif", tmp_path / "a.tif", tmp_path / "b.tif")], tmp_path / "out", options, 0.3)
    features = json.loads((tmp_path / "out" / "changes.geojson").read_text())["features"]
    exteriors, holes = ring_areas(features)
    assert len(exteriors) == 5 and len(holes) == 1
    assert all(s > 0 for s in exteriors) and all(s < 0 for s in holes)  # exteriors counter-clockwise, holes clockwise
