"""Resuming is exact wherever the run stopped, keeps the run's best checkpoint, and runs with the same
seed are identical."""

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from cdseg.errors import ConfigError
from cdseg.runs.checkpoint import CheckpointError
from cdseg.runs.folder import checkpoint_to_evaluate, checkpoint_to_resume
from cdseg.runs.interrupt import TrainingInterrupted
from cdseg.runs.resume import RunCheckpoint, check_resumable, config_changes, merge_overrides, resume_args
from tests.conftest import ROOT, compose_train, tiny_overrides
from train import train

# 24 training pairs in batches of 8: 3 steps an epoch.
COMMON = ("trainer.max_epochs=3", "data.swap=0.5", "data.color_jitter={brightness:0.3}")


def run(data: Path, out: Path, *overrides: str) -> dict:
    """Train; return the run folder's last.ckpt (a resumed run continues in its own folder)."""
    results = train(compose_train(*tiny_overrides(data, out), "callbacks.progress_bar.refresh_rate=0", *overrides))
    return load(Path(results["output_dir"]) / "checkpoints" / "last.ckpt")


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def best_state(ckpt: dict) -> tuple[float, str]:
    """The best-epoch ModelCheckpoint's score and file name, as the checkpoint carries them."""
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint{'monitor': 'val/F1'")]
    return float(state["best_model_score"]), Path(state["best_model_path"]).name


def assert_same_state(a: dict, b: dict) -> None:
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for sa, sb in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(), strict=True
    ):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert best_state(a) == best_state(b)


class SignalAt(L.Callback):
    """Sends this process ``signum`` as the batch of global step ``step`` starts, as Ctrl-C or a scheduler
    would; with ``rank``, only that rank's process gets it."""

    def __init__(
        self,
        step: int = 0,
        signum: int = signal.SIGINT,
        rank: int | None = None,
        group: bool = False,
        times: int = 1,
        when: str = "train",
    ) -> None:
        self.step, self.signum, self.rank, self.group, self.times, self.when = step, signum, rank, group, times, when
        self.sent = False

    def _send(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank) and not self.sent:
            self.sent = True
            for _ in range(self.times):
                if self.group:  # the whole process group, loader workers included, as a terminal's Ctrl-C
                    os.killpg(os.getpgid(0), self.signum)
                else:
                    os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if self.when == "train":
            self._send(trainer)

    def on_test_batch_start(self, trainer: L.Trainer, *args) -> None:
        if self.when == "test":
            self._send(trainer)


