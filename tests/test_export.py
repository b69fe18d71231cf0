"""python -m cdseg.export: ONNX and TorchScript files that give PyTorch's probabilities, and predict.py
running them with the same outputs as the checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from cdseg.export import ExportError, export
from cdseg.inference.checkpoint import load_checkpoint
from cdseg.inference.exported import ExportedModelError, auto_device, load_exported
from cdseg.inference.probability import ChangeProbability
from cdseg.runs.checkpoint import CheckpointError, read_checkpoint
from predict import predict
from tests.conftest import ROOT
from tests.test_predict import predict_cfg

pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4  # largest difference in probability between an exported file and PyTorch


def export_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("export", overrides=list(overrides))


@pytest.fixture(scope="module")
def exported(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny trained run exported once per format."""
    folder = tmp_path_factory.mktemp("exported")
    files = {"onnx": folder / "model.onnx", "torchscript": folder / "model.pt"}
    for fmt, file in files.items():
        summary = export(export_cfg(f"ckpt_path={trained_run['best_checkpoint']}", f"format={fmt}", f"output={file}"))
        assert summary["largest_difference"] <= TOLERANCE and file.is_file()
    return files


def random_pair(n: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8) for _ in range(2))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_exported_file_gives_pytorchs_probabilities_at_every_size(
    fmt: str, exported: dict[str, Path], trained_run: dict
) -> None:
    net, config = load_checkpoint(trained_run["best_checkpoint"])
    reference = ChangeProbability.of_run(net, config).eval()
    model, meta = load_exported(exported[fmt])
    assert meta["exported_from"] == trained_run["best_checkpoint"]
    # Sizes other than the export's example (2 x 64 x 64): one not a multiple of the network's stride,
    # then sides under min_side (8), which the exported model pads as the network itself does: by
    # replication where a side is too short to reflect (4 x 40, 5 x 3, 1 x 1), else by reflection.
    sizes = [(3, 96, 128), (1, 45, 61), (2, 4, 40), (2, 5, 3), (2, 1, 1), (1, 5, 40), (1, 7, 7), (1, 6, 33)]
    for seed, (n, h, w) in enumerate(sizes):
        a, b = random_pair(n, h, w, seed)
        with torch.no_grad():
            want = reference(a, b)
        got = model(a, b)
        assert got.shape == want.shape == (n, 1, h, w)
        assert got.dtype == torch.float32 and (got - want).abs().max() <= TOLERANCE


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_predict_runs_an_exported_file_with_the_checkpoints_outputs(
    fmt: str, exported: dict[str, Path], trained_run: dict, tiny_data: Path, tmp_path: Path
) -> None:
    common = [f"input={tiny_data / 'test'}", "save_probs=npy", "tile_size=32", "overlap=8", "tta=[flip]"]
    ours = predict(predict_cfg(f"model_file={exported[fmt]}", f"output={tmp_path / 'file'}", *common))
    theirs = predict(predict_cfg(f"ckpt_path={trained_run['best_checkpoint']}", f"output={tmp_path / 'ckpt'}", *common))
    assert ours["checkpoint"] == str(exported[fmt]) and ours["threshold"] == theirs["threshold"]
    names = sorted(p.name for p in (tmp_path / "ckpt" / "probs").iterdir())
    assert names and names == sorted(p.name for p in (tmp_path / "file" / "probs").iterdir())
    for name in names:
        p, q = (np.load(tmp_path / run / "probs" / name) for run in ("file", "ckpt"))
        assert np.abs(p - q).max() <= TOLERANCE
    for run in ("file", "ckpt"):  # the same files, metrics included
        assert {p.name for p in (tmp_path / run).iterdir()} == {
            "mask",
            "overlay",
            "error",
            "probs",
            "metrics.json",
            "per_image.csv",
        }
    m_file, m_ckpt = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("file", "ckpt"))
    assert m_file == pytest.approx(m_ckpt, abs=1e-3)


