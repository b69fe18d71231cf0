"""The architectures, one file each, and :func:`build_network`.

Each class is imported when first asked for (``cdseg.models.SiameseUNet``, as the configs' ``_target_``
names them), so building one model never imports the others' dependencies (``siamese_resnet``
needs torchvision, about 1.3 s to import).
"""

from importlib import import_module
from pathlib import Path
from typing import Any

from cdseg.models.network import build_network

_MODULES = {
    "FCEF": "fc_ef",
    "FCSiamConc": "fc_siam_conc",
    "FCSiamDiff": "fc_siam_diff",
    "SNUNet": "snunet",
    "SiameseResNet": "siamese_resnet",
    "SiameseUNet": "siamese_unet",
    "TinyCD": "tiny",
}

__all__ = [*_MODULES, "build_network", "buildable_targets", "unbuildable_targets"]

CONF_MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"


def buildable_targets(conf_models: Path | None = None) -> frozenset[str]:
    """The ``_target_`` values a checkpoint's config may name: the architectures here, by either
    import path, and every ``_target_`` in the model configs of ``conf/model/`` (a config there is
    the user's own word for a class of theirs).

    Nothing else: a ``_target_`` is an import path that Hydra follows through module attributes,
    so a crafted checkpoint could otherwise name ``os.system``, or ``cdseg.models.<module>.torch.save``.
    """
    from omegaconf import OmegaConf  # only for a checkpoint's look at the configs

    names = {name for cls, module in _MODULES.items() for name in (f"{__name__}.{cls}", f"{__name__}.{module}.{cls}")}
    for file in sorted((conf_models or CONF_MODELS).glob("*.yaml")):
        try:
            names.update(_targets(OmegaConf.to_container(OmegaConf.load(file))))
        except Exception:  # noqa: BLE001 - a config Hydra cannot read either vouches for nothing
            continue
    return frozenset(names)


def unbuildable_targets(node: Any) -> list[str]:
    """The ``_target_`` values in a model config (a plain dict) that :func:`buildable_targets` lacks."""
    allowed = buildable_targets()  # read anew: a config added since start-up counts
    return [t for t in _targets(node) if t not in allowed]


def _targets(node: Any) -> list[str]:
    """Every string ``_target_`` in a nested config of dicts and lists."""
    if isinstance(node, dict):
        own = [node["_target_"]] if isinstance(node.get("_target_"), str) else []
        return own + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in _targets(value)]
    return []


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(import_module(f"cdseg.models.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
