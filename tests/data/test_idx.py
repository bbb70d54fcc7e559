"""MNIST and Fashion-MNIST from IDX files that the tests write."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bonsai.data import DatasetFormatError, DatasetNotFoundError, available_datasets, load_dataset
from bonsai.data._sources import SYSTEM_DIRS

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SIDE = 6  # Small images keep the files tiny, and the parser accepts any square size.


@pytest.fixture(autouse=True)
def empty_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default data folder at an empty folder and hide Debian's Fashion-MNIST."""
    root = tmp_path / "default-root"
    monkeypatch.setenv("BONSAI_DATA_DIR", str(root))
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", ())
    return root


def write_idx(path: Path, array: np.ndarray, *, gz: bool, magic: int | None = None) -> None:
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if gz else content)


def write_mnist_files(folder: Path, *, gz: bool, train: int = 30, test: int = 20) -> None:
    """Write the four IDX files. Image i has every pixel equal to i and label i % 10."""
    for prefix, count in (("train", train), ("t10k", test)):
        images = np.repeat(np.arange(count), SIDE * SIDE).reshape(count, SIDE, SIDE)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(count) % 10, gz=gz)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_mnist_idx_files_load(tmp_path: Path, gz: bool) -> None:
    write_mnist_files(tmp_path, gz=gz)

    splits = load_dataset("mnist", tmp_path)

    assert splits.train.images.shape == (30, 1, SIDE, SIDE)
    assert splits.test.images.shape == (20, 1, SIDE, SIDE)
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.labels.dtype == torch.int64
    assert torch.equal(splits.train.images[:, 0, 0, 0], torch.arange(30, dtype=torch.uint8))
    assert torch.equal(splits.test.labels, torch.arange(20) % 10)
    assert splits.classes == [str(digit) for digit in range(10)]
    assert splits.channels == 1
    assert splits.image_size == SIDE
    assert splits.location == str(tmp_path)


def test_mnist_torchvision_layout_found(empty_default_root: Path) -> None:
    write_mnist_files(empty_default_root / "MNIST" / "raw", gz=True)

    splits = load_dataset("mnist")

    assert splits.location == str(empty_default_root / "MNIST" / "raw")
    assert len(splits.train) == 30


def test_mnist_default_root_itself_not_searched(empty_default_root: Path) -> None:
    write_mnist_files(empty_default_root, gz=True)

    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist")


def test_mnist_default_augmentation_has_no_flip(tmp_path: Path) -> None:
    write_mnist_files(tmp_path, gz=False)

    augmentation = load_dataset("mnist", tmp_path).augmentation

    assert augmentation.horizontal_flip is False
    assert augmentation.crop_padding == 2


@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_subfolder_layouts(tmp_path: Path, layout: str) -> None:
    write_mnist_files(tmp_path / layout, gz=True)

    splits = load_dataset("fashion-mnist", tmp_path)

    assert splits.location == str(tmp_path / layout)
    assert splits.classes[0] == "T-shirt/top"
    assert splits.classes[9] == "Ankle boot"
    assert splits.num_classes == 10
    assert splits.augmentation.horizontal_flip is True


def test_fashion_mnist_system_dir_searched(tmp_path: Path, monkeypatch) -> None:
    system = tmp_path / "system"
    write_mnist_files(system, gz=True)
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", (system,))

    splits = load_dataset("fashion-mnist", tmp_path / "elsewhere")

    assert splits.location == str(system)


def test_fashion_mnist_data_dir_before_system(tmp_path: Path, monkeypatch) -> None:
    system = tmp_path / "system"
    write_mnist_files(system, gz=True, train=12)
    write_mnist_files(tmp_path / "mine", gz=True)
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", (system,))

    splits = load_dataset("fashion-mnist", tmp_path / "mine")

    assert splits.location == str(tmp_path / "mine")
    assert len(splits.train) == 30


