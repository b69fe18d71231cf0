"""A trained network ready for image pairs of any size: its run's evaluation transform, precision,
test-time augmentation and sliding windows in one object (plain torch, no Lightning). The network
comes from a checkpoint, or from a file that ``cdseg.export`` wrote."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.data.preprocess import eval_transform
from cdseg.errors import ConfigError
from cdseg.inference.checkpoint import load_checkpoint
from cdseg.inference.exported import auto_device, load_exported
from cdseg.inference.probability import ChangeProbability
from cdseg.inference.tiling import Blend, sliding_window
from cdseg.precision import AUTOCAST_DTYPES, runnable_precision

TTA = ("flip", "swap")  # horizontal/vertical flips; the exchange of A and B
# Pixels per date in one forward pass for batch_size=auto. A CPU runs fastest when a pass's
# activations stay near its caches (siamese_unet: about 1.4 Mpx/s in passes of one 256 window, 1.1
# in passes of four, 0.45 with one 1024 window; BENCHMARKS.md); a GPU wants large passes to fill its cores.
PASS_PIXELS = {"cpu": 2**16, "cuda": 2**22}


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:<index>`` of a GPU this machine has -> the device; any
    other (``mps``, ``meta``, ...) is a :class:`ConfigError`: the predictor runs on CPUs and CUDA GPUs."""
    text = str(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    found = re.fullmatch(r"cpu|cuda(?::(\d+))?", text)
    if found is None:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:<index>, got {name!r}")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} asked for, but no CUDA device is available")
        count = torch.cuda.device_count()
        if found.group(1) is not None and int(found.group(1)) >= count:
            raise ConfigError(f"device={name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device(text)


class Predictor:
    """(3, H, W) uint8 dates -> (H, W) change probabilities, preprocessed as the run evaluated.

    Args:
        model: ``forward(a, b) -> (N, 1, h, w)`` probabilities for raw (N, C, h, w) uint8 windows:
            a :class:`~cdseg.inference.probability.ChangeProbability`, or an exported model
            (:func:`~cdseg.inference.exported.load_exported`).
        config: the run's resolved config; its ``data.resize`` is applied to whole images first,
            as in validation and test (:func:`cdseg.data.preprocess.eval_transform`).
        device: where the windows run (``auto``: a GPU if there is one); the image and the stitched
            map stay on the host, in uint8.
        precision: a name of :data:`cdseg.precision.AUTOCAST_DTYPES`; on a CPU, GPU-only or
            emulated precisions fall back as in training. An exported model runs as exported.
        tta: any of :data:`TTA`; the probabilities are averaged over them.
        tile_size, overlap, batch_size, blend: sliding windows (:func:`cdseg.inference.tiling.sliding_window`);
            ``batch_size="auto"`` sizes each forward pass by :data:`PASS_PIXELS`.
    """

    def __init__(
        self,
        model: nn.Module,
        config: dict[str, Any],
        device: str | torch.device = "auto",
        precision: str = "32",
        tta: Sequence[str] = (),
        tile_size: int = 1024,
        overlap: int = 64,
        batch_size: int | str = "auto",
        blend: Blend = "gaussian",
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.transform = eval_transform(config.get("data", {}))
        self.dtype = AUTOCAST_DTYPES[runnable_precision(precision, self.device.type == "cpu", "precision")]
        if self.dtype is not None and not isinstance(model, ChangeProbability):
            raise ConfigError(f"precision={precision}: an exported model runs in the precision it was exported in")
        self.flips = [(), (-1,), (-2,)] if "flip" in tta else [()]
        self.orders = [False, True] if "swap" in tta else [False]
        self.batch_size = batch_size
        self.tiling = {"tile_size": tile_size, "overlap": overlap, "blend": blend}

    @classmethod
    def from_checkpoint(cls, spec: str | Path, runs_dir: str | Path, **options: Any) -> Predictor:
        """A checkpoint file, a run folder (its best checkpoint) or ``last`` -> its predictor."""
        net, config = load_checkpoint(spec, runs_dir)
        return cls(ChangeProbability.of_run(net, config), config, **options)

    @classmethod
    def from_model_file(cls, path: str | Path, **options: Any) -> Predictor:
        """A file written by ``cdseg.export`` (ONNX or TorchScript) -> its predictor."""
        device = resolve_device(options.get("device", "auto"))
        if str(options.get("device", "auto")) == "auto":
            device = auto_device(path, device)
        model, config = load_exported(path, device)
        return cls(model, config, **{**options, "device": device})

    @torch.no_grad()
    def windows(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) x 2 uint8 windows -> (N, 1, h, w) probabilities, averaged over the TTA."""
        total = torch.zeros(a.shape[0], 1, *a.shape[-2:], device=a.device)
        for dims in self.flips:
            fa, fb = (x.flip(dims) if dims else x for x in (a, b))
            for swap in self.orders:
                with torch.autocast(
                    self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
                ):
                    p = self.model(fb, fa) if swap else self.model(fa, fb)
                total += p.flip(dims) if dims else p
        return total / (len(self.flips) * len(self.orders))

    def _preprocess(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Resized whole as evaluation does; scaling and normalisation happen in the model, per window,
        # so the image stays uint8 (a quarter of float32's memory and of its transfer to a GPU).
        return self.transform.resize(a), self.transform.resize(b)

    def per_pass(self, height: int, width: int) -> int:
        """Windows (or pairs) of this size in one forward pass."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        return max(1, PASS_PIXELS.get(self.device.type, PASS_PIXELS["cuda"]) // (height * width))

    def one_window(self, height: int, width: int) -> bool:
        """Whether a pair of this size is predicted in a single window, so that pairs of its size can
        share a forward pass (:meth:`many`); a run trained on resized images never is."""
        size = self.tiling["tile_size"]
        return self.config.get("data", {}).get("resize") is None and height <= size and width <= size

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 dates -> (H, W) float32 probabilities on the host."""
        h, w = a.shape[-2:]
        a, b = self._preprocess(a, b)
        side = self.tiling["tile_size"]
        batch = self.per_pass(min(side, a.shape[-2]), min(side, a.shape[-1]))
        probs = sliding_window(self.windows, a, b, **self.tiling, batch_size=batch, device=self.device)
        if probs.shape != (h, w):  # a model trained on resized images predicted at that scale
            probs = F.interpolate(probs[None, None], size=(h, w), mode="bilinear")[0, 0]
        return probs

    def many(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Pairs of one size, each a single window (:meth:`one_window`), in one forward pass: what
        keeps a GPU busy on a folder of small chips. Each result is the pair's (H, W) probabilities."""
        if len({a.shape for a, _ in pairs}) > 1:
            raise ValueError(f"pairs of one size only, got {sorted({tuple(a.shape) for a, _ in pairs})}")
        inputs = [self._preprocess(a, b) for a, b in pairs]
        a = torch.stack([x for x, _ in inputs]).to(self.device)
        b = torch.stack([y for _, y in inputs]).to(self.device)
        return list(self.windows(a, b)[:, 0].float().cpu())
