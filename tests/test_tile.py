"""python -m cdseg.data.tile: non-overlapping chips of a dataset's tiles, checked first, written whole or not at all."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cdseg.data.check import check_dataset
from cdseg.data.dataset import DatasetError
from cdseg.data.tile import main, tile_dataset
from tests.conftest import SHARED_DATA


def pixels(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def test_every_chip_is_the_tile_region_it_names(tiny_data: Path, tmp_path: Path) -> None:
    counts = tile_dataset(tiny_data, tmp_path / "chips", size=16, workers=2)
    assert counts == {"train": (24, 24 * 9), "val": (8, 8 * 9), "test": (8, 8 * 9)}  # 48x48 tiles: 3x3 chips
    chip = tmp_path / "chips" / "val"
    tile = next((tiny_data / "val" / "A").iterdir())
    for top, left in [(0, 0), (16, 32), (32, 16)]:
        name = f"{tile.stem}_{top:04d}_{left:04d}.png"
        for part in ("A", "B", "label"):
            region = pixels(tiny_data / "val" / part / tile.name)[top : top + 16, left : left + 16]
            expected = (region > 0) * 255 if part == "label" else region
            assert np.array_equal(pixels(chip / part / name), expected), (part, name)
    assert check_dataset(tmp_path / "chips")[1] == []  # the doctor finds the chips usable


def test_a_size_that_does_not_divide_the_tiles_writes_nothing_unless_the_remainder_is_dropped(
    tiny_data: Path, tmp_path: Path, capsys
) -> None:
    assert main([str(tiny_data), str(tmp_path / "chips"), "--size", "20", "--splits", "val"]) == 1
    assert "8 tile(s) whose sides 20 does not divide" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main([str(tiny_data), str(tmp_path / "chips"), "--size", "20", "--splits", "val", "--drop-remainder"]) == 0
    assert len(list((tmp_path / "chips" / "val" / "B").iterdir())) == 8 * 4  # 2x2 whole chips, edges left out
    # An existing destination is never written into.
    assert main([str(tiny_data), str(tmp_path / "chips"), "--size", "16"]) == 1
    assert "exists and is not an empty folder" in capsys.readouterr().err


def test_a_source_the_doctor_refuses_writes_nothing(tiny_data: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    for part in ("A", "B", "label"):
        (src / "train" / part).mkdir(parents=True)
        (src / "val" / part).mkdir(parents=True)
        for split in ("train", "val"):
            for f in sorted((tiny_data / split / part).iterdir())[:2]:
                (src / split / part / f.name).write_bytes(f.read_bytes())
    broken = next((src / "val" / "B").iterdir())
    broken.write_bytes(broken.read_bytes()[:200])  # truncated
    assert main([str(src), str(tmp_path / "chips"), "--size", "16"]) == 1
    err = capsys.readouterr().err
    assert "problem(s), nothing written" in err and broken.name in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.skipif(not (SHARED_DATA / "levir-cd-samples").is_dir(), reason="../shared/data not present")
def test_levir_chips_equal_the_published_256_crops(tmp_path: Path) -> None:
    levir = SHARED_DATA / "levir-cd-samples"
    assert tile_dataset(levir / "tiles-1024", tmp_path / "chips", splits=["test"]) == {"test": (5, 80)}
    for name in ("test_2_0000_0000.png", "test_2_0000_0512.png"):
        for part in ("A", "B", "label"):
            ours, published = tmp_path / "chips" / "test" / part / name, levir / "crops-256" / "test" / part / name
            assert np.array_equal(pixels(ours), pixels(published)), (part, name)


def test_two_tiles_of_one_stem_are_refused_before_anything_is_written(tiny_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(tiny_data / "val", src / "val")
    name = next((src / "val" / "A").iterdir()).name
    for part in ("A", "B", "label"):  # the same pair again as .tif
        Image.open(src / "val" / part / name).save(src / "val" / part / name.replace(".png", ".tif"))
    with pytest.raises(DatasetError, match=r"one name, 2 images"):  # chips are named by stem
        tile_dataset(src, tmp_path / "chips", size=16)
    assert not (tmp_path / "chips").exists()


def test_a_size_that_gives_no_chip_writes_nothing(tiny_data: Path, tmp_path: Path, capsys) -> None:
    args = [str(tiny_data), str(tmp_path / "chips"), "--size", "64", "--drop-remainder"]  # 48x48 tiles
    assert main(args) == 1
    assert "--size 64 is larger than its tiles (up to 48x48), so it would give no chip" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_named_split_that_is_not_there_is_refused(tiny_data: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tiny_data), str(tmp_path / "chips"), "--size", "16", "--splits", "val", "vall"]) == 1
    assert "split(s) ['vall'] not found (its folders: ['test', 'train', 'val'])" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    src = tmp_path / "src"  # without --splits, an absent optional split is still no problem
    for split in ("train", "val"):
        shutil.copytree(tiny_data / split, src / split)
    assert tile_dataset(src, tmp_path / "chips", size=16) == {"train": (24, 216), "val": (8, 72)}


def test_extensions_without_their_dot_are_refused(tiny_data: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tiny_data), str(tmp_path / "chips"), "--extensions", "png"]) == 1
    err = capsys.readouterr().err
    assert "--extensions must be a list of suffixes with their dot, such as [.png, .tif], got ['png']" in err
    assert "empty split" not in err and list(tmp_path.iterdir()) == []


def test_a_destination_that_cannot_be_made_or_written_is_refused(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("mine")
    with pytest.raises(DatasetError, match=r"file is a file, so no folder can be made below it"):
        tile_dataset(tiny_data, tmp_path / "file" / "chips", size=16)
    assert (tmp_path / "file").read_text() == "mine"
    (tmp_path / "locked").mkdir()
    access = os.access  # root passes any permission check: the folder reads as read-only instead
    monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p) != tmp_path / "locked" and access(p, mode, **k))
    with pytest.raises(DatasetError, match=r"locked is not writable"):
        tile_dataset(tiny_data, tmp_path / "locked" / "chips", size=16)
    assert list((tmp_path / "locked").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_a_read_only_destination_fails_before_any_chip(tiny_data: Path, tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(DatasetError, match=r"ro is not writable"):
        tile_dataset(tiny_data, tmp_path / "ro" / "chips", size=16)
