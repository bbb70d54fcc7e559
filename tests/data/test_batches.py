"""iterate_batches and batch_count: sizes, reproducibility, normalization, augmentation."""

from __future__ import annotations

import pytest
import torch

from bonsai.data import Augmentation, ImageSet, batch_count, iterate_batches
from bonsai.data._batches import cutout, random_crop

NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False, cutout=0)
CIFAR_AUGMENTATION = Augmentation(crop_padding=4, horizontal_flip=True, cutout=16)


def numbered_images(count: int, channels: int = 1, side: int = 4) -> ImageSet:
    """Image i has every pixel equal to i, and label i % 10."""
    values = torch.arange(count, dtype=torch.uint8)
    images = values.view(count, 1, 1, 1).expand(count, channels, side, side).contiguous()
    return ImageSet(images, torch.arange(count) % 10)


def random_images(count: int, side: int = 32, seed: int = 0) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, side, side), dtype=torch.uint8, generator=generator)
    return ImageSet(images, torch.randint(0, 10, (count,), generator=generator))


def collect(
    images: ImageSet, batch_size: int, **options
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    settings = {
        "mean": (0.0,) * images.images.shape[1],
        "std": (1.0,) * images.images.shape[1],
        "shuffle": False,
        "generator": None,
        "augmentation": None,
    }
    settings.update(options)
    return list(iterate_batches(images, batch_size, **settings))


@pytest.mark.parametrize(
    ("n_images", "batch_size", "expected"),
    [(0, 4, 0), (2, 4, 1), (3, 2, 1), (4, 4, 1), (5, 4, 1), (6, 4, 2), (9, 4, 2), (10, 4, 3)],
)
def test_batch_count_table(n_images: int, batch_size: int, expected: int) -> None:
    assert batch_count(n_images, batch_size) == expected


def test_batch_count_single_image_rejected() -> None:
    with pytest.raises(ValueError, match="1 image"):
        batch_count(1, 4)


def test_batch_count_batch_size_one_rejected() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        batch_count(10, 1)


@pytest.mark.parametrize(
    ("n_images", "batch_size"), [(5, 4), (9, 4), (2, 4), (3, 2), (13, 4), (17, 16), (16, 16)]
)
@pytest.mark.parametrize("shuffle", [False, True])
def test_iterate_batches_never_size_one(n_images: int, batch_size: int, shuffle: bool) -> None:
    images = numbered_images(n_images)

    batches = collect(
        images, batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(0)
    )
    sizes = [len(labels) for _, labels in batches]
    seen = torch.cat([inputs[:, 0, 0, 0] for inputs, _ in batches]) * 255

    assert min(sizes) >= 2
    assert len(batches) == batch_count(n_images, batch_size)
    assert max(sizes) <= batch_size + 1
    assert sum(sizes) == n_images
    assert sorted(seen.round().long().tolist()) == list(range(n_images))


def test_iterate_batches_single_image_rejected() -> None:
    with pytest.raises(ValueError, match="1 image"):
        collect(numbered_images(1), 4)


def test_iterate_batches_empty_yields_nothing() -> None:
    assert collect(numbered_images(0), 4) == []


def test_iterate_batches_keeps_order_unshuffled() -> None:
    batches = collect(numbered_images(10), 4)

    labels = torch.cat([labels for _, labels in batches])
    assert torch.equal(labels, torch.arange(10))


def test_iterate_batches_labels_follow_images() -> None:
    images = numbered_images(30)

    batches = collect(images, 8, shuffle=True, generator=torch.Generator().manual_seed(3))

    for inputs, labels in batches:
        index = (inputs[:, 0, 0, 0] * 255).round().long()
        assert torch.equal(labels, index % 10)


def test_iterate_batches_same_seed_same_batches() -> None:
    images = random_images(40)
    options = {"shuffle": True, "augmentation": CIFAR_AUGMENTATION}

    first = collect(images, 16, generator=torch.Generator().manual_seed(7), **options)
    second = collect(images, 16, generator=torch.Generator().manual_seed(7), **options)

    assert len(first) == len(second)
    for (inputs_a, labels_a), (inputs_b, labels_b) in zip(first, second, strict=True):
        assert torch.equal(inputs_a, inputs_b)
        assert torch.equal(labels_a, labels_b)


def test_iterate_batches_other_seed_differs() -> None:
    images = random_images(40)
    options = {"shuffle": True, "augmentation": CIFAR_AUGMENTATION}

    first = collect(images, 40, generator=torch.Generator().manual_seed(7), **options)
    second = collect(images, 40, generator=torch.Generator().manual_seed(8), **options)

    assert not torch.equal(first[0][1], second[0][1])


def test_iterate_batches_leaves_global_rng() -> None:
    state = torch.get_rng_state()

    collect(
        random_images(20),
        8,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
        augmentation=CIFAR_AUGMENTATION,
    )

    assert torch.equal(torch.get_rng_state(), state)


def test_iterate_batches_generator_required() -> None:
    with pytest.raises(ValueError, match="generator"):
        collect(random_images(4), 2, shuffle=True)
    with pytest.raises(ValueError, match="generator"):
        collect(random_images(4), 2, augmentation=CIFAR_AUGMENTATION)


def test_iterate_batches_disabled_augmentation_needs_no_generator() -> None:
    batches = collect(random_images(4), 2, augmentation=NO_AUGMENTATION)

    assert len(batches) == 2


def test_iterate_batches_normalizes() -> None:
    images = random_images(6, side=5)
    mean = (0.1, 0.5, 0.9)
    std = (0.2, 0.25, 0.5)

    inputs, _ = collect(images, 6, mean=mean, std=std)[0]

    expected = (images.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    assert inputs.dtype == torch.float32
    assert torch.allclose(inputs, expected, atol=1e-6)


def test_iterate_batches_wrong_mean_length_rejected() -> None:
    with pytest.raises(ValueError, match="mean needs 3 values"):
        collect(random_images(4), 2, mean=(0.5,))


def test_iterate_batches_zero_std_rejected() -> None:
    with pytest.raises(ValueError, match="std"):
        collect(random_images(4), 2, std=(1.0, 0.0, 1.0))


def test_random_crop_keeps_shape() -> None:
    x = torch.rand(5, 3, 7, 9)
    offsets = torch.randint(0, 5, (2, 5))

    assert random_crop(x, 2, offsets).shape == x.shape


def test_random_crop_centre_offset_is_identity() -> None:
    x = torch.rand(3, 2, 6, 6)

    cropped = random_crop(x, 2, torch.full((2, 3), 2))

    assert torch.equal(cropped, x)


def test_random_crop_shifts_with_zero_border() -> None:
    x = torch.rand(1, 1, 6, 6) + 1.0  # no zeros in the image itself
    # Offset (0, 4): 2 rows of padding on top, and the image moved 2 columns left.
    cropped = random_crop(x, 2, torch.tensor([[0], [4]]))

    assert torch.all(cropped[0, 0, :2] == 0)
    assert torch.all(cropped[0, 0, :, 4:] == 0)
    assert torch.equal(cropped[0, 0, 2:, :4], x[0, 0, :4, 2:])


def test_cutout_zeroes_square() -> None:
    x = torch.ones(1, 3, 10, 10)

    result = cutout(x, 4, torch.tensor([[5], [3]]), torch.tensor([True]))

    assert torch.all(result[0, :, 3:7, 1:5] == 0)
    assert result[0].eq(0).sum().item() == 3 * 16


def test_cutout_clipped_at_border() -> None:
    x = torch.ones(1, 1, 10, 10)

    result = cutout(x, 4, torch.tensor([[0], [9]]), torch.tensor([True]))

    assert torch.all(result[0, 0, 0:2, 7:10] == 0)
    assert result.eq(0).sum().item() == 2 * 3


def test_cutout_skips_unselected_images() -> None:
    x = torch.ones(2, 1, 8, 8)

    result = cutout(x, 4, torch.full((2, 2), 4), torch.tensor([False, True]))

    assert torch.equal(result[0], x[0])
    assert result[1].eq(0).sum().item() == 16


def test_iterate_batches_cutout_zeroes_rectangles() -> None:
    # Pixels 200 normalize to a non-zero value, so only cutout makes zeros.
    images = ImageSet(torch.full((64, 1, 12, 12), 200, dtype=torch.uint8), torch.zeros(64).long())
    augmentation = Augmentation(0, False, cutout=6, cutout_probability=1.0)

    inputs, _ = collect(
        images, 64, generator=torch.Generator().manual_seed(0), augmentation=augmentation
    )[0]

    zero = inputs[:, 0] == 0
    full_squares = 0
    for mask in zero:
        rows = mask.any(dim=1).nonzero().flatten()
        cols = mask.any(dim=0).nonzero().flatten()
        height = rows.max() - rows.min() + 1
        width = cols.max() - cols.min() + 1
        assert mask.sum().item() == height * width
        assert height <= 6
        assert width <= 6
        full_squares += int(height == 6 and width == 6)
    assert full_squares > 0


def test_iterate_batches_cutout_probability_half() -> None:
    images = ImageSet(torch.full((400, 1, 8, 8), 200, dtype=torch.uint8), torch.zeros(400).long())
    augmentation = Augmentation(0, False, cutout=2, cutout_probability=0.5)

    inputs, _ = collect(
        images, 400, generator=torch.Generator().manual_seed(0), augmentation=augmentation
    )[0]

    cut = (inputs == 0).flatten(1).any(dim=1).float().mean().item()
    assert 0.4 < cut < 0.6


def test_iterate_batches_flips_some_images() -> None:
    ramp = torch.arange(8, dtype=torch.uint8).repeat(8, 1) * 30  # brighter to the right
    images = ImageSet(ramp.expand(64, 1, 8, 8).contiguous(), torch.zeros(64).long())
    augmentation = Augmentation(0, horizontal_flip=True, cutout=0)

    inputs, _ = collect(
        images, 64, generator=torch.Generator().manual_seed(0), augmentation=augmentation
    )[0]

    original = images.images[0].float() / 255
    flipped = inputs[:, 0, 0, 0] > inputs[:, 0, 0, 7]
    for image, is_flipped in zip(inputs, flipped, strict=True):
        expected = original.flip(2) if is_flipped else original
        assert torch.equal(image, expected)
    assert 16 < flipped.sum().item() < 48


def test_iterate_batches_crop_keeps_shape() -> None:
    images = random_images(10, side=9)
    augmentation = Augmentation(crop_padding=3, horizontal_flip=False, cutout=0)

    batches = collect(
        images, 5, generator=torch.Generator().manual_seed(0), augmentation=augmentation
    )

    for inputs, _ in batches:
        assert inputs.shape == (5, 3, 9, 9)


def test_iterate_batches_channels_last() -> None:
    inputs, _ = collect(random_images(4, side=5), 4, channels_last=True)[0]

    assert inputs.is_contiguous(memory_format=torch.channels_last)


def test_iterate_batches_default_format_contiguous() -> None:
    inputs, _ = collect(
        random_images(4, side=5),
        4,
        generator=torch.Generator().manual_seed(0),
        augmentation=CIFAR_AUGMENTATION,
    )[0]

    assert inputs.is_contiguous()


def test_iterate_batches_source_unchanged() -> None:
    images = random_images(8)
    before = images.images.clone()

    collect(images, 4, generator=torch.Generator().manual_seed(0), augmentation=CIFAR_AUGMENTATION)

    assert torch.equal(images.images, before)
