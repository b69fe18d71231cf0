"""train.py through the real composed config, shrunk to seconds."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cdseg.baseline import evaluate as baseline
from cdseg.data.synthetic import SyntheticSpec, generate
from cdseg.precision import cpu_has_native_bf16
from cdseg.runs.sweep import write_summary
from tests.conftest import ROOT, compose_train, tiny_overrides
from train import _run_length, train

METRICS = {"F1", "IoU", "precision", "recall", "OA", "kappa", "loss"}
OBJECT_METRICS = {"obj_F1", "obj_precision", "obj_recall", "objects_true", "objects_pred"}  # test stage only
CURVE_METRICS = {"AP"}  # the best checkpoint's val and test precision-recall curves


def test_fast_dev_run(make_cfg, tmp_path: Path) -> None:
    results = train(make_cfg("+trainer.fast_dev_run=true"))
    assert {k.split("/")[1] for k in results["test"]} == METRICS | OBJECT_METRICS | CURVE_METRICS
    assert (tmp_path / "run" / "config.yaml").exists()


def test_run_folder_holds_config_logs_checkpoints_and_metrics(make_cfg, tmp_path: Path) -> None:
    results = train(make_cfg("trainer.max_epochs=2"))
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert {k.split("/")[1] for k in saved["val"]} == METRICS | CURVE_METRICS
    assert {k.split("/")[1] for k in saved["test"]} == METRICS | OBJECT_METRICS | CURVE_METRICS
    assert saved["threshold"] == 0.5 and len(saved["curves"]["val"]["precision"]) == 201
    assert Path(saved["best_checkpoint"]).parent == run / "checkpoints"
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert OmegaConf.load(run / "config.yaml").model.base == 4
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = acc.Tags()
    assert {"val/F1", "val/kappa", "train/loss_epoch", "test/F1"} <= set(tags["scalars"])
    assert "val/samples" in tags["images"]
    # One point and one panel per epoch: the re-validation of the best checkpoint adds none.
    assert len(acc.Images("val/samples")) == 2
    steps = [e.step for e in acc.Scalars("val/F1")]
    assert len(steps) == 2 and steps == sorted(steps)
    assert "hp/test/F1" in tags["scalars"] and "hp/val/F1" in tags["scalars"]
    # The hparams table holds the settings runs are compared by, not the whole config.
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    columns = set(plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams)
    assert {"model", "model/base", "optimizer/lr", "data/batch_size", "trainer/max_epochs", "seed"} <= columns
    assert len(columns) < 40 and not any("_target_" in c or "ckpt" in c or "dirpath" in c for c in columns)


def test_the_run_folder_and_its_choices_are_printed_before_any_work(make_cfg, tmp_path: Path, capsys) -> None:
    train(make_cfg("+trainer.fast_dev_run=true", "model.base=8"))
    out = capsys.readouterr().out
    head = out[: out.index("run folder:") + 400]
    assert f"run folder: {tmp_path / 'run'}" in head and "model SiameseUNet base 8" in head and "seed 42" in head
    assert out.index("run folder:") < out.index("test:")  # at the start, and again in the summary


def test_fp16_request_falls_back_on_cpu(make_cfg, capsys) -> None:
    cfg = make_cfg("+trainer.fast_dev_run=true", "trainer.precision=16-mixed", "model.base=8")
    results = train(cfg)
    expected = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    assert cfg.trainer.precision == expected
    assert f"using {expected}" in capsys.readouterr().err
    assert all(v == v for v in results["test"].values())  # no NaN


@pytest.mark.parametrize(
    "override", ["model.fusion=diff", "optimizer.lr=0.01", "seed=3", "scheduler=none", "data.num_workers=2"]
)
def test_user_overrides_reach_the_run(make_cfg, tmp_path: Path, override: str) -> None:
    results = train(make_cfg("+trainer.fast_dev_run=true", override))
    key, value = override.split("=")
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert str(OmegaConf.select(saved, key)) == value or (key == "scheduler" and not saved.scheduler)
    assert "test/F1" in results["test"]


def test_csv_logger_writes_metrics(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("logger=csv"))
    header = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/F1", "test/F1", "train/loss_epoch"} <= set(header)


def test_early_stopping_stops(make_cfg, tmp_path: Path) -> None:
    # At lr 0 the score never improves, so patience 1 ends a 6-epoch run after 2 epochs.
    overrides = ["callbacks=early_stopping", "callbacks.early_stopping.patience=1", "optimizer.lr=0", "logger=csv"]
    train(make_cfg(*overrides, "trainer.max_epochs=6", "scheduler=none"))
    rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = {r.split(",")[header.index("epoch")] for r in rows[1:] if r.split(",")[header.index("train/loss_epoch")]}
    assert len(epochs) == 2


def test_sample_panels_show_a_validation_split_of_mixed_sizes_under_a_half_precision(tmp_path: Path) -> None:
    """The panels ran the validation samples as one stack in float32: a split of mixed sizes
    (data.eval_batch_size=1) and bf16-true weights each crashed the run after its first epoch."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, sizes in (("train", [(40, 40)] * 4), ("val", [(32, 48), (40, 40)])):
        for i, (h, w) in enumerate(sizes):
            for folder in ("A", "B"):
                path = tmp_path / "data" / split / folder / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            label = tmp_path / "data" / split / "label" / f"{i}.png"
            label.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.choice(np.array([0, 255], np.uint8), (h, w))).save(label)
    overrides = tiny_overrides(tmp_path / "data", tmp_path / "run")
    options = ["data.batch_size=2", "data.eval_batch_size=1", "trainer.precision=bf16-true", "test=false"]
    results = train(compose_train(*overrides, *options))
    assert Path(results["best_checkpoint"]).is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert len(acc.Images("val/samples")) == 1


