import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cdseg.data.check import main


def test_usable_dataset_reports_and_exits_0(tiny_data: Path, capsys) -> None:
    assert main([str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert "train: 24 pair(s)" in out and "sizes: 48x48 (24)" in out
    assert "changed pixels:" in out and "suggested loss.pos_weight:" in out and out.rstrip().endswith("usable")


def test_mixed_sizes_are_usable_with_a_note_on_what_training_needs(tiny_data: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    for sub in ("A", "B", "label"):
        image = Image.open(root / "val" / sub / "val_0000.png")
        image.crop((0, 0, 40, 40)).save(root / "val" / sub / "val_0000.png")
    assert main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "sizes: 48x48 (7), 40x40 (1)" in out and "note: sizes differ" in out and "data.eval_batch_size=1" in out


def test_every_problem_is_listed_and_exit_is_1(tiny_data: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    (root / "train" / "B" / "train_0003.png").unlink()
    label = np.zeros((48, 48), np.uint8)
    label[:2] = 128
    Image.fromarray(label).save(root / "test" / "label" / "test_0001.png")
    shutil.rmtree(root / "val")
    assert main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "NOT USABLE: 3 problem(s)" in out
    assert "train: train_0003.png: in A/label but missing from B" in out
    assert "val split not found; training needs it" in out
    assert "test_0001.png: label is not binary" in out and "{0: 2208, 128: 96}" in out


def test_module_entry_point(tiny_data: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cdseg.data.check", str(tiny_data)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "usable" in proc.stdout


def test_the_doctor_reports_pairs_shared_across_and_within_splits(tiny_data: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    for part in ("A", "B", "label"):
        shutil.copy(root / "train" / part / "train_0001.png", root / "val" / part / "leak.png")
        shutil.copy(root / "test" / part / "test_0002.png", root / "test" / part / "twice.png")
    assert main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "NOT USABLE" in out and "in train and val (train: train_0001.png" in out
    assert "warning: the same image pair is 2 times in test" in out


def test_extensions_without_their_dot_are_refused_as_training_refuses_them(tiny_data: Path, capsys) -> None:
    assert main([str(tiny_data), "--extensions", "png", ".tif"]) == 1
    captured = capsys.readouterr()
    assert "error: --extensions must be a list of suffixes with their dot" in captured.err
    assert "empty split" not in captured.out and "no changed pixel" not in captured.out


def test_a_root_that_is_not_there_is_named_once(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nowhere")]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'nowhere'}: dataset root not found" in out and "split not found" not in out


def test_a_split_named_in_splits_must_be_there(tiny_data: Path, capsys) -> None:
    assert main([str(tiny_data), "--splits", "train", "valid"]) == 1  # e.g. DSIFN's name, on a LEVIR layout
    out = capsys.readouterr().out
    assert f"{tiny_data / 'valid'}: valid split not found; it was named in --splits" in out
    assert main([str(tiny_data), "--splits", "train", "val"]) == 0


def test_a_root_that_is_one_split_is_named_as_such(tiny_data: Path, tmp_path: Path, capsys) -> None:
    split = tmp_path / "train"
    shutil.copytree(tiny_data / "train", split)
    (split / "A" / ".ipynb_checkpoints").mkdir()  # a hidden folder is no split: no "laid out by date"
    assert main([str(split)]) == 1
    assert f"{split} holds A/ and B/ itself: the root is the folder above it" in capsys.readouterr().out


def test_a_root_laid_out_by_date_is_named_as_such(tiny_data: Path, tmp_path: Path, capsys) -> None:
    for split in ("train", "val"):  # <root>/A/train/... rather than <root>/train/A/...
        for date in ("A", "B", "label"):
            shutil.copytree(tiny_data / split / date, tmp_path / date / split)
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path} is laid out by date (A/train/...), where cdseg reads <root>/<split>/A/" in out
    assert "folder above it" not in out
