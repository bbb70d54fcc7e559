"""Image files sorted into one folder per class.

Two layouts are read. With split folders, `root/train/<class>/*` and `root/test/<class>/*`
(or `root/val/<class>/*`). Without them, `root/<class>/*`, which is split here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ._types import DatasetFormatError, DatasetNotFoundError, ImageSet

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
TEST_FRACTION = 0.2
SPLIT_SEED = 0

_HOW_TO_GET = (
    "Set data_dir (--data-dir) to a folder with train/ and test/ (or val/) folders, each "
    "with one folder of images per class, or with the class folders alone."
)


def _class_folders(directory: Path) -> list[Path]:
    return sorted(
        entry for entry in directory.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )


def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DatasetFormatError(f"class folder {folder} has no image files ({extensions})")
    return files


def find_split_folders(root: Path) -> tuple[Path, Path] | None:
    """Return the (train, test) folders of the split layout, or None for the class layout."""
    train = root / "train"
    if not train.is_dir():
        return None
    for name in ("test", "val"):
        if (root / name).is_dir():
            return train, root / name
    raise DatasetFormatError(
        f"{root} has a train/ folder but no test/ or val/ folder. Add one, or rename train/ "
        "if it is a class."
    )


def has_class_folders(root: Path) -> bool:
    """Return whether `root`, or its train/ folder, has class folders. Reads no image."""
    if not root.is_dir():
        return False
    train = root / "train"
    return bool(_class_folders(train if train.is_dir() else root))


def _split_per_class(
    files_by_class: list[list[Path]],
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Put TEST_FRACTION of each class's files, rounded, in the test split, with a fixed seed.

    A class of two or more images gives at least one to each split. A class of one image
    goes to the training split.
    """
    generator = np.random.default_rng(SPLIT_SEED)
    train: list[tuple[Path, int]] = []
    test: list[tuple[Path, int]] = []
    for label, files in enumerate(files_by_class):
        order = generator.permutation(len(files))
        test_count = int(np.floor(TEST_FRACTION * len(files) + 0.5))
        if len(files) >= 2:
            test_count = min(max(test_count, 1), len(files) - 1)
        else:
            test_count = 0
        test_indices = set(order[:test_count].tolist())
        for index, path in enumerate(files):
            (test if index in test_indices else train).append((path, label))
    return train, test


def _read_images(files: list[tuple[Path, int]], image_size: int) -> ImageSet:
    pixels = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for index, (path, _) in enumerate(files):
        try:
            with Image.open(path) as image:
                resized = image.convert("RGB").resize(
                    (image_size, image_size), Image.Resampling.BILINEAR
                )
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise DatasetFormatError(f"cannot read image {path}: {error}") from error
        pixels[index] = np.asarray(resized)

    # (N, H, W, C) -> (N, C, H, W)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageSet(images, labels)


def read_imagefolder(root: Path, image_size: int) -> tuple[ImageSet, ImageSet, list[str]]:
    """Read every image as RGB resized to image_size x image_size with bilinear filtering.

    Class names are the sorted folder names of the training split. The aspect ratio is not
    kept.

    Raises:
        DatasetNotFoundError: `root` is not a folder.
        DatasetFormatError: no class folders, a class folder without images, a test class
            that the training split lacks, or an unreadable image (the error names it).
    """
    if not root.is_dir():
        raise DatasetNotFoundError("imagefolder", [root], _HOW_TO_GET)

    split_folders = find_split_folders(root)
    train_root = split_folders[0] if split_folders else root
    class_folders = _class_folders(train_root)
    if not class_folders:
        raise DatasetFormatError(f"{train_root} has no class folders. {_HOW_TO_GET}")
    classes = [folder.name for folder in class_folders]
    files_by_class = [_image_files(folder) for folder in class_folders]

    if split_folders is None:
        train_files, test_files = _split_per_class(files_by_class)
        if not test_files:
            raise DatasetFormatError(
                f"{root}: every class folder has one image, so the test split would be empty"
            )
    else:
        train_files = [
            (path, label) for label, files in enumerate(files_by_class) for path in files
        ]
        test_files = []
        for folder in _class_folders(split_folders[1]):
            if folder.name not in classes:
                raise DatasetFormatError(
                    f"test class folder {folder} has no counterpart in {train_root}"
                )
            label = classes.index(folder.name)
            test_files.extend((path, label) for path in _image_files(folder))
        if not test_files:
            raise DatasetFormatError(f"{split_folders[1]} has no class folders")

    logger.info(
        "reading %d training and %d test images of %d classes from %s",
        len(train_files),
        len(test_files),
        len(classes),
        root,
    )
    return _read_images(train_files, image_size), _read_images(test_files, image_size), classes
