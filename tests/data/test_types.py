"""Validation in ImageSet and Augmentation."""

from __future__ import annotations

import pytest
import torch

from bonsai.data import Augmentation, ImageSet


def test_image_set_float_images_rejected() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))


def test_image_set_three_dims_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ImageSet(torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))


def test_image_set_int32_labels_rejected() -> None:
    with pytest.raises(ValueError, match="int64"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))


def test_image_set_length_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_image_set_len() -> None:
    images = ImageSet(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.zeros(5).long())

    assert len(images) == 5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"crop_padding": -1}, "crop_padding"),
        ({"cutout": -2}, "cutout"),
        ({"cutout_probability": 1.5}, "cutout_probability"),
        ({"cutout_probability": -0.1}, "cutout_probability"),
    ],
)
def test_augmentation_invalid_field_rejected(fields: dict, message: str) -> None:
    settings = {"crop_padding": 0, "horizontal_flip": False, "cutout": 0, **fields}

    with pytest.raises(ValueError, match=message):
        Augmentation(**settings)