def test_a_run_without_loggers_or_sample_panels_trains(make_cfg, tmp_path: Path) -> None:
    from cdseg.errors import ConfigError
    from cdseg.overrides import check_overrides

    results = train(make_cfg("~logger", out=tmp_path / "quiet"))  # no LearningRateMonitor without a logger
    assert Path(results["best_checkpoint"]).is_file() and not (tmp_path / "quiet" / "tensorboard").exists()
    results = train(make_cfg("callbacks.sample_panels.num_samples=0", out=tmp_path / "panels"))
    assert Path(results["best_checkpoint"]).is_file()
    with pytest.raises(ConfigError, match="num_samples must be an integer >= 0, got -1"):
        train(make_cfg("callbacks.sample_panels.num_samples=-1", out=tmp_path / "bad"))
    with pytest.raises(
        ConfigError, match=r"logger=null: a group takes one of its options \(csv, tensorboard\); .* ~logger"
    ):
        check_overrides(ROOT / "conf", "train", ["logger=null"])


def test_debug_trainer_limits_batches(make_cfg) -> None:
    results = train(make_cfg("trainer=debug"))
    ckpt = torch.load(Path(results["output_dir"]) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["epoch"] == 0


def test_levir_seed_experiment_composes_the_tutorial_recipe() -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=levir_seed", "data.root=/x"])
    assert cfg.data.root == "/x" and cfg.data.resize == 512 and cfg.data.crop_size is None
    assert cfg.data.batch_size == 8 and cfg.data.hflip == 0.5 and cfg.data.vflip == 0
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (3e-4, 1e-4)
    assert not cfg.scheduler and cfg.trainer.max_epochs == 20 and cfg.trainer.precision == "16-mixed"
    assert cfg.model.base == 32


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_levir_without_root_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli("data=levir", cwd=tmp_path)
    assert proc.returncode == 1
    assert "missing required value(s): data.root" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_model_option_is_a_clear_error(tiny_data: Path, tmp_path: Path) -> None:
    proc = run_cli(*tiny_overrides(tiny_data, tmp_path / "run"), "model.fusion=sum", cwd=tmp_path)
    assert proc.returncode == 1
    assert "model.fusion must be one of" in proc.stderr and "Traceback" not in proc.stderr


def test_multirun_makes_one_folder_per_job_and_ends_with_a_summary(tiny_data: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides(tiny_data, tmp_path) if not o.startswith(("paths.", "model.base"))]
    proc = run_cli(
        "-m",
        "model.base=2,0",  # base 0 is refused: those jobs fail, the others run
        "seed=0,1",
        *overrides,
        "+trainer.fast_dev_run=true",
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "error: 2 job(s) failed" in proc.stderr, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"), key=lambda j: int(j.name))
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    ok = [j for j in jobs if "model.base=2" in OmegaConf.load(j / ".hydra" / "overrides.yaml")]
    assert len(ok) == 2 and all((j / "metrics.json").exists() for j in ok)
    failed = [j for j in jobs if j not in ok]
    assert all("model.base" in (j / "failed.txt").read_text() for j in failed)
    for job in ok:  # each job's log file holds what its console showed
        log = (job / "train.log").read_text()
        assert f"run folder: {job}" in log and "GPU available" in log and " test: F1" in log
    said = proc.stdout + proc.stderr  # what is not about the run is not said
    assert "Tip:" not in said and "LeafSpec" not in said and "GPU available" in said

    # The summary: a row per job, a row per setting with the mean and sd over its seeds.
    rows = list(csv.DictReader((tmp_path / "sweep" / "summary.csv").read_text().splitlines()))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    for row, job in zip(rows, jobs, strict=True):
        if job in ok:
            test = json.loads((job / "metrics.json").read_text())["test"]
            assert row["status"] == "ok" and float(row["test/F1"]) == pytest.approx(test["test/F1"])
        else:
            assert row["status"].startswith("failed: ") and "model.base" in row["status"]
    settings = list(csv.DictReader((tmp_path / "sweep" / "summary_settings.csv").read_text().splitlines()))
    (good,) = [s for s in settings if "model.base=2" in s["setting"]]
    f1s = [json.loads((j / "metrics.json").read_text())["test"]["test/F1"] for j in ok]
    assert (int(good["jobs"]), int(good["failed"])) == (2, 0) and "seed=" not in good["setting"]
    assert float(good["test/F1 mean"]) == pytest.approx(sum(f1s) / 2)
    assert float(good["test/F1 sd"]) == pytest.approx(abs(f1s[0] - f1s[1]) / 2**0.5)
    (bad,) = [s for s in settings if "model.base=0" in s["setting"]]
    assert (int(bad["jobs"]), int(bad["failed"])) == (2, 2)
    assert "| setting | jobs | failed |" in proc.stdout and (tmp_path / "sweep" / "summary.md").is_file()
    # What every job shares is said once; the best job is chosen on validation.
    assert f"overrides of every job: {' '.join(overrides)}" in proc.stdout
    best = max((r for r in rows if r["status"] == "ok"), key=lambda r: float(r["val/F1"]))  # first of equals
    assert f"best job by val/F1 (max): {best['job']}," in proc.stdout
    # The same sweep folder again: refused before a job starts, the first sweep's results untouched.
    summary = (tmp_path / "sweep" / "summary.csv").read_text()
    again = run_cli("-m", "seed=5", *overrides, f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert again.returncode == 1 and "holds an earlier sweep's jobs and their results" in again.stderr
    assert (tmp_path / "sweep" / "summary.csv").read_text() == summary and not (jobs[0] / "failed.txt").exists()


def test_an_optuna_search_maximises_val_f1_and_ends_with_the_summary(tiny_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    overrides = [o for o in tiny_overrides(tiny_data, tmp_path) if not o.startswith("paths.")]
    sweep = tmp_path / "search"
    proc = run_cli(
        "hparams_search=recipe",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'search.db'}",  # the study kept in a database
        *overrides,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert [r["job"] for r in rows] == ["0", "1"] and all(r["status"] == "ok" for r in rows)
    values = []
    for row in rows:  # each trial: its sampled recipe, trained, its metrics in the table
        folder = Path(row["folder"])
        cfg = OmegaConf.load(folder / "config.yaml")
        assert 1e-4 <= cfg.optimizer.lr <= 1e-2 and 1.0 <= cfg.loss.pos_weight <= 6.0
        assert f"optimizer.lr={cfg.optimizer.lr}" in row["overrides"]
        val = json.loads((folder / "metrics.json").read_text())["val"]
        assert float(row["val/F1"]) == pytest.approx(val["val/F1"])
        values.append(val["val/F1"])
    assert rows[0]["overrides"] != rows[1]["overrides"]
    result = OmegaConf.load(sweep / "optimization_results.yaml")  # what Optuna maximised: val/F1
    assert result.best_value == pytest.approx(max(values))
    assert (tmp_path / "search.db").stat().st_size > 0
    # Resuming a trial trains that trial on, as one run: not a new search of n_trials runs.
    trial = Path(rows[0]["folder"])
    lr = OmegaConf.load(trial / "config.yaml").optimizer.lr
    proc = run_cli(f"ckpt_path={trial}", "trainer.max_epochs=2", "extend_schedule=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Launching" not in proc.stdout + proc.stderr and sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        "0",
        "1",
    ]
    last = torch.load(trial / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1 and OmegaConf.load(trial / "config.yaml").optimizer.lr == lr  # the trial's recipe


def test_a_search_without_its_extra_names_the_install(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u, sys, runpy; real = u.find_spec; "
        "u.find_spec = lambda n, *a: None if n.startswith('hydra_plugins.hydra_optuna') else real(n, *a); "
        f"sys.argv = ['train.py', 'hparams_search=recipe']; runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        'error: hparams_search=recipe needs the sweep extra: pip install "cdseg[sweep]"'
    ]


def test_tiny_run_beats_the_classical_baseline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(data, SyntheticSpec(size=64, train=96, val=16, test=32, seed=7))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *tiny_overrides(data, tmp_path / "run"),
                "data.crop_size=null",
                "model.base=8",
                "trainer.max_epochs=10",
                "optimizer.lr=3e-3",
            ],
        )
    f1 = train(cfg)["test"]["test/F1"]
    base = baseline(str(data), "test")["F1"]
    print(f"trained F1 {f1:.3f} vs change-vector + Otsu F1 {base:.3f}")
    assert f1 > base + 0.15


def test_the_documented_distributed_options_compose() -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "trainer.sync_batchnorm=true"],
        )
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.sync_batchnorm) == (
        "ddp",
        4,
        2,
        True,
    )


