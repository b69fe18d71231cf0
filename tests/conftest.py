"""Shared fixtures: tiny synthetic data written by the project's own generator, and the real config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cdseg.data.synthetic import SyntheticSpec, generate

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in LEVIR layout: 48x48 pairs, 24 train / 8 val / 8 test."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    generate(root, SyntheticSpec(size=48, train=24, val=8, test=8, seed=1))
    return root


def tiny_overrides(data_root: Path, out_dir: Path) -> list[str]:
    """Shrink the real default config to seconds on a CPU."""
    return [
        f"data.root={data_root}",
        "data.synthetic=null",
        "data.batch_size=8",
        "data.crop_size=32",
        "model.base=4",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1",
        f"paths.output_dir={out_dir}",
    ]


def compose_train(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="session")
def trained_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One short training run on the tiny data, shared by the prediction tests: train()'s results."""
    from train import train

    out = tmp_path_factory.mktemp("trained") / "run"
    return train(compose_train(*tiny_overrides(tiny_data, out), "trainer.max_epochs=2", "model.base=8"))


@pytest.fixture
def make_cfg(tiny_data: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/train.yaml as a user would, on the tiny data, writing into tmp_path."""

    def _make(*overrides: str, out: Path | None = None) -> DictConfig:
        return compose_train(*tiny_overrides(tiny_data, out or tmp_path / "run"), *overrides)

    return _make
