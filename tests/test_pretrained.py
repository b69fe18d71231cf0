"""siamese_resnet's encoder weights: ImageNet through torchvision's weights API (from the torch hub cache,
or a clear error offline), a local file checked against the architecture, and the feature exchange."""

import socket
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torchvision import models

from cdseg.errors import ConfigError
from cdseg.models.siamese_resnet import SiameseResNet, channel_exchange, spatial_exchange
from predict import predict
from tests.conftest import compose_train, tiny_overrides
from tests.test_predict import predict_cfg
from train import train

IMAGENET = {"input_mean": [0.485, 0.456, 0.406], "input_std": [0.229, 0.224, 0.225]}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network, and an empty torch hub cache of its own; returns where resnet18's ImageNet file goes."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints" / Path(models.ResNet18_Weights.DEFAULT.url).name
    torch.hub.set_dir(previous)


def resnet18_file(path: Path, seed: int) -> dict:
    torch.manual_seed(seed)
    state = models.resnet18().state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_a_local_file_of_the_architecture_loads_and_changes_the_output(tmp_path: Path) -> None:
    state = resnet18_file(tmp_path / "r18.pth", seed=1)
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    scratch = SiameseResNet(base=4).eval()
    torch.manual_seed(0)
    loaded = SiameseResNet(base=4, weights=str(tmp_path / "r18.pth")).eval()
    assert torch.equal(loaded.stem[0].weight, state["conv1.weight"])
    assert torch.equal(loaded.stages[3][0].conv1.weight, state["layer4.0.conv1.weight"])
    with torch.no_grad():
        assert not torch.allclose(scratch(a, b), loaded(a, b))