@pytest.fixture(scope="module")
def straight(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run every resumed run must equal."""
    return run(tiny_data, tmp_path_factory.mktemp("straight"), *COMMON)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_at_an_epoch_boundary_equals_an_uninterrupted_run(
    tiny_data: Path, tmp_path: Path, straight: dict, workers: int
) -> None:
    loader = f"data.num_workers={workers}"  # may differ between the two halves: it changes no sample
    run(tiny_data, tmp_path, *COMMON, loader, "+trainer.max_steps=3")  # stops after epoch 0
    resumed = run(tiny_data, tmp_path / "elsewhere", *COMMON, loader, f"ckpt_path={tmp_path}")
    assert_same_state(straight, resumed)


@pytest.mark.parametrize(
    ("step", "signum", "workers", "stopped_at"),
    [
        (4, signal.SIGINT, 0, 5),  # in the middle of epoch 1
        (5, signal.SIGTERM, 2, 6),  # on epoch 1's last batch: it stops once the epoch's validation is done
    ],
)
def test_resume_after_an_interrupt_mid_epoch_equals_an_uninterrupted_run(
    tiny_data: Path, tmp_path: Path, straight: dict, step: int, signum: int, workers: int, stopped_at: int
) -> None:
    handler = signal.getsignal(signum)
    kill = [
        f"+callbacks.kill._target_={__name__}.SignalAt",
        f"+callbacks.kill.step={step}",
        f"+callbacks.kill.signum={signum}",
    ]
    with pytest.raises(TrainingInterrupted, match=f"step {stopped_at}; saved .*interrupted.ckpt") as info:
        run(tiny_data, tmp_path, *COMMON, f"data.num_workers={workers}", *kill)
    assert info.value.signum == signum
    assert signal.getsignal(signum) is handler, "the signal handler was not restored"
    saved = load(tmp_path / "checkpoints" / "interrupted.ckpt")
    assert saved["global_step"] == stopped_at
    resumed = run(tiny_data, tmp_path, *COMMON, f"data.num_workers={workers}", f"ckpt_path={tmp_path}")
    assert_same_state(straight, resumed)
    assert not (tmp_path / "checkpoints" / "interrupted.ckpt").exists(), "a finished run keeps a stale resume point"


def test_a_model_with_dropout_resumes_exactly(tiny_data: Path, tmp_path: Path) -> None:
    # Dropout draws from the global generator, which is seeded for each batch, not saved in the checkpoint.
    fc = (*COMMON, "model=fc_siam_diff", "model.base=4")
    straight = run(tiny_data, tmp_path / "straight", *fc)
    kill = [f"+callbacks.kill._target_={__name__}.SignalAt", "+callbacks.kill.step=4"]
    with pytest.raises(TrainingInterrupted, match="step 5; saved"):
        run(tiny_data, tmp_path / "run", *fc, *kill)
    assert_same_state(straight, run(tiny_data, tmp_path / "run", *fc, f"ckpt_path={tmp_path / 'run'}"))


def test_an_interrupt_while_accumulating_gradients_waits_for_the_optimizer_step(
    tiny_data: Path, tmp_path: Path
) -> None:
    # Batches of 4 accumulated in pairs: 6 batches and 3 optimizer steps an epoch. The signal comes
    # during batch 0, whose gradients a checkpoint could not hold, so the run stops after batch 1.
    accumulate = (*COMMON, "trainer.max_epochs=2", "data.batch_size=4", "+trainer.accumulate_grad_batches=2")
    straight = run(tiny_data, tmp_path / "straight", *accumulate)
    kill = [f"+callbacks.kill._target_={__name__}.SignalAt", "+callbacks.kill.step=0"]
    with pytest.raises(TrainingInterrupted, match="epoch 0, step 1; saved"):
        run(tiny_data, tmp_path / "run", *accumulate, *kill)
    assert_same_state(straight, run(tiny_data, tmp_path / "run", *accumulate, f"ckpt_path={tmp_path / 'run'}"))


def test_resume_from_a_step_checkpoint_equals_an_uninterrupted_run(
    tiny_data: Path, tmp_path: Path, straight: dict
) -> None:
    # last.ckpt every 2 steps; max_steps=4 stops one batch into epoch 1, as a killed job would leave it.
    run(tiny_data, tmp_path, *COMMON, "callbacks.last_checkpoint.every_n_train_steps=2", "+trainer.max_steps=4")
    assert load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert_same_state(straight, run(tiny_data, tmp_path, *COMMON, f"ckpt_path={tmp_path}"))


@pytest.mark.parametrize("moved", [False, True])
def test_resuming_keeps_the_best_checkpoint_and_its_score(tiny_data: Path, tmp_path: Path, moved: bool) -> None:
    # At lr 0 every epoch scores the same as epoch 0, so epoch 0 must stay the best: a resumed run
    # that forgot the score would take its first epoch as a new best.
    frozen = ("optimizer.lr=0", "scheduler=none")
    first = run(tiny_data, tmp_path / "run", *frozen, "trainer.max_epochs=1")
    folder = tmp_path / "run"
    if moved:  # e.g. copied back from a cluster: Lightning alone would drop the score
        folder = (tmp_path / "run").rename(tmp_path / "moved")
    resumed = run(tiny_data, tmp_path / "x", *frozen, "trainer.max_epochs=3", f"ckpt_path={folder}")
    assert resumed["epoch"] == 2
    assert best_state(resumed) == best_state(first)
    assert [p.name for p in (folder / "checkpoints").glob("best-*")] == ["best-epoch000.ckpt"]
    best = Path(json.loads((folder / "metrics.json").read_text())["best_checkpoint"])
    assert best == (folder / "checkpoints" / "best-epoch000.ckpt").resolve()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("model.base=8", r"model.base \(run: 4, now: 8\).*add: model.base=4"),
        ("+trainer.accumulate_grad_batches=2", r"trainer.accumulate_grad_batches \(run: '<absent>', now: 2\)"),
        ("trainer.devices=2", r"trainer.devices \(run: 1, now: 2\).*add: trainer.devices=1"),
    ],
)
def test_resume_under_other_settings_is_refused_naming_them(
    tiny_data: Path, tmp_path: Path, change: str, message: str
) -> None:
    run(tiny_data, tmp_path, "trainer.max_epochs=1")
    with pytest.raises(CheckpointError, match=message):
        run(tiny_data, tmp_path, "trainer.max_epochs=1", change, f"ckpt_path={tmp_path}")


def test_the_refusal_restores_a_mapping_the_new_config_has_as_null() -> None:
    # A run of experiment=levir_opencd (per-date jitter, a mapping) resumed under experiment=levir
    # (jitter null): data.color_jitter.brightness=0.3 alone cannot be set under a null.
    def config(*overrides: str) -> dict:
        return OmegaConf.to_container(compose_train(*overrides, "data.root=/x", "paths.output_dir=/x"), resolve=True)

    recorded = config("experiment=levir_opencd")
    with pytest.raises(CheckpointError) as refused:
        check_resumable(Path("run.ckpt"), recorded, config("experiment=levir"))
    fix = re.search(r"\(add: (.*?)\), or resume_strict", str(refused.value)).group(1)
    assert "data.color_jitter={" in fix and "data.color_jitter." not in fix and "loss.pos_weight=null" in fix
    assert check_resumable(Path("run.ckpt"), recorded, config("experiment=levir", *shlex.split(fix))) == []


def test_resuming_cannot_switch_the_weight_average_on_or_off() -> None:
    def config(*overrides: str) -> dict:
        return OmegaConf.to_container(compose_train(*overrides, "data.root=/x", "paths.output_dir=/x"), resolve=True)

    recorded = config("callbacks=ema")  # its checkpoints hold the average as the model's weights
    with pytest.raises(
        CheckpointError, match=r"callbacks.ema._target_ \(run: 'cdseg.callbacks.EMA', now: '<absent>'\)"
    ):
        check_resumable(Path("run.ckpt"), recorded, config())
    with pytest.raises(CheckpointError, match=r"callbacks.ema.decay \(run: 0.999, now: 0.99\)"):
        check_resumable(Path("run.ckpt"), recorded, config("callbacks=ema", "callbacks.ema.decay=0.99"))
    assert check_resumable(Path("run.ckpt"), recorded, config("callbacks=ema", "~callbacks.sample_panels")) == []


def test_resume_strict_false_resumes_under_changed_settings_with_a_warning(
    tiny_data: Path, tmp_path: Path, capsys
) -> None:
    run(tiny_data, tmp_path, "trainer.max_epochs=1", "scheduler=none")
    changed = ("scheduler=none", "+trainer.gradient_clip_val=1.0", "resume_strict=false")
    assert run(tiny_data, tmp_path, "trainer.max_epochs=2", *changed, f"ckpt_path={tmp_path}")["epoch"] == 1
    assert "warning: resuming with a changed setting (resume_strict=false): trainer.gradient_clip_val" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("monitor", ["val/F1", None])
def test_run_checkpoints_keep_model_checkpoint_state_keys(tmp_path: Path, monitor: str | None) -> None:
    # Checkpoints written by Lightning's plain ModelCheckpoint (conf/callbacks before RunCheckpoint)
    # resume with their best score: the callback states are found under the same keys.
    options = {"monitor": monitor, "mode": "max", "every_n_train_steps": 2 if monitor is None else None}
    plain = ModelCheckpoint(dirpath=tmp_path / "checkpoints", **options)
    assert RunCheckpoint(run_dir=tmp_path, **options).state_key == plain.state_key


def test_a_lone_checkpoint_file_resumes_into_a_new_run_folder(tiny_data: Path, tmp_path: Path) -> None:
    run(tiny_data, tmp_path / "first", "trainer.max_epochs=1", "scheduler=none")
    (tmp_path / "shared").mkdir()
    lone = (tmp_path / "first" / "checkpoints" / "last.ckpt").rename(tmp_path / "shared" / "model.ckpt")
    cfg = compose_train(*tiny_overrides(tiny_data, tmp_path / "new"), "trainer.max_epochs=2", "scheduler=none")
    cfg.ckpt_path = str(lone)
    results = train(cfg)
    assert Path(results["best_checkpoint"]).parent == (tmp_path / "new" / "checkpoints").resolve()
    assert (
        Path(results["best_checkpoint"]).is_file()
        and load(tmp_path / "new" / "checkpoints" / "last.ckpt")["epoch"] == 1
    )


def test_a_gpu_mixed_precision_run_resumes_on_a_cpu(tiny_data: Path, tmp_path: Path) -> None:
    # The same command on a CPU-only machine: 16-mixed falls back there, for the run's record as for
    # this command, so it is no change of settings.
    run(tiny_data, tmp_path, "trainer.max_epochs=1", "scheduler=none")
    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = load(last)
    ckpt["hyper_parameters"]["run_config"]["trainer"]["precision"] = "16-mixed"  # as recorded on a GPU
    torch.save(ckpt, last)
    resumed = run(
        tiny_data,
        tmp_path,
        "trainer.max_epochs=2",
        "scheduler=none",
        "trainer.precision=16-mixed",
        f"ckpt_path={tmp_path}",
    )
    assert resumed["epoch"] == 1


def test_a_folder_resumes_from_its_checkpoint_with_the_most_steps_whatever_the_file_times(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 7}, folder / "interrupted.ckpt")
    torch.save({"state_dict": {}, "global_step": 6}, folder / "last.ckpt")  # written later, e.g. by a copy
    assert checkpoint_to_resume(str(tmp_path / "run"), tmp_path) == folder / "interrupted.ckpt"
    torch.save({"state_dict": {}, "global_step": 7}, folder / "last.ckpt")
    assert checkpoint_to_resume(str(tmp_path / "run"), tmp_path) == folder / "last.ckpt"  # a tie


def test_ckpt_path_last_leaves_sweep_jobs_out(tmp_path: Path) -> None:
    for run_dir in ("2026-01-01/10-00-00", "multirun/2026-01-02/10-00-00/0"):
        (tmp_path / run_dir / "checkpoints").mkdir(parents=True)
        torch.save({"state_dict": {}, "global_step": 1}, tmp_path / run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint_to_resume("last", tmp_path) == tmp_path / "2026-01-01/10-00-00/checkpoints/last.ckpt"


@pytest.mark.parametrize("spec", ["last", "nope.ckpt", "empty_folder"])
def test_a_resume_point_that_does_not_exist_is_an_error(tiny_data: Path, tmp_path: Path, spec: str) -> None:
    (tmp_path / "empty_folder").mkdir()
    cfg = compose_train(*tiny_overrides(tiny_data, tmp_path / "run"), f"paths.runs_dir={tmp_path}", f"ckpt_path={spec}")
    with pytest.raises(FileNotFoundError, match=f"ckpt_path={spec}: .*(nothing to resume|no checkpoints/last.ckpt)"):
        train(cfg)
    assert not (tmp_path / "run").exists(), "a fresh run started anyway"


def test_resume_with_ckpt_path_last_continues_the_newest_run_in_its_folder(tiny_data: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        args = (
            *tiny_overrides(tiny_data, tmp_path)[:-1],
            f"paths.runs_dir={tmp_path / 'runs'}",
            "scheduler=none",
            *args,
        )
        return subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, cwd=tmp_path
        )

    assert cli("trainer.max_epochs=1").returncode == 0
    (run_dir,) = [p.parent.parent for p in (tmp_path / "runs").glob("**/checkpoints/last.ckpt")]
    proc = cli("trainer.max_epochs=2", "ckpt_path=last")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming from {run_dir}/checkpoints/last.ckpt" in proc.stderr
    assert [p.parent.parent for p in (tmp_path / "runs").glob("**/checkpoints/last.ckpt")] == [run_dir]
    assert load(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1
    # This command's Hydra record sits beside the first run's, not over it.
    assert "- ckpt_path=" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert len(list(run_dir.glob(".hydra/resume-*/overrides.yaml"))) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_cli_run_exits_non_zero_naming_the_resume_command(
    tiny_data: Path, tmp_path: Path, signum: int
) -> None:
    # Ctrl-C in a terminal, or a job scheduler, signals the loader workers too: they must leave the stop
    # to the main process rather than die under it.
    kill = ["+callbacks.kill._target_=tests.test_reliability.SignalAt", "+callbacks.kill.step=1"]
    kill += [f"+callbacks.kill.signum={signum}", "+callbacks.kill.group=true", "data.num_workers=2"]
    args = [*tiny_overrides(tiny_data, tmp_path / "run"), "trainer.max_epochs=3", *kill, f"paths.runs_dir={tmp_path}"]
    proc = subprocess.run(  # a session of its own, so the signal does not reach pytest
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert "interrupted at epoch 0, step 2" in proc.stderr and "Traceback" not in proc.stderr
    assert f"resume with: python train.py ckpt_path={tmp_path / 'run'}" in proc.stderr


def test_a_second_ctrl_c_aborts_at_once_without_a_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    handler = signal.getsignal(signal.SIGINT)
    kill = [f"+callbacks.kill._target_={__name__}.SignalAt", "+callbacks.kill.step=1", "+callbacks.kill.times=2"]
    with pytest.raises(SystemExit) as info:  # Lightning's own KeyboardInterrupt handling
        run(tiny_data, tmp_path, *COMMON, *kill)
    assert info.value.code == 1
    assert not (tmp_path / "checkpoints" / "interrupted.ckpt").exists()
    assert signal.getsignal(signal.SIGINT) is handler


def test_sigterm_outside_training_exits_143_not_0(tiny_data: Path, tmp_path: Path) -> None:
    # During the final test pass, Lightning's own SIGTERM handling stops the run (a SystemExit with
    # no code, which would read as success to a job scheduler).
    kill = ["+callbacks.kill._target_=tests.test_reliability.SignalAt", "+callbacks.kill.when=test"]
    kill += [f"+callbacks.kill.signum={signal.SIGTERM}", "+callbacks.kill.step=3", "data.eval_batch_size=2"]
    args = [*tiny_overrides(tiny_data, tmp_path / "run"), *kill, f"paths.runs_dir={tmp_path}"]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "terminated (SIGTERM) outside training" in proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_same_seed_same_weights_and_metrics_with_two_workers(tiny_data: Path, tmp_path: Path) -> None:
    results, states = [], []
    for i in range(2):
        states.append(run(tiny_data, tmp_path / str(i), "trainer.max_epochs=2", "data.num_workers=2"))
        results.append(json.loads((tmp_path / str(i) / "metrics.json").read_text()))
    assert_same_state(states[0], states[1])
    assert results[0]["val"] == results[1]["val"] and results[0]["test"] == results[1]["test"]
    other = run(tiny_data, tmp_path / "other", "trainer.max_epochs=2", "data.num_workers=2", "seed=7")
    assert not torch.equal(other["state_dict"]["net.head.weight"], states[0]["state_dict"]["net.head.weight"])


def test_last_checkpoint_follows_every_epoch_even_without_improvement(tiny_data: Path, tmp_path: Path) -> None:
    # At lr 0 the score never improves after epoch 0, but last.ckpt must still be the latest epoch.
    last = run(tiny_data, tmp_path / "r", "trainer.max_epochs=3", "optimizer.lr=0", "scheduler=none")
    assert last["epoch"] == 2 and last["global_step"] == 9
    assert [p.name for p in sorted((tmp_path / "r" / "checkpoints").glob("best-*"))] == ["best-epoch000.ckpt"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_loader_workers_outlive_a_stop_signal(tiny_data: Path, signum: int) -> None:
    # The signal reaches the workers as well as the main process; the batches still to come must arrive.
    from cdseg.data import ChangeDetectionDataModule

    dm = ChangeDetectionDataModule(str(tiny_data), batch_size=2, num_workers=2)
    it = iter(dm.val_dataloader())  # 4 batches of the 8 validation pairs, dealt to the workers in turn
    first = [next(it), next(it)]  # one from each worker: both have started
    for worker in it._workers:
        os.kill(worker.pid, signum)
    rest = list(it)
    assert len(first) + len(rest) == 4


def test_a_resuming_command_names_only_what_it_changes(tiny_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess:
        # In a process of its own, so that no TensorBoard writer of it is still flushing afterwards.
        cmd = [sys.executable, str(ROOT / "train.py"), *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    assert cli(*tiny_overrides(tiny_data, run_dir), "trainer.max_epochs=1").returncode == 0
    # The run's data, width and length come from the run: resuming it as it is finds it finished.
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    proc = cli(f"ckpt_path={run_dir}")
    assert proc.returncode == 0 and "this run is finished (1 of 1 epochs" in proc.stderr
    assert f"ckpt_path={run_dir} trainer.max_epochs=2 extend_schedule=true" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before  # not a file added or touched

    # Longer, without saying what becomes of the cosine schedule: refused, naming the option.
    proc = cli(f"ckpt_path={run_dir}", "trainer.max_epochs=2")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "scheduler.T_max (run: 1, now: 2)" in proc.stderr and "add extend_schedule=true" in proc.stderr

    proc = cli(f"ckpt_path={run_dir}", "trainer.max_epochs=2", "extend_schedule=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the run's own overrides: " in proc.stderr
    ckpt = load(run_dir / "checkpoints" / "last.ckpt")
    config = ckpt["hyper_parameters"]["run_config"]
    assert (ckpt["epoch"], ckpt["lr_schedulers"][0]["T_max"]) == (1, 2)
    assert (config["model"]["base"], config["data"]["root"]) == (4, str(tiny_data))
    assert "trainer.max_epochs=2" in ckpt["cdseg_overrides"] and "trainer.max_epochs=1" not in ckpt["cdseg_overrides"]
    assert not any(o.startswith(("ckpt_path", "extend_schedule")) for o in ckpt["cdseg_overrides"])
    assert "this run is finished (2 of 2 epochs" in cli(f"ckpt_path={run_dir}").stderr


def test_a_run_stopped_early_is_finished_until_early_stopping_is_left_out(tiny_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "train.py"), *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    # At lr 0 the score never improves: patience 1 ends the 6-epoch run after 2 epochs.
    stop = ["callbacks=early_stopping", "callbacks.early_stopping.patience=1", "optimizer.lr=0", "scheduler=none"]
    assert cli(*tiny_overrides(tiny_data, run_dir), *stop, "trainer.max_epochs=6").returncode == 0
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    proc = cli(f"ckpt_path={run_dir}")
    assert proc.returncode == 0 and "this run was stopped early after 2 epochs (Monitored metric val/F1" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before  # not a file added or touched
    # Early stopping on another metric starts afresh (Lightning keys its state by monitor and mode).
    other = ["callbacks.early_stopping.monitor=val/loss", "callbacks.early_stopping.mode=min"]
    proc = cli(f"ckpt_path={run_dir}", *other, "trainer.max_epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 2
    proc = cli(f"ckpt_path={run_dir}", "~callbacks.early_stopping", "trainer.max_epochs=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 3


class RecordLR(L.Callback):
    """Appends the learning rate each training batch starts with to ``file``, one line per step."""

    def __init__(self, file: str) -> None:
        self.file = file

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        with open(self.file, "a") as f:
            f.write(f"{trainer.global_step} {trainer.optimizers[0].param_groups[0]['lr']!r}\n")


@pytest.mark.parametrize(
    ("schedule", "short", "long"),
    [
        ((), "trainer.max_epochs=2", "trainer.max_epochs=4"),  # cosine over epochs, T_max follows max_epochs
        (  # warmup + cosine over optimizer steps, total_steps follows max_steps
            ("scheduler=warmup_cosine", "scheduler.warmup_steps=2", "trainer.max_epochs=-1"),
            "+trainer.max_steps=5",
            "+trainer.max_steps=10",
        ),
    ],
)
def test_extend_schedule_continues_on_the_schedule_of_the_longer_run(
    tiny_data: Path, tmp_path: Path, schedule: tuple[str, ...], short: str, long: str
) -> None:
    def lrs(file: Path) -> dict[int, float]:
        return {int(s): float(v) for s, v in (line.split() for line in file.read_text().splitlines())}

    record = [f"+callbacks.lr._target_={__name__}.RecordLR"]
    straight = run(tiny_data, tmp_path / "straight", *schedule, long, *record, f"+callbacks.lr.file={tmp_path}/a")
    run(tiny_data, tmp_path / "run", *schedule, short)
    resume = (*schedule, long, f"ckpt_path={tmp_path / 'run'}")
    with pytest.raises(CheckpointError, match=r"schedule ends at its planned length, .*add extend_schedule=true"):
        run(tiny_data, tmp_path / "elsewhere", *resume)
    extended = run(
        tiny_data, tmp_path / "elsewhere", *resume, "extend_schedule=true", *record, f"+callbacks.lr.file={tmp_path}/b"
    )

    after, whole = lrs(tmp_path / "b"), lrs(tmp_path / "a")
    assert min(after) > 0 and len(after) >= 5
    assert after == {step: whole[step] for step in after}  # exactly, step by step
    assert extended["lr_schedulers"] == straight["lr_schedulers"]
    assert extended["optimizer_states"][0]["param_groups"] == straight["optimizer_states"][0]["param_groups"]


def test_a_resumed_run_appends_to_its_csv_log(tiny_data: Path, tmp_path: Path) -> None:
    def epochs(out: Path) -> list[int]:
        with (out / "csv" / "metrics.csv").open(newline="") as file:
            return sorted({int(row["epoch"]) for row in csv.DictReader(file) if row.get("val/F1")})

    # A run that stopped before its first checkpoint left a log: a new run into the folder starts afresh.
    (tmp_path / "run" / "csv").mkdir(parents=True)
    (tmp_path / "run" / "csv" / "metrics.csv").write_text("epoch,step,val/F1\n7,0,0.5\n")
    run(tiny_data, tmp_path / "run", "logger=csv", "trainer.max_epochs=2")
    assert epochs(tmp_path / "run") == [0, 1]
    # A row logged after the checkpoint (by a run that then crashed) is logged again by the resumed run.
    log = tmp_path / "run" / "csv" / "metrics.csv"
    header = log.read_text().splitlines()[0].split(",")
    log.write_text(
        log.read_text() + ",".join("6" if k == "step" else "0.123" if k == "lr-AdamW" else "" for k in header) + "\n"
    )
    run(
        tiny_data,
        tmp_path / "run",
        "logger=csv",
        "trainer.max_epochs=3",
        f"ckpt_path={tmp_path / 'run'}",
        "extend_schedule=true",
    )
    assert epochs(tmp_path / "run") == [0, 1, 2]  # the first command's rows are still there
    with log.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert not [r for r in rows if r["lr-AdamW"] == "0.123"]
    steps = [r["step"] for r in rows if r.get("train/loss_step")]
    assert len(steps) == len(set(steps)) == 9  # 3 epochs of 3 steps, each once


def test_a_run_whose_best_checkpoint_is_gone_is_refused_before_training(tiny_data: Path, tmp_path: Path) -> None:
    run(tiny_data, tmp_path / "run", "trainer.max_epochs=1")
    (best,) = (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")
    best.unlink()
    more = ("trainer.max_epochs=2", f"ckpt_path={tmp_path / 'run'}", "extend_schedule=true")
    with pytest.raises(CheckpointError, match=f"best checkpoint so far, {best.name}, is missing .* Put it back"):
        run(tiny_data, tmp_path / "run", *more)
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["epoch"] == 0  # nothing trained
    # The same run folder, a broken metrics.json: named, not a JSON traceback.
    (tmp_path / "run" / "metrics.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"metrics.json: not readable as the run's results"):
        checkpoint_to_evaluate(str(tmp_path / "run"))


def test_extend_schedule_needs_a_run_to_resume(make_cfg) -> None:
    with pytest.raises(ConfigError, match="extend_schedule=true extends the schedule of a resumed run"):
        train(make_cfg("extend_schedule=true"))


def test_a_resuming_command_starts_from_the_runs_overrides(tmp_path: Path) -> None:
    recorded = ["model=tiny", "model.base=4", "trainer.max_epochs=1", "+trainer.max_steps=9", "resume_strict=false"]
    given = ["ckpt_path=outputs/x", "++trainer.max_epochs=24", "~trainer.max_steps"]
    # The run's "+trainer.max_steps" is left out rather than deleted after it was added.
    assert merge_overrides(recorded, given) == ["model=tiny", "model.base=4", *given[:2]]
    assert merge_overrides(["+trainer.max_steps=9"], ["trainer.max_steps=20"]) == ["++trainer.max_steps=20"]
    # Where the run was named to go is not replayed: it resumes in its own folder, from any directory.
    assert merge_overrides(["paths.output_dir=runB", "model=tiny"], ["ckpt_path=x"]) == ["model=tiny", "ckpt_path=x"]
    # On the command line, the replayed overrides take the place of the command's own, after Hydra's flags.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 3, "cdseg_overrides": recorded}, run / "checkpoints" / "last.ckpt")
    args = ["--cfg", "job", f"ckpt_path={run}", "trainer.max_epochs=3"]
    assert resume_args(ROOT / "conf", "train", args) == [
        "--cfg",
        "job",
        "model=tiny",
        "model.base=4",
        "+trainer.max_steps=9",
        f"ckpt_path={run}",
        "trainer.max_epochs=3",
        "hydra.mode=RUN",  # a search's trial resumes as one run
    ]


def test_a_run_recorded_before_an_option_existed_resumes_as_its_default() -> None:
    config = OmegaConf.to_container(compose_train("data.root=x"), resolve=False)
    recorded = json.loads(json.dumps(config))
    del recorded["data"]["augment_on"], recorded["data"]["cache"]
    assert config_changes(recorded, config) == []
    assert config_changes(recorded, {**config, "data": {**config["data"], "augment_on": "device"}}) == [
        ("data.augment_on", "host", "device")
    ]


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path: Path, monkeypatch) -> None:
    from cdseg.runs import folder

    path = str(tmp_path / "2026-11-27" / "08-00-00")  # hydra.run.dir as named to the second
    first = folder.claim_new_folder(path)
    assert folder.claim_new_folder(path) == first  # resolved again in the same process: the same folder
    monkeypatch.setattr(folder, "_CLAIMED", {})  # a second process, in the same second
    second = folder.claim_new_folder(path)
    assert (first, second) == (path, f"{path}-2") and Path(second).is_dir()


def test_sweeps_started_in_the_same_second_get_folders_of_their_own(tmp_path: Path, monkeypatch) -> None:
    from hydra import compose, initialize_config_dir

    from cdseg.runs import folder

    def sweep_dir() -> str:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"paths.runs_dir={tmp_path}"], return_hydra_config=True)
        first = cfg.hydra.sweep.dir
        assert cfg.hydra.sweep.dir == first  # resolved once: every job of the sweep shares it
        return first

    monkeypatch.setattr(folder, "_CLAIMED", {})
    one = sweep_dir()
    monkeypatch.setattr(folder, "_CLAIMED", {})  # a second sweep's process
    two = sweep_dir()
    assert one != two and Path(one).is_dir() and Path(two).is_dir()
    assert Path(one).parent.parent == tmp_path / "multirun"


def test_a_new_run_never_replaces_another_runs_results(tiny_data: Path, tmp_path: Path) -> None:
    run(tiny_data, tmp_path, "trainer.max_epochs=1")  # paths.output_dir=tmp_path
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(
        ConfigError, match=f"{tmp_path} holds another run's checkpoints or metrics.*ckpt_path={tmp_path}"
    ):
        run(tiny_data, tmp_path, "trainer.max_epochs=1", "seed=7")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_run_named_with_output_dir_leaves_one_folder(tiny_data: Path, tmp_path: Path) -> None:
    runs, named = tmp_path / "runs", tmp_path / "named"

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "train.py"), f"paths.runs_dir={runs}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)

    overrides = [*tiny_overrides(tiny_data, named)]  # paths.output_dir=named
    assert cli(*overrides).returncode == 0
    assert (named / ".hydra" / "overrides.yaml").is_file() and (named / "metrics.json").is_file()
    assert not list(runs.glob("*/*"))  # no second folder holding only Hydra's record
    refused = cli(*overrides)  # a new run over the first one's results
    assert refused.returncode == 1 and "holds another run's checkpoints or metrics" in refused.stderr
    assert not list(runs.glob("*/*"))  # and no record of the refused command beside the run's
    assert sorted(p.name for p in (named / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    # A folder of the user's, named with hydra.run.dir, is never removed: not when it is the run's
    # parent (the working directory here), not when it is the run folder and a second run is refused.
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides[:-1], "hydra.run.dir=.", "paths.output_dir=run1"],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (work / "run1" / "metrics.json").is_file() and (work / ".hydra").is_dir()
    record = (named / ".hydra" / "overrides.yaml").read_text()
    refused = cli(*overrides[:-1], f"hydra.run.dir={named}", "seed=7")
    assert refused.returncode == 1 and "holds another run's checkpoints or metrics" in refused.stderr
    assert (named / ".hydra" / "overrides.yaml").read_text() == record  # refused before Hydra wrote anything


def test_the_command_line_is_checked_for_a_taken_folder_before_hydra_writes(tmp_path: Path) -> None:
    from cdseg.runs.folder import FolderHoldsARun
    from cdseg.runs.resume import refuse_a_taken_folder

    taken = tmp_path / "taken"
    (taken / "checkpoints").mkdir(parents=True)
    (taken / "metrics.json").write_text("{}")
    (tmp_path / "sweep" / "0").mkdir(parents=True)
    (tmp_path / "sweep" / "0" / "metrics.json").write_text("{}")
    refused = [
        [f"paths.output_dir={taken}"],
        [f"hydra.run.dir={taken}", f"paths.output_dir={tmp_path / 'free'}"],  # Hydra's record would go there
        [f"hydra.run.dir='{taken}'"],  # quoted
        ["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "seed=1,2"],
        ["hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path / 'sweep'}"],  # a sweep without -m
    ]
    for args in refused:
        with pytest.raises(FolderHoldsARun):
            refuse_a_taken_folder(args)
    allowed = [
        [f"paths.output_dir={tmp_path / 'free'}"],
        ["--cfg", "job", f"paths.output_dir={taken}"],  # prints, writes nothing
        [f"ckpt_path={taken}"],  # a resume continues in its own folder
        ["-m", f"hydra.sweep.dir={tmp_path / 'other'}", "seed=1,2"],
        ["paths.output_dir=${hydra:runtime.output_dir}/x"],  # an interpolation: the run's own check
    ]
    for args in allowed:
        refuse_a_taken_folder(args)


def test_a_loose_checkpoint_never_resumes_over_another_runs_results(tiny_data: Path, tmp_path: Path) -> None:
    run(tiny_data, tmp_path / "a", "trainer.max_epochs=1")
    run(tiny_data, tmp_path / "b", "trainer.max_epochs=1")
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes((tmp_path / "b" / "checkpoints" / "last.ckpt").read_bytes())
    before = {p: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="holds another run's checkpoints or metrics"):
        run(tiny_data, tmp_path / "a", "trainer.max_epochs=2", f"ckpt_path={loose}", "extend_schedule=true")
    assert {p: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()} == before


def test_a_refused_resume_leaves_nothing_behind(tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "train.py"), f"paths.runs_dir={runs}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)

    missing = cli(f"ckpt_path={runs / '2026-01-01' / '12-00-00'}")
    assert missing.returncode == 1 and "nothing to resume from" in missing.stderr
    assert not list(runs.glob("*/*"))  # no new run folder for a resume that found nothing
    overrides = [o for o in tiny_overrides(tiny_data, tmp_path / "unused") if not o.startswith("paths.")]
    assert cli(*overrides).returncode == 0
    (run,) = runs.glob("*/*")
    record = sorted(p.name for p in (run / ".hydra").iterdir())
    longer = cli(f"ckpt_path={run}", "trainer.max_epochs=3")  # a longer cosine without extend_schedule
    assert longer.returncode == 1 and "extend_schedule=true" in longer.stderr
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == record  # no resume-<time>/ of the refusal


def test_a_stop_at_an_epochs_end_resumes_exactly_when_the_length_is_in_steps(tiny_data: Path, tmp_path: Path) -> None:
    # 24 pairs at batch 4 with 2 batches a step: 3 steps an epoch; the stop comes during step 2, the
    # epoch's last, and is saved at its end. Lightning would run that end again on resuming a run
    # set in steps, counting the epoch twice: later epochs would train on the next one's order.
    cfg = ["trainer.max_epochs=-1", "data.batch_size=4", "+trainer.accumulate_grad_batches=2", "data.swap=0.5"]
    cfg += ["scheduler=warmup_cosine", "scheduler.warmup_steps=2", "+trainer.max_steps=8"]
    straight = run(tiny_data, tmp_path / "straight", *cfg)
    with pytest.raises(TrainingInterrupted):
        run(
            tiny_data,
            tmp_path / "run",
            *cfg,
            "+callbacks.kill._target_=tests.test_reliability.SignalAt",
            "+callbacks.kill.step=2",
        )
    assert load(tmp_path / "run" / "checkpoints" / "interrupted.ckpt")["global_step"] == 3  # saved at the epoch's end
    assert_same_state(straight, run(tiny_data, tmp_path / "run", *cfg, f"ckpt_path={tmp_path / 'run'}"))


def test_a_run_stopped_by_max_steps_inside_an_epoch_goes_on_exactly_when_lengthened(
    tiny_data: Path, tmp_path: Path
) -> None:
    # 3 steps an epoch; max_steps=4 ends the run one batch into epoch 1, and last.ckpt is written at
    # that epoch's end hook: lengthened, the run must go on from batch 2 of epoch 1, not skip the rest.
    cfg = ["trainer.max_epochs=3", "data.swap=0.5"]
    straight = run(tiny_data, tmp_path / "straight", *cfg, "+trainer.max_steps=9")
    run(tiny_data, tmp_path / "run", *cfg, "+trainer.max_steps=4")
    assert_same_state(
        straight, run(tiny_data, tmp_path / "run", *cfg, "+trainer.max_steps=9", f"ckpt_path={tmp_path / 'run'}")
    )


def test_checkpoints_that_hold_the_loss_weight_still_resume(tiny_data: Path, tmp_path: Path) -> None:
    # BCEDiceLoss's pos_weight once was part of the state dict (and of an EMA run's raw weights): the
    # config sets it now, and such checkpoints resume.
    options = ("scheduler=none", "loss.pos_weight=3", "callbacks=ema")
    ckpt = run(tiny_data, tmp_path, "trainer.max_epochs=1", *options)
    assert not any("pos_weight" in key for key in [*ckpt["state_dict"], *ckpt["current_model_state"]])
    for key in ("state_dict", "current_model_state"):
        ckpt[key]["loss.pos_weight"] = torch.tensor(3)
    torch.save(ckpt, tmp_path / "checkpoints" / "last.ckpt")
    assert run(tiny_data, tmp_path, "trainer.max_epochs=2", *options, f"ckpt_path={tmp_path}")["epoch"] == 1
