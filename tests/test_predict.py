"""predict.py: tiled inference, outputs, metrics that match training's test path, and its guards."""

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

import train as train_module
from cdseg import models
from cdseg.atomic_write import write_png
from cdseg.data.dataset import ChangeDetectionDataset, DatasetError, Pair
from cdseg.errors import ConfigError
from cdseg.inference.checkpoint import CheckpointError, load_checkpoint
from cdseg.inference.predictor import Predictor, resolve_device
from cdseg.inference.probability import ChangeProbability
from cdseg.inference.tiling import sliding_window
from cdseg.scores import scores_from_counts
from predict import PredictError, predict, predictions
from tests.conftest import ROOT, SHARED_DATA


def predict_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("predict", overrides=list(overrides))


class SmallField(torch.nn.Module):
    """Two 3x3 convolutions: each output pixel sees 2 px around it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(6, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1)
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([a, b], 1)))


@pytest.mark.parametrize("size", [1024, 1000, 257, 40])
@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_tiles_equal_whole_image_when_the_field_fits_the_overlap(size: int, blend: str) -> None:
    net = SmallField()
    a, b = torch.randn(3, size, size), torch.randn(3, size, size)
    with torch.no_grad():
        whole = net(a[None], b[None])[0, 0]
    tiled = sliding_window(net, a, b, tile_size=128, overlap=16, batch_size=8, blend=blend)
    assert tiled.shape == (size, size)
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_tiles_of_the_real_network_agree_with_the_whole_image(trained_run: dict) -> None:
    net, _ = load_checkpoint(trained_run["best_checkpoint"])
    torch.manual_seed(0)
    a, b = torch.randn(3, 300, 300), torch.randn(3, 300, 300)
    b[:, 100:160, 80:200] += 2
    with torch.no_grad():
        whole = torch.sigmoid(net(a[None], b[None]))[0, 0]
    tiled = sliding_window(lambda x, y: torch.sigmoid(net(x, y)), a, b, tile_size=128, overlap=48, batch_size=4)
    # The U-Net sees far beyond the overlap, so seams differ slightly; away from them it agrees.
    interior = (tiled - whole).abs()[8:-8, 8:-8]
    assert interior.median() < 1e-4 and interior.max() < 0.1
    assert ((tiled > 0.5) == (whole > 0.5)).float().mean() > 0.999


def test_outputs_and_metrics_match_training_and_the_written_masks(
    trained_run: dict, tiny_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    summary = predict(
        predict_cfg(
            f"ckpt_path={trained_run['output_dir']}", f"input={tiny_data / 'test'}", f"output={out}", "save_probs=png"
        )
    )
    names = sorted(p.name for p in (tiny_data / "test" / "A").iterdir())
    for sub in ("mask", "overlay", "error", "probs"):
        assert sorted(p.name for p in (out / sub).iterdir()) == names
    saved = json.loads((out / "metrics.json").read_text())
    # 1. The test metrics train.py reported for the same checkpoint and data.
    for k in ("F1", "IoU", "precision", "recall", "OA", "kappa", "obj_F1", "obj_precision", "obj_recall"):
        assert saved[k] == pytest.approx(trained_run["test"][f"test/{k}"], abs=1e-6), k
    assert saved["objects_true"] == trained_run["test"]["test/objects_true"] > 0
    assert saved["objects_pred"] == trained_run["test"]["test/objects_pred"]
    # 2. A recomputation from the written masks and the labels.
    counts = dict.fromkeys(("TP", "FP", "FN", "TN"), 0)
    for n in names:
        pred = np.asarray(Image.open(out / "mask" / n))
        label = np.asarray(Image.open(tiny_data / "test" / "label" / n)) > 0
        assert pred.shape == label.shape and set(np.unique(pred)) <= {0, 255}
        pred = pred > 0
        counts["TP"] += int((pred & label).sum())
        counts["FP"] += int((pred & ~label).sum())
        counts["FN"] += int((~pred & label).sum())
        counts["TN"] += int((~pred & ~label).sum())
    assert {k: saved[k] for k in counts} == counts
    assert {k: saved[k] for k in scores_from_counts(**counts)} == pytest.approx(scores_from_counts(**counts), abs=1e-6)
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["name"] for r in rows] == names and sum(int(r["TP"]) for r in rows) == counts["TP"]
    assert summary["pairs"] == len(names)


def test_single_pair_of_any_size_without_label(trained_run: dict, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (203, 150, 3), dtype=np.uint8)).save(tmp_path / name)
    out = tmp_path / "pred"
    overrides = [f"a={tmp_path / 'a.png'}", f"b={tmp_path / 'b.png'}", "tile_size=64", "overlap=16", "save_probs=npy"]
    predict(predict_cfg(f"ckpt_path={trained_run['best_checkpoint']}", f"output={out}", *overrides, "tta=[flip,swap]"))
    assert np.asarray(Image.open(out / "mask" / "b.png")).shape == (203, 150)
    probs = np.load(out / "probs" / "b.npy")
    assert probs.shape == (203, 150) and probs.min() >= 0 and probs.max() <= 1
    assert not (out / "error").exists() and not (out / "metrics.json").exists()
    assert (
        "warning: tta includes swap, but this model was trained without exchanging the dates" in capsys.readouterr().err
    )


def test_overwrite_guard(trained_run: dict, tiny_data: Path, tmp_path: Path) -> None:
    args = [f"ckpt_path={trained_run['output_dir']}", f"input={tiny_data / 'val'}", f"output={tmp_path / 'p'}"]
    predict(predict_cfg(*args))
    before = (tmp_path / "p" / "metrics.json").read_bytes()
    with pytest.raises(PredictError, match="exists and is not empty; choose another folder or set overwrite=true"):
        predict(predict_cfg(*args))
    assert (tmp_path / "p" / "metrics.json").read_bytes() == before
    predict(predict_cfg(*args, "overwrite=true"))
    assert not list((tmp_path / "p").rglob(".*.tmp")), "temporary files left behind"


@pytest.fixture
def pairs_dir(tiny_data: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_data / "val", tmp_path / "in")
    return tmp_path / "in"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "B" / "val_0001.png").unlink(), r"val_0001.png: in A/label but missing from B"),
        (lambda d: (d / "A" / "val_0002.png").write_bytes(b"junk"), r"A/val_0002.png: unreadable image"),
        (
            lambda d: Image.new("RGB", (40, 48)).save(d / "B" / "val_0003.png"),
            r"val_0003.png: size mismatch \(A 48x48, B 40x48",
        ),
    ],
)
def test_bad_pairs_fail_before_any_output(trained_run: dict, pairs_dir: Path, tmp_path: Path, damage, message) -> None:
    damage(pairs_dir)
    with pytest.raises(Exception, match=message):
        predict(
            predict_cfg(f"ckpt_path={trained_run['output_dir']}", f"input={pairs_dir}", f"output={tmp_path / 'out'}")
        )
    assert not (tmp_path / "out").exists()


def test_bad_checkpoints_are_named(trained_run: dict, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope.ckpt: no such checkpoint"):
        load_checkpoint(tmp_path / "nope.ckpt")
    good = Path(trained_run["best_checkpoint"])
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.ckpt: not a readable checkpoint"):
        load_checkpoint(truncated)
    ckpt = torch.load(good, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["run_config"]["model"]["base"] = 16
    torch.save(ckpt, tmp_path / "mismatch.ckpt")
    with pytest.raises(CheckpointError, match="mismatch.ckpt: weights do not fit the cdseg.models.SiameseUNet"):
        load_checkpoint(tmp_path / "mismatch.ckpt")
    ckpt["hyper_parameters"]["run_config"]["model"] = {"_target_": "os.system", "command": "touch pwned"}
    torch.save(ckpt, tmp_path / "target.ckpt")
    with pytest.raises(CheckpointError, match="refusing to build 'os.system'"):
        load_checkpoint(tmp_path / "target.ckpt")
    # A function reached through a model module's imports: Hydra would follow it attribute by attribute.
    victim = tmp_path / "victim.txt"
    victim.write_text("kept")
    target = {"_target_": "cdseg.models.siamese_unet.torch.save", "_args_": ["x", str(victim)]}
    ckpt["hyper_parameters"]["run_config"]["model"] = target
    torch.save(ckpt, tmp_path / "through.ckpt")
    with pytest.raises(CheckpointError, match="refusing to build 'cdseg.models.siamese_unet.torch.save'"):
        load_checkpoint(tmp_path / "through.ckpt")
    # Objects Hydra would build from inside an allowed model's options: an interpolation that
    # creates a node, and a tuple (which torch's safe loader allows and Hydra turns into a list).
    opener = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    for value, said in (
        ("${oc.create:" + str(opener) + "}", r"model.base: an interpolation"),
        ((opener,), r"model.base: a tuple, where a config holds only plain values"),
        ([opener], r"refusing to build 'builtins.open'"),
    ):
        ckpt["hyper_parameters"]["run_config"]["model"] = {"_target_": "cdseg.models.SiameseUNet", "base": value}
        torch.save(ckpt, tmp_path / "nested.ckpt")
        with pytest.raises(CheckpointError, match=said):
            load_checkpoint(tmp_path / "nested.ckpt")
    assert victim.read_text() == "kept"


def test_an_architecture_of_ones_own_loads_once_a_model_config_names_it(
    trained_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # The user's own package: here a name for the trained SiameseUNet, so the weights fit.
    (tmp_path / "mine_cd").mkdir()
    (tmp_path / "mine_cd" / "__init__.py").write_text("from cdseg.models.siamese_unet import SiameseUNet as Net\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = torch.load(trained_run["best_checkpoint"], map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["run_config"]["model"]["_target_"] = "mine_cd.Net"
    torch.save(ckpt, tmp_path / "mine.ckpt")
    with pytest.raises(
        CheckpointError, match=r"refusing to build 'mine_cd.Net'.* a class that a config in \S+conf/model"
    ):
        load_checkpoint(tmp_path / "mine.ckpt")
    train_module._warn_if_predict_cannot_build(OmegaConf.create({"_target_": "mine_cd.Net", "base": 4}))
    assert "will refuse this run's checkpoints (refusing to build 'mine_cd.Net')" in capsys.readouterr().err

    configs = tmp_path / "conf" / "model"
    configs.mkdir(parents=True)
    (configs / "mine.yaml").write_text("_target_: mine_cd.Net\nbase: 4\n")
    # Only the network's own _target_ counts, not one that a _global_ model file sets for another group.
    (configs / "other.yaml").write_text(
        "# @package _global_\nmodel:\n  _target_: cdseg.models.TinyCD\noptimizer:\n  _target_: builtins.open\n"
    )
    monkeypatch.setattr(models, "CONF_MODELS", configs)
    assert "mine_cd.Net" in models.buildable_targets() and "builtins.open" not in models.buildable_targets()
    net, config = load_checkpoint(tmp_path / "mine.ckpt")
    assert type(net).__name__ == "SiameseUNet" and config["model"]["_target_"] == "mine_cd.Net"
    train_module._warn_if_predict_cannot_build(OmegaConf.create({"_target_": "mine_cd.Net", "base": 4}))
    assert "warning" not in capsys.readouterr().err


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/cdseg-pwned-by-checkpoint"),))


def test_loading_never_runs_code_from_the_file(tmp_path: Path) -> None:
    Path("/tmp/cdseg-pwned-by-checkpoint").unlink(missing_ok=True)
    torch.save({"state_dict": {}, "payload": Exploit()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="evil.ckpt: refusing to load"):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not Path("/tmp/cdseg-pwned-by-checkpoint").exists()


def test_cli_reports_errors_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "predict.py"),
            f"ckpt_path={tmp_path}/x.ckpt",
            f"input={tmp_path}",
            f"output={tmp_path}/o",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error:" in proc.stderr


@pytest.mark.skipif(not (SHARED_DATA / "levir-cd-samples").is_dir(), reason="../shared/data not present")
def test_real_levir_tiles(trained_run: dict, tmp_path: Path) -> None:
    tiles = SHARED_DATA / "levir-cd-samples" / "tiles-1024" / "test"
    out = tmp_path / "levir"
    summary = predict(
        predict_cfg(
            f"ckpt_path={trained_run['output_dir']}", f"input={tiles}", f"output={out}", "tile_size=512", "overlap=64"
        )
    )
    assert summary["pairs"] == 5
    for p in (out / "mask").iterdir():
        assert Image.open(p).size == (1024, 1024)
    assert Image.open(out / "overlay" / "test_1.png").size == (1024, 1024)
    assert set(json.loads((out / "metrics.json").read_text())) >= {"F1", "IoU", "kappa", "TP", "TN"}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("overlap=2000", r"overlap must be in \[0, tile_size\)"),
        ("blend=median", "blend must be 'gaussian' or 'mean'"),
        ("batch_size=0", "batch_size must be a positive integer or auto, got 0"),
        ("save_probs=tiff", "save_probs must be false, png or npy"),
        ("threshold=1.5", r"threshold must be a number in \(0, 1\) or null, got 1.5"),
        ("precision=8", "precision must be one of"),
        ("tta=[rotate]", "tta accepts flip and swap"),
        ("tta=flip", r"tta takes a list: tta=\[flip\]"),
        ("overlap=1.5", "overlap must be an integer >= 0, got 1.5"),
        ("tile_size=big", "tile_size must be an integer >= 1, got 'big'"),
        ("threshold=abc", "threshold must be a number in \\(0, 1\\) or null, got 'abc'"),
        ("device=foo", "device must be auto, cpu, cuda or cuda:<index>, got 'foo'"),
        ("device=mps", "device must be auto, cpu, cuda or cuda:<index>, got 'mps'"),
        ("dirs=A", "dirs must map a, b, label to folder names"),
    ],
)
def test_bad_options_fail_before_any_output(
    trained_run: dict, tiny_data: Path, tmp_path: Path, option, message
) -> None:
    args = [f"ckpt_path={trained_run['output_dir']}", f"input={tiny_data / 'val'}", f"output={tmp_path / 'o'}"]
    with pytest.raises(PredictError, match=message):
        predict(predict_cfg(*args, option))
    assert not (tmp_path / "o").exists()


def test_folders_named_as_the_run_named_them_are_pointed_out(tiny_data: Path, tmp_path: Path) -> None:
    run = {"data": {"dirs": {"a": "im1", "b": "im2", "label": "label"}}, "model": {}}
    torch.save({"state_dict": {}, "hyper_parameters": {"run_config": run}}, tmp_path / "run.ckpt")
    for date, folder in (("A", "im1"), ("B", "im2")):
        shutil.copytree(tiny_data / "val" / date, tmp_path / "in" / folder)
    args = [f"ckpt_path={tmp_path / 'run.ckpt'}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'o'}"]
    with pytest.raises(PredictError, match=r"folder not found.*add dirs=\{a: im1, b: im2, label: label\}"):
        predict(predict_cfg(*args))


def test_an_output_below_a_file_is_refused(trained_run: dict, tiny_data: Path, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"mine")
    args = [
        f"ckpt_path={trained_run['output_dir']}",
        f"input={tiny_data / 'val'}",
        f"output={tmp_path / 'a.png' / 'o'}",
    ]
    with pytest.raises(PredictError, match=r"a.png is a file, so no folder can be made below it"):
        predict(predict_cfg(*args))
    assert (tmp_path / "a.png").read_bytes() == b"mine"


def test_overwrite_never_deletes_the_input_pairs(trained_run: dict, tiny_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(tiny_data / "val", root)
    (root / "label").rename(root / "mask")  # labels in a folder named like an output
    args = [f"ckpt_path={trained_run['output_dir']}", f"input={root}", f"output={root}", "dirs.label=mask"]
    with pytest.raises(PredictError, match=r"overwrite=true would delete .*in/mask, which holds the input pairs"):
        predict(predict_cfg(*args, "overwrite=true"))
    assert len(list((root / "mask").iterdir())) == 8


def test_pair_requests_that_cannot_run(trained_run: dict, pairs_dir: Path, tmp_path: Path) -> None:
    ckpt, out = f"ckpt_path={trained_run['output_dir']}", f"output={tmp_path / 'o'}"
    with pytest.raises(PredictError, match="a single pair needs both dates"):
        predict(predict_cfg(ckpt, out, f"a={pairs_dir / 'A' / 'val_0000.png'}"))
    with pytest.raises(PredictError, match="not both"):
        predict(predict_cfg(ckpt, out, f"input={pairs_dir}", f"label={pairs_dir / 'label' / 'val_0000.png'}"))
    for d in ("A", "B", "label"):
        shutil.copy(pairs_dir / d / "val_0000.png", pairs_dir / d / "val_0000.jpg")
    with pytest.raises(DatasetError, match="val_0000.jpg, val_0000.png: one name, 2 images"):  # one mask name
        predict(predict_cfg(ckpt, out, f"input={pairs_dir}"))


def test_overwrite_replaces_the_previous_prediction_whole(trained_run: dict, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    ckpt = f"ckpt_path={trained_run['output_dir']}"
    predict(predict_cfg(ckpt, f"input={tiny_data / 'val'}", f"output={out}"))
    (out / "notes.txt").write_text("mine")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / name)
    predict(predict_cfg(ckpt, f"a={tmp_path / 'a.png'}", f"b={tmp_path / 'b.png'}", f"output={out}", "overwrite=true"))
    assert sorted(p.name for p in (out / "mask").iterdir()) == ["b.png"]
    assert not (out / "metrics.json").exists() and not (out / "error").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_model_trained_on_resized_images_predicts_at_input_size(tiny_data: Path, tmp_path: Path) -> None:
    from tests.conftest import compose_train, tiny_overrides
    from train import train

    results = train(compose_train(*tiny_overrides(tiny_data, tmp_path / "run"), "data.resize=32"))
    out = tmp_path / "o"
    predict(
        predict_cfg(
            f"ckpt_path={results['output_dir']}/checkpoints/last.ckpt", f"input={tiny_data / 'test'}", f"output={out}"
        )
    )
    assert Image.open(out / "mask" / "test_0000.png").size == (48, 48)


def test_ckpt_path_last_predicts_with_the_latest_runs_best_checkpoint(
    trained_run: dict, tiny_data: Path, tmp_path: Path
) -> None:
    # The same rule as train.py ckpt_path=last (cdseg/runs/folder.py), then the run's best checkpoint.
    runs_dir = Path(trained_run["output_dir"]).parent
    args = [f"input={tiny_data / 'val'}", f"runs_dir={runs_dir}"]
    summary = predict(predict_cfg("ckpt_path=last", f"output={tmp_path / 'p'}", *args))
    assert Path(summary["checkpoint"]) == Path(trained_run["best_checkpoint"])
    with pytest.raises(CheckpointError, match=r"ckpt_path=last: no run under .* nothing to load"):
        predict(
            predict_cfg(
                "ckpt_path=last", f"output={tmp_path / 'q'}", f"input={tiny_data / 'val'}", f"runs_dir={tmp_path}"
            )
        )
    assert not (tmp_path / "q").exists()


def test_per_image_scores_without_a_denominator_are_left_empty(
    trained_run: dict, tiny_data: Path, tmp_path: Path
) -> None:
    # A network that predicts no change anywhere: its head's bias pushed far below zero.
    ckpt = torch.load(trained_run["best_checkpoint"], map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {k: v - 1e4 if k.endswith("head.bias") else v for k, v in ckpt["state_dict"].items()}
    silent = tmp_path / "silent.ckpt"
    torch.save(ckpt, silent)
    pairs = tmp_path / "in"
    shutil.copytree(tiny_data / "test", pairs)
    labels = sorted((pairs / "label").iterdir())[1:]
    changed = next(p.name for p in labels if np.asarray(Image.open(p)).any())
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(pairs / "label" / "test_0000.png")  # no change at all
    predict(predict_cfg(f"ckpt_path={silent}", f"input={pairs}", f"output={tmp_path / 'out'}"))
    rows = {r["name"]: r for r in csv.DictReader((tmp_path / "out" / "per_image.csv").open())}
    clean, missed = rows["test_0000.png"], rows[changed]
    assert clean["F1"] == clean["IoU"] == clean["precision"] == clean["recall"] == clean["kappa"] == ""
    assert float(clean["OA"]) == 1.0
    assert float(missed["F1"]) == 0.0 and float(missed["recall"]) == 0.0 and missed["precision"] == ""


class CountingField(SmallField):
    """SmallField that records the batch size of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.batches.append(a.shape[0])
        return self.net(torch.cat([a, b], 1))  # logits


