"""Small Lightning callbacks: image panels for TensorBoard, a checkpoint on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import default_collate

from cdseg.inference.visualize import sample_panel, stack_rows, to_uint8_image


class SamplePanels(L.Callback):
    """After each validation epoch, log A | B | ground truth | prediction for a fixed set of samples.

    The samples are the first ``num_samples`` of the validation split (evenly spread over the
    split when ``spread=True``), so successive epochs show the same pairs.
    """

    def __init__(self, num_samples: int = 4, spread: bool = True) -> None:
        self.num_samples = num_samples
        self.spread = spread

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not loggers or not trainer.is_global_zero:
            return
        dataset = trainer.val_dataloaders.dataset
        n = min(self.num_samples, len(dataset))
        step = len(dataset) // n if self.spread else 1
        batch = default_collate([dataset[i * step] for i in range(n)])
        with torch.no_grad():
            probs = pl_module.predict_step(
                {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}, 0
            )
        threshold = pl_module.hparams.get("threshold", 0.5)
        dm = trainer.datamodule
        mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
        rows = [
            sample_panel(
                to_uint8_image(batch["A"][i].numpy(), mean, std),
                to_uint8_image(batch["B"][i].numpy(), mean, std),
                batch["mask"][i, 0].numpy(),
                probs[i, 0].cpu().numpy() > threshold,  # as torchmetrics,
            )
            for i in range(n)
        ]
        image = stack_rows(rows)
        for lg in loggers:
            lg.experiment.add_image("val/samples", image, trainer.global_step, dataformats="HWC")


class TrainingInterrupted(Exception):
    """Raised after an interrupted run saved its state; ``signum`` is the signal that asked."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class InterruptCheckpoint(Checkpoint):
    """Ctrl-C (SIGINT) or SIGTERM stops training at the next safe point, with a checkpoint to resume from.

    A signal only sets a flag. At the end of a batch that completed an optimizer step, or at the end
    of an epoch (after its validation and its checkpoints: Lightning runs ``Checkpoint`` callbacks
    last), every rank agrees on the flag (one tiny all-reduce, so DDP ranks stop at the same step),
    ``<dirpath>/<filename>.ckpt`` is written and :class:`TrainingInterrupted` ends the run. The saved
    weights, optimizer and loop counters all stand after the same step, so resuming with
    ``ckpt_path=`` continues exactly. A second Ctrl-C aborts at once, without saving; a second
    SIGTERM is ignored. The file is removed when a later fit of the same run folder finishes.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
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
        trainer.save_checkpoint(self.path)
        signum = self._signum or signal.SIGTERM  # another rank got the signal
        raise TrainingInterrupted(
            f"interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}; saved {self.path}", signum
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        if trainer.is_global_zero:
            self.path.unlink(missing_ok=True)  # superseded by the finished run's checkpoints

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
