"""Loading a data set by name into memory, and reporting which ones are available."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from . import _digits, _imagefolder
from ._sources import SOURCES, default_data_dir, find_files, locate, not_found_error
from ._types import Augmentation, DatasetFormatError, DataSplits, ImageSet

logger = logging.getLogger(__name__)

DATASET_NAMES: tuple[str, ...] = (
    "digits",
    "fashion-mnist",
    "mnist",
    "cifar10",
    "cifar100",
    "svhn",
    "imagefolder",
)

DEFAULT_IMAGEFOLDER_SIZE = 32
SUBSET_SEED = 0

# Digits are 8x8, so a 1-pixel shift is already 12% of the side. Flips would turn digits
# into other shapes, and a cutout square of any useful size hides most of the digit.
_DIGITS_AUGMENTATION = Augmentation(crop_padding=1, horizontal_flip=False, cutout=0)

_STATS_CHUNK = 1024  # images per step of the mean and std sums, 3 MiB of int32 at 32x32x3


def _imagefolder_augmentation(image_size: int) -> Augmentation:
    # The CIFAR setup scaled to the image side, 4 and 16 pixels at 32x32, because an image
    # folder is assumed to hold natural photographs.
    return Augmentation(
        crop_padding=max(1, image_size // 8),
        horizontal_flip=True,
        cutout=image_size // 2,
    )


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}, expected one of: {', '.join(DATASET_NAMES)}")


def _check_positive(option: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} must be a positive integer or None, got {value!r}")


def select_subset(labels: torch.Tensor, limit: int | None) -> torch.Tensor | None:
    """Pick `limit` indices, taking the classes in turn, or return None to keep every image.

    Images are ranked within their class by a permutation seeded with SUBSET_SEED, and the
    rank-0 image of every class comes first, then every rank-1 image, and so on. Each class
    therefore gets `limit // num_classes` images or all it has, and the selection does not
    depend on the search's seed. The indices are returned in ascending order.
    """
    count = len(labels)
    if limit is None or limit >= count:
        return None

    generator = torch.Generator().manual_seed(SUBSET_SEED)
    order = torch.randperm(count, generator=generator)
    shuffled = labels[order]

    # Rank of each shuffled image among the images of its class.
    by_class = torch.argsort(shuffled, stable=True)
    grouped = shuffled[by_class]
    class_sizes = torch.bincount(grouped)
    class_starts = torch.cumsum(class_sizes, 0) - class_sizes
    rank = torch.empty(count, dtype=torch.int64)
    rank[by_class] = torch.arange(count) - class_starts[grouped]

    # Round robin: sort by rank, ties broken by position in the permutation.
    round_robin = torch.argsort(rank * count + torch.arange(count))
    return torch.sort(order[round_robin[:limit]]).values


def _subset(images: ImageSet, limit: int | None) -> ImageSet:
    indices = select_subset(images.labels, limit)
    if indices is None:
        return images
    return ImageSet(images.images[indices], images.labels[indices])


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Compute the per-channel mean and population std of uint8 images scaled to [0, 1].

    The sums are exact integers, so the variance has no cancellation error.
    """
    if len(images) == 0:
        raise ValueError("cannot compute the mean and std of an empty training split")
    channels = images.shape[1]
    values_per_channel = images.numel() // channels
    totals = [0] * channels
    squares = [0] * channels
    for chunk in images.split(_STATS_CHUNK):
        wide = chunk.to(torch.int32)
        chunk_totals = wide.sum(dim=(0, 2, 3), dtype=torch.int64).tolist()
        chunk_squares = (wide * wide).sum(dim=(0, 2, 3), dtype=torch.int64).tolist()
        for channel in range(channels):
            totals[channel] += chunk_totals[channel]
            squares[channel] += chunk_squares[channel]

    means = []
    stds = []
    for total, square in zip(totals, squares, strict=True):
        # Var = (n * sum(x^2) - sum(x)^2) / n^2, in units of (1/255)^2.
        variance = (values_per_channel * square - total * total) / values_per_channel**2
        means.append(total / values_per_channel / 255.0)
        stds.append(math.sqrt(variance) / 255.0)
    return tuple(means), tuple(stds)


def _safe_std(std: tuple[float, ...], name: str) -> tuple[float, ...]:
    if all(value > 0.0 for value in std):
        return std
    logger.warning(
        "%s: a channel of the training images is constant, so its std is 0. "
        "Normalizing it with std 1 instead.",
        name,
    )
    return tuple(value if value > 0.0 else 1.0 for value in std)


