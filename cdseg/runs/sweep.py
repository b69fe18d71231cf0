"""The answer at the end of a sweep: ``python train.py -m ...`` writes ``summary.md`` and
``summary.csv`` into its multirun folder and prints the table.

One row per job (its overrides, the best checkpoint's ``val/*``, ``test/*``, its folder, or "failed"
and why), then one row per setting (the overrides without ``seed=``) with the mean and standard
deviation over its seeds. A job that fails is recorded as failed (``failed.txt`` in its folder) and
the others still run; the command then exits 1 after the summary.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cdseg.atomic_write import write_text
from cdseg.runs.folder import RunFolder

KEY_METRICS = ("val/F1", "val/IoU", "test/F1", "test/IoU")  # the columns of the printed table


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One dict per job folder of ``sweep_dir``: ``job``, ``overrides``, ``status``, metrics, ``folder``."""
    rows = []
    for file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"), key=lambda f: _job_order(f.parent.parent.name)):
        folder = file.parent.parent
        overrides = [str(o) for o in OmegaConf.load(file)]
        row: dict[str, Any] = {"job": folder.name, "overrides": " ".join(overrides), "folder": str(folder)}
        row["_overrides"] = overrides  # one item per override (a value may hold spaces); not written to CSV
        run = RunFolder(folder)
        if run.metrics.is_file() and not run.failure.is_file():
            results = json.loads(run.metrics.read_text())
            row |= {"status": "ok", **results.get("val", {}), **results.get("test", {})}
        else:
            why = run.failure.read_text().strip() if run.failure.is_file() else "no metrics.json"
            row |= {"status": f"failed: {why.splitlines()[0] if why else 'unknown'}"}
        rows.append(row)
    return rows


def _job_order(name: str) -> tuple[int, str]:
    number = name.split("_", 1)[0]
    return (int(number), name) if number.isdigit() else (sys.maxsize, name)


def setting_rows(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs grouped by their overrides less ``seed=``: mean and standard deviation of each metric."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        setting = [o for o in job["_overrides"] if not o.lstrip("+~").startswith("seed=")]
        groups.setdefault(" ".join(setting), []).append(job)
    rows = []
    for setting, members in groups.items():
        done = [m for m in members if m["status"] == "ok"]
        row: dict[str, Any] = {
            "setting": setting or "(defaults)",
            "_overrides": [o for o in members[0]["_overrides"] if not o.lstrip("+~").startswith("seed=")],
            "jobs": len(members),
            "failed": len(members) - len(done),
        }
        for key in sorted({k for m in done for k in m if "/" in k}):
            values = [m[key] for m in done if key in m]
            row[f"{key} mean"] = statistics.mean(values)
            row[f"{key} sd"] = statistics.stdev(values) if len(values) > 1 else None  # one run: no spread to give
        rows.append(row)
    return rows


def shared_overrides(jobs: list[dict[str, Any]]) -> list[str]:
    """The overrides every job of a sweep (of two jobs or more) was given: said once, above the tables."""
    lists = [j["_overrides"] for j in jobs]
    return [o for o in lists[0] if all(o in other for other in lists[1:])] if len(lists) > 1 else []


def best_job(jobs: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The finished job with the best ``metric`` (``mode`` max or min), if any reported it."""
    done = [j for j in jobs if j["status"] == "ok" and isinstance(j.get(metric), int | float)]
    return (max if mode == "max" else min)(done, key=lambda j: j[metric]) if done else None


def _mean_sd(mean: float, sd: float | None) -> str:
    return f"{mean:.4f} ± {sd:.4f}" if sd is not None else f"{mean:.4f} (one run)"


def markdown(
    jobs: list[dict[str, Any]], settings: list[dict[str, Any]], metric: str = "val/F1", mode: str = "max"
) -> str:
    metrics = [k for k in KEY_METRICS if any(k in j for j in jobs)]
    shared = shared_overrides(jobs)

    def own(row: dict[str, Any]) -> str:  # what sets this row apart
        return " ".join(o for o in row["_overrides"] if o not in shared) or "-"

    lines = [f"overrides of every job: {' '.join(shared)}", ""] if shared else []
    lines += ["| job | overrides | " + " | ".join(metrics) + " | status | folder |"]
    lines.append("|" + "---|" * (len(metrics) + 4))
    for j in jobs:
        cells = [f"{j[k]:.4f}" if k in j else "-" for k in metrics]
        lines.append(f"| {j['job']} | {own(j)} | " + " | ".join(cells) + f" | {j['status']} | {j['folder']} |")
    lines += ["", "| setting | jobs | failed | " + " | ".join(f"{k} mean ± sd" for k in metrics) + " |"]
    lines.append("|" + "---|" * (len(metrics) + 3))
    for s in settings:
        cells = [_mean_sd(s[f"{k} mean"], s[f"{k} sd"]) if f"{k} mean" in s else "-" for k in metrics]
        lines.append(f"| {own(s)} | {s['jobs']} | {s['failed']} | " + " | ".join(cells) + " |")
    best = best_job(jobs, metric, mode)
    if best is not None:  # chosen on the metric the sweep optimises (validation), never on test
        lines += ["", f"best job by {metric} ({mode}): {best['job']}, {metric} {best[metric]:.4f}: {best['folder']}"]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    fields = list(dict.fromkeys(k for r in rows for k in r if not k.startswith("_")))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_summary(sweep_dir: Path, metric: str = "val/F1", mode: str = "max") -> tuple[str, int]:
    """Write ``summary.md``, ``summary.csv`` (jobs) and ``summary_settings.csv``; return the markdown
    and the number of failed jobs. The best job is named by ``metric`` (``mode`` max or min)."""
    jobs = job_rows(sweep_dir)
    settings = setting_rows(jobs)
    text = markdown(jobs, settings, metric, mode)
    write_text(sweep_dir / "summary.md", text)
    write_text(sweep_dir / "summary.csv", _csv(jobs))
    write_text(sweep_dir / "summary_settings.csv", _csv(settings))
    return text, sum(j["status"] != "ok" for j in jobs)


class SweepSummary(Callback):
    """Hydra callback (conf/train.yaml ``hydra.callbacks``): the summary when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        text, failed = write_summary(
            sweep_dir, config.get("optimized_metric", "val/F1"), config.get("optimized_mode", "max")
        )
        print(f"\nsweep summary ({sweep_dir / 'summary.md'}):\n{text}")
        if failed:
            print(f"error: {failed} job(s) failed; see the table above", file=sys.stderr)
            raise SystemExit(1)