@pytest.mark.parametrize("data", ["synthetic", "levir"])
def test_every_documented_data_option_can_be_overridden(data: str) -> None:
    overrides = [
        f"data={data}",
        "data.root=/x",
        "data.resize=512",
        "data.crop_size=256",
        "data.swap=0.5",
        "data.color_jitter={brightness:0.2}",
        "data.dirs={a:im1,b:im2,label:OUT}",
        "data.extensions=[.tif]",
        "data.splits={val:valid}",
        "data.mean=null",
        "data.eval_batch_size=1",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.data.dirs.a == "im1" and cfg.data.resize == 512 and cfg.data.mean is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epoch=5", "trainer.max_epoch"),
        ("data.root=~/LEVIR-CD", r"Hydra cannot read it: write data.root=\$HOME/LEVIR-CD"),
        ("trainer.limit_train_batches=2", r"not in the config, but lightning.Trainer takes it: add it with \+trainer"),
        ("data.batch_size=abc", "data.batch_size must be an integer >= 1, got 'abc'"),
        ("data.hflip=2", r"data.hflip must be a probability in \[0, 1\], got 2"),
        ("trainer.max_epochs=ten", "trainer.max_epochs must be an integer or null, got 'ten'"),
        ("model.base=abc", "model.base must be an integer, got 'abc'"),
        ("trainer.precision=fp16", "trainer.precision must be one of .*'16-mixed'.*, got 'fp16'"),
    ],
)
def test_bad_configuration_exits_1_naming_the_key(tiny_data: Path, tmp_path: Path, override: str, message: str) -> None:
    proc = run_cli(*tiny_overrides(tiny_data, tmp_path / "run"), override, cwd=tmp_path)
    assert proc.returncode == 1
    assert re.search(message, proc.stderr) and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder behind


