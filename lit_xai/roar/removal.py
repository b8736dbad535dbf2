"""ROAR / KAR pixel removal as a dataset transform.

Pixels are ranked per image over H×W (channels together: the map is already reduced to ``[N, H, W]``),
most relevant first, with ties broken deterministically by the pixel index (a stable sort of
``(-value, index)``). The rank order is computed once per split (:func:`rank_order`); removing a
fraction from one sample is then a slice of that order plus one scatter.

- ``mode="remove"`` (ROAR, Hooker et al. 2019): the top ``⌊p·H·W⌋`` pixels are replaced.
- ``mode="keep"`` (KAR, the mirror image): the *bottom* ``⌊p·H·W⌋`` pixels are replaced, so the most
  relevant ``H·W − ⌊p·H·W⌋`` are kept. At equal ``p`` both modes replace the same number of pixels.

Replaced pixels take the values of a fill (see :mod:`lit_xai.roar.fills`); the default is the per-channel
dataset mean, which is 0 in the normalised space our DataModules produce.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

import torch
from torch import Tensor

from lit_xai.data.base import Sample, TensorImageDataset
from lit_xai.roar.fills import DatasetMeanFill, Fill

RemovalMode = Literal["remove", "keep"]


def rank_order(maps: Tensor) -> Tensor:
    """Per-image pixel order, most relevant first: ``[N, H, W]`` maps → ``[N, H·W]`` flat pixel indices.

    Stable descending sort, so equal values keep ascending pixel-index order (deterministic tie-breaking).
    Stored as int16 when ``H·W`` fits (CIFAR train: 44k×1024 indices = 90 MB instead of 360 MB as int64).
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must have shape [N, H, W], got {tuple(maps.shape)}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("maps contain NaN or inf values; their pixel ranking would be undefined")
    flat = maps.flatten(1).float()
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    dtype = torch.int16 if flat.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
    return order.to(dtype)


def removed_count(percentile: float, num_pixels: int) -> int:
    """``⌊p/100 · H·W⌋``, computed exactly (``Fraction`` of the decimal percentile, no float rounding)."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
    return math.floor(Fraction(str(percentile)) * num_pixels / 100)


def selected_pixels(order: Tensor, percentile: float, mode: RemovalMode = "remove") -> Tensor:
    """The flat pixel indices to replace, ``[N, k]`` with ``k = ⌊p·H·W⌋``: the first ``k`` of the order
    (``remove``) or the last ``k`` (``keep``)."""
    count = removed_count(percentile, order.shape[1])
    if mode == "remove":
        return order[:, :count]
    if mode == "keep":
        return order[:, order.shape[1] - count :]
    raise ValueError(f"unknown removal mode {mode!r}; use 'remove' (ROAR) or 'keep' (KAR)")


def replace_pixels(images: Tensor, pixels: Tensor, fill_values: Tensor) -> Tensor:
    """Return ``images`` ``[B, C, H, W]`` with the flat pixels ``pixels`` ``[B, k]`` (all channels) taken from
    ``fill_values`` (broadcastable to ``[B, C, H, W]``). The input is not modified."""
    b, c, h, w = images.shape
    index = pixels.long()[:, None, :].expand(b, c, pixels.shape[1])
    source = fill_values.to(images.dtype).expand(b, c, h, w).reshape(b, c, h * w).gather(2, index)
    return images.reshape(b, c, h * w).scatter(2, index, source).reshape(b, c, h, w)


class PixelRemoval:
    """Sample transform: replace the selected pixels of ``sample["image"]`` using the precomputed rank order.

    The selection is turned into a boolean mask ``[N, H·W]`` once (one batched scatter), so a sample costs one
    row lookup and one ``torch.where`` — cheap next to a training step (``benchmarks/bench_roar_removal.py``).

    Args:
        order: ``[N, H·W]`` pixel order of the whole split (from :func:`rank_order`), indexed by ``sample["index"]``.
        percentile: ``p`` in [0, 100]; ``⌊p·H·W⌋`` pixels are replaced per image.
        mode: ``remove`` (ROAR, top pixels) or ``keep`` (KAR, bottom pixels).
        fill: what replaced pixels become (default: per-channel dataset mean = 0 after normalisation).
    """

    def __init__(
        self, order: Tensor, percentile: float, mode: RemovalMode = "remove", fill: Fill | None = None
    ) -> None:
        pixels = selected_pixels(order, percentile, mode)
        self.mask = torch.zeros(order.shape, dtype=torch.bool).scatter_(1, pixels.long(), True)
        self.percentile, self.mode = percentile, mode
        self.fill = fill if fill is not None else DatasetMeanFill()

    def __call__(self, sample: Sample) -> Sample:
        index = int(sample["index"])
        if not 0 <= index < self.mask.shape[0]:
            raise IndexError(f"sample index {index} has no map: the maps cover {self.mask.shape[0]} samples")
        image = sample["image"]
        fill_values = self.fill(image[None], sample["index"][None])[0]
        replaced = torch.where(self.mask[index].view(1, *image.shape[1:]), fill_values.to(image.dtype), image)
        return {**sample, "image": replaced}

    def materialize(self, dataset: TensorImageDataset, chunk_size: int = 4096) -> TensorImageDataset:
        """The whole in-memory split with removal applied once, in batched chunks (identical to calling the
        transform per sample, since every fill is deterministic per sample). Training on it costs nothing per
        sample; the price is one copy of the split's images."""
        if len(dataset) != self.mask.shape[0]:
            raise ValueError(f"the dataset has {len(dataset)} samples but the maps cover {self.mask.shape[0]}")
        images = dataset.images
        parts = []
        for start in range(0, len(dataset), chunk_size):
            chunk = images[start : start + chunk_size]
            indices = torch.arange(start, start + chunk.shape[0])
            mask = self.mask[start : start + chunk.shape[0]].view(chunk.shape[0], 1, *chunk.shape[2:])
            parts.append(torch.where(mask, self.fill(chunk, indices).to(chunk.dtype), chunk))
        return TensorImageDataset(torch.cat(parts), dataset.labels, dataset.extras)
