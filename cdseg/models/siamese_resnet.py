"""Siamese ResNet U-Net: a torchvision ResNet shared by both dates (optionally ImageNet-pretrained),
fusion at every scale, an optional feature exchange between the two branches (as in Changer, Fang et
al., 2023), and a light U-Net decoder of its own. With ImageNet weights, ``diff`` fusion and no
exchange it is a relative of the "U-Net SiamDiff" baseline of Corley et al., "A Change Detection
Reality Check" (2023); with exchange, it borrows ChangerEx's feature exchange, not its decoder.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from cdseg.config import int_problem, raise_problems
from cdseg.errors import ConfigError
from cdseg.models.blocks import ChangeDetector, ConvBNReLU, Fusion, fuse, fusion_factor, init_prior

ENCODERS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights),
    "resnet34": (models.resnet34, models.ResNet34_Weights),
    "resnet50": (models.resnet50, models.ResNet50_Weights),
}


def spatial_exchange(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap every other column of the two dates' (N, C, h, w) features."""
    swap = torch.arange(a.shape[-1], device=a.device) % 2 == 0
    return torch.where(swap, b, a), torch.where(swap, a, b)


def channel_exchange(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap every other channel of the two dates' (N, C, h, w) features."""
    swap = (torch.arange(a.shape[1], device=a.device) % 2 == 0)[:, None, None]
    return torch.where(swap, b, a), torch.where(swap, a, b)


EXCHANGES = {"spatial": spatial_exchange, "channel": channel_exchange}


def _route(url: str) -> tuple[str, int, str]:
    """(host, port, how) of the first hop of a download of ``url``: the HTTPS proxy when one is set."""
    for variable in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        if proxy := os.environ.get(variable):
            parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
            return parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80), f"the proxy {proxy}"
    return urlparse(url).hostname or "", 443, urlparse(url).hostname or url


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def imagenet_file_name(name: str) -> str:
    """The file name of torchvision's ImageNet weights of that ResNet (``resnet18-f37072fd.pth``)."""
    return os.path.basename(ENCODERS[name][1].DEFAULT.url)


def load_encoder_weights(encoder: nn.Module, name: str, weights: str) -> None:
    """``imagenet``: torchvision's ImageNet weights through its weights API (the torch hub cache, else
    a download); otherwise a local state-dict file of the same architecture. A file that does not fit
    is refused naming the keys; ``imagenet`` offline fails at once, saying where to put the file."""
    if weights == "imagenet":
        api = ENCODERS[name][1].DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / imagenet_file_name(name)
        host, port, how = _route(api.url)

        def offline(why: str) -> ConfigError:
            return ConfigError(
                f"model.weights=imagenet: the ImageNet weights of {name} are not in the torch hub cache and "
                f"{why}. Download {api.url} on a machine with internet and put it at {cached} (or set "
                f"TORCH_HOME), or pass the file: model.weights=/path/to/{cached.name}"
            )

        downloading = not cached.is_file()
        if downloading and not _reachable(host, port):
            raise offline(f"{how} cannot be reached")
        try:
            state = api.get_state_dict(progress=False, check_hash=True, weights_only=True)
        except Exception as e:  # a failed download (any kind), else a cached file that does not load
            if downloading:
                reason = e.reason if isinstance(e, URLError) else e
                raise offline(f"its download through {how} failed ({type(e).__name__}: {reason})") from None
            raise ConfigError(
                f"model.weights=imagenet: {cached} is not a readable state dict ({type(e).__name__}: {e}); "
                "delete it and download it again"
            ) from None
        source = str(cached)
    else:
        if not Path(weights).is_file():
            raise ConfigError(f"model.weights={weights}: no such file (expected imagenet, null or a .pth file)")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:  # any file that is not a torch save (which exception depends on its first bytes)
            raise ConfigError(f"model.weights={weights}: not a readable state dict ({type(e).__name__})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        source = weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{source}: not a state dict (a mapping of names to tensors) but a {type(state).__name__}")

    # The classifier (fc.*) is not used, and BatchNorm's num_batches_tracked counters are not weights
    # (torchvision's ImageNet files predate them; load_state_dict fills them in): both left out here.
    def kept(key: str) -> bool:
        return not key.startswith("fc.") and not key.endswith("num_batches_tracked")

    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = {k: v for k, v in encoder.state_dict().items() if kept(k)}
    problems = {
        "missing": sorted(own.keys() - state.keys()),
        "unexpected": sorted(k for k in state.keys() - own.keys() if kept(k)),
        "wrong shape": sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape),
    }
    if any(problems.values()):
        listed = "; ".join(f"{what} {keys[:5]}" for what, keys in problems.items() if keys)
        raise ConfigError(f"{source}: not {name} weights: {listed}")
    encoder.load_state_dict(state, strict=False)  # every key but fc.* checked above


