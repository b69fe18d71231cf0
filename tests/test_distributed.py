"""Lightning's DDP on CPU (2 processes, gloo) scores an uneven split exactly like one process."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate

from cdseg.data import ChangeDetectionDataModule
from cdseg.data.sampler import SeededSampler
from cdseg.data.synthetic import SyntheticSpec, generate
from cdseg.inference.checkpoint import load_checkpoint
from cdseg.module import ChangeDetectionModule
from cdseg.runs.checkpoint import read_checkpoint
from tests.conftest import ROOT, tiny_overrides

SCORES = ("F1", "IoU", "precision", "recall", "OA", "kappa")


def test_ddp_metrics_equal_single_process_on_7_images(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(data, SyntheticSpec(size=48, train=8, val=7, test=7, seed=3))
    args = [*tiny_overrides(data, tmp_path / "run"), "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    args += [f"paths.runs_dir={tmp_path}"]  # Hydra's own folder too, not under the project's outputs/
    args += ["data.eval_batch_size=2", "model.base=8", "trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "run" / "metrics.json").read_text())

    # The same checkpoint, scored by one process over the whole split.
    net, config = load_checkpoint(ddp["best_checkpoint"])
    module = ChangeDetectionModule(net, instantiate(config["loss"]), None, threshold=config["threshold"])
    dm = ChangeDetectionDataModule(str(data), batch_size=8, eval_batch_size=3)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False
    )
    single_val = trainer.validate(module, datamodule=dm, verbose=False)[0]
    single_test = trainer.test(module, datamodule=dm, verbose=False)[0]
    for k in SCORES:
        assert ddp["val"][f"val/{k}"] == pytest.approx(single_val[f"val/{k}"], abs=1e-7), k
        assert ddp["test"][f"test/{k}"] == pytest.approx(single_test[f"test/{k}"], abs=1e-7), k
    # The loss of the split, at batch 2 on each of two ranks and at batch 3 in one process.
    assert ddp["val"]["val/loss"] == pytest.approx(single_val["val/loss"], rel=1e-5)
    assert ddp["test"]["test/loss"] == pytest.approx(single_test["test/loss"], rel=1e-5)


def test_ddp_ranks_stop_at_the_same_step_when_one_is_interrupted(tmp_path: Path) -> None:
    # Only rank 1 gets the signal; rank 0, which writes the checkpoint, must stop after the same batch
    # (a rank left behind would wait forever in the next gradient all-reduce).
    data = tmp_path / "data"
    generate(data, SyntheticSpec(size=48, train=48, val=4, test=0, seed=3))  # 3 steps an epoch
    args = [*tiny_overrides(data, tmp_path / "run"), "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    args += [f"paths.runs_dir={tmp_path}"]  # Hydra's own folder too, not under the project's outputs/
    args += ["trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0"]
    args += [
        "+callbacks.kill._target_=tests.test_reliability.SignalAt",
        "+callbacks.kill.step=1",
        "+callbacks.kill.rank=1",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "interrupted at epoch 0, step 2" in proc.stderr, proc.stderr[-1500:]
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "interrupted.ckpt")["global_step"] == 2


@pytest.mark.parametrize(("length", "world"), [(1, 4), (3, 8), (10, 4)])
def test_a_split_smaller_than_the_world_still_gives_every_rank_its_steps(length: int, world: int) -> None:
    ranks = [list(SeededSampler(length, shuffle=True, seed=0, rank=r, world_size=world)) for r in range(world)]
    assert all(
        len(items) == len(SeededSampler(length, True, 0, r, world)) == -(-length // world)
        for r, items in enumerate(ranks)
    )
    seen = {index for items in ranks for index, _ in items}
    assert seen == set(range(length))  # padding repeats samples, never drops one


def test_a_local_sweep_of_ddp_jobs_is_refused_at_once(tiny_data: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *tiny_overrides(tiny_data, tmp_path / "unused")]
    cmd += [f"paths.runs_dir={tmp_path}", "trainer=ddp", "model.base=4,8"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: a -m sweep of DDP jobs (2 processes each)" in proc.stderr
    assert not list(tmp_path.glob("**/*.ckpt"))
