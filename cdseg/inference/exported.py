"""Models written by ``cdseg.export``, loaded back to run in ``predict.py``: an ONNX file through
onnxruntime, a TorchScript file through ``torch.jit``. Either is wrapped as an ``nn.Module`` with the
contract of :class:`~cdseg.inference.probability.ChangeProbability`, so the predictor's windows,
test-time augmentation and outputs are the same as for a checkpoint."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cdseg.data.preprocess import scale
from cdseg.errors import CdsegError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
METADATA_KEY = "cdseg"  # ONNX metadata_props key; TorchScript extra file "cdseg.json"
INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
EXPORT_EXTRA = 'pip install "cdseg[export]"'


class ExportedModelError(CdsegError, ValueError):
    """An exported model file that cannot be used as given."""


def metadata(model: dict[str, Any], checkpoint: str, config: dict[str, Any], input_dtype: str) -> dict[str, Any]:
    """What a run's exported model carries besides its graph: what predict.py needs to use it as the
    checkpoint would be used, and what a reader needs to feed it."""
    data = config.get("data", {})
    return {
        "format_version": 1,
        "checkpoint": checkpoint,
        "threshold": config.get("threshold"),
        "input_dtype": input_dtype,
        "in_channels": model["in_channels"],
        "min_side": model["min_side"],
        "data": {k: data.get(k) for k in ("resize", "mean", "std") if k in data},
        "model": config.get("model", {}).get("_target_"),
    }


class ExportedModel(nn.Module):
    """(N, C, h, w) uint8 (or float in [0, 1]) dates x 2 -> (N, 1, h, w) float32 probabilities."""

    def __init__(self, file: Path, meta: dict[str, Any]) -> None:
        super().__init__()
        self.file, self.meta = file, meta
        self.input_dtype = INPUT_DTYPES[meta["input_dtype"]]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != self.meta["in_channels"]:
            raise ExportedModelError(
                f"{self.file} takes two (N, {self.meta['in_channels']}, H, W) dates of one shape,"
                f" got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        h, w = a.shape[-2:]
        side = self.meta["min_side"]
        if min(h, w) < side:
            # The exported graph takes sides of at least `side`: pad here as the network itself pads
            # (ChangeDetector.forward), by reflection where both sides allow it, else by replication.
            pad_h, pad_w = -h % side, -w % side
            a, b = (_pad(x, pad_h, pad_w, reflect=pad_h < h and pad_w < w) for x in (a, b))
        if self.input_dtype != a.dtype:  # uint8 dates into a float model: scaled as training did
            a, b = scale(a), scale(b)
        return self.run(a, b)[..., :h, :w]

    def run(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _pad(x: torch.Tensor, bottom: int, right: int, reflect: bool) -> torch.Tensor:
    """(..., H, W) -> (..., H + bottom, W + right), as ``F.pad`` at the bottom and right in "reflect"
    (``bottom < H``, ``right < W``) or "replicate" mode, for any dtype (uint8 dates too)."""

    def index(n: int, pad: int) -> torch.Tensor:
        i = torch.arange(n + pad, device=x.device)
        return torch.where(i < n, i, 2 * (n - 1) - i) if reflect else i.clamp_(max=n - 1)

    h, w = x.shape[-2:]
    return x.index_select(-2, index(h, bottom)).index_select(-1, index(w, right))


class OnnxModel(ExportedModel):
    def __init__(self, file: Path, meta: dict[str, Any], session: Any) -> None:
        super().__init__(file, meta)
        self.session = session

    def run(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        (probs,) = self.session.run(None, {"a": a.cpu().numpy(), "b": b.cpu().numpy()})
        return torch.from_numpy(np.asarray(probs, dtype=np.float32)).to(a.device)


class TorchScriptModel(ExportedModel):
    def __init__(self, file: Path, meta: dict[str, Any], module: torch.jit.ScriptModule) -> None:
        super().__init__(file, meta)
        self.module = module

    def run(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.module(a, b)


def auto_device(file: str | Path, device: torch.device) -> torch.device:
    """The device for ``device=auto``: a GPU only where the file's runtime can use one (the CPU
    build of onnxruntime cannot), the CPU otherwise."""
    if device.type != "cuda" or Path(file).suffix != ".onnx":
        return device
    try:
        import onnxruntime as ort
    except ImportError:
        return device  # loading says what to install
    return device if "CUDAExecutionProvider" in ort.get_available_providers() else torch.device("cpu")


def onnx_session(file: Path, device: torch.device) -> Any:
    """An onnxruntime session for ``file`` on ``device`` (CUDA when asked and available)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportedModelError(f"{file}: running an ONNX model needs onnxruntime: {EXPORT_EXTRA}") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ExportedModelError(f"{file}: device={device} asked for, but this onnxruntime has no CUDA provider")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(file), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise ExportedModelError(f"{file}: not a readable ONNX model ({str(e).splitlines()[0]})") from None


def _parse_metadata(file: Path, text: str | bytes | None) -> dict[str, Any]:
    if not text:
        raise ExportedModelError(f"{file}: holds no cdseg metadata; export models with python -m cdseg.export")
    try:
        meta = json.loads(text)
    except ValueError:
        raise ExportedModelError(f"{file}: its cdseg metadata is not valid JSON") from None
    missing = {"input_dtype", "in_channels", "min_side", "data"} - set(meta)
    if missing or meta["input_dtype"] not in INPUT_DTYPES:
        raise ExportedModelError(f"{file}: its cdseg metadata lacks {sorted(missing) or 'a valid input_dtype'}")
    return meta


def load_exported(path: str | Path, device: torch.device | str = "cpu") -> tuple[ExportedModel, dict[str, Any]]:
    """An exported model file -> (its model, the config predict.py reads: ``data``, ``threshold``,
    ``checkpoint_file``). The format follows the file's extension (:data:`FORMATS`)."""
    file, device = Path(path), torch.device(device)
    if not file.is_file():
        raise ExportedModelError(f"model_file={file} does not exist")
    if file.suffix == ".onnx":
        session = onnx_session(file, device)
        meta = _parse_metadata(file, session.get_modelmeta().custom_metadata_map.get(METADATA_KEY))
        model: ExportedModel = OnnxModel(file, meta, session)
    elif file.suffix == ".pt":
        extra = {f"{METADATA_KEY}.json": ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is in maintenance, not gone
                module = torch.jit.load(str(file), map_location=device, _extra_files=extra)
        except RuntimeError as e:
            raise ExportedModelError(
                f"{file}: not a readable TorchScript model ({str(e).splitlines()[0]});"
                " a checkpoint written by train.py goes to ckpt_path="
            ) from None
        meta = _parse_metadata(file, extra[f"{METADATA_KEY}.json"])
        model = TorchScriptModel(file, meta, module.eval())
    else:
        raise ExportedModelError(
            f"model_file={file}: expected {' or '.join(FORMATS.values())} (cdseg.export's formats)"
        )
    config = {"data": meta["data"], "checkpoint_file": str(file), "exported_from": meta.get("checkpoint")}
    if meta.get("threshold") is not None:
        config["threshold"] = meta["threshold"]
    return model, config
