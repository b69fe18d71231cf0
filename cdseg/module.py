"""The one LightningModule: any two-date network, a loss, split-level metrics and the optimiser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from cdseg.errors import CdsegError
from cdseg.metrics import ObjectMetrics, SplitSums, change_metrics, pr_curve

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class NonFiniteError(CdsegError, FloatingPointError):
    """Training produced a NaN or infinite loss or weight; raised at once so nothing bad is saved."""


class ModelContractError(CdsegError, ValueError):
    """A network or loss that does not return what the module's contract says (see its docstring)."""


def _scores_whole_splits(loss: nn.Module) -> bool:
    """Whether val/loss and test/loss may come from the loss's ``split_sums``/``from_sums``: only when
    the class that defines them also defines the ``forward`` being trained (a subclass that changes
    ``forward`` alone would otherwise be evaluated as its parent's loss)."""

    def owner(name: str) -> type | None:
        return next((c for c in type(loss).__mro__ if name in vars(c)), None)

    return owner("split_sums") is not None and owner("split_sums") is owner("from_sums") is owner("forward")


class ChangeDetectionModule(L.LightningModule):
    """Train and evaluate a change-detection network.

    Args:
        net: ``nn.Module`` with ``forward(a, b) -> (B, 1, H, W)`` logits, for (B, C, H, W) dates.
        loss: ``loss(logits, mask) -> scalar`` with mask (B, 1, H, W) in {0, 1}.
        optimizer: partial optimiser (Hydra ``_partial_: true``), called with the parameters.
        scheduler: optional partial LR scheduler, called with the optimiser; stepped per epoch, or
            per optimizer step when it has ``interval = "step"`` (:mod:`cdseg.schedules`).
        threshold: probability above which a pixel is called changed, for the metrics.
        run_config: the resolved run configuration, stored in every checkpoint so that predict.py
            can rebuild the network and its input normalisation from the checkpoint alone.

    Batches follow one contract for every stage: ``{"A": (B,3,H,W), "B": (B,3,H,W),
    "mask": (B,1,H,W) float, "name": list[str]}``.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        threshold: float = 0.5,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Plain data only (no objects), so checkpoints load with torch.load(weights_only=True).
        # train.py logs the full config with the final metrics itself, hence logger=False.
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.set_threshold(threshold)
        # Precision-recall curves of val and test, recorded only when asked (train.py: after fitting).
        self.record_curves = False
        self.val_curve, self.test_curve = pr_curve(), pr_curve()
        # A loss that can score a whole split (BCEDiceLoss.split_sums) gives val/loss and test/loss of
        # the split, not a mean of batch losses (which would depend on the batch size through Dice).
        self.split_loss = _scores_whole_splits(loss)
        if self.split_loss:
            self.val_loss_sums, self.test_loss_sums = SplitSums(4), SplitSums(4)
        # Changed pixels of the val split: with none, every val/F1 is 0 and the best checkpoint is the first.
        self.val_changed = SplitSums(1)
        self.warned_val_without_change = False

    def set_threshold(self, threshold: float) -> None:
        """The threshold every metric applies from now on (calibration sets the val-optimal one)."""
        self.threshold = threshold
        metrics = change_metrics(threshold)
        # One metric object per stage: states never mix between train, val and test.
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.test_objects = ObjectMetrics(threshold)  # objects: connected components of the change class

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a, b)

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits = self(batch["A"], batch["B"])
        if logits.shape != batch["mask"].shape:  # else broadcasting fails deep in the loss or the metrics
            raise ModelContractError(
                f"{type(self.net).__name__} returned {tuple(logits.shape)} for dates of {tuple(batch['A'].shape)}: "
                f"a network must return one channel of logits at the input's size, {tuple(batch['mask'].shape)}"
            )
        metrics = getattr(self, f"{stage}_metrics")
        probs = torch.sigmoid(logits.detach().float())
        # Thresholded here, as torchmetrics would: given probabilities it first checks their range,
        # which waits for the device on every step.
        metrics.update((probs > self.threshold).long(), batch["mask"].long())
        if self.record_curves and stage != "train":
            getattr(self, f"{stage}_curve").update(probs, batch["mask"].long())
        bs = batch["A"].shape[0]
        loss = None
        if stage != "train" and self.split_loss:
            getattr(self, f"{stage}_loss_sums").update(self.loss.split_sums(logits.detach(), batch["mask"]))
        else:
            loss = self.loss(logits, batch["mask"])
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                raise ModelContractError(
                    f"{type(self.loss).__name__} returned {shape}: a loss must return one number (a 0-dim tensor)"
                )
            # Evaluation ranks may hold different numbers of samples; the epoch mean is reduced over them.
            self.log(
                f"{stage}/loss",
                loss,
                on_step=stage == "train",
                on_epoch=True,
                prog_bar=True,
                batch_size=bs,
                sync_dist=stage != "train",
            )
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=bs)
        return loss, logits

    def _reset_split_loss(self, stage: str) -> None:
        if self.split_loss:  # the last evaluation's sums, or what one cut short left behind
            getattr(self, f"{stage}_loss_sums").reset()

    def _log_split_loss(self, stage: str) -> None:
        if self.split_loss:
            sums = getattr(self, f"{stage}_loss_sums")
            # compute() already sums over every rank.
            self.log(f"{stage}/loss", self.loss.from_sums(sums.compute()), prog_bar=True, sync_dist=False)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")[0]
        if not torch.isfinite(loss):
            names = ", ".join(batch.get("name", [])) or "unknown"
            raise NonFiniteError(
                f"non-finite loss ({loss.item()}) at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); files of the batch: {names}"
            )
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")
        self.val_changed.update(batch["mask"].sum().reshape(1))

    def on_validation_epoch_start(self) -> None:
        self._reset_split_loss("val")
        self.val_changed.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_split_loss("val")
        changed = float(self.val_changed.compute().sum())  # over every rank (torchmetrics squeezes one sum)
        if changed == 0 and not self.trainer.sanity_checking and not self.warned_val_without_change:
            self.warned_val_without_change = True
            rank_zero_warn(
                "the val split has no changed pixels: every val score of the change class (F1, IoU, precision, "
                "recall, kappa) is 0 at every epoch, so a checkpoint chosen by one of them is the first epoch's; "
                "give val pairs with change, or choose by val/loss (optimized_metric=val/loss optimized_mode=min)"
            )

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self._step(batch, "test")[1]
        self.test_objects.update(torch.sigmoid(logits.detach().float()), batch["mask"])

    def on_test_epoch_start(self) -> None:
        self._reset_split_loss("test")

    def on_test_epoch_end(self) -> None:
        self._log_split_loss("test")
        # compute() already sums the counts over every rank.
        for name, value in self.test_objects.compute().items():
            self.log(f"test/{name}", float(value), sync_dist=False)
        self.test_objects.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """(B, 1, H, W) change probabilities."""
        return torch.sigmoid(self(batch["A"], batch["B"]).float())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints from before BCEDiceLoss's pos_weight left the state dict still hold it; the
        # config sets it now. "current_model_state": the raw weights an EMA run keeps beside its average.
        for key in ("state_dict", "current_model_state"):
            checkpoint.get(key, {}).pop("loss.pos_weight", None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bad = [name for name, p in self.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteError(f"refusing to save a checkpoint: non-finite weights in {', '.join(bad[:5])}")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        # Per epoch unless the schedule says it counts optimizer steps (cdseg.schedules).
        interval = getattr(scheduler, "interval", "epoch")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
