"""The architectures, one file each, and :func:`build_network`.

Each class is imported when first asked for (``cdseg.models.SiameseUNet``, as the configs' ``_target_``
names them), so building one model never imports the others' dependencies (``siamese_resnet``
needs torchvision, about 1.3 s to import).
"""

import re
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

__all__ = [*_MODULES, "build_network", "buildable_targets", "stored_config_problem"]

CONF_MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"


def buildable_targets(conf_models: Path | None = None) -> frozenset[str]:
    """The ``_target_`` values a checkpoint's config may name: the architectures here, by either
    import path, and the network class of each model config in ``conf/model/`` (a config there is
    the user's own word for a class of theirs; only the network's own ``_target_``, never another
    one such a file names, like an optimizer's in a ``_global_`` file).

    Nothing else: a ``_target_`` is an import path that Hydra follows through module attributes,
    so a crafted checkpoint could otherwise name ``os.system``, or ``cdseg.models.<module>.torch.save``.
    """
    from omegaconf import OmegaConf  # only for a checkpoint's look at the configs

    names = {name for cls, module in _MODULES.items() for name in (f"{__name__}.{cls}", f"{__name__}.{module}.{cls}")}
    for file in sorted((conf_models or CONF_MODELS).glob("*.yaml")):
        try:
            config = OmegaConf.to_container(OmegaConf.load(file))
            if _GLOBAL_PACKAGE.search(file.read_text()):  # conf/model/tiny.yaml: `model:` and other groups
                config = config.get("model")
            if isinstance(config, dict) and isinstance(config.get("_target_"), str):
                names.add(config["_target_"])
        except Exception:  # noqa: BLE001 - a config Hydra cannot read either vouches for nothing
            continue
    return frozenset(names)


_GLOBAL_PACKAGE = re.compile(r"^#\s*@package\s+_global_\s*$", re.MULTILINE)


def stored_config_problem(node: Any) -> str | None:
    """What makes a checkpoint's model config unsafe to build (None when nothing): a ``_target_``
    outside :func:`buildable_targets`, or anything Hydra would turn into more objects than the
    plain values a resolved config holds (an interpolation such as ``${oc.create:...}``, a tuple)."""
    allowed = buildable_targets()  # read anew: a config added since start-up counts

    def problem(value: Any, where: str) -> str | None:
        if isinstance(value, dict):
            target = value.get("_target_")
            if "_target_" in value and not (isinstance(target, str) and target in allowed):
                return f"refusing to build {target!r}"
            for key, item in value.items():
                if not isinstance(key, str):
                    return f"{where}: a key that is not a name ({key!r})"
                if found := problem(item, f"{where}.{key}"):
                    return found
            return None
        if isinstance(value, list):
            return next((p for i, v in enumerate(value) if (p := problem(v, f"{where}[{i}]"))), None)
        if isinstance(value, str) and "${" in value:  # stored configs are resolved: no interpolation is ours
            return f"{where}: an interpolation ({value[:60]!r})"
        if value is None or isinstance(value, str | int | float | bool):
            return None
        return f"{where}: a {type(value).__name__}, where a config holds only plain values"

    return problem(node, "model")


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(import_module(f"cdseg.models.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
