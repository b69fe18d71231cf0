"""``logger=csv``: Lightning's CSVLogger, except that a resumed run keeps its metrics.csv.

Lightning's writer deletes an existing metrics.csv when it starts, so resuming a run into its own
folder would lose every row logged before the checkpoint. Here the rows up to the checkpoint stay
and the resumed run appends to them; rows logged after it (before a crash) are dropped, since the
resumed run logs those steps again.
"""

from __future__ import annotations

import csv
import io

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from cdseg.atomic_write import write_text


class AppendingWriter(ExperimentWriter):
    """Keeps the rows (and the columns) of an existing metrics.csv whose step is below
    ``keep_below_step`` (all of them when None); new rows are appended."""

    def __init__(self, log_dir: str, keep_below_step: int | None = None) -> None:
        self.keep_below_step = keep_below_step
        super().__init__(log_dir)  # calls _check_log_dir_exists

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
        # save() appends under these columns, or rewrites the file with the old rows when a new one comes
        self.metrics_keys = list(reader.fieldnames or [])
        if self.keep_below_step is None:
            return
        kept = [r for r in rows if not (r.get("step") or "").isdigit() or int(r["step"]) < self.keep_below_step]
        if len(kept) < len(rows):
            table = io.StringIO()
            writer = csv.DictWriter(table, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
            write_text(self.metrics_file_path, table.getvalue())


class CSVLogger(LightningCSVLogger):
    resume_step: int | None = None  # set by train.py: rows of an existing metrics.csv at this step or later go

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir, keep_below_step=self.resume_step)
        return self._experiment