def test_small_pairs_of_one_size_share_forward_passes_with_the_same_result(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sizes = [32, 32, 32, 32, 32, 48, 48, 32, 80]  # 80 > tile_size 64: window by window
    pairs = []
    for i, size in enumerate(sizes):
        files = []
        for part in ("A", "B"):
            (tmp_path / part).mkdir(exist_ok=True)
            files.append(tmp_path / part / f"{i}.png")
            write_png(files[-1], np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8))
        pairs.append(Pair(f"{i}.png", *files, None))
    dataset = ChangeDetectionDataset(pairs)

    def run(batch_size: int) -> tuple[list[str], list[torch.Tensor], list[int]]:
        net = CountingField()
        predictor = Predictor(
            ChangeProbability(net), {"data": {}}, device="cpu", tile_size=64, overlap=16, batch_size=batch_size
        )
        out = list(predictions(predictor, dataset))
        return [s["name"] for s, _ in out], [p for _, p in out], net.batches

    names, batched, passes = run(4)
    single_names, single, single_passes = run(1)
    assert names == single_names == [p.name for p in pairs]  # every pair, in order
    assert passes[:4] == [4, 1, 2, 1] and len(single_passes) > len(passes)  # 4+1 of 32, 2 of 48, 1 of 32, windows
    for x, y, size in zip(batched, single, sizes, strict=True):
        assert x.shape == (size, size) and torch.allclose(x, y, atol=1e-6)


def test_auto_batch_size_keeps_a_cpu_pass_cache_sized() -> None:
    predictor = Predictor(ChangeProbability(SmallField()), {"data": {}}, device="cpu")
    assert [predictor.per_pass(s, s) for s in (64, 128, 256, 1024)] == [16, 4, 1, 1]
    assert Predictor(ChangeProbability(SmallField()), {"data": {}}, device="cpu", batch_size=3).per_pass(64, 64) == 3


def test_non_finite_probabilities_are_refused_naming_the_pair(
    trained_run: dict, tiny_data: Path, tmp_path: Path
) -> None:
    ckpt = torch.load(trained_run["best_checkpoint"], map_location="cpu", weights_only=True)
    weight = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][weight] = torch.full_like(ckpt["state_dict"][weight], float("nan"))
    torch.save(ckpt, tmp_path / "nan.ckpt")
    out = tmp_path / "o"
    with pytest.raises(PredictError, match=r"val_0000.png: the model gave non-finite .* non-finite .* weights"):
        predict(predict_cfg(f"ckpt_path={tmp_path / 'nan.ckpt'}", f"input={tiny_data / 'val'}", f"output={out}"))
    assert not list((out / "mask").iterdir()) and not (out / "metrics.json").exists()  # no all-"no change" mask