def test_a_float_input_export_takes_unit_range_images_and_predict_scales_uint8_for_it(
    trained_run: dict, tmp_path: Path
) -> None:
    file = tmp_path / "float.pt"
    export(
        export_cfg(
            f"ckpt_path={trained_run['best_checkpoint']}", "format=torchscript", f"output={file}", "input_dtype=float32"
        )
    )
    model, _ = load_exported(file)
    a, b = random_pair(2, 40, 56, 3)
    assert torch.allclose(model(a.float() / 255, b.float() / 255), model(a, b), atol=1e-6)
    net, config = load_checkpoint(trained_run["best_checkpoint"])
    with torch.no_grad():
        assert (model(a, b) - ChangeProbability.of_run(net, config)(a, b)).abs().max() <= TOLERANCE


def test_real_pairs_are_compared_and_named(trained_run: dict, tiny_data: Path, tmp_path: Path, capsys) -> None:
    file = tmp_path / "model.pt"
    summary = export(
        export_cfg(
            f"ckpt_path={trained_run['best_checkpoint']}",
            "format=torchscript",
            f"output={file}",
            f"pairs={tiny_data / 'val'}",
            "max_pairs=2",
        )
    )
    real = [name for name in summary["parity"] if name.startswith("real")]
    assert len(real) == 2 and all("1x3x48x48" in name for name in real)
    assert f"real pairs: {tiny_data / 'val'}" in capsys.readouterr().out


def test_real_pairs_in_another_format_are_compared(trained_run: dict, tiny_data: Path, tmp_path: Path) -> None:
    from PIL import Image

    for date in ("A", "B"):
        (tmp_path / "bmp" / date).mkdir(parents=True)
        for png in sorted((tiny_data / "val" / date).iterdir())[:2]:
            Image.open(png).save(tmp_path / "bmp" / date / f"{png.stem}.bmp")
    args = [f"ckpt_path={trained_run['best_checkpoint']}", "format=torchscript", f"pairs={tmp_path / 'bmp'}"]
    summary = export(export_cfg(*args, f"output={tmp_path / 'model.pt'}", "extensions=[.bmp]"))
    assert len([name for name in summary["parity"] if name.startswith("real")]) == 2


def test_a_runs_folders_named_by_numbers_are_found(tiny_data: Path, tmp_path: Path) -> None:
    from cdseg.export import real_pairs

    for date, folder in (("A", "2019"), ("B", "2020")):  # data.dirs={a: 2019, b: 2020}, data.splits.val=1
        shutil.copytree(tiny_data / "val" / date, tmp_path / "1" / folder)
    data = {"root": str(tmp_path), "dirs": {"a": 2019, "b": 2020}, "splits": {"val": 1}}
    where, pairs = real_pairs(export_cfg("ckpt_path=x", "output=y.onnx", "max_pairs=2"), {"data": data})
    assert where == str(tmp_path / "1") and len(pairs) == 2


def test_a_failed_parity_check_keeps_nothing(trained_run: dict, tmp_path: Path) -> None:
    file = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="parity check failed: largest difference"):
        export(export_cfg(f"ckpt_path={trained_run['best_checkpoint']}", f"output={file}", "tolerance=1e-12"))
    assert list(tmp_path.iterdir()) == []


