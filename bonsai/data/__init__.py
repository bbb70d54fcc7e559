"""Image classification data sets held in memory, and the mini-batches a search trains on.

`load_dataset(name)` reads a data set from its files into uint8 tensors. `iterate_batches`
turns one split into normalized, augmented float batches, reproducible from a generator.
Supported data sets are listed in DATASET_NAMES and described in docs/datasets.md.

Errors:
    DatasetNotFoundError (a FileNotFoundError): no folder searched has the files.
    DatasetFormatError (a ValueError): a file exists but its content is invalid.
"""

from ._batches import batch_count, iterate_batches
from ._load import DATASET_NAMES, available_datasets, load_dataset
from ._sources import default_data_dir
from ._types import (
    Augmentation,
    DatasetFormatError,
    DatasetNotFoundError,
    DataSplits,
    ImageSet,
)

__all__ = [
    "DATASET_NAMES",
    "Augmentation",
    "DataSplits",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageSet",
    "available_datasets",
    "batch_count",
    "default_data_dir",
    "iterate_batches",
    "load_dataset",
]
