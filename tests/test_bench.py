"""A smoke run of the one benchmark command (benchmarks/run.py --quick): every section measures
something and the JSON says where and how."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_benchmark_command_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    sections = ["train", "flops", "data", "predict", "startup", "models", "matrix"]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out), "--work", str(tmp_path)]
    cmd += ["--sections", *sections]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] and report["torch"] and "--quick" in report["command"]
    assert {row["section"] for row in report["rows"]} == set(sections)
    for row in report["rows"]:
        figures = [v for k, v in row.items() if isinstance(v, float) and "mem" not in k]
        assert figures and all(v > 0 for v in figures), row
        assert f"[{row['section']}] {row['what']}" in proc.stdout
    # The headline figures are the medians of rounds in which both contenders ran alike.
    train = next(r for r in report["rows"] if r["section"] == "train")
    assert len(train["lightning_rounds"]) == len(train["plain_rounds"]) == report["settings"]["rounds"] > 1
    assert train["lightning_pairs_per_s"] == statistics.median(train["lightning_rounds"])
    assert train["plain_pairs_per_s"] == statistics.median(train["plain_rounds"])


def test_a_failing_section_is_reported_and_the_rest_still_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import run

    def broken(args, work):
        yield {"section": "broken", "what": "first row", "figure": 1.0}
        raise RuntimeError("out of memory")

    def fine(args, work):
        yield {"section": "fine", "what": "a row", "figure": 2.0}

    monkeypatch.setitem(run.SECTIONS, "broken", broken)
    monkeypatch.setitem(run.SECTIONS, "fine", fine)
    out = tmp_path / "bench.json"
    run.main(["--quick", "--sections", "broken", "fine", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(row["section"], row["what"]) for row in rows] == [
        ("broken", "first row"),
        ("broken", "the section stopped"),
        ("fine", "a row"),
    ]
    assert rows[1]["error"] == "RuntimeError: out of memory"


def test_a_spent_budget_skips_what_is_left(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import run

    out = tmp_path / "bench.json"
    report = run.main(["--quick", "--budget", "0", "--sections", "flops", "matrix", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == report["rows"]
    assert [(row["section"], row["skipped"]) for row in report["rows"]] == [
        ("flops", "the --budget was spent"),
        ("matrix", "the --budget was spent"),
    ]


def test_the_matrix_runs_the_expected_fastest_setting_first_and_compiles_it_once(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import run

    order = run.matrix_settings(["bf16-mixed", "16-mixed"], compile=True)
    first = ("bf16-mixed", True, "device", False)
    # Every uncompiled combination once, the first setting compiled once, right after the settings
    # that change one thing of the first: a spent budget cuts the settings that change most.
    assert sorted(s for s in order if not s[3]) == sorted(
        (p, c, w, False) for p in ("bf16-mixed", "16-mixed") for c in (True, False) for w in ("device", "host")
    )
    assert order[0] == first and order[4] == (*first[:3], True) and len(order) == 9
    assert set(order[1:4]) == {
        ("bf16-mixed", True, "host", False),
        ("bf16-mixed", False, "device", False),
        ("16-mixed", True, "device", False),
    }
    assert order[-1] == ("16-mixed", False, "host", False)
