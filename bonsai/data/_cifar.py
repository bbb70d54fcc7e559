"""CIFAR-10 and CIFAR-100 in their "python version" pickle format.

Each batch file is a pickled dict with `data`, a uint8 array of shape (N, 3072) whose rows
hold the 1024 red, then green, then blue values of a 32x32 image in row-major order, and
`labels` (CIFAR-10) or `fine_labels` (CIFAR-100). The archives were written by Python 2,
so keys and strings load as bytes.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._types import DatasetFormatError, ImageSet

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_FILES = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)

CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_FILES = ("train", "test", "meta")

_IMAGE_SHAPE = (3, 32, 32)

# Only the globals that pickled numpy arrays need (protocols 2 to 5, numpy 1 and 2 module
# names), plus _codecs.encode, which Python 3 uses for bytes under protocol 2. Anything else,
# such as os.system, is rejected, because unpickling a file from an unknown source could
# otherwise run arbitrary code.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def has_files(directory: Path, names: tuple[str, ...]) -> bool:
    return all((directory / name).is_file() for name in names)


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            content = _RestrictedUnpickler(file, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DatasetFormatError(f"{path}: not a valid CIFAR pickle file ({error})") from error
    if not isinstance(content, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return {_as_text(key): value for key, value in content.items()}


def _as_text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DatasetFormatError(f"{path}: missing key 'data' or {label_key!r}")

    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != np.prod(_IMAGE_SHAPE):
        raise DatasetFormatError(
            f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(
            f"{path}: {label_key!r} must be {len(data)} integers, got shape {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFormatError(f"{path}: labels must be in 0..{num_classes - 1}")
    return data, labels


def _to_image_set(parts: list[tuple[np.ndarray, np.ndarray]]) -> ImageSet:
    data = np.concatenate([data for data, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    images = torch.from_numpy(data.reshape(len(data), *_IMAGE_SHAPE))
    return ImageSet(images, torch.from_numpy(labels.astype(np.int64)))


def _read_names(path: Path, key: str, count: int) -> list[str]:
    meta = _load_pickle(path)
    names = [str(_as_text(name)) for name in meta.get(key, [])]
    if len(names) != count:
        raise DatasetFormatError(f"{path}: expected {count} names in {key!r}, got {len(names)}")
    return names


def read_cifar10(directory: Path) -> tuple[ImageSet, ImageSet, list[str]]:
    """Read the five training batches, the test batch and the class names."""
    train = [_read_batch(directory / name, "labels", 10) for name in CIFAR10_TRAIN_FILES]
    test = [_read_batch(directory / CIFAR10_TEST_FILE, "labels", 10)]
    classes = _read_names(directory / CIFAR10_META_FILE, "label_names", 10)
    return _to_image_set(train), _to_image_set(test), classes


def read_cifar100(directory: Path) -> tuple[ImageSet, ImageSet, list[str]]:
    """Read both splits with their 100 fine labels, and the fine class names."""
    train = [_read_batch(directory / "train", "fine_labels", 100)]
    test = [_read_batch(directory / "test", "fine_labels", 100)]
    classes = _read_names(directory / "meta", "fine_label_names", 100)
    return _to_image_set(train), _to_image_set(test), classes