def test_non_finite_probabilities_fail_the_parity_check(trained_run: dict, tmp_path: Path, monkeypatch) -> None:
    # NaN compares false with any tolerance: a model giving NaN on either side must not pass for exact.
    monkeypatch.setattr("cdseg.export.parity", lambda *args: [("random 2x3x64x64", 0.0), ("real x", float("nan"))])
    file = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="parity check failed: largest difference nan"):
        export(export_cfg(f"ckpt_path={trained_run['best_checkpoint']}", f"output={file}"))
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_refused_before_anything_is_written(trained_run: dict, tmp_path: Path, monkeypatch) -> None:
    ckpt = f"ckpt_path={trained_run['best_checkpoint']}"
    with pytest.raises(ExportError, match=r"must end in \.pt"):
        export(export_cfg(ckpt, "format=torchscript", f"output={tmp_path / 'model.onnx'}"))
    with pytest.raises(ExportError, match="format must be one of"):
        export(export_cfg(ckpt, "format=tflite", f"output={tmp_path / 'model.tflite'}"))
    for option, message in [
        ("tolerance=abc", "tolerance must be a positive number, got 'abc'"),
        ("max_pairs=-1", "max_pairs must be an integer >= 0, got -1"),
        ("extensions=[bmp]", "extensions must be a list of suffixes with their dot"),
    ]:
        with pytest.raises(ExportError, match=message):
            export(export_cfg(ckpt, option, f"output={tmp_path / 'model.onnx'}"))
    (tmp_path / "old.pt").write_bytes(b"keep")
    with pytest.raises(ExportError, match="exists; choose another file or set overwrite=true"):
        export(export_cfg(ckpt, "format=torchscript", f"output={tmp_path / 'old.pt'}"))
    assert (tmp_path / "old.pt").read_bytes() == b"keep"
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else real_find_spec(n, *a))
    with pytest.raises(ExportError, match=r'needs onnxscript: pip install "cdseg\[export\]"'):
        export(export_cfg(ckpt, f"output={tmp_path / 'model.onnx'}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pt"]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is in maintenance
def test_unusable_model_files_are_named(exported: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ExportedModelError, match="junk.pt: not a readable TorchScript model"):
        load_exported(tmp_path / "junk.pt")
    with pytest.raises(ExportedModelError, match="expected .onnx or .pt"):
        load_exported(shutil.copy(exported["onnx"], tmp_path / "model.bin"))
    for file in exported.values():  # the opposite mix-up: an exported file given as a checkpoint
        with pytest.raises(CheckpointError, match=f"{file.name}: an exported model .* model_file={file}"):
            read_checkpoint(file)
    plain = torch.jit.trace(torch.nn.Conv2d(3, 1, 1), torch.zeros(1, 3, 8, 8))
    torch.jit.save(plain, str(tmp_path / "plain.pt"))
    with pytest.raises(ExportedModelError, match="holds no cdseg metadata"):
        load_exported(tmp_path / "plain.pt")
    model, _ = load_exported(exported["torchscript"])
    a, b = random_pair(1, 40, 40, 0)
    with pytest.raises(
        ExportedModelError,
        match=r"takes two \(N, 3, H, W\) dates of one shape, got \(1, 3, 40, 40\) and \(1, 3, 40, 39\)",
    ):
        model(a, b[..., :39])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is in maintenance
def test_a_torchscript_file_holds_no_device_of_its_own(exported: dict[str, Path]) -> None:
    """Tracing freezes a tensor made inside forward on the device it was made on; the statistics are
    buffers instead, so the file runs wherever map_location puts it."""
    module = torch.jit.load(str(exported["torchscript"]))
    code = "\n".join(m.code for _, m in module.named_modules() if hasattr(m, "code"))
    assert "self.mean" in code and "torch.device(" not in code
    assert {name for name, _ in module.named_buffers()} >= {"mean", "std"}


def test_the_command_line_reports_a_bad_option_in_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "cdseg.export", "ckpt_path=nowhere", "format=onnx", f"output={tmp_path / 'm.onnx'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: nowhere: no such checkpoint file or run folder"]


def test_device_auto_runs_an_onnx_file_on_the_cpu_when_onnxruntime_has_no_gpu(monkeypatch) -> None:
    import onnxruntime

    cuda = torch.device("cuda")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert auto_device("model.onnx", cuda) == torch.device("cpu")
    assert auto_device("model.pt", cuda) == cuda  # TorchScript runs wherever torch does
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert auto_device("model.onnx", cuda) == cuda


def test_a_synthetic_runs_generated_validation_split_is_compared(tiny_data: Path) -> None:
    from cdseg.export import real_pairs

    data = {"root": str(tiny_data), "synthetic": {"size": 48, "train": 24, "val": 8, "test": 8, "seed": 0}}
    where, pairs = real_pairs(export_cfg("ckpt_path=x", "output=y.onnx", "max_pairs=2"), {"data": data})
    assert where == str(tiny_data / "val") and len(pairs) == 2
