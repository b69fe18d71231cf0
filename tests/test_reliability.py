"""Resume at an epoch boundary is exact, and runs with the same seed are identical."""

from pathlib import Path

import pytest
import torch

from tests.conftest import compose_train, tiny_overrides
from train import train


def run(data: Path, out: Path, *overrides: str) -> dict:
    train(compose_train(*tiny_overrides(data, out), "callbacks.progress_bar.refresh_rate=0", *overrides))
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for sa, sb in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(), strict=True
    ):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_at_an_epoch_boundary_equals_an_uninterrupted_run(tiny_data: Path, tmp_path: Path, workers: int) -> None:
    common = [
        "trainer.max_epochs=3",
        f"data.num_workers={workers}",
        "data.swap=0.5",
        "data.color_jitter={brightness:0.3}",
    ]
    straight = run(tiny_data, tmp_path / "straight", *common)
    # Interrupted after the first epoch (3 steps of 8 of the 24 pairs), then resumed.
    run(tiny_data, tmp_path / "first", *common, "+trainer.max_steps=3")
    resumed = run(
        tiny_data, tmp_path / "resumed", *common, f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"
    )
    assert_same_state(straight, resumed)


def test_same_seed_same_weights_and_metrics_with_two_workers(tiny_data: Path, tmp_path: Path) -> None:
    results, states = [], []
    for i in range(2):
        states.append(run(tiny_data, tmp_path / str(i), "trainer.max_epochs=2", "data.num_workers=2"))
        results.append(__import__("json").loads((tmp_path / str(i) / "metrics.json").read_text()))
    assert_same_state(states[0], states[1])
    assert results[0]["val"] == results[1]["val"] and results[0]["test"] == results[1]["test"]
    other = run(tiny_data, tmp_path / "other", "trainer.max_epochs=2", "data.num_workers=2", "seed=7")
    assert not torch.equal(other["state_dict"]["net.head.weight"], states[0]["state_dict"]["net.head.weight"])


def test_last_checkpoint_follows_every_epoch_even_without_improvement(tiny_data: Path, tmp_path: Path) -> None:
    # At lr 0 the score never improves after epoch 0, but last.ckpt must still be the latest epoch.
    last = run(tiny_data, tmp_path / "r", "trainer.max_epochs=3", "optimizer.lr=0", "scheduler=none")
    assert last["epoch"] == 2 and last["global_step"] == 9
    assert [p.name for p in sorted((tmp_path / "r" / "checkpoints").glob("best-*"))] == ["best-epoch000.ckpt"]