def _imagefolder_root(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return default_data_dir() / "imagefolder"


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    max_train: int | None = None,
    max_test: int | None = None,
    image_size: int | None = None,
) -> DataSplits:
    """Load both splits of a data set into memory as uint8 tensors.

    Args:
        name: one of DATASET_NAMES.
        data_dir: folder to search first. None searches the default data folder
            ($BONSAI_DATA_DIR, else ~/.bonsai/data). For imagefolder it is the image folder
            itself, and None means `<default data folder>/imagefolder`.
        download: fetch missing mnist, fashion-mnist, cifar10, cifar100 or svhn files with
            torchvision into `data_dir` (or the default data folder). Digits and imagefolder
            ignore it.
        max_train: keep at most this many training images, chosen by `select_subset` so
            that every class is represented. The mean and std describe the images kept.
        max_test: the same for the test split.
        image_size: side in pixels that imagefolder resizes images to, 32 by default. The
            other data sets accept only their own size.

    Raises:
        ValueError: unknown name, invalid limit or image_size.
        DatasetNotFoundError: the files are missing. The message lists every folder
            searched and how to get them.
        DatasetFormatError: a file is corrupt. The message names the file.
    """
    _check_name(name)
    _check_positive("max_train", max_train)
    _check_positive("max_test", max_test)
    _check_positive("image_size", image_size)

    if name == "digits":
        native_size = 8
        if image_size not in (None, native_size):
            raise ValueError("digits images are 8x8, so image_size must be None or 8")
        train, test = _digits.read_digits()
        classes = [str(digit) for digit in range(10)]
        augmentation = _DIGITS_AUGMENTATION
        location = _digits.digits_location()
    elif name == "imagefolder":
        size = image_size or DEFAULT_IMAGEFOLDER_SIZE
        root = _imagefolder_root(data_dir)
        train, test, classes = _imagefolder.read_imagefolder(root, size)
        augmentation = _imagefolder_augmentation(size)
        location = str(root)
    else:
        source = SOURCES[name]
        if image_size not in (None, source.image_size):
            raise ValueError(
                f"{name} images are {source.image_size}x{source.image_size}, so image_size "
                f"must be None or {source.image_size}; resizing is only done for imagefolder"
            )
        folder = locate(source, data_dir, download)
        train, test, classes = source.read(folder)
        augmentation = source.augmentation
        location = str(folder)

    if len(train) == 0 or len(test) == 0:
        raise DatasetFormatError(
            f"{name} in {location}: a split is empty ({len(train)} training, {len(test)} test)"
        )
    train = _subset(train, max_train)
    test = _subset(test, max_test)
    mean, std = channel_stats(train.images)

    logger.info(
        "loaded %s from %s: %d training and %d test images, %d classes",
        name,
        location,
        len(train),
        len(test),
        len(classes),
    )
    return DataSplits(
        name=name,
        train=train,
        test=test,
        classes=classes,
        channels=train.images.shape[1],
        image_size=train.images.shape[2],
        mean=mean,
        std=_safe_std(std, name),
        augmentation=augmentation,
        location=location,
    )


def _availability(name: str, data_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    if name == "digits":
        location = _digits.digits_location()
        return {
            "name": name,
            "available": True,
            "location": location,
            "message": "bundled with scikit-learn",
        }

    if name == "imagefolder":
        root = _imagefolder_root(data_dir)
        if _imagefolder.has_class_folders(root):
            return {
                "name": name,
                "available": True,
                "location": str(root),
                "message": f"class folders found in {root}",
            }
        return {
            "name": name,
            "available": False,
            "location": None,
            "message": f"no class folders in {root}. Set data_dir to a folder of class folders.",
        }

    source = SOURCES[name]
    folder = find_files(source, data_dir)
    if folder is not None:
        return {
            "name": name,
            "available": True,
            "location": str(folder),
            "message": f"found in {folder}",
        }
    message = str(not_found_error(source, data_dir))
    return {"name": name, "available": False, "location": None, "message": message}


def available_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Report for every data set whether its files exist, without reading them.

    Returns:
        One dict per name of DATASET_NAMES, in that order, with `name`, `available`,
        `location` (the folder or file found, else None) and `message` (where it was found,
        or where it was searched and how to get it).
    """
    return [_availability(name, data_dir) for name in DATASET_NAMES]
