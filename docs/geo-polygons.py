"""Makes docs/geo-polygons.png: a LEVIR-CD tile as a GeoTIFF pair, predicted by predict.py's scene
path, its changes.geojson polygons drawn over image B.

    python docs/geo-polygons.py --ckpt <run folder or checkpoint> \
        [--tile ../shared/data/levir-cd-samples/tiles-1024/test] [--name test_4]

LEVIR-CD tiles carry no georeferencing; they are given 0.5 m pixels (LEVIR's resolution) on
UTM zone 14N (EPSG:32614), near Austin, Texas, where many LEVIR scenes lie.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
GRID = {"crs": "EPSG:32614", "transform": from_origin(620000, 3350000, 0.5, 0.5)}
OUTLINE = (230, 159, 0)  # Okabe-Ito orange, as predict.py's false positives


def write_pair(tile: Path, name: str, work: Path) -> tuple[Path, Path]:
    paths = []
    for date in ("A", "B"):
        rgb = cv2.cvtColor(cv2.imread(str(tile / date / f"{name}.png")), cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
        path = work / f"{name}_{date}.tif"
        profile = {"driver": "GTiff", "count": 3, "height": rgb.shape[1], "width": rgb.shape[2], "dtype": "uint8"}
        with rasterio.open(path, "w", **profile, **GRID, tiled=True, compress="deflate") as dst:
            dst.write(rgb)
        paths.append(path)
    return paths[0], paths[1]


def draw(b: Path, geojson: Path, side: int) -> np.ndarray:
    """Image B, resized to ``side`` px, with each polygon outlined and labelled with its area."""
    with rasterio.open(b) as src:
        image = cv2.resize(src.read().transpose(1, 2, 0), (side, side), interpolation=cv2.INTER_AREA)
        to_pixel = ~src.transform
        scale = side / src.width

    def pixels(ring: list) -> np.ndarray:
        return (np.array([to_pixel * xy for xy in ring]) * scale).round().astype(np.int32)

    fill = image.copy()
    features = json.loads(geojson.read_text())["features"]
    for f in features:
        rings = [pixels(ring) for ring in f["geometry"]["coordinates"]]
        cv2.fillPoly(fill, rings, OUTLINE)
        cv2.polylines(image, rings, True, OUTLINE, 2, cv2.LINE_AA)
    image = cv2.addWeighted(image, 0.75, fill, 0.25, 0)
    for f in features:
        x, y = pixels(f["geometry"]["coordinates"][0]).min(0)
        p = f["properties"]
        text = f"{p['area']:.0f} m2"
        for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(image, text, (x, max(y - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.38, colour, width, cv2.LINE_AA)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a run folder or checkpoint, as predict.py's ckpt_path")
    parser.add_argument(
        "--tile", type=Path, default=ROOT.parent / "shared" / "data" / "levir-cd-samples" / "tiles-1024" / "test"
    )
    parser.add_argument("--name", default="test_4")
    parser.add_argument("--work", type=Path, default=Path("/tmp/geo-polygons"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "geo-polygons.png")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    a, b = write_pair(args.tile, args.name, args.work)
    command = [
        sys.executable, "predict.py", f"ckpt_path={args.ckpt}", f"a={a}", f"b={b}", f"output={args.work / 'out'}",
        "overwrite=true", "geo.block_size=512", "geo.min_area=20", "geo.geojson_crs=native",
    ]  # fmt: skip
    print(" ".join(command[1:]))
    if subprocess.run(command, cwd=ROOT).returncode:
        raise SystemExit(1)  # predict.py has said why
    image = draw(b, args.work / "out" / "changes.geojson", side=640)
    # A 256-colour palette keeps an aerial photo of this size near 200 KB as PNG.
    Image.fromarray(image).quantize(256, method=Image.Quantize.FASTOCTREE).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
