from cdseg.data.datamodule import ChangeDetectionDataModule
from cdseg.data.dataset import ChangeDetectionDataset, DatasetError, find_pairs, validate_split

__all__ = ["ChangeDetectionDataModule", "ChangeDetectionDataset", "DatasetError", "find_pairs", "validate_split"]
