"""Rebuild a trained network from a checkpoint, without letting the file run code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from cdseg.checkpoint_io import CheckpointError, read_checkpoint

# Only classes of this package may be built from a checkpoint's config: a `_target_` is an import
# path, and building an arbitrary one would let a crafted checkpoint call any function.
ALLOWED_TARGET_PREFIX = "cdseg.models."


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder -> its best checkpoint (from metrics.json), else last.ckpt."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        metrics = path / "metrics.json"
        if metrics.is_file():
            best = json.loads(metrics.read_text()).get("best_checkpoint")
            # The folder may have been moved or copied since: look inside it first.
            if best and (path / "checkpoints" / Path(best).name).is_file():
                return path / "checkpoints" / Path(best).name
        last = path / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        raise CheckpointError(f"{path}: run folder without metrics.json's best checkpoint or checkpoints/last.ckpt")
    raise CheckpointError(f"{path}: no such checkpoint file or run folder")


def _check_targets(node: Any, where: str) -> None:
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(ALLOWED_TARGET_PREFIX):
            raise CheckpointError(
                f"{where}: refusing to build {target!r}; only {ALLOWED_TARGET_PREFIX}* classes are allowed"
            )
        for v in node.values():
            _check_targets(v, where)
    elif isinstance(node, list):
        for v in node:
            _check_targets(v, where)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``path`` (file or run folder) with ``weights_only=True``.

    Returns:
        the network in eval mode on the CPU, and the run's resolved config (a plain dict) with
        the checkpoint file it came from under ``"checkpoint_file"``.

    Raises:
        CheckpointError: missing, truncated or foreign file; a config that names a class outside
            ``cdseg.models``; weights that do not fit the network the config describes.
    """
    file = resolve_checkpoint(path)
    ckpt = read_checkpoint(file)
    config = (ckpt.get("hyper_parameters") or {}).get("run_config")
    run_yaml = file.parent.parent / "config.yaml"  # <run>/checkpoints/<file> -> <run>/config.yaml
    if not config and run_yaml.is_file():
        config = OmegaConf.to_container(OmegaConf.load(run_yaml), resolve=False)
    if not config or "model" not in config:
        raise CheckpointError(f"{file}: holds no run config, and {run_yaml} does not exist either")
    _check_targets(config["model"], str(file))
    net = instantiate(config["model"])
    weights = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        detail = str(e).splitlines()[0]
        raise CheckpointError(
            f"{file}: weights do not fit the {config['model']['_target_']} its config describes: {detail}"
        ) from None
    return net.eval(), {**config, "checkpoint_file": str(file)}
