"""IDX files, the format of MNIST and Fashion-MNIST.

An IDX file starts with a big-endian 32-bit magic number whose third byte is the element
type (0x08, unsigned byte) and whose fourth byte is the number of dimensions. One
big-endian 32-bit size per dimension follows, then the elements in row-major order.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ._types import DatasetFormatError, ImageSet

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, H, W)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (N,)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(digit) for digit in range(10)]

_GZIP_MAGIC = b"\x1f\x8b"


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """Return `directory/stem.gz`, else `directory/stem`, whichever exists first."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def has_idx_files(directory: Path) -> bool:
    return all(find_idx_file(directory, stem) is not None for stem in IDX_FILES)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, gzipped or plain, into an array.

    Gzip is detected from the content, not the name.

    Raises:
        DatasetFormatError: naming the file, when the magic number differs from `magic`, the
            file is shorter or longer than its header declares, or the gzip stream is corrupt.
    """
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (gzip.BadGzipFile, EOFError, zlib.error) as error:
            raise DatasetFormatError(f"{path}: invalid gzip data ({error})") from error

    if len(raw) < 4:
        raise DatasetFormatError(f"{path}: not an IDX file, it has only {len(raw)} bytes")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DatasetFormatError(
            f"{path}: IDX magic number is 0x{found:08x}, expected 0x{magic:08x}"
        )

    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetFormatError(
            f"{path}: truncated IDX header, {len(raw)} of {header_size} bytes"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected_size = header_size + math.prod(shape)
    if len(raw) != expected_size:
        raise DatasetFormatError(
            f"{path}: IDX header declares shape {shape}, so {expected_size} bytes, "
            f"but the file has {len(raw)} (truncated or trailing data)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_split(directory: Path, images_stem: str, labels_stem: str) -> ImageSet:
    images_path = find_idx_file(directory, images_stem)
    labels_path = find_idx_file(directory, labels_stem)
    if images_path is None or labels_path is None:
        raise FileNotFoundError(f"{directory} lacks {images_stem} or {labels_stem}")

    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if images.shape[1] != images.shape[2]:
        raise DatasetFormatError(f"{images_path}: images are not square, shape {images.shape}")
    if len(labels) and int(labels.max()) >= 10:
        raise DatasetFormatError(f"{labels_path}: label {int(labels.max())} is not in 0..9")

    # (N, H, W) -> (N, 1, H, W). The copy makes the tensor writable and owns its memory.
    pixels = torch.from_numpy(images.copy()).unsqueeze(1)
    return ImageSet(pixels, torch.from_numpy(labels.astype(np.int64)))


def read_idx_splits(directory: Path) -> tuple[ImageSet, ImageSet]:
    """Read the training and test splits from the four IDX files in `directory`."""
    train = _read_split(directory, TRAIN_IMAGES, TRAIN_LABELS)
    test = _read_split(directory, TEST_IMAGES, TEST_LABELS)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DatasetFormatError(
            f"{directory}: training images are {tuple(train.images.shape[2:])} but test "
            f"images are {tuple(test.images.shape[2:])}"
        )
    return train, test
