"""SVHN in its cropped-digits format (`train_32x32.mat`, `test_32x32.mat`).

Each file is a MATLAB v5 file with `X`, uint8 of shape (32, 32, 3, N), and `y`, of shape
(N, 1), which stores the digit 0 as label 10. `extra_32x32.mat` is not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._types import DatasetFormatError, ImageSet

SVHN_TRAIN_FILE = "train_32x32.mat"
SVHN_TEST_FILE = "test_32x32.mat"
SVHN_FILES = (SVHN_TRAIN_FILE, SVHN_TEST_FILE)


def has_svhn_files(directory: Path) -> bool:
    return all((directory / name).is_file() for name in SVHN_FILES)


def _read_mat(path: Path) -> ImageSet:
    import scipy.io  # imported here because only SVHN needs it
    from scipy.io.matlab import MatReadError

    try:
        content = scipy.io.loadmat(path, variable_names=["X", "y"])
    except (MatReadError, ValueError, TypeError, EOFError) as error:
        raise DatasetFormatError(f"{path}: not a readable MATLAB file ({error})") from error
    if "X" not in content or "y" not in content:
        raise DatasetFormatError(f"{path}: missing variable 'X' or 'y'")

    pixels = content["X"]
    labels = np.asarray(content["y"]).reshape(-1)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[:3] != (32, 32, 3):
        raise DatasetFormatError(
            f"{path}: 'X' must be uint8 of shape (32, 32, 3, N), got {pixels.dtype} {pixels.shape}"
        )
    if len(labels) != pixels.shape[3]:
        raise DatasetFormatError(
            f"{path}: 'X' has {pixels.shape[3]} images but 'y' has {len(labels)} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 10):
        raise DatasetFormatError(
            f"{path}: labels must be in 0..10 (SVHN stores the digit 0 as 10)"
        )

    labels = labels.astype(np.int64) % 10  # 10 -> 0, 1..9 unchanged
    # (H, W, C, N) -> (N, C, H, W)
    images = np.ascontiguousarray(pixels.transpose(3, 2, 0, 1))
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))


def read_svhn(directory: Path) -> tuple[ImageSet, ImageSet]:
    return _read_mat(directory / SVHN_TRAIN_FILE), _read_mat(directory / SVHN_TEST_FILE)
