"""load_dataset and available_datasets across data sets: names, folders, subsets, stats."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from bonsai.data import (
    DATASET_NAMES,
    DatasetNotFoundError,
    available_datasets,
    default_data_dir,
    load_dataset,
)
from bonsai.data._load import channel_stats, select_subset
from bonsai.data._sources import SYSTEM_DIRS


@pytest.fixture(autouse=True)
def empty_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "default-root"
    monkeypatch.setenv("BONSAI_DATA_DIR", str(root))
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", ())
    return root


def test_load_unknown_name_lists_names() -> None:
    with pytest.raises(ValueError) as caught:
        load_dataset("imagenet")

    assert "'imagenet'" in str(caught.value)
    for name in DATASET_NAMES:
        assert name in str(caught.value)


def test_load_missing_error_names_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", tmp_path)

    error = caught.value
    assert error.searched == [tmp_path, tmp_path / "mnist", tmp_path / "MNIST" / "raw"]
    assert error.dataset == "mnist"
    for path in error.searched:
        assert str(path) in str(error)
    assert "download=True" in str(error)


def test_load_missing_searches_env_root(empty_default_root: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("cifar10")

    assert caught.value.searched == [empty_default_root / "cifar-10-batches-py"]


def test_not_found_error_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_dataset("svhn", tmp_path)


def test_not_found_error_survives_pickle(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("cifar100", tmp_path)

    copy = pickle.loads(pickle.dumps(caught.value))

    assert str(copy) == str(caught.value)
    assert copy.searched == caught.value.searched


def test_default_data_dir_from_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BONSAI_DATA_DIR", str(tmp_path / "here"))

    assert default_data_dir() == tmp_path / "here"


def test_default_data_dir_home_fallback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BONSAI_DATA_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path))

    assert default_data_dir() == tmp_path / ".bonsai" / "data"


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_load_invalid_max_train_rejected(limit: object) -> None:
    with pytest.raises(ValueError, match="max_train"):
        load_dataset("digits", max_train=limit)  # type: ignore[arg-type]


def test_max_train_keeps_every_class() -> None:
    splits = load_dataset("digits", max_train=50, max_test=20)

    assert len(splits.train) == 50
    assert len(splits.test) == 20
    assert torch.equal(torch.bincount(splits.train.labels), torch.full((10,), 5))
    assert torch.equal(torch.bincount(splits.test.labels), torch.full((10,), 2))


def test_max_train_fixed_across_calls() -> None:
    first = load_dataset("digits", max_train=33)
    second = load_dataset("digits", max_train=33)

    assert torch.equal(first.train.images, second.train.images)


def test_max_train_above_size_keeps_all() -> None:
    splits = load_dataset("digits", max_train=10_000)

    assert len(splits.train) == 1437


def test_select_subset_uneven_classes() -> None:
    # Class 0 has 2 images, class 1 has 8: a limit of 6 takes both of class 0.
    labels = torch.tensor([0, 0] + [1] * 8)

    chosen = select_subset(labels, 6)

    assert chosen is not None
    assert len(chosen) == 6
    assert torch.equal(torch.bincount(labels[chosen]), torch.tensor([2, 4]))
    assert torch.equal(chosen, torch.sort(chosen).values)


def test_mean_std_match_training_images() -> None:
    splits = load_dataset("digits", max_train=200)
    pixels = splits.train.images.double() / 255

    assert splits.mean[0] == pytest.approx(pixels.mean().item(), rel=1e-9)
    assert splits.std[0] == pytest.approx(pixels.std(unbiased=False).item(), rel=1e-9)


def test_channel_stats_per_channel() -> None:
    images = torch.zeros(3, 2, 4, 4, dtype=torch.uint8)
    images[:, 1] = torch.tensor([0, 255, 255], dtype=torch.uint8)[:, None, None]

    mean, std = channel_stats(images)

    assert mean == (0.0, pytest.approx(2 / 3))
    assert std == (0.0, pytest.approx((2 / 9) ** 0.5))


def test_available_datasets_digits_available() -> None:
    report = {entry["name"]: entry for entry in available_datasets()}

    assert report["digits"]["available"] is True
    assert report["digits"]["location"].endswith("digits.csv.gz")


def test_available_datasets_missing_has_message(empty_default_root: Path) -> None:
    report = {entry["name"]: entry for entry in available_datasets()}

    assert report["cifar10"]["available"] is False
    assert report["cifar10"]["location"] is None
    assert str(empty_default_root / "cifar-10-batches-py") in report["cifar10"]["message"]
    assert "download=True" in report["cifar10"]["message"]


def test_available_datasets_every_name_once() -> None:
    report = available_datasets()

    assert [entry["name"] for entry in report] == list(DATASET_NAMES)
    for entry in report:
        assert set(entry) == {"name", "available", "location", "message"}
