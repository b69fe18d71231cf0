"""``logger=csv``: Lightning's CSVLogger, except that a resumed run appends to its metrics.csv.

Lightning's writer deletes an existing metrics.csv when it starts, so resuming a run into its own
folder would lose every row logged before the checkpoint.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingWriter(ExperimentWriter):
    """Keeps the rows (and the columns) of an existing metrics.csv; new rows are appended to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                # save() appends under these columns, or rewrites the file with the old rows when a new one comes
                self.metrics_keys = next(csv.reader(file), [])


class CSVLogger(LightningCSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment
