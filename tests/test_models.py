"""Every model of conf/model/: the forward contract at any size, gradients, A/B symmetry where the
architecture is symmetric, published sizes, and a run through train.py and predict.py."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cdseg.config import build as build_target
from cdseg.errors import ConfigError
from cdseg.models import build_network
from cdseg.overrides import check_overrides
from predict import predict
from tests.conftest import ROOT, compose_train, tiny_overrides
from tests.test_predict import predict_cfg
from train import train

MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))


def build(name: str, **options) -> nn.Module:
    """The network ``model=<name>`` describes in the composed train config, as train.py builds it."""
    cfg = compose_train(f"model={name}", *(f"model.{k}={v}" for k, v in options.items()))
    return build_network(cfg.model)


def pair(n: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g), torch.randn(n, 3, h, w, generator=g)


def calibrated(net: nn.Module, a: torch.Tensor, b: torch.Tensor) -> nn.Module:
    """``net`` in eval mode with BatchNorm statistics of one pass over (a, b), so activations keep
    their scale through the layers as in a trained network (fresh running statistics are 0 and 1)."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one pass gives the batch's statistics
    with torch.no_grad():
        net.train()(a, b)
    return net.eval()


def test_every_model_config_is_tested() -> None:
    assert {"siamese_unet", "fc_ef", "fc_siam_conc", "fc_siam_diff", "snunet", "tiny", "siamese_resnet"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 45, 61), (2, 32, 32), (1, 7, 5)])
def test_one_logit_per_input_pixel_at_any_size(name: str, shape: tuple[int, int, int]) -> None:
    out = build(name, base=4).eval()(*pair(*shape))
    assert out.shape == (shape[0], 1, *shape[1:]) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_the_first_layer(name: str) -> None:
    net = build(name, base=4).train()
    net(*pair(2, 32, 32)).mean().backward()
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "options", "symmetric"),
    [
        ("fc_siam_diff", {}, True),
        ("siamese_unet", {"fusion": "diff"}, True),
        ("fc_siam_conc", {}, False),
        ("fc_ef", {}, False),
        ("snunet", {}, False),
        ("tiny", {}, False),
        ("siamese_resnet", {}, True),
        ("siamese_resnet", {"exchange": "[null,spatial,channel,channel]"}, True),
        ("siamese_resnet", {"fusion": "concat"}, False),
    ],
)
def test_exchanging_the_dates(name: str, options: dict, symmetric: bool) -> None:
    a, b = pair(2, 32, 48)
    net = calibrated(build(name, base=4, **options), a, b)
    with torch.no_grad():
        ab, ba = net(a, b), net(b, a)
    assert ab.std() > 1e-3, "the output barely depends on the input: the test could not tell"
    assert torch.allclose(ab, ba, atol=1e-5) == symmetric


# Counted from the published layer lists (Daudt et al., ICIP 2018), whose head gives two class
# scores: one logit instead saves the 16 * 9 weights and 1 bias of the second class.
PUBLISHED = {"fc_ef": 1_350_578, "fc_siam_conc": 1_545_986, "fc_siam_diff": 1_350_146}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_fc_models_have_the_published_size(name: str) -> None:
    assert sum(p.numel() for p in build(name).parameters()) == PUBLISHED[name] - (16 * 9 + 1)


@pytest.mark.parametrize(("base", "millions"), [(16, 3.01), (32, 12.03)])
def test_snunet_has_the_published_size(base: int, millions: float) -> None:
    # As the paper reports them, to 10 000 parameters.
    assert round(sum(p.numel() for p in build("snunet", base=base).parameters()) / 1e6, 2) == millions


