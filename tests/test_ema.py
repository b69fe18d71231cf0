"""The EMA callback: the average is what is validated, saved, tested and resumed."""

from pathlib import Path

import pytest
import torch

from cdseg.callbacks import EMA, _ema_step
from cdseg.runs.checkpoint import read_checkpoint
from predict import predict
from tests.test_predict import predict_cfg
from train import train

EMA_ON = ["callbacks=ema", "callbacks.ema.decay=0.9"]


def test_the_decay_warms_up_then_holds() -> None:
    avg, cur = torch.zeros(3), torch.ones(3)
    first = _ema_step(0.99, True, avg, cur, torch.tensor(0))  # decay (1 + 0) / 10 = 0.1
    late = _ema_step(0.99, True, avg, cur, torch.tensor(10_000))  # capped at 0.99
    plain = _ema_step(0.99, False, avg, cur, torch.tensor(0))
    assert first == pytest.approx(torch.full((3,), 0.9)) and late == pytest.approx(torch.full((3,), 0.01))
    assert plain == pytest.approx(torch.full((3,), 0.01))
    with pytest.raises(ValueError, match="decay"):
        EMA(decay=1.0)


def test_the_average_of_half_precision_weights_keeps_moving() -> None:
    """Under bf16-true the average is made in float32, then the weights become bf16 (Lightning's
    order). Lightning's validation swap rounded the average to bf16 at every validation: validated
    every step, it froze at its first value."""
    import lightning as L

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.full((4,), 0.5))

    net = Net()
    ema = EMA(decay=0.999, warmup=False)
    ema.setup(None, net, "fit")  # the trainer is not used when the average is made
    net.to(torch.bfloat16)  # the precision plugin converts the module after the callbacks' setup
    reference = torch.full((4,), 0.5)
    for step in range(1, 3001):
        with torch.no_grad():
            net.w.fill_(0.5 + step / 3000)  # the weights drift from 0.5 to 1.5
        ema._average_model.update_parameters(net)
        reference = _ema_step(0.999, False, reference, net.w.detach().float(), torch.tensor(step))
        ema.on_validation_epoch_start(None, net)  # validated every step
        ema.on_validation_epoch_end(None, net)
        assert torch.equal(net.w.detach(), torch.full((4,), 0.5 + step / 3000, dtype=torch.bfloat16))
    average = ema._average_model.module.w.detach()
    assert average.dtype == torch.float32 and average == pytest.approx(reference, abs=1e-3)
    ema.on_validation_epoch_start(None, net)  # validation sees the average, in the weights' dtype
    assert torch.equal(net.w.detach(), average.to(torch.bfloat16))
    ema.on_validation_epoch_end(None, net)


def test_checkpoints_hold_the_average_and_the_best_is_evaluated_as_scored(
    make_cfg, tiny_data: Path, tmp_path: Path
) -> None:
    # Settings that give a non-trivial network, so the raw and the averaged weights predict differently.
    results = train(make_cfg(*EMA_ON, "model.base=8", "optimizer.lr=1e-2", "trainer.max_epochs=4"))
    best = read_checkpoint(results["best_checkpoint"])
    current = best["current_model_state"]  # the raw weights, kept for resuming
    assert any(not torch.equal(v, current[k]) for k, v in best["state_dict"].items() if v.is_floating_point())
    # train() re-validates the best checkpoint after fitting: it must score the averaged weights
    # that were scored when it was saved, not the final average.
    scored = next(
        v for k, v in best["callbacks"].items() if "Checkpoint" in k and v.get("best_model_score") is not None
    )
    assert results["val"]["val/F1"] == pytest.approx(float(scored["best_model_score"]), abs=1e-6)
    # The test scores the averaged weights too, as predict.py (which reads state_dict) does.
    out = tmp_path / "pred"
    summary = predict(
        predict_cfg(f"ckpt_path={results['best_checkpoint']}", f"input={tiny_data / 'test'}", f"output={out}")
    )
    assert 0 < summary["metrics"]["F1"] == pytest.approx(results["test"]["test/F1"], abs=1e-6)
    assert summary["metrics"]["OA"] == pytest.approx(results["test"]["test/OA"], abs=1e-6)


def test_a_run_with_ema_resumes(make_cfg, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_cfg(*EMA_ON, "trainer.max_epochs=1", out=run))
    results = train(make_cfg(*EMA_ON, "trainer.max_epochs=2", f"ckpt_path={run}", "resume_strict=false", out=run))
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1 and "averaging_state" in last and results["test"]
