import json
from pathlib import Path

import numpy as np
import pytest

from cdseg.baseline import cva_otsu, evaluate, main
from cdseg.data import ChangeDetectionDataModule, synthetic
from cdseg.data.synthetic import META_FILE, SyntheticSpec, ensure_synthetic, make_pair
from cdseg.errors import ConfigError


def test_pairs_are_seeded_and_labels_binary() -> None:
    a1, b1, l1 = make_pair(np.random.default_rng([3, 0, 5]), 64)
    a2, b2, l2 = make_pair(np.random.default_rng([3, 0, 5]), 64)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.array_equal(l1, l2)
    assert a1.shape == (64, 64, 3) and a1.dtype == np.uint8 and set(np.unique(l1)) <= {0, 255}
    a3, _, _ = make_pair(np.random.default_rng([4, 0, 5]), 64)
    assert not np.array_equal(a1, a3)


def test_unlabelled_nuisances_change_many_pixels() -> None:
    # Outside the labelled change, most pixels still differ noticeably between the dates.
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(8):
        a, b, label = make_pair(rng, 96)
        d = np.abs(a.astype(int) - b.astype(int)).max(axis=2)
        diffs.append(np.mean(d[label == 0] > 10))
    assert np.mean(diffs) > 0.5


def test_written_once_then_reused(tmp_path: Path) -> None:
    spec = {"size": 32, "train": 3, "val": 2, "test": 2, "seed": 0}
    root = ensure_synthetic(tmp_path / "syn", **spec)
    first = (root / "train" / "A" / "train_0000.png").stat().st_mtime_ns
    assert json.loads((root / META_FILE).read_text())["size"] == 32
    ensure_synthetic(tmp_path / "syn", **spec)
    assert (root / "train" / "A" / "train_0000.png").stat().st_mtime_ns == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]  # no temporary folder left behind


def test_other_settings_never_overwrite(tmp_path: Path) -> None:
    ensure_synthetic(tmp_path / "syn", size=32, train=2, val=1, test=1)
    with pytest.raises(FileExistsError, match="generated with"):
        ensure_synthetic(tmp_path / "syn", size=48, train=2, val=1, test=1)
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        ensure_synthetic(tmp_path / "mine", size=32)


@pytest.mark.parametrize("size", [8, 16, 24])
def test_small_sizes_generate_and_smaller_are_refused(size: int) -> None:
    a, b, label = make_pair(np.random.default_rng(0), size)  # roads once drew 0 px wide below 32
    assert a.shape == b.shape == (size, size, 3) and label.shape == (size, size)
    with pytest.raises(ConfigError, match="data.synthetic.size must be an integer >= 8, got 4"):
        SyntheticSpec(size=4)


def test_an_interrupted_generation_leaves_no_folder_behind(tmp_path: Path, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "make_pair", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path / "data", size=32, train=2, val=1, test=0, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_zero_test_pairs_means_no_test_split(tmp_path: Path) -> None:
    dm = ChangeDetectionDataModule(str(tmp_path / "syn"), synthetic={"size": 32, "train": 2, "val": 2, "test": 0})
    dm.prepare_data()
    dm.setup("fit")
    assert not dm.has_split("test")


def test_baseline_scores_and_finds_some_change(tiny_data: Path) -> None:
    scores = evaluate(str(tiny_data), "test")
    assert 0.0 < scores["F1"] < 1.0 and scores["recall"] > 0.0
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[2:4, 2:4] = 200
    assert cva_otsu(a, b).sum() == 4


def test_spec_defaults_match_the_shipped_config() -> None:
    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    shipped = OmegaConf.load(ROOT / "conf" / "data" / "synthetic.yaml").synthetic
    assert set(shipped) <= set(SyntheticSpec.__dataclass_fields__)


def test_the_baseline_command_prints_a_summary_and_writes_train_py_s_metrics_format(
    tiny_data: Path, tmp_path: Path, capsys
) -> None:
    results = main([str(tiny_data), "--split", "test", "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "change-vector magnitude + Otsu" in out and f"{tiny_data}/test" in out and " test: F1 " in out
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert saved == results and set(saved["test"]) == {
        f"test/{k}" for k in ("F1", "IoU", "precision", "recall", "OA", "kappa")
    }
    assert saved["test"]["test/F1"] == pytest.approx(evaluate(str(tiny_data), "test")["F1"])
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        main([str(tiny_data), "--out", str(tmp_path / "b")])
