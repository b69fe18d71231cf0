"""Rebuild a trained network from a checkpoint, without letting the file run code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from cdseg.models import _MODULES, CONF_MODELS, stored_config_problem
from cdseg.models.network import build_network
from cdseg.runs.checkpoint import CheckpointError, read_checkpoint, run_config
from cdseg.runs.folder import RunFolder, checkpoint_to_evaluate


def _check_model_config(model: dict[str, Any], where: str) -> None:
    if refused := stored_config_problem(model):
        raise CheckpointError(
            f"{where}: {refused}; a checkpoint's model config may only name one of the architectures "
            f"({', '.join(f'cdseg.models.{cls}' for cls in sorted(_MODULES))}) or a class that a config "
            f"in {CONF_MODELS} names as its _target_ (the way to add one of your own), with plain values"
        )


def run_data_options(spec: str | Path, runs_dir: str | Path | None = None) -> dict[str, Any]:
    """The run's ``data`` options, from a look at its checkpoint (or config.yaml) without loading
    the weights; {} when they cannot be read (:func:`load_checkpoint` then names the problem)."""
    try:
        file = checkpoint_to_evaluate(spec, runs_dir)
        config = run_config(read_checkpoint(file, peek=True))
        run_yaml = RunFolder(file.parent.parent).config
        if not config and run_yaml.is_file():
            config = OmegaConf.to_container(OmegaConf.load(run_yaml), resolve=False)
    except (CheckpointError, OSError):
        return {}
    return dict((config or {}).get("data") or {})


def load_checkpoint(spec: str | Path, runs_dir: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint file, a run folder's best checkpoint, or (with ``runs_dir``) ``last``, with
    ``weights_only=True``: :func:`cdseg.runs.folder.checkpoint_to_evaluate`.

    Returns:
        the network in eval mode on the CPU, and the run's resolved config (a plain dict) with
        the checkpoint file it came from under ``"checkpoint_file"``.

    Raises:
        CheckpointError: missing, truncated, damaged or foreign file; a model config that names a
            class outside ``cdseg.models.buildable_targets`` or holds more than plain values;
            weights that do not fit the network the config describes.
    """
    file = checkpoint_to_evaluate(spec, runs_dir)
    ckpt = read_checkpoint(file)
    config = run_config(ckpt)
    run_yaml = RunFolder(file.parent.parent).config  # <run>/checkpoints/<file> -> <run>/config.yaml
    if not config and run_yaml.is_file():
        config = OmegaConf.to_container(OmegaConf.load(run_yaml), resolve=False)
    if not config or "model" not in config:
        raise CheckpointError(f"{file}: holds no run config, and {run_yaml} does not exist either")
    _check_model_config(config["model"], str(file))
    # The checkpoint holds every weight: pretrained ones need not (and offline could not) be loaded first.
    # Compiling pays for fixed sizes over many steps, not for windows of every size: never here.
    net = build_network(config["model"], compile=False, **({"weights": None} if "weights" in config["model"] else {}))
    weights = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        detail = str(e).splitlines()[0]
        raise CheckpointError(
            f"{file}: weights do not fit the {config['model']['_target_']} its config describes: {detail}"
        ) from None
    return net.eval(), {**config, "checkpoint_file": str(file)}
