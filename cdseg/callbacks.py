"""Training callbacks of the science side: image panels for TensorBoard, weight averaging."""

from __future__ import annotations

from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import default_collate

from cdseg.config import bool_problem, int_problem, raise_problems
from cdseg.inference.visualize import sample_panel, stack_rows, title_strip, to_uint8_image


class SamplePanels(L.Callback):
    """After each validation epoch, log A | B | ground truth | prediction for a fixed set of samples.

    The samples are the first ``num_samples`` of the validation split (evenly spread over the
    split when ``spread=True``), so successive epochs show the same pairs.
    """

    def __init__(self, num_samples: int = 4, spread: bool = True) -> None:
        raise_problems(
            [
                int_problem("callbacks.sample_panels.num_samples", num_samples, 0),  # 0: no panels
                bool_problem("callbacks.sample_panels.spread", spread),
            ]
        )
        self.num_samples = num_samples
        self.spread = spread

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not loggers or not trainer.is_global_zero or not self.num_samples:
            return
        dataset = trainer.val_dataloaders.dataset
        n = min(self.num_samples, len(dataset))
        step = len(dataset) // n if self.spread else 1
        threshold = getattr(pl_module, "threshold", 0.5)  # the calibrated one, once set
        dm = trainer.datamodule
        mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
        precision = trainer.precision_plugin  # the run's precision: autocast, or half inputs for *-true
        rows, widths = [], []
        # One sample at a time: a validation split of mixed sizes (data.eval_batch_size=1) cannot stack.
        for i in range(n):
            sample = default_collate([dataset[i * step]])  # (1, C, H, W) tensors
            batch = precision.convert_input(
                {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in sample.items()}
            )
            with torch.no_grad(), precision.val_step_context():
                probs = pl_module.predict_step(batch, 0).float()
            widths.append(sample["A"].shape[-1])
            rows.append(
                sample_panel(
                    to_uint8_image(sample["A"][0].numpy(), mean, std),
                    to_uint8_image(sample["B"][0].numpy(), mean, std),
                    sample["mask"][0, 0].numpy(),
                    probs[0, 0].cpu().numpy() > threshold,  # as torchmetrics
                )
            )
        image = stack_rows([title_strip(widths[0]), *rows])  # A | B | truth | prediction, labelled
        for lg in loggers:
            lg.experiment.add_image("val/samples", image, trainer.global_step, dataformats="HWC")


def _ema_step(
    decay: float, warmup: bool, average: torch.Tensor, current: torch.Tensor, n: torch.Tensor
) -> torch.Tensor:
    """One EMA update after ``n`` earlier ones; tensor arithmetic only, so no device sync per parameter."""
    if not warmup:
        return average + (current - average) * (1 - decay)
    d = torch.clamp((1 + n) / (10 + n), max=decay)
    return average + (current - average) * (1 - d).to(average.dtype)


def _state_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters then buffers, in the order Lightning's averaged copy lists them."""
    return [*module.parameters(), *module.buffers()]


class EMA(WeightAveraging):
    """Validate, checkpoint and finally keep an exponential moving average of the weights.

    Lightning's ``WeightAveraging`` holds the average (BatchNorm statistics included), swaps it in for
    each validation and writes it as the checkpoint's ``state_dict``, so the best checkpoint, test
    and predict.py all use the averaged network; the raw weights ride along for resuming. With
    ``warmup`` the decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``, so a short run
    is not dominated by its first steps' weights.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        super().__init__(use_buffers=True, avg_fn=partial(_ema_step, decay, warmup))
        self._weights: list[torch.Tensor] | None = None  # the trained weights, put aside while validating

    # Lightning makes the average before the precision plugin converts the module, so under bf16-true
    # or 16-true the average stays float32 while the weights are half. Its validation swap would round
    # the average to the weights' dtype at every validation, and with frequent validations the average
    # would stop moving (each step's change, a thousandth of the gap at decay 0.999, falls below bf16's
    # resolution). So validation copies the average in and puts the weights back, never writing the
    # weights into the average.
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._average_model is not None:
            self._weights = [t.detach().clone() for t in _state_tensors(pl_module)]
            for current, average in zip(
                _state_tensors(pl_module), _state_tensors(self._average_model.module), strict=True
            ):
                current.data.copy_(average.data)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._average_model is not None and self._weights is not None:
            for current, saved in zip(_state_tensors(pl_module), self._weights, strict=True):
                current.data.copy_(saved)
            self._weights = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning would otherwise swap the final average into trainer.validate(ckpt_path=best)
        # after fitting, scoring the last average instead of the loaded checkpoint.
        self._average_model = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._average_model is not None:  # resuming a fit; evaluating a checkpoint needs no average
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