def test_overwrite_never_deletes_what_predict_did_not_write(trained_run: dict, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = [f"ckpt_path={trained_run['output_dir']}", f"output={out}", "overwrite=true"]
    predict(predict_cfg(*args, f"input={tiny_data / 'val'}"))
    (out / "mask" / "README.txt").write_text("mine")
    (out / "mask" / "notebooks").mkdir()
    with pytest.raises(PredictError, match=r"mask also holds README.txt, notebooks, which predict.py does not write"):
        predict(predict_cfg(*args, f"input={tiny_data / 'test'}"))
    assert len(list((out / "mask").glob("val_*.png"))) == 8 and (out / "metrics.json").exists()  # nothing deleted
    (out / "mask" / "README.txt").unlink()
    (out / "mask" / "notebooks").rmdir()
    (out / "mask" / ".DS_Store").write_bytes(b"\0")  # a file browser's: neither blocks nor is deleted
    # A subfolder that is a link: the previous files in it go, the link and what it points to stay.
    (out / "overlay").rename(tmp_path / "overlays")
    (out / "overlay").symlink_to(tmp_path / "overlays")
    predict(predict_cfg(*args, f"input={tiny_data / 'test'}"))
    assert (out / "overlay").is_symlink()
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == sorted(
        p.name for p in (tiny_data / "test" / "A").iterdir()
    )
    assert sorted(p.name for p in (out / "mask").glob("*.png")) == sorted(p.name for p in (out / "overlay").iterdir())
    assert (out / "mask" / ".DS_Store").exists()


def test_an_output_that_cannot_be_written_is_refused_before_the_model_loads(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "locked").mkdir()
    access = os.access  # root passes any permission check: the folder reads as read-only instead
    monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p) != tmp_path / "locked" and access(p, mode, **k))
    monkeypatch.setattr("predict.load_predictor", lambda cfg: pytest.fail("the model was loaded"))
    args = ["ckpt_path=unused", f"input={tiny_data / 'val'}"]
    for output in (tmp_path / "locked", tmp_path / "locked" / "new" / "o"):
        with pytest.raises(PredictError, match=r"locked is not writable"):
            predict(predict_cfg(*args, f"output={output}"))
    assert not any((tmp_path / "locked").iterdir())


