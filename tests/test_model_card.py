"""A smoke run of the model card command: tiny budget, two models, the table and the JSON it writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED_DATA


def run_card(tmp_path: Path, *args: str, seeds: tuple[str, ...] = ("0", "1")) -> dict:
    out = tmp_path / "card.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "model_card.py"),
            "--seeds",
            "0",
            "1",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.read_text())
    for name in card["models"]:
        assert f"| `{name}` |" in proc.stdout
    return card


def test_the_card_measures_every_model_it_is_given(tiny_data: Path, tmp_path: Path) -> None:
    data = ["--synthetic-data", f"data.root={tiny_data}", "data.synthetic=null", "data.crop_size=32"]
    card = run_card(tmp_path, "--models", "tiny", "fc_ef", "--datasets", "synthetic", "--epochs-synthetic", "1", *data)
    assert set(card["models"]) == {"tiny", "fc_ef"}
    tiny, fc_ef = card["models"]["tiny"], card["models"]["fc_ef"]
    assert tiny["params_M"] < 0.5 < fc_ef["params_M"] and tiny["gflops_256"] < fc_ef["gflops_256"]
    assert tiny["train_pairs_per_s"] > 0
    runs = tiny["synthetic"]["runs"]
    assert len(runs) == 2 and all(0 <= r["F1"] <= 1 for r in runs)
    assert tiny["synthetic"]["F1"] == pytest.approx(sum(r["F1"] for r in runs) / 2)


@pytest.mark.skipif(not (SHARED_DATA / "levir-cd-samples").is_dir(), reason="../shared/data not present")
def test_the_real_split_keeps_evaluation_tiles_out_of_training(tmp_path: Path) -> None:
    card = run_card(tmp_path, "--models", "tiny", "--datasets", "levir", "--epochs-levir", "1", seeds=("0",))
    split = tmp_path / "work" / "levir-split"
    train = sorted(p.name for p in (split / "train" / "A").iterdir())
    assert len(train) == 57 and not any(n.startswith(("test_4_", "test_5_")) for n in train)
    assert [p.name for p in (split / "val" / "A").iterdir()] == ["test_5.png"]
    assert [p.name for p in (split / "test" / "A").iterdir()] == ["test_4.png"]
    assert 0 <= card["models"]["tiny"]["levir"]["F1"] <= 1


def test_the_recipe_comparison_gives_every_config_the_same_steps_validations_and_precision(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from levir_recipe import configs

    from tests.conftest import compose_train

    extra, extra_defaults = {"x": ["loss.pos_weight=5"]}, {"d": ["data.batch_size=32", "trainer.max_epochs=120"]}
    table = configs(240, 8, "32-true", [], extra, extra_defaults)
    assert set(table) == {"defaults", "recipe", "opencd", "x", "d"}
    for name, overrides in table.items():
        cfg = compose_train(*overrides, "data.root=/x")
        # Validation every 8 optimizer steps whatever the batch size, never once per (2-step) epoch.
        assert cfg.trainer.check_val_every_n_epoch is None and cfg.trainer.val_check_interval == 8, name
        assert cfg.trainer.precision == "32-true", name  # experiment=levir alone asks for 16-mixed
        batches = -(-57 // cfg.data.batch_size)  # per epoch of the 57 crops, the last one short
        length = cfg.trainer.max_steps if cfg.trainer.get("max_steps", -1) > 0 else cfg.trainer.max_epochs * batches
        assert length == 240, (name, length)
    assert compose_train(*table["x"], "data.root=/x").loss.pos_weight == 5