class SiameseResNet(ChangeDetector):
    """Siamese ResNet U-Net change detector.

    Args:
        encoder: ``resnet18``, ``resnet34`` or ``resnet50`` (torchvision), shared by both dates.
        weights: ``None`` (random initialisation), ``imagenet`` (torchvision's weights API), or the
            path of a state-dict file of that ResNet.
        fusion: per-scale fusion of the two dates, as :func:`cdseg.models.blocks.fuse`.
        exchange: per encoder stage (four), ``null``, ``spatial`` or ``channel``: swap every other
            column or channel between the two branches after that stage (Changer). ChangerEx uses
            ``[null, spatial, channel, channel]``. ``None``: no exchange. An exchange acts through
            the stages after it: after the last stage, where only the fusion follows, it changes
            nothing with ``diff`` (|A'-B'| = |A-B|) and only permutes ``concat``'s channels.
        base: width of the finest decoder stage; the decoder is 8, 4, 2, 1 and 1/2 x base wide.
        input_mean, input_std: the normalisation of the inputs (``data.mean``, ``data.std``). With
            ImageNet weights (``imagenet``, or torchvision's file by its name) they must be the
            weights' own, checked here; any other file's normalisation is the user's to match.
        prior: initial change probability of the head (:func:`cdseg.models.blocks.init_prior`).
    """

    stride = 32  # the ResNet's five 2x downsamplings

    def __init__(
        self,
        encoder: str = "resnet18",
        weights: str | None = None,
        fusion: Fusion = "diff",
        exchange: Sequence[str | None] | None = None,
        base: int = 32,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        prior: float | None = 0.05,
    ) -> None:
        super().__init__()
        raise_problems([int_problem("model.base", base, 2)])  # the last decoder stage halves it
        if encoder not in ENCODERS:
            raise ConfigError(f"model.encoder must be one of {sorted(ENCODERS)}, got {encoder!r}")
        exchange = list(exchange or [None] * 4)
        if len(exchange) != 4 or any(e is not None and e not in EXCHANGES for e in exchange):
            raise ConfigError(f"model.exchange must list 4 stages of null, spatial or channel, got {exchange}")
        # torchvision's ImageNet weights, downloaded or passed as their file (the offline advice)
        if weights == "imagenet" or (weights is not None and Path(weights).name == imagenet_file_name(encoder)):
            norm = ENCODERS[encoder][1].DEFAULT.transforms()
            given = [list(input_mean or []), list(input_std or [])]
            if given != [list(norm.mean), list(norm.std)]:
                raise ConfigError(
                    f"model.weights={weights} expects inputs normalised as in ImageNet training: "
                    f"data.mean={list(norm.mean)} data.std={list(norm.std)}; got data.mean={input_mean} data.std={input_std}"
                )
        net = ENCODERS[encoder][0](weights=None)
        if weights is not None:
            load_encoder_weights(net, encoder, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)  # 1/2
        self.stages = nn.ModuleList([nn.Sequential(net.maxpool, net.layer1), net.layer2, net.layer3, net.layer4])
        self.exchange = exchange
        self.fusion = fusion
        k = fusion_factor(fusion)
        enc = [64] + [_out(stage) for stage in self.stages]  # widths at 1/2, 1/4, 1/8, 1/16, 1/32
        dec = [8 * base, 4 * base, 2 * base, base, base // 2]  # at 1/16, 1/8, 1/4, 1/2, 1
        self.bottleneck = ConvBNReLU(k * enc[4], dec[0], kernel_size=1)
        self.up = nn.ModuleList(
            nn.Sequential(ConvBNReLU(c_in + k * skip, c_out), ConvBNReLU(c_out, c_out))
            for c_in, skip, c_out in zip([dec[0], *dec[:3]], [enc[3], enc[2], enc[1], enc[0]], dec[:4], strict=True)
        )
        self.final = ConvBNReLU(dec[3], dec[4])
        self.head = nn.Conv2d(dec[4], 1, 1)
        init_prior(self.head, prior)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n = a.shape[0]
        x = self.stem(torch.cat([a, b], dim=0))  # both dates through the shared encoder in one batch
        feats = [x]
        for stage, exchange in zip(self.stages, self.exchange, strict=True):
            x = stage(x)
            if exchange is not None:
                x = torch.cat(EXCHANGES[exchange](x[:n], x[n:]), dim=0)
            feats.append(x)
        fused = [fuse(f[:n], f[n:], self.fusion) for f in feats]  # 1/2, 1/4, 1/8, 1/16, 1/32
        y = self.bottleneck(fused[4])
        for up, skip in zip(self.up, reversed(fused[:4]), strict=True):
            y = up(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        y = self.final(F.interpolate(y, size=a.shape[-2:], mode="bilinear", align_corners=False))
        return self.head(y)


def _out(stage: nn.Module) -> int:
    """Output channels of a ResNet stage."""
    return [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
