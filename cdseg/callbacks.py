"""Training callbacks of the science side: image panels for TensorBoard."""

from __future__ import annotations

import lightning as L
import torch
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