def gflops(net: nn.Module, size: int = 256) -> float:
    """Forward FLOPs of one size x size pair, as torch.utils.flop_counter counts them."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(*pair(1, size, size))
    return counter.get_total_flops() / 1e9


def test_tiny_is_tiny() -> None:
    # Under 0.5 M parameters and under a fifth of the FLOPs of the tutorial's network (base 32),
    # and of the default siamese_unet (base 16).
    tiny = build("tiny")
    assert sum(p.numel() for p in tiny.parameters()) < 500_000
    assert gflops(tiny) < gflops(build("siamese_unet", base=16)) / 5 < gflops(build("siamese_unet", base=32)) / 5


@pytest.mark.parametrize("name", MODELS)
def test_every_model_trains_and_predicts_through_the_scripts(name: str, tiny_data: Path, tmp_path: Path) -> None:
    results = train(compose_train(*tiny_overrides(tiny_data, tmp_path / "run"), f"model={name}"))
    assert results["best_checkpoint"] and all(v == v for v in results["test"].values())
    out = tmp_path / "pred"
    summary = predict(predict_cfg(f"ckpt_path={results['output_dir']}", f"input={tiny_data / 'test'}", f"output={out}"))
    assert summary["metrics"]["F1"] == pytest.approx(results["test"]["test/F1"], abs=1e-6)


def test_an_unknown_model_name_exits_1_listing_the_valid_ones(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "model=nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert all(name in proc.stderr for name in MODELS)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["model.bse=32"],
            [
                "model.bse: no such option",
                "did you mean model.base?",
                "base, channels_last, compile, fusion, in_channels, prior",
            ],
        ),
        (
            ["model=tiny", "model.fusion=diff"],
            ["model.fusion: no such option", "(TinyCD): base, channels_last, compile, in_channels, prior"],
        ),
        (["-m", "model=tiny,snunet", "model.fusion=diff"], ["(TinyCD)"]),  # a sweep: checked on its first choice
        (["trainer.max_epoch=1"], ["did you mean trainer.max_epochs?"]),
    ],
)
def test_an_unknown_option_is_named_with_the_valid_ones(args: list[str], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        check_overrides(ROOT / "conf", "train", args)
    assert all(text in str(info.value) for text in expected), str(info.value)


@pytest.mark.parametrize(
    "args",
    [
        ["model.base=8", "model=tiny"],
        ["-m", "model.base=8,16"],
        ["+model.extra=1"],
        ["callbacks=ema", "callbacks.ema.decay=0.9"],
        ["model=tiny", "optimizer.lr=1e-3"],
    ],
)
def test_known_options_appends_and_sweeps_pass_the_check(args: list[str]) -> None:
    check_overrides(ROOT / "conf", "train", args)  # raises on a false alarm


def test_an_option_the_model_does_not_take_exits_1_listing_what_it_takes(tmp_path: Path) -> None:
    for args, expected in (
        (["model.bse=32"], "did you mean model.base?"),
        (["+model.bse=32"], "SiameseUNet takes: in_channels, base, fusion, prior"),
    ):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args, f"paths.runs_dir={tmp_path}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert expected in proc.stderr, proc.stderr


def test_a_model_config_may_set_its_learning_rate_and_the_command_line_still_wins() -> None:
    assert compose_train("model=tiny").optimizer.lr == 1e-2 and compose_train().optimizer.lr == 1e-3
    assert compose_train("model=tiny", "optimizer.lr=5e-4").optimizer.lr == 5e-4
    assert compose_train("model=tiny", "experiment=levir").optimizer.lr == 1e-3  # a recipe is a whole recipe


def test_networks_run_channels_last_by_default_and_compile_when_asked() -> None:
    cfg = compose_train("model.base=4")
    compiled_cfg = compose_train("model.base=4", "model.compile=true", "model.channels_last=false")
    net, compiled = build_network(cfg.model), build_network(compiled_cfg.model)
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert compiled._compiled_call_impl is not None  # compiled in place: the checkpoint keys stay the same
    assert list(compiled.state_dict()) == list(net.state_dict())
    with pytest.raises(ConfigError, match="model.channels_last must be true or false, got 'yes'"):
        build_network({**cfg.model, "channels_last": "yes"})


def test_a_compiled_network_trains_and_its_checkpoint_predicts(make_cfg, tmp_path: Path) -> None:
    results = train(make_cfg("model.compile=true"))
    test = Path(make_cfg().data.root) / "test"
    cfg = predict_cfg(f"ckpt_path={results['best_checkpoint']}", f"input={test}", f"output={tmp_path / 'p'}")
    assert predict(cfg)["metrics"]["F1"] == pytest.approx(results["test"]["test/F1"], abs=1e-6)


@pytest.mark.parametrize("model", MODELS)
def test_a_prior_that_is_not_a_probability_is_refused_naming_the_option(model: str) -> None:
    for prior in (0, 1, 1.5, -0.1, "half"):
        with pytest.raises(ConfigError, match=f"model.prior must be a probability .* got {prior!r}"):
            build_network({**compose_train(f"model={model}").model, "prior": prior})


@pytest.mark.parametrize("name", MODELS)
def test_every_model_starts_at_its_prior(name: str) -> None:
    """The first training step sees probabilities near model.prior, not a saturated head: with the
    published Kaiming init on its one-channel head SNUNet started at a mean of 0.12 here (logits
    spread by 10 to 20, so the share above 0.5 swings with the seed)."""
    torch.manual_seed(0)
    net = build(name, prior=0.05).train()
    with torch.no_grad():
        p = torch.sigmoid(net(*pair(2, 64, 64)))
    assert 0.02 < p.mean().item() < 0.1, f"{name}: mean initial probability {p.mean().item():.3f}"
    assert (p > 0.5).float().mean().item() < 0.01, f"{name}: {(p > 0.5).float().mean().item():.1%} of pixels above 0.5"


def test_a_target_that_cannot_be_imported_is_named_with_the_import_error(tmp_path: Path, monkeypatch) -> None:
    # Hydra itself only says "set env var HYDRA_FULL_ERROR=1", which shows nothing more here.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "__init__.py").write_text("")
    (tmp_path / "mine" / "broken.py").write_text("import a_package_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for target, said in (
        (
            "mine.broken.Net",
            "cannot import 'mine.broken.Net': ModuleNotFoundError: No module named 'a_package_that_is_not",
        ),
        ("cdseg.models.SiameseUNett", "cannot import 'cdseg.models.SiameseUNett': cdseg.models has no 'SiameseUNett'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(said)):
            build_target({"_target_": target})
    nested = {"_target_": "cdseg.losses.BCEDiceLoss", "dice_weight": {"_target_": "mine.broken.Part"}}
    with pytest.raises(ConfigError, match=re.escape("cannot import 'mine.broken.Part' (at dice_weight): Module")):
        build_target(nested)
