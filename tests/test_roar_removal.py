"""ROAR/KAR pixel removal: counts, values, tie-breaking, fills, and removal-before-augmentation."""

from __future__ import annotations

import math

import pytest
import torch

from lit_xai.data.base import ClassificationDataModule, TensorImageDataset
from lit_xai.roar.fills import BlurFill, ImageMeanFill, NoiseFill, build_fill
from lit_xai.roar.grid import RemovedDataModule
from lit_xai.roar.removal import PixelRemoval, rank_order, removed_count, replace_pixels, selected_pixels


def replaced_mask(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """[B, H, W] bool: pixels where any channel changed."""
    return (before != after).any(dim=1)


@pytest.mark.parametrize("percentile", [0, 10, 30, 50, 70, 90, 100, 12.5, 29])
def test_exactly_floor_p_hw_pixels_replaced_per_image(percentile: float) -> None:
    h, w = 7, 9  # 63 pixels: p·H·W is rarely an integer
    images = torch.rand(5, 3, h, w) + 1.0  # strictly positive, so replacement by 0 is always visible
    maps = torch.randn(5, h, w)
    pixels = selected_pixels(rank_order(maps), percentile)
    after = replace_pixels(images, pixels, images.new_zeros(1, 1, 1, 1))
    expected = math.floor(percentile * h * w / 100 + 1e-9)
    assert replaced_mask(images, after).flatten(1).sum(1).tolist() == [expected] * 5


def test_removed_count_is_exact_for_decimal_percentiles() -> None:
    # 0.29 * 100 = 28.999999999999996 in floats; the exact floor is 29
    assert removed_count(29, 100) == 29
    assert removed_count(70, 10) == 7
    assert removed_count(12.5, 63) == 7  # 7.875
    with pytest.raises(ValueError, match="percentile"):
        removed_count(101, 10)


def test_the_top_pixels_are_replaced_by_the_dataset_mean_zero_in_all_channels() -> None:
    torch.manual_seed(0)
    images = torch.rand(4, 3, 6, 6) + 0.5
    maps = torch.randn(4, 6, 6)
    after = replace_pixels(images, selected_pixels(rank_order(maps), 25), images.new_zeros(1, 1, 1, 1))
    k = 9  # floor(0.25 * 36)
    threshold = maps.flatten(1).topk(k, dim=1).values[:, -1]
    top = maps >= threshold[:, None, None]  # no ties with continuous random maps
    assert torch.equal(replaced_mask(images, after), top)
    assert bool((after.permute(0, 2, 3, 1)[top] == 0).all())  # every channel of a removed pixel is 0
    assert torch.equal(after.permute(0, 2, 3, 1)[~top], images.permute(0, 2, 3, 1)[~top])  # the rest untouched


def test_zero_in_normalised_space_is_the_per_channel_dataset_mean_in_pixel_space() -> None:
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    pixels_space = torch.rand(2, 3, 4, 4)
    normalised = (pixels_space - mean[:, None, None]) / std[:, None, None]
    pixels = selected_pixels(rank_order(torch.randn(2, 4, 4)), 50)
    removed_normalised = replace_pixels(normalised, pixels, normalised.new_zeros(1, 1, 1, 1))
    after = removed_normalised * std[:, None, None] + mean[:, None, None]
    removed = torch.zeros(2, 16, dtype=torch.bool).scatter(1, pixels.long(), True).reshape(2, 4, 4)
    assert int(removed.sum()) == 16
    torch.testing.assert_close(after.permute(0, 2, 3, 1)[removed], mean.expand(int(removed.sum()), 3))


def test_ties_are_broken_by_pixel_index_deterministically() -> None:
    maps = torch.zeros(2, 4, 4)
    maps[0, 3, 3] = 5.0  # pixel 15 is the unique maximum; the rest tie at 0
    maps[1] = 1.0  # all tied
    order = rank_order(maps)
    assert order[0].tolist() == [15, *range(15)]
    assert order[1].tolist() == list(range(16))
    # KAR takes the last k of the same total order: the highest indices among the tied least-relevant pixels
    assert selected_pixels(order, 25, "keep")[1].tolist() == [12, 13, 14, 15]
    # float16 maps (as cached) give the same order; repeated calls are identical
    assert torch.equal(rank_order(maps.half()), order)
    assert torch.equal(rank_order(maps), order)


def test_rank_order_matches_an_independent_lexicographic_sort() -> None:
    torch.manual_seed(1)
    maps = torch.randint(0, 4, (3, 5, 5)).float()  # many ties
    order = rank_order(maps)
    for image, row in zip(maps.flatten(1), order, strict=True):
        expected = sorted(range(25), key=lambda i: (-float(image[i]), i))
        assert row.tolist() == expected
    assert order.dtype == torch.int16


def test_kar_replaces_the_complement_of_roar_at_the_mirrored_percentile() -> None:
    maps = torch.randn(3, 8, 8)
    order = rank_order(maps)
    roar_30 = set(map(tuple, [(b, int(i)) for b in range(3) for i in selected_pixels(order, 30)[b]]))
    kar_70 = set(map(tuple, [(b, int(i)) for b in range(3) for i in selected_pixels(order, 70, "keep")[b]]))
    assert removed_count(30, 64) + removed_count(70, 64) == 63  # floor(19.2) + floor(44.8)
    assert roar_30.isdisjoint(kar_70)
    # KAR at p keeps the most relevant H·W − k pixels
    keep = selected_pixels(order, 70, "keep")
    kept = set(range(64)) - set(keep[0].tolist())
    assert kept == set(order[0, : 64 - 44].tolist())


def test_unknown_mode_and_bad_maps_raise() -> None:
    with pytest.raises(ValueError, match="mode"):
        selected_pixels(rank_order(torch.randn(1, 2, 2)), 50, "drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        rank_order(torch.tensor([[[float("nan"), 1.0]]]))
    with pytest.raises(ValueError, match="N, H, W"):
        rank_order(torch.randn(2, 1, 3, 3))


def test_image_mean_blur_and_noise_fills() -> None:
    torch.manual_seed(2)
    images = torch.rand(2, 3, 8, 8)
    index = torch.tensor([4, 7])
    mean_fill = ImageMeanFill()(images, index)
    torch.testing.assert_close(mean_fill[:, :, 0, 0], images.mean(dim=(2, 3)))
    blurred = BlurFill(sigma=1.0)(images, index)
    assert blurred.shape == images.shape
    constant = torch.full((1, 2, 8, 8), 0.3)
    torch.testing.assert_close(BlurFill(sigma=1.0)(constant, index[:1]), constant)  # a blur preserves constants
    assert blurred.std() < images.std()
    noise = NoiseFill(std=1.0, seed=3)
    first, again = noise(images, index), noise(images[[1, 0]], index[[1, 0]])
    assert torch.equal(first, again[[1, 0]])  # per-sample noise depends on the index, not the batch position
    assert not torch.equal(first, NoiseFill(std=1.0, seed=4)(images, index))
    with pytest.raises(ValueError, match="unknown removal fill"):
        build_fill("zeros")


def test_pixel_removal_transform_uses_the_sample_index_and_image_mean_fill() -> None:
    images = torch.rand(6, 2, 4, 4) + 1.0
    dataset = TensorImageDataset(images, torch.arange(6))
    maps = torch.randn(6, 4, 4)
    transform = PixelRemoval(rank_order(maps), 50, fill=build_fill("image_mean"))
    batch = torch.stack([transform(dataset[i])["image"] for i in range(6)])
    fill = images.mean(dim=(2, 3), keepdim=True)
    expected = replace_pixels(images, selected_pixels(rank_order(maps), 50), fill)
    torch.testing.assert_close(batch, expected)
    assert transform(dataset[2])["label"] == 2
    for fill in (build_fill("dataset_mean"), build_fill("blur", sigma=1.0), build_fill("noise", seed=1)):
        transform = PixelRemoval(rank_order(maps), 50, fill=fill)
        batch = torch.stack([transform(dataset[i])["image"] for i in range(6)])
        expected = replace_pixels(images, selected_pixels(rank_order(maps), 50), fill(images, torch.arange(6)))
        torch.testing.assert_close(batch, expected)
        materialized = transform.materialize(dataset, chunk_size=4)
        torch.testing.assert_close(materialized.images, expected)
        assert torch.equal(materialized.labels, dataset.labels)
    with pytest.raises(IndexError, match="no map"):
        PixelRemoval(rank_order(maps[:2]), 50)(dataset[3])


class _TinyData(ClassificationDataModule):
    num_classes, in_chans, mean, std = 2, 1, (0.0,), (1.0,)

    def setup(self, stage: str | None = None) -> None:
        images = torch.arange(4 * 16, dtype=torch.float32).reshape(4, 1, 4, 4) + 1
        self.train_dataset = self.val_dataset = self.test_dataset = TensorImageDataset(images, torch.zeros(4).long())


@pytest.mark.parametrize("materialize", [True, False])
def test_augmentation_runs_after_removal(materialize: bool) -> None:
    base = _TinyData(batch_size=4)
    seen = []

    def augment(sample: dict) -> dict:
        seen.append(sample["image"].clone())
        return {**sample, "image": sample["image"].flip(-1)}

    base.augment = augment
    maps = torch.arange(16.0).reshape(1, 4, 4).repeat(4, 1, 1)  # pixel 15 most relevant
    removal = PixelRemoval(rank_order(maps), 25)
    data = RemovedDataModule(base, {"train": removal, "test": removal}, seed=0, materialize=materialize)
    batch = next(iter(data.train_dataloader()))
    # the augmentation saw images whose last row (pixels 12..15) is already 0, and flipped them afterwards
    assert all(bool((image[0, 3] == 0).all()) and bool((image[0, :3] > 0).all()) for image in seen)
    assert bool((batch["image"][:, 0, 3] == 0).all())
    test_batch = next(iter(data.test_dataloader()))
    assert bool((test_batch["image"][:, 0, 3] == 0).all())
    assert len(seen) == 4  # the test split is not augmented
