"""SVHN from .mat files that the tests write with scipy.io.savemat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from bonsai.data import DatasetFormatError, DatasetNotFoundError, load_dataset


@pytest.fixture(autouse=True)
def empty_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "default-root"
    monkeypatch.setenv("BONSAI_DATA_DIR", str(root))
    return root


def write_svhn_mat(path: Path, count: int) -> None:
    """Image k has red k, green 100 + k, blue 200 + k. Labels cycle 1..10, 10 is the digit 0."""
    pixels = np.zeros((32, 32, 3, count), dtype=np.uint8)
    for shift, channel in ((0, 0), (100, 1), (200, 2)):
        pixels[:, :, channel, :] = shift + np.arange(count)
    labels = (np.arange(count) % 10 + 1).reshape(count, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": pixels, "y": labels})


def write_svhn(folder: Path) -> None:
    write_svhn_mat(folder / "train_32x32.mat", 20)
    write_svhn_mat(folder / "test_32x32.mat", 10)


def test_svhn_mat_files_load(tmp_path: Path) -> None:
    write_svhn(tmp_path / "svhn")

    splits = load_dataset("svhn", tmp_path)

    assert splits.location == str(tmp_path / "svhn")
    assert splits.train.images.shape == (20, 3, 32, 32)
    assert splits.test.images.shape == (10, 3, 32, 32)
    assert splits.classes == [str(digit) for digit in range(10)]


def test_svhn_label_ten_becomes_zero(tmp_path: Path) -> None:
    write_svhn(tmp_path)

    labels = load_dataset("svhn", tmp_path).train.labels

    assert labels[9].item() == 0
    assert labels[0].item() == 1
    assert labels.max().item() == 9


def test_svhn_pixels_transposed_to_nchw(tmp_path: Path) -> None:
    write_svhn(tmp_path)

    image = load_dataset("svhn", tmp_path).train.images[5]

    assert torch.all(image[0] == 5)
    assert torch.all(image[1] == 105)
    assert torch.all(image[2] == 205)


def test_svhn_default_augmentation_no_flip(tmp_path: Path) -> None:
    write_svhn(tmp_path)

    augmentation = load_dataset("svhn", tmp_path).augmentation

    assert augmentation.horizontal_flip is False
    assert augmentation.cutout == 20


def test_svhn_corrupt_mat_names_file(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    bad = tmp_path / "test_32x32.mat"
    bad.write_bytes(b"not a MATLAB file at all" * 10)

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("svhn", tmp_path)

    assert str(bad) in str(caught.value)


def test_svhn_wrong_image_shape_rejected(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    bad = tmp_path / "train_32x32.mat"
    scipy.io.savemat(bad, {"X": np.zeros((28, 28, 3, 4), np.uint8), "y": np.ones((4, 1))})

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("svhn", tmp_path)

    assert str(bad) in str(caught.value)


def test_svhn_missing_test_file_not_found(tmp_path: Path) -> None:
    write_svhn_mat(tmp_path / "train_32x32.mat", 4)

    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("svhn", tmp_path)

    assert "test_32x32.mat" in str(caught.value)