def test_fashion_mnist_missing_mentions_apt(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist", tmp_path)

    message = str(caught.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist to run"
)
def test_fashion_mnist_debian_files_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", (DEBIAN_FASHION_MNIST,))

    splits = load_dataset("fashion-mnist")

    assert splits.location == str(DEBIAN_FASHION_MNIST)
    assert splits.train.images.shape == (60000, 1, 28, 28)
    assert splits.test.images.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(splits.train.labels), torch.full((10,), 6000))
    # Mean and std of the 60000 real training images, to four decimals.
    assert splits.mean[0] == pytest.approx(0.2860, abs=1e-4)
    assert splits.std[0] == pytest.approx(0.3530, abs=1e-4)


def test_idx_wrong_magic_names_file(tmp_path: Path) -> None:
    write_mnist_files(tmp_path, gz=True)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(bad, np.arange(30) % 10, gz=True, magic=0x00000803)

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("mnist", tmp_path)

    assert str(bad) in str(caught.value)
    assert "magic" in str(caught.value)


@pytest.mark.parametrize("change", ["truncated", "trailing"])
def test_idx_wrong_length_names_file(tmp_path: Path, change: str) -> None:
    write_mnist_files(tmp_path, gz=False)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    content = bad.read_bytes()
    bad.write_bytes(content[:-5] if change == "truncated" else content + b"\x00")

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("mnist", tmp_path)

    assert str(bad) in str(caught.value)


def test_idx_truncated_header_names_file(tmp_path: Path) -> None:
    write_mnist_files(tmp_path, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(struct.pack(">II", 0x00000803, 30))

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("mnist", tmp_path)

    assert str(bad) in str(caught.value)


def test_idx_corrupt_gzip_names_file(tmp_path: Path) -> None:
    write_mnist_files(tmp_path, gz=True)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:40])

    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("mnist", tmp_path)

    assert str(bad) in str(caught.value)


def test_idx_label_count_mismatch_rejected(tmp_path: Path) -> None:
    write_mnist_files(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(29) % 10, gz=False)

    with pytest.raises(DatasetFormatError, match="30 images but"):
        load_dataset("mnist", tmp_path)


def test_mnist_other_image_size_rejected(tmp_path: Path) -> None:
    write_mnist_files(tmp_path, gz=False)

    with pytest.raises(ValueError, match="image_size"):
        load_dataset("mnist", tmp_path, image_size=32)


def test_available_datasets_finds_idx_files(tmp_path: Path) -> None:
    write_mnist_files(tmp_path / "mnist", gz=True)

    report = {entry["name"]: entry for entry in available_datasets(tmp_path)}

    assert report["mnist"]["available"] is True
    assert report["mnist"]["location"] == str(tmp_path / "mnist")
    assert report["fashion-mnist"]["available"] is False


class _FakeTorchvisionMNIST:
    """Stands in for torchvision.datasets.MNIST: writes the raw files where it would."""

    calls: list[tuple[str, bool]] = []

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        type(self).calls.append((root, download))
        write_mnist_files(Path(root) / "MNIST" / "raw", gz=True)


def test_mnist_download_uses_torchvision(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets

    _FakeTorchvisionMNIST.calls = []
    monkeypatch.setattr(torchvision.datasets, "MNIST", _FakeTorchvisionMNIST)

    splits = load_dataset("mnist", tmp_path, download=True)

    assert _FakeTorchvisionMNIST.calls == [(str(tmp_path), True)]
    assert splits.location == str(tmp_path / "MNIST" / "raw")
    assert len(splits.test) == 20


def test_mnist_download_skipped_when_present(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets

    _FakeTorchvisionMNIST.calls = []
    monkeypatch.setattr(torchvision.datasets, "MNIST", _FakeTorchvisionMNIST)
    write_mnist_files(tmp_path, gz=False)

    load_dataset("mnist", tmp_path, download=True)

    assert _FakeTorchvisionMNIST.calls == []


def test_mnist_download_failure_not_found(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets

    def fail(root: str, train: bool = True, download: bool = False) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", fail)

    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", tmp_path, download=True)

    assert "Download failed: Error downloading" in str(caught.value)
