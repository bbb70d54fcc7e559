"""Value types of the data module and its errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


class DatasetNotFoundError(FileNotFoundError):
    """Error raised when a data set's files are in none of the folders searched.

    The message names the data set, every folder searched and how to get the files.
    """

    def __init__(self, dataset: str, searched: Sequence[Path], how_to_get: str) -> None:
        self.dataset = dataset
        self.searched = list(searched)
        self.how_to_get = how_to_get
        places = "\n".join(f"  {path}" for path in self.searched) or "  (no folder)"
        super().__init__(f"{dataset} data set not found. Searched:\n{places}\n{how_to_get}")

    def __reduce__(self) -> tuple[type, tuple[str, list[Path], str]]:
        # Lets the error cross process boundaries (multiprocessing, task queues), because the
        # default reduction would call __init__ with the message alone.
        return (type(self), (self.dataset, self.searched, self.how_to_get))


class DatasetFormatError(ValueError):
    """Error raised when a data set file exists but its content is invalid.

    Causes include a wrong magic number, a truncated file and an unexpected array shape.

    The message names the file.
    """


@dataclass(frozen=True)
class ImageSet:
    """One split held in memory.

    Attributes:
        images: uint8 pixels, shape (N, C, H, W).
        labels: int64 class indices, shape (N,).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                "ImageSet.images must be a uint8 tensor of shape (N, C, H, W), "
                f"got {self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(
                "ImageSet.labels must be an int64 tensor of shape (N,), "
                f"got {self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"ImageSet has {len(self.images)} images but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Augmentation:
    """Random transforms applied to training batches, in this order.

    Attributes:
        crop_padding: pixels of zero (black) padding on each side before a random crop back
            to the original size, so images shift by up to this many pixels. 0 disables it.
        horizontal_flip: whether half of the images are mirrored left to right.
        cutout: side in pixels of the square set to 0 after normalization (so to the mean
            colour). Its centre is uniform over the image, and the square is clipped at the
            borders. 0 disables it.
        cutout_probability: probability that an image gets the cutout square.
    """

    crop_padding: int
    horizontal_flip: bool
    cutout: int
    cutout_probability: float = 0.5

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.cutout < 0:
            raise ValueError(f"cutout must be >= 0, got {self.cutout}")
        if not 0.0 <= self.cutout_probability <= 1.0:
            raise ValueError(
                f"cutout_probability must be in [0, 1], got {self.cutout_probability}"
            )


@dataclass(frozen=True)
class DataSplits:
    """A loaded data set with both splits and the facts a training loop needs about them.

    Attributes:
        name: data set name, one of DATASET_NAMES.
        train: training split.
        test: test split.
        classes: class names, indexed by label.
        channels: image channels (1 or 3).
        image_size: image height and width in pixels.
        mean: per-channel mean of the training images scaled to [0, 1].
        std: per-channel population standard deviation of the same values.
        augmentation: default training augmentation for this data set.
        location: folder or file the data was read from.
    """

    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation
    location: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)
