"""CIFAR-10 and CIFAR-100 from pickle batches that the tests write."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bonsai.data import DatasetFormatError, DatasetNotFoundError, load_dataset

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


@pytest.fixture(autouse=True)
def empty_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "default-root"
    monkeypatch.setenv("BONSAI_DATA_DIR", str(root))
    return root


def write_pickle(path: Path, content: object, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        pickle.dump(content, file, protocol=protocol)


def make_batch(first: int, count: int, label_key: bytes, num_classes: int) -> dict:
    """Image k (numbered from `first`) is red k, green k + 1, blue k + 2, label k % classes.

    Keys are bytes, as in the archives that Python 2 wrote.
    """
    numbers = np.arange(first, first + count)
    channels = [np.repeat((numbers + shift)[:, None] % 256, 1024, axis=1) for shift in range(3)]
    return {
        b"batch_label": b"testing batch",
        b"data": np.concatenate(channels, axis=1).astype(np.uint8),  # (N, 3072)
        label_key: [int(number) % num_classes for number in numbers],
    }


def write_cifar10(folder: Path, *, per_batch: int = 4, protocol: int = 2) -> None:
    for index in range(5):
        batch = make_batch(index * per_batch, per_batch, b"labels", 10)
        write_pickle(folder / f"data_batch_{index + 1}", batch, protocol)
    write_pickle(folder / "test_batch", make_batch(100, 6, b"labels", 10), protocol)
    meta = {b"label_names": [name.encode() for name in CIFAR10_NAMES], b"num_vis": 3072}
    write_pickle(folder / "batches.meta", meta, protocol)


def write_cifar100(folder: Path) -> None:
    for name, first, count in (("train", 0, 200), ("test", 500, 100)):
        batch = make_batch(first, count, b"fine_labels", 100)
        batch[b"coarse_labels"] = [label // 5 for label in batch[b"fine_labels"]]
        write_pickle(folder / name, batch)
    names = [f"class_{index:02d}".encode() for index in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": []})


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batches_load(tmp_path: Path, protocol: int) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol)

    splits = load_dataset("cifar10", tmp_path)

    assert splits.train.images.shape == (20, 3, 32, 32)
    assert splits.test.images.shape == (6, 3, 32, 32)
    assert splits.location == str(tmp_path / "cifar-10-batches-py")
    assert splits.classes == CIFAR10_NAMES
    assert torch.equal(splits.train.labels, torch.arange(20) % 10)


def test_cifar10_rows_are_rgb_planes(tmp_path: Path) -> None:
    write_cifar10(tmp_path)

    image = load_dataset("cifar10", tmp_path).train.images[7]

    assert torch.all(image[0] == 7)
    assert torch.all(image[1] == 8)
    assert torch.all(image[2] == 9)


def test_cifar10_default_augmentation(tmp_path: Path) -> None:
    write_cifar10(tmp_path)

    augmentation = load_dataset("cifar10", tmp_path).augmentation

    assert augmentation.crop_padding == 4
    assert augmentation.horizontal_flip is True
    assert augmentation.cutout == 16


def test_cifar10_missing_batch_not_found(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()

    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("cifar10", tmp_path)

    assert str(tmp_path / "cifar-10-batches-py") in str(caught.value)
    assert "download=True" in str(caught.value)


def test_cifar100_fine_labels_load(tmp_path: Path) -> None:
    write_cifar100(tmp_path / "cifar-100-python")

    splits = load_dataset("cifar100", tmp_path)

    assert splits.num_classes == 100
    assert splits.classes[42] == "class_42"
    assert torch.equal(splits.train.labels, torch.arange(200) % 100)
    assert torch.equal(splits.test.labels, torch.arange(500, 600) % 100)


def test_cifar_max_train_keeps_every_class(tmp_path: Path) -> None:
    write_cifar100(tmp_path)

    splits = load_dataset("cifar100", tmp_path, max_train=100)

    assert len(splits.train) == 100
    assert torch.equal(torch.bincount(splits.train.labels), torch.ones(100, dtype=torch.int64))


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_cifar_pickle_with_code_rejected(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "test_batch", {b"data": _RunsCode(), b"labels": []})

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("cifar10", tmp_path)

    assert str(tmp_path / "test_batch") in str(caught.value)
    assert "getcwd is not allowed" in str(caught.value)


def test_cifar_bad_data_shape_names_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bad = make_batch(0, 4, b"labels", 10)
    bad[b"data"] = bad[b"data"][:, :1000]
    write_pickle(tmp_path / "data_batch_2", bad)

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("cifar10", tmp_path)

    assert str(tmp_path / "data_batch_2") in str(caught.value)


def test_cifar_label_out_of_range_rejected(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bad = make_batch(0, 4, b"labels", 10)
    bad[b"labels"][0] = 10
    write_pickle(tmp_path / "data_batch_1", bad)

    with pytest.raises(DatasetFormatError, match="labels must be in 0..9"):
        load_dataset("cifar10", tmp_path)


def test_cifar_truncated_pickle_names_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "batches.meta"
    path.write_bytes(path.read_bytes()[:20])

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("cifar10", tmp_path)

    assert str(path) in str(caught.value)
