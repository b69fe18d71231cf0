"""The real LEVIR-CD and DSIFN samples in ../shared/data load and validate (skipped when absent)."""

from pathlib import Path

import pytest
import torch

from cdseg.data import ChangeDetectionDataModule, ChangeDetectionDataset
from tests.conftest import SHARED_DATA

LEVIR = SHARED_DATA / "levir-cd-samples"
pytestmark = pytest.mark.skipif(not LEVIR.is_dir(), reason="../shared/data not present")


@pytest.mark.parametrize(("folder", "count", "size"), [("crops-256", 11, 256), ("tiles-1024", 5, 1024)])
def test_levir_samples_validate_and_load(folder: str, count: int, size: int) -> None:
    ds = ChangeDetectionDataset(LEVIR / folder / "test")
    assert len(ds) == count
    sample = ds[0]
    assert sample["A"].shape == (3, size, size) and sample["mask"].shape == (1, size, size)
    assert set(sample["mask"].unique().tolist()) <= {0.0, 1.0}


def test_crop_without_change_is_accepted() -> None:
    ds = ChangeDetectionDataset(LEVIR / "crops-256" / "test")
    idx = [p.name for p in ds.pairs].index("train_386_0512_0768.png")
    assert ds[idx]["mask"].sum() == 0


def test_1024_tiles_train_on_256_crops_and_evaluate_whole(tmp_path: Path) -> None:
    # Three tiles train and two validate, linked rather than copied (a pair in both would be refused).
    for split, tiles in (("train", ("test_1", "test_2", "test_3")), ("val", ("test_4", "test_5"))):
        for part in ("A", "B", "label"):
            (tmp_path / split / part).mkdir(parents=True)
            for tile in tiles:
                (tmp_path / split / part / f"{tile}.png").symlink_to(
                    LEVIR / "tiles-1024" / "test" / part / f"{tile}.png"
                )
    dm = ChangeDetectionDataModule(str(tmp_path), batch_size=2, crop_size=256, rot90=True)
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    val = next(iter(dm.val_dataloader()))
    assert train["A"].shape == (2, 3, 256, 256) and train["mask"].shape == (2, 1, 256, 256)
    assert val["A"].shape == (2, 3, 1024, 1024)
    assert torch.isfinite(train["A"]).all()


def test_dsifn_samples_validate() -> None:
    assert len(ChangeDetectionDataset(SHARED_DATA / "dsifn-samples" / "test")) == 10
