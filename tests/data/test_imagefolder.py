"""Image folders, with and without train/test folders, written by the tests with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bonsai.data import DatasetFormatError, DatasetNotFoundError, available_datasets, load_dataset

# Solid colours, one per class, so any pixel identifies the class of its image.
COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "fox": (0, 0, 255)}


@pytest.fixture(autouse=True)
def empty_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "default-root"
    monkeypatch.setenv("BONSAI_DATA_DIR", str(root))
    return root


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (12, 9)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_class_folders(root: Path, per_class: int, extension: str = ".png") -> None:
    for name, colour in COLOURS.items():
        for index in range(per_class):
            write_image(root / name / f"{index:03d}{extension}", colour)


def test_imagefolder_split_folders_load(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "train", 4)
    write_class_folders(tmp_path / "test", 2, extension=".jpg")

    splits = load_dataset("imagefolder", tmp_path)

    assert splits.classes == ["cat", "dog", "fox"]
    assert splits.train.images.shape == (12, 3, 32, 32)
    assert splits.test.images.shape == (6, 3, 32, 32)
    assert torch.equal(torch.bincount(splits.train.labels), torch.tensor([4, 4, 4]))
    assert splits.location == str(tmp_path)
    assert splits.channels == 3


def test_imagefolder_labels_match_folders(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "train", 2)
    write_class_folders(tmp_path / "test", 1)

    splits = load_dataset("imagefolder", tmp_path)

    for images in (splits.train, splits.test):
        for image, label in zip(images.images, images.labels, strict=True):
            expected = COLOURS[splits.classes[label]]
            assert tuple(image[:, 0, 0].tolist()) == expected


def test_imagefolder_val_folder_used(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "train", 2)
    write_class_folders(tmp_path / "val", 1)

    splits = load_dataset("imagefolder", tmp_path)

    assert len(splits.test) == 3


def test_imagefolder_class_folders_split_80_20(tmp_path: Path) -> None:
    write_class_folders(tmp_path, 10)

    splits = load_dataset("imagefolder", tmp_path)

    assert torch.equal(torch.bincount(splits.train.labels), torch.tensor([8, 8, 8]))
    assert torch.equal(torch.bincount(splits.test.labels), torch.tensor([2, 2, 2]))


def test_imagefolder_split_fixed_across_calls(tmp_path: Path) -> None:
    # Distinct grey levels make every image identifiable.
    for index in range(10):
        write_image(tmp_path / "a" / f"{index}.png", (index * 20,) * 3)
        write_image(tmp_path / "b" / f"{index}.png", (index * 20 + 5,) * 3)

    first = load_dataset("imagefolder", tmp_path)
    second = load_dataset("imagefolder", tmp_path)

    assert torch.equal(first.test.images, second.test.images)
    assert torch.equal(first.train.images, second.train.images)


def test_imagefolder_class_of_one_image_trains(tmp_path: Path) -> None:
    write_class_folders(tmp_path, 3)
    write_image(tmp_path / "owl" / "only.png", (9, 9, 9))

    splits = load_dataset("imagefolder", tmp_path)

    owl = splits.classes.index("owl")
    assert (splits.train.labels == owl).sum().item() == 1
    assert (splits.test.labels == owl).sum().item() == 0


@pytest.mark.parametrize("size", [8, 20])
def test_imagefolder_resizes_to_image_size(tmp_path: Path, size: int) -> None:
    write_class_folders(tmp_path, 2)

    splits = load_dataset("imagefolder", tmp_path, image_size=size)

    assert splits.train.images.shape[1:] == (3, size, size)
    assert splits.image_size == size
    assert splits.augmentation.cutout == size // 2


def test_imagefolder_grey_and_alpha_become_rgb(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "train", 1)
    write_class_folders(tmp_path / "test", 1)
    Image.new("L", (5, 5), 77).save(tmp_path / "train" / "cat" / "grey.png")
    Image.new("RGBA", (5, 5), (1, 2, 3, 4)).save(tmp_path / "train" / "dog" / "alpha.png")

    splits = load_dataset("imagefolder", tmp_path)

    assert len(splits.train) == 5
    assert splits.train.images.shape[1] == 3


def test_imagefolder_ignores_other_files(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "train", 2)
    write_class_folders(tmp_path / "test", 1)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / ".cache").mkdir()

    splits = load_dataset("imagefolder", tmp_path)

    assert splits.classes == ["cat", "dog", "fox"]
    assert len(splits.train) == 6


def test_imagefolder_missing_dir_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("imagefolder", tmp_path / "absent")

    assert str(tmp_path / "absent") in str(caught.value)


def test_imagefolder_default_dir_under_data_root(empty_default_root: Path) -> None:
    write_class_folders(empty_default_root / "imagefolder", 5)

    splits = load_dataset("imagefolder")

    assert splits.location == str(empty_default_root / "imagefolder")


def test_imagefolder_no_class_folders_error(tmp_path: Path) -> None:
    write_image(tmp_path / "loose.png", (0, 0, 0))

    with pytest.raises(DatasetFormatError, match="no class folders"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_empty_class_error(tmp_path: Path) -> None:
    write_class_folders(tmp_path, 3)
    (tmp_path / "empty").mkdir()

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("imagefolder", tmp_path)

    assert str(tmp_path / "empty") in str(caught.value)
    assert "no image files" in str(caught.value)


def test_imagefolder_unreadable_image_names_file(tmp_path: Path) -> None:
    write_class_folders(tmp_path, 3)
    bad = tmp_path / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff this is no JPEG")

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("imagefolder", tmp_path)

    assert str(bad) in str(caught.value)


def test_imagefolder_unknown_test_class_error(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "train", 2)
    write_class_folders(tmp_path / "test", 1)
    write_image(tmp_path / "test" / "owl" / "0.png", (1, 1, 1))

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("imagefolder", tmp_path)

    assert str(tmp_path / "test" / "owl") in str(caught.value)


def test_imagefolder_train_without_test_error(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "train", 2)

    with pytest.raises(DatasetFormatError, match="no test/ or val/"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_single_images_error(tmp_path: Path) -> None:
    write_class_folders(tmp_path, 1)

    with pytest.raises(DatasetFormatError, match="test split would be empty"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_constant_channel_std_one(tmp_path: Path) -> None:
    # Red is 255 in every cat and 0 in every dog, but blue is 0 in both, so its std is 0.
    for index in range(5):
        write_image(tmp_path / "cat" / f"{index}.png", (255, index * 10, 0))
        write_image(tmp_path / "dog" / f"{index}.png", (0, index * 10, 0))

    splits = load_dataset("imagefolder", tmp_path)

    assert splits.std[2] == 1.0
    assert splits.std[0] == pytest.approx(0.5)
    assert splits.mean[0] == pytest.approx(0.5)


def test_available_datasets_imagefolder(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "train", 1)

    found = {entry["name"]: entry for entry in available_datasets(tmp_path)}
    missing = {entry["name"]: entry for entry in available_datasets(tmp_path / "absent")}

    assert found["imagefolder"]["available"] is True
    assert found["imagefolder"]["location"] == str(tmp_path)
    assert missing["imagefolder"]["available"] is False
    assert str(tmp_path / "absent") in missing["imagefolder"]["message"]


def test_imagefolder_resize_uses_whole_image(tmp_path: Path) -> None:
    # Left half black, right half white: a squashing resize keeps both halves.
    pixels = np.zeros((10, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255
    for name in ("a", "b"):
        for index in range(2):
            path = tmp_path / name / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)

    image = load_dataset("imagefolder", tmp_path, image_size=8).train.images[0]

    assert image[0, 4, 0].item() == 0
    assert image[0, 4, 7].item() == 255
