"""scikit-learn's bundled 8x8 handwritten digits, split 80/20 once and for all."""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from ._types import ImageSet

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_location() -> str:
    """Return the path of scikit-learn's bundled digits file."""
    return str(resources.files("sklearn.datasets") / "data" / "digits.csv.gz")


def read_digits() -> tuple[ImageSet, ImageSet]:
    """Read the 1797 digits and split them 80/20, stratified by class, with a fixed seed.

    Pixel values 0..16 are scaled to 0..255. Both splits keep the images in their original
    order.
    """
    # Imported here because scikit-learn takes about a second to import.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    labels = bunch.target.astype(np.int64)

    train_indices, test_indices = train_test_split(
        np.arange(len(labels)),
        test_size=TEST_FRACTION,
        stratify=labels,
        random_state=SPLIT_SEED,
    )
    train_rows = torch.from_numpy(np.sort(train_indices))
    test_rows = torch.from_numpy(np.sort(test_indices))

    images = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, 8, 8)
    targets = torch.from_numpy(labels)
    train = ImageSet(images[train_rows], targets[train_rows])
    test = ImageSet(images[test_rows], targets[test_rows])
    return train, test
