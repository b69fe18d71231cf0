"""Stopping a run safely: Ctrl-C or SIGTERM ends training at the next safe point with a checkpoint to
resume from, and the process exits with the status a shell or job scheduler expects."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cdseg.runs.folder import INTERRUPTED, RunFolder


class TrainingInterrupted(Exception):
    """Raised after an interrupted run saved its state; ``signum`` is the signal that asked."""

    def __init__(self, message: str, signum: int, run_dir: str | Path) -> None:
        super().__init__(message)
        self.signum = signum
        self.run_dir = run_dir


class InterruptCheckpoint(Checkpoint):
    """Ctrl-C (SIGINT) or SIGTERM stops training at the next safe point, with a checkpoint to resume from.

    A signal only sets a flag. At the end of a batch that completed an optimizer step, or at the end
    of an epoch (after its validation and its checkpoints: Lightning runs ``Checkpoint`` callbacks
    last), every rank agrees on the flag (one tiny all-reduce, so DDP ranks stop at the same step),
    ``<run_dir>/checkpoints/interrupted.ckpt`` is written and :class:`TrainingInterrupted` ends the
    run. The saved weights, optimizer and loop counters all stand after the same step, so resuming
    with ``ckpt_path=`` continues exactly. A second Ctrl-C aborts at once, without saving; a second
    SIGTERM is ignored. The file is removed when a later fit of the same run folder finishes.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = run_dir
        self.path = RunFolder(run_dir).checkpoint(INTERRUPTED)
        self._signum: int | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._signum = None
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        if self._signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
            return
        self._signum = signum
        # os.write, not print: a signal handler may run in the middle of another write to stderr.
        name = signal.Signals(signum).name
        os.write(2, f"\n{name}: stopping at the end of this step to save {self.path} ...\n".encode())

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # The epoch's last batch is left to on_train_epoch_end, once validation and the epoch's
        # checkpoints are done; gradients being accumulated are not in a checkpoint, so a stop waits
        # for the optimizer step.
        if batch_idx + 1 >= trainer.num_training_batches or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        self._stop_if_requested(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_requested(trainer)

    def _stop_if_requested(self, trainer: L.Trainer) -> None:
        if not trainer.strategy.reduce_boolean_decision(self._signum is not None, all=False):
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state: optimizer, schedules, loops
        signum = self._signum or signal.SIGTERM  # another rank got the signal
        raise TrainingInterrupted(
            f"interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}; saved {self.path}",
            signum,
            self.run_dir,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        if trainer.is_global_zero:
            self.path.unlink(missing_ok=True)  # superseded by the finished run's checkpoints

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """A checkpoint written in ``on_train_epoch_end`` (this callback's stop at an epoch's end, or
        last.ckpt when ``max_steps`` ended a run inside an epoch) has the epoch counted processed but
        not completed. Resuming a run whose length is set in steps, Lightning then runs that epoch's
        end again and counts it twice, so every later epoch would take the next one's order and
        augmentation, or skip the rest of an unfinished epoch. Such a checkpoint is read as what it
        is: at the epoch's last batch, the epoch done and the next not begun; before it, the epoch
        going on from its next batch."""
        fit = checkpoint.get("loops", {}).get("fit_loop")
        if not fit or trainer.max_steps == -1:
            return
        epochs, batches = fit["epoch_progress"], fit["epoch_loop.batch_progress"]
        now = epochs["current"]
        if not (now["processed"] == now["started"] == now["ready"] and now["completed"] == now["processed"] - 1):
            return
        if batches["is_last_batch"]:
            for counts in (epochs["current"], epochs["total"]):
                counts["completed"] = counts["processed"]
            batches["current"] = {k: 0 for k in batches["current"]}
            batches["is_last_batch"] = False
        else:
            for counts in (epochs["current"], epochs["total"]):
                counts["processed"] = counts["completed"]

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()


@contextmanager
def exit_on_stop_signal() -> Iterator[None]:
    """End the process with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM) when training
    was stopped by a signal, the message and the command that resumes the run on stderr instead of a
    traceback; never 0, which a job scheduler would read as a finished run."""
    try:
        yield
    except TrainingInterrupted as e:
        script = Path(sys.argv[0]).name
        print(f"{e}\nresume with: python {script} ckpt_path={e.run_dir}", file=sys.stderr)
        raise SystemExit(128 + e.signum) from None
    except SIGTERMException:  # Lightning's own SIGTERM handling outside training batches (setup, testing)
        print("terminated (SIGTERM) outside training; resume from the run's last.ckpt", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
