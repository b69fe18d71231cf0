"""Data: the LEVIR-layout dataset, synchronized transforms, the datamodule, synthetic scenes.

The datamodule (Lightning) is imported only when asked for, so the dataset and transforms, which
predict.py uses, stay free of Lightning.
"""

from typing import Any

from cdseg.data.dataset import ChangeDetectionDataset, DatasetError, find_pairs, validate_split

__all__ = ["ChangeDetectionDataModule", "ChangeDetectionDataset", "DatasetError", "find_pairs", "validate_split"]


def __getattr__(name: str) -> Any:
    if name == "ChangeDetectionDataModule":
        from cdseg.data.datamodule import ChangeDetectionDataModule

        return ChangeDetectionDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