def test_a_run_refused_for_its_data_leaves_no_folder_but_keeps_other_runs(tiny_data: Path, tmp_path: Path) -> None:
    data, runs = tmp_path / "data", tmp_path / "runs"
    shutil.copytree(tiny_data, data)
    (data / "train" / "B" / "train_0000.png").unlink()
    (runs / "2026-01-01" / "10-00-00").mkdir(parents=True)  # an earlier run of the same day stays
    overrides = [o for o in tiny_overrides(data, tmp_path) if not o.startswith("paths.")]
    proc = run_cli(
        *overrides, f"paths.runs_dir={runs}", "hydra.run.dir=" + str(runs / "2026-01-01" / "10-00-01"), cwd=tmp_path
    )
    assert proc.returncode == 1 and "missing from B" in proc.stderr
    assert [p.relative_to(runs).as_posix() for p in sorted(runs.rglob("*"))] == ["2026-01-01", "2026-01-01/10-00-00"]


def test_help_offers_only_real_group_options(tmp_path: Path) -> None:
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "data: levir, synthetic\n" in proc.stdout and "_datamodule" not in proc.stdout
    for script in (["predict.py"], ["-m", "cdseg.export"]):  # train.py's groups are not theirs to offer
        proc = subprocess.run(
            [sys.executable, *script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and "ckpt_path:" in proc.stdout and "model: " not in proc.stdout


def test_a_named_run_keeps_its_time_and_its_tags(tiny_data: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides(tiny_data, tmp_path) if not o.startswith("paths.")]
    runs = tmp_path / "runs"
    proc = run_cli(
        *overrides, "+trainer.fast_dev_run=true", f"paths.runs_dir={runs}", "name=wide-lr", "tags=[a,b]", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = runs.glob("*/*")
    assert re.fullmatch(r"\d\d-\d\d-\d\d_wide-lr", run.name) and OmegaConf.load(run / "config.yaml").tags == ["a", "b"]
    bad = run_cli(*overrides, f"paths.runs_dir={runs}", "name=../up", cwd=tmp_path)
    assert bad.returncode == 1 and "name must start with a letter or digit" in bad.stderr
    assert list(runs.glob("*/*")) == [run]  # the refused run left nothing


def test_a_refused_run_never_removes_a_folder_that_held_something_before(tiny_data: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    os.utime(mine / "notes.txt", (1_700_000_000, 1_700_000_000))  # written long before this run
    overrides = [o for o in tiny_overrides(tiny_data, mine) if not o.startswith("paths.")]
    proc = run_cli(*overrides, f"paths.output_dir={mine}", "data.hflip=2", cwd=tmp_path)
    assert proc.returncode == 1 and "data.hflip must be a probability" in proc.stderr
    assert (mine / "notes.txt").read_text() == "kept"


def test_the_summary_keeps_an_override_with_spaces_whole(tmp_path: Path) -> None:
    for job, brightness in (("0", 0.2), ("1", 0.3)):  # two finished jobs, as Hydra and train.py leave them
        (tmp_path / job / ".hydra").mkdir(parents=True)
        overrides = ["model.base=8", f"data.color_jitter={{brightness: {brightness}}}", "seed=0"]
        OmegaConf.save(OmegaConf.create(overrides), tmp_path / job / ".hydra" / "overrides.yaml")
        metrics = {"val": {"val/F1": brightness}, "test": {"test/F1": 0.1}}
        (tmp_path / job / "metrics.json").write_text(json.dumps(metrics))
    text, failed = write_summary(tmp_path)
    assert failed == 0 and "overrides of every job: model.base=8 seed=0" in text
    assert "| 1 | data.color_jitter={brightness: 0.3} | 0.3000 |" in text
    assert "best job by val/F1 (max): 1, val/F1 0.3000" in text
    assert "| 0.3000 (one run) |" in text and "± 0.0000" not in text  # one run a setting: no spread to give
    rows = list(csv.DictReader((tmp_path / "summary.csv").read_text().splitlines()))
    assert (
        rows[0]["overrides"] == "model.base=8 data.color_jitter={brightness: 0.2} seed=0"
        and "_overrides" not in rows[0]
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimized_metric=val/f1"], r"optimized_metric must be one of \['val/loss', 'val/F1'"),
        (["optimized_metric=val/loss"], "val/loss is a loss, set optimized_mode=min"),
        (["threshold=abc"], r"threshold must be a number in \(0, 1\), got 'abc'"),
        (["threshold=1.5"], r"threshold must be a number in \(0, 1\), got 1.5"),
        (["calibrate=maybe"], "calibrate must be true or false, got 'maybe'"),
        (["seed=null"], "seed must be an integer from 0 to 4294967295, got None"),
        (
            ["trainer.max_epochs=-1", "+trainer.max_steps=4"],
            r"scheduler.T_max .* got -1; .* use scheduler=warmup_cosine",
        ),
        (
            ["+trainer.check_val_every_n_epoch=null", "+trainer.val_check_interval=2", "+trainer.max_steps=5"],
            r"max_steps=5 \(x accumulate_grad_batches=1: 5 batches\) does not end on a validation .* last 1 batches",
        ),
        (
            ["+trainer.val_check_interval=3", "+trainer.accumulate_grad_batches=2"],
            "val_check_interval=3 is not a multiple of trainer.accumulate_grad_batches=2",
        ),
        (["model=tiny", "model.base=1"], "model.base must be an integer >= 2, got 1"),
        (["optimizer.lr=-1"], "optimizer: Invalid learning rate: -1"),
        (
            ["scheduler=warmup_cosine", "scheduler.warmup_steps=2", "+trainer.max_steps=100"],
            r"schedule plans 100 optimizer steps .* trainer.max_epochs=1 ends the run after 3 \(3 an epoch\)",
        ),
        (["model.in_channels=4"], "model.in_channels must be 3: training reads every image as three bands"),
        (["model=tiny", "model.in_channels=1"], "model.in_channels must be 3"),
        (["loss.dice_weight=-1"], "loss.dice_weight must be a number >= 0, got -1"),
        (["loss.pos_weight=-1"], r"loss.pos_weight must be a number > 0 or null, got -1"),
        (["loss.pos_weight=0"], r"loss.pos_weight must be a number > 0 or null, got 0"),
        (
            ["data.dirs={a: A, b: A}"],
            "data.dirs must name a different folder for each of a, b, label: a and b read 'A'",
        ),
    ],
)
def test_options_that_would_fail_late_or_train_wrongly_are_refused_at_once(
    make_cfg, tmp_path: Path, overrides: list[str], message: str
) -> None:
    from cdseg.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*overrides))
    assert not list((tmp_path / "run").glob("**/*.ckpt"))


def test_a_run_that_would_not_end_on_a_validation_is_refused_once_its_epochs_are_known(
    make_cfg, tmp_path: Path
) -> None:
    from cdseg.errors import ConfigError

    by_steps = ["+trainer.check_val_every_n_epoch=null", "+trainer.val_check_interval=5", "trainer.max_epochs=1"]
    with pytest.raises(
        ConfigError, match=r"is 3 batches long \(trainer.max_epochs=1 x 3 batches an epoch\): it would never"
    ):
        train(make_cfg(*by_steps))  # 24 pairs at batch 8: 3 batches, never reaching validation's 5
    assert not list((tmp_path / "run").glob("**/*.ckpt"))
    # Validation counting epochs: Lightning's own ValueError from inside its loop, named by the keys.
    with pytest.raises(
        ConfigError,
        match=r"val_check_interval=5 batches is longer than an epoch \(3 batches\) while trainer.check_val_every_n_epoch=1",
    ):
        train(make_cfg("+trainer.val_check_interval=5", f"paths.output_dir={tmp_path / 'by_epochs'}"))
    results = train(make_cfg(*by_steps, "trainer.max_epochs=5"))  # 15 batches: validated at 5, 10 and 15
    assert Path(results["best_checkpoint"]).is_file()
    accumulated = [
        "+trainer.check_val_every_n_epoch=null",
        "+trainer.val_check_interval=2",
        "+trainer.accumulate_grad_batches=2",
    ]
    with pytest.raises(
        ConfigError, match="an epoch of 3 batches is not a multiple of trainer.accumulate_grad_batches=2"
    ):
        # batch 4 would validate in the middle of step 2
        train(make_cfg(*accumulated, "trainer.max_epochs=2", f"paths.output_dir={tmp_path / 'accumulated'}"))


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU")
def test_trainer_gpu_without_a_gpu_is_refused_saying_so(make_cfg) -> None:
    from cdseg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"trainer.accelerator=gpu \(trainer=gpu\) needs a GPU"):
        train(make_cfg("trainer=gpu", "trainer.accelerator=gpu"))


@pytest.mark.parametrize(
    ("epochs", "steps", "max_time", "said"),
    [
        (12, -1, None, "12 epochs"),
        (1, None, None, "1 epoch"),
        (-1, 500, None, "500 steps"),
        (12, 500, None, "500 steps or 12 epochs, whichever comes first"),
        (-1, -1, None, "no epoch or step limit"),
        (None, -1, None, "1000 epochs"),  # Lightning's default when nothing else ends the run
        (None, -1, "00:12:00:00", "max_time 00:12:00:00"),  # a time limit lifts that default
        (None, 500, None, "500 steps"),
        (3, -1, "00:01:00:00", "3 epochs or max_time 00:01:00:00, whichever comes first"),
    ],
)
def test_the_start_line_gives_the_run_length_the_trainer_reads(epochs, steps, max_time, said):
    assert _run_length(epochs, steps, max_time) == said


class LogsThroughTheLogger(L.Callback):
    """A common pattern in Lightning callbacks: no check that a logger is there."""

    def __init__(self) -> None:
        self.calls = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.logger.experiment.add_scalar("mine/calls", self.calls, trainer.global_step)
        self.calls += 1


def test_a_callback_that_logs_through_the_logger_runs_through_the_final_validation(make_cfg) -> None:
    cfg = make_cfg("+callbacks.mine._target_=tests.test_train.LogsThroughTheLogger")
    results = train(cfg)
    assert results["val"]["val/F1"] >= 0 and "test" in results
