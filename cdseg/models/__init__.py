"""The architectures, one file each, and :func:`build_network`.

Each class is imported when first asked for (``cdseg.models.SiameseUNet``, as the configs' ``_target_``
names them), so building one model never imports the others' dependencies (``siamese_resnet``
needs torchvision, about 1.3 s to import).
"""

from importlib import import_module
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

__all__ = [*_MODULES, "build_network"]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(import_module(f"cdseg.models.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