def test_a_failed_write_is_one_line_naming_the_file(
    trained_run: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(path, image) -> None:  # what a file system remounted read-only says mid-run
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr("predict.write_png", read_only)
    out = tmp_path / "o"
    with pytest.raises(PredictError, match=r"output=.*o: could not write .*val_0000.png: Read-only file system"):
        predict(predict_cfg(f"ckpt_path={trained_run['output_dir']}", f"input={tiny_data / 'val'}", f"output={out}"))


def test_devices_other_than_cpu_and_present_gpus_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("mps", "meta", "cpu:0", "cuda:x", "xla"):
        with pytest.raises(ConfigError, match=f"device must be auto, cpu, cuda or cuda:<index>, got '{name}'"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ConfigError, match=r"device=cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_ctrl_c_reports_the_pairs_written_with_each_file_complete(
    trained_run: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    many, calls = Predictor.many, []

    def interrupted_at_the_third_pass(self, pairs):
        calls.append(len(pairs))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return many(self, pairs)

    monkeypatch.setattr(Predictor, "many", interrupted_at_the_third_pass)
    out = tmp_path / "o"
    args = [f"ckpt_path={trained_run['output_dir']}", f"input={tiny_data / 'val'}", f"output={out}", "batch_size=1"]
    with pytest.raises(KeyboardInterrupt, match=r"^2 of 8 pair\(s\) written to .*o \(each file complete; metrics"):
        predict(predict_cfg(*args))
    assert sorted(p.name for p in (out / "mask").iterdir()) == ["val_0000.png", "val_0001.png"]
    assert not list(out.rglob(".*.tmp"))


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        ("KeyboardInterrupt('2 of 8 pair(s) written to o')", "interrupted: 2 of 8 pair(s) written to o\n"),
        ("KeyboardInterrupt()", "interrupted: every file written so far is complete\n"),
    ],
)
def test_ctrl_c_on_the_command_line_exits_130_without_a_traceback(
    tiny_data: Path, tmp_path: Path, raised: str, said: str
) -> None:
    args = [str(ROOT / "predict.py"), "ckpt_path=x.ckpt", f"input={tiny_data / 'val'}", "output=o"]
    code = (  # Ctrl-C while the checkpoint loads
        "import runpy, sys\n"
        "from cdseg.inference import predictor\n"
        "def stop(*args, **kwargs):\n"
        f"    raise {raised}\n"
        "predictor.load_checkpoint = stop\n"
        f"sys.argv = {args!r}\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.endswith(said)
