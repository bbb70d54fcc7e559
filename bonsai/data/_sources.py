"""Search folders, readers and downloaders of the data sets stored as files."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import _cifar, _idx, _svhn
from ._types import Augmentation, DatasetNotFoundError, ImageSet

logger = logging.getLogger(__name__)

DATA_DIR_VARIABLE = "BONSAI_DATA_DIR"

# Folders searched after the data folder, per data set. Debian's dataset-fashion-mnist
# package installs the four gzipped IDX files into this folder.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

Reader = Callable[[Path], tuple[ImageSet, ImageSet, list[str]]]


@dataclass(frozen=True)
class Source:
    """A data set stored as files in a known format.

    Attributes:
        name: data set name.
        subdirs: folders below the data folder that may contain the files, in search order.
        files: file names that must all exist, for messages.
        has_files: whether a folder contains every required file.
        read: parser of a folder that has the files.
        download: fetcher of the files into a data folder, so that one of `subdirs` has them.
        image_size: height and width of the images in pixels.
        augmentation: default training augmentation.
    """

    name: str
    subdirs: tuple[str, ...]
    files: tuple[str, ...]
    has_files: Callable[[Path], bool]
    read: Reader
    download: Callable[[Path], None]
    image_size: int
    augmentation: Augmentation

    def how_to_get(self, data_dir: Path) -> str:
        text = (
            f"Pass download=True (--download) to fetch it with torchvision into {data_dir}, "
            f"or copy {', '.join(self.files)} into one of the folders above."
        )
        if self.name == "fashion-mnist":
            text = (
                "Install Debian's package with `apt-get install dataset-fashion-mnist`, set "
                "data_dir (--data-dir) to a folder with the files, or pass download=True "
                f"(--download) to fetch it with torchvision into {data_dir}."
            )
        return text


def default_data_dir() -> Path:
    """Return $BONSAI_DATA_DIR if it is set and not empty, else ~/.bonsai/data."""
    configured = os.environ.get(DATA_DIR_VARIABLE, "")
    return Path(configured).expanduser() if configured else Path.home() / ".bonsai" / "data"


def candidate_dirs(source: Source, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """List the folders to search, in order.

    A folder passed as `data_dir` is searched itself and then its `subdirs`. The default
    data folder is shared by every data set, so only its `subdirs` are searched, because
    MNIST and Fashion-MNIST files have the same names. The system folders come last.
    """
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        folders = [base, *(base / subdir for subdir in source.subdirs)]
    else:
        base = default_data_dir()
        folders = [base / subdir for subdir in source.subdirs]
    return folders + list(SYSTEM_DIRS.get(source.name, ()))


def find_files(source: Source, data_dir: str | os.PathLike[str] | None) -> Path | None:
    for folder in candidate_dirs(source, data_dir):
        if source.has_files(folder):
            return folder
    return None


def not_found_error(
    source: Source, data_dir: str | os.PathLike[str] | None, detail: str = ""
) -> DatasetNotFoundError:
    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    how_to_get = source.how_to_get(base)
    if detail:
        how_to_get = f"{detail}\n{how_to_get}"
    return DatasetNotFoundError(source.name, candidate_dirs(source, data_dir), how_to_get)


def locate(source: Source, data_dir: str | os.PathLike[str] | None, download: bool) -> Path:
    """Return the first folder with the data set's files, downloading them if requested.

    Raises:
        DatasetNotFoundError: the files are in no candidate folder and `download` is False,
            or the download failed.
    """
    folder = find_files(source, data_dir)
    if folder is not None:
        return folder
    if not download:
        raise not_found_error(source, data_dir)

    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    logger.info("downloading %s with torchvision into %s", source.name, base)
    try:
        base.mkdir(parents=True, exist_ok=True)
        source.download(base)
    except (OSError, RuntimeError) as error:
        # torchvision raises RuntimeError when every mirror failed and URLError (an OSError)
        # when the network is unreachable.
        raise not_found_error(source, data_dir, f"Download failed: {error}") from error

    folder = find_files(source, data_dir)
    if folder is None:
        raise not_found_error(source, data_dir, "The download finished without these files.")
    logger.info("downloaded %s into %s", source.name, folder)
    return folder


def _download_mnist(base: Path) -> None:
    from torchvision import datasets  # imported here because it takes seconds to import

    datasets.MNIST(str(base), train=True, download=True)


def _download_fashion_mnist(base: Path) -> None:
    from torchvision import datasets

    datasets.FashionMNIST(str(base), train=True, download=True)


def _download_cifar10(base: Path) -> None:
    from torchvision import datasets

    datasets.CIFAR10(str(base), train=True, download=True)


def _download_cifar100(base: Path) -> None:
    from torchvision import datasets

    datasets.CIFAR100(str(base), train=True, download=True)


def _download_svhn(base: Path) -> None:
    from torchvision import datasets

    # torchvision writes the .mat files straight into its root, so give it the svhn/ folder.
    for split in ("train", "test"):
        datasets.SVHN(str(base / "svhn"), split=split, download=True)


def _read_mnist(folder: Path) -> tuple[ImageSet, ImageSet, list[str]]:
    train, test = _idx.read_idx_splits(folder)
    return train, test, list(_idx.DIGIT_CLASSES)


def _read_fashion_mnist(folder: Path) -> tuple[ImageSet, ImageSet, list[str]]:
    train, test = _idx.read_idx_splits(folder)
    return train, test, list(_idx.FASHION_MNIST_CLASSES)


def _read_svhn(folder: Path) -> tuple[ImageSet, ImageSet, list[str]]:
    train, test = _svhn.read_svhn(folder)
    return train, test, list(_idx.DIGIT_CLASSES)


_IDX_FILE_NAMES = tuple(f"{stem}[.gz]" for stem in _idx.IDX_FILES)

SOURCES: dict[str, Source] = {
    "fashion-mnist": Source(
        name="fashion-mnist",
        subdirs=("fashion-mnist", "FashionMNIST/raw"),
        files=_IDX_FILE_NAMES,
        has_files=_idx.has_idx_files,
        read=_read_fashion_mnist,
        download=_download_fashion_mnist,
        image_size=28,
        # Garments look much the same mirrored, so flips are safe. Shifts reach 2 pixels, 7%
        # of the side. An 8x8 cutout covers 8% of the image, enough to hide a collar or a
        # sleeve but not the silhouette that distinguishes a shirt from a coat.
        # NOTE: cutout 8 is a judgement call, not tuned on Fashion-MNIST.
        augmentation=Augmentation(crop_padding=2, horizontal_flip=True, cutout=8),
    ),
    "mnist": Source(
        name="mnist",
        subdirs=("mnist", "MNIST/raw"),
        files=_IDX_FILE_NAMES,
        has_files=_idx.has_idx_files,
        read=_read_mnist,
        download=_download_mnist,
        image_size=28,
        # Mirrored digits are not digits, so no flips. No cutout either, because it can
        # erase the one stroke that distinguishes a 4 from a 9.
        augmentation=Augmentation(crop_padding=2, horizontal_flip=False, cutout=0),
    ),
    "cifar10": Source(
        name="cifar10",
        subdirs=(_cifar.CIFAR10_FOLDER,),
        files=_cifar.CIFAR10_FILES,
        has_files=lambda folder: _cifar.has_files(folder, _cifar.CIFAR10_FILES),
        read=_cifar.read_cifar10,
        download=_download_cifar10,
        image_size=32,
        # The usual CIFAR training setup: 4-pixel padded random crops, flips, and the 16x16
        # cutout that DeVries and Taylor (arXiv:1708.04552) found best for CIFAR-10.
        augmentation=Augmentation(crop_padding=4, horizontal_flip=True, cutout=16),
    ),
    "cifar100": Source(
        name="cifar100",
        subdirs=(_cifar.CIFAR100_FOLDER,),
        files=_cifar.CIFAR100_FILES,
        has_files=lambda folder: _cifar.has_files(folder, _cifar.CIFAR100_FILES),
        read=_cifar.read_cifar100,
        download=_download_cifar100,
        image_size=32,
        # The CIFAR-10 setup, so that both CIFAR sets train alike. DeVries and Taylor used a
        # smaller 8x8 cutout on CIFAR-100.
        augmentation=Augmentation(crop_padding=4, horizontal_flip=True, cutout=16),
    ),
    "svhn": Source(
        name="svhn",
        subdirs=("svhn",),
        files=_svhn.SVHN_FILES,
        has_files=_svhn.has_svhn_files,
        read=_read_svhn,
        download=_download_svhn,
        image_size=32,
        # DeVries and Taylor's SVHN setup, a 20x20 cutout and no other augmentation. Flips
        # are wrong for digits in any case.
        augmentation=Augmentation(crop_padding=0, horizontal_flip=False, cutout=20),
    ),
}