def test_a_file_of_another_architecture_is_refused_naming_the_keys(tmp_path: Path) -> None:
    torch.save(models.resnet50().state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ConfigError, match=r"r50.pth: not resnet18 weights: unexpected \['layer1.0.bn3.*wrong shape"):
        SiameseResNet(weights=str(tmp_path / "r50.pth"))
    resnet18_file(tmp_path / "r18.pth", seed=0)
    with pytest.raises(ConfigError, match=r"r18.pth: not resnet34 weights: missing \['layer1.2.bn1.bias'"):
        SiameseResNet(encoder="resnet34", weights=str(tmp_path / "r18.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pth: not a readable state dict"):
        SiameseResNet(weights=str(tmp_path / "junk.pth"))
    (tmp_path / "notes.pth").write_text("epoch 12, best weights\n")  # torch.load: an IndexError
    with pytest.raises(ConfigError, match="notes.pth: not a readable state dict"):
        SiameseResNet(weights=str(tmp_path / "notes.pth"))
    with pytest.raises(ConfigError, match="nope.pth: no such file"):
        SiameseResNet(weights=str(tmp_path / "nope.pth"))


def test_imagenet_offline_fails_at_once_saying_where_to_put_the_file(offline: Path) -> None:
    with pytest.raises(ConfigError, match=f"cannot be reached. Download .*resnet18.* and put it at {offline}"):
        SiameseResNet(weights="imagenet", **IMAGENET)


def test_imagenet_loads_from_the_cache_without_the_network(offline: Path) -> None:
    state = resnet18_file(offline, seed=2)  # stands for the downloaded file
    net = SiameseResNet(weights="imagenet", **IMAGENET)
    assert torch.equal(net.stem[0].weight, state["conv1.weight"])


def test_imagenet_weights_need_imagenet_normalised_inputs(offline: Path) -> None:
    resnet18_file(offline, seed=2)
    with pytest.raises(ConfigError, match=r"expects inputs normalised .* got data.mean=None"):
        SiameseResNet(weights="imagenet")


def test_a_run_from_imagenet_weights_predicts_without_them(offline: Path, tiny_data: Path, tmp_path: Path) -> None:
    resnet18_file(offline, seed=2)
    options = ["model=siamese_resnet", "model.weights=imagenet", "model.base=4"]
    results = train(compose_train(*tiny_overrides(tiny_data, tmp_path / "run"), *options))
    offline.unlink()  # the checkpoint holds every weight
    summary = predict(
        predict_cfg(f"ckpt_path={results['output_dir']}", f"input={tiny_data / 'test'}", f"output={tmp_path / 'p'}")
    )
    assert summary["metrics"]["F1"] == pytest.approx(results["test"]["test/F1"], abs=1e-6)


def torchvision_style(state: dict) -> dict:
    """torchvision's ImageNet ResNet files predate BatchNorm's num_batches_tracked counters."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def test_files_without_batchnorm_counters_load_as_torchvisions_own(offline: Path, tmp_path: Path) -> None:
    state = torchvision_style(resnet18_file(offline, seed=3))
    torch.save(state, offline)  # the hub cache's file, as torchvision publishes it
    assert torch.equal(SiameseResNet(weights="imagenet", **IMAGENET).stem[0].weight, state["conv1.weight"])
    torch.save(state, tmp_path / "r18.pth")
    net = SiameseResNet(weights=str(tmp_path / "r18.pth"))
    assert torch.equal(net.stages[3][1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_files_that_hold_no_state_dict_are_refused_naming_them(offline: Path, tmp_path: Path) -> None:
    for name, content in [("tensor.pth", torch.zeros(3)), ("list.pth", [torch.zeros(3)])]:
        torch.save(content, tmp_path / name)
        with pytest.raises(ConfigError, match=f"{name}: not a state dict"):
            SiameseResNet(weights=str(tmp_path / name))
    resnet18_file(offline, seed=0)
    offline.write_bytes(offline.read_bytes()[:1000])  # a download cut short
    with pytest.raises(ConfigError, match=f"{offline} is not a readable state dict .*delete it"):
        SiameseResNet(weights="imagenet", **IMAGENET)


def test_torchvisions_file_passed_by_path_needs_imagenet_normalised_inputs(offline: Path, tmp_path: Path) -> None:
    local = tmp_path / offline.name  # the offline advice: model.weights=/path/to/resnet18-f37072fd.pth
    resnet18_file(local, seed=0)
    with pytest.raises(ConfigError, match=r"expects inputs normalised .* got data.mean=\[0.5"):
        SiameseResNet(weights=str(local), input_mean=[0.5] * 3, input_std=[0.5] * 3)
    SiameseResNet(weights=str(local), **IMAGENET)
    resnet18_file(tmp_path / "mine.pth", seed=0)  # any other file: its normalisation is the user's to match
    SiameseResNet(weights=str(tmp_path / "mine.pth"), input_mean=[0.5] * 3, input_std=[0.5] * 3)


def test_behind_a_proxy_the_proxy_is_checked_and_a_failed_download_explained(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    for variable in ("https_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=r"the proxy http://proxy.example:3128 cannot be reached. Download"):
        SiameseResNet(weights="imagenet", **IMAGENET)  # the fixture refuses every connection

    tried = []

    class Connection:
        def close(self) -> None:
            pass

    def connect(address, timeout=None):
        tried.append(address)
        return Connection()

    def download(url, dst, *args, **kwargs):
        tried.append(url)
        raise URLError("certificate verify failed")  # a TLS-intercepting proxy, say

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    with pytest.raises(ConfigError, match=r"its download through the proxy .* failed \(URLError: certificate verify"):
        SiameseResNet(weights="imagenet", **IMAGENET)
    assert tried == [("proxy.example", 3128), models.ResNet18_Weights.DEFAULT.url]
    assert not offline.exists()

    def stalled(url, dst, *args, **kwargs):
        raise TimeoutError("timed out")  # any failure of a download is named as one, not as a bad cache file

    monkeypatch.setattr(torch.hub, "download_url_to_file", stalled)
    with pytest.raises(ConfigError, match=r"its download through the proxy .* failed \(TimeoutError: timed out\)"):
        SiameseResNet(weights="imagenet", **IMAGENET)


def test_the_exchanges_swap_every_other_column_or_channel() -> None:
    a, b = torch.zeros(1, 4, 2, 6), torch.ones(1, 4, 2, 6)
    sa, sb = spatial_exchange(a, b)
    assert sa[0, 0, 0].tolist() == [1, 0, 1, 0, 1, 0] and torch.equal(sa + sb, a + b)
    ca, cb = channel_exchange(a, b)
    assert ca[0, :, 0, 0].tolist() == [1, 0, 1, 0] and torch.equal(ca + cb, a + b)
