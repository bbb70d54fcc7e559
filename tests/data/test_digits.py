"""scikit-learn's digits: the fixed, stratified 80/20 split."""

from __future__ import annotations

import pytest
import torch

from bonsai.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_split_80_20(digits) -> None:
    assert len(digits.train) == 1437
    assert len(digits.test) == 360


def test_digits_split_stratified(digits) -> None:
    train_counts = torch.bincount(digits.train.labels, minlength=10)
    test_counts = torch.bincount(digits.test.labels, minlength=10)
    fraction = test_counts / (train_counts + test_counts)

    assert torch.all((fraction - 0.2).abs() < 0.01)
    assert torch.all(test_counts >= 35)


def test_digits_split_fixed_across_calls(digits) -> None:
    again = load_dataset("digits")

    assert torch.equal(again.train.images, digits.train.images)
    assert torch.equal(again.train.labels, digits.train.labels)
    assert torch.equal(again.test.images, digits.test.images)


def test_digits_splits_disjoint(digits) -> None:
    train = {tuple(image.flatten().tolist()) for image in digits.train.images}
    test = [tuple(image.flatten().tolist()) for image in digits.test.images]

    # No two of the 1797 digits are equal, so a shared image would be a shared index.
    assert not any(image in train for image in test)


def test_digits_pixels_scaled_to_uint8(digits) -> None:
    assert digits.train.images.dtype == torch.uint8
    assert digits.train.images.shape[1:] == (1, 8, 8)
    assert digits.train.images.max().item() == 255
    assert digits.train.images.min().item() == 0


def test_digits_metadata(digits) -> None:
    assert digits.classes == [str(digit) for digit in range(10)]
    assert digits.num_classes == 10
    assert digits.image_size == 8
    assert digits.location.endswith("digits.csv.gz")


def test_digits_default_augmentation(digits) -> None:
    assert digits.augmentation.crop_padding == 1
    assert digits.augmentation.horizontal_flip is False
    assert digits.augmentation.cutout == 0


def test_digits_other_image_size_rejected() -> None:
    with pytest.raises(ValueError, match="8x8"):
        load_dataset("digits", image_size=16)
