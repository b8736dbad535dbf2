"""What removed pixels become. Each fill maps a batch ``[B, C, H, W]`` (normalised) and the samples'
dataset indices ``[B]`` to replacement values broadcastable to ``[B, C, H, W]``.

- ``dataset_mean`` (Hooker et al.; reference.md §4): the per-channel dataset mean, 0 in normalised space.
- ``image_mean`` (seed 004, DGA): the per-channel mean of the image itself.
- ``blur``: the Gaussian-blurred image (removal keeps low frequencies, as in insertion/deletion baselines).
- ``noise``: N(0, std²) in normalised space, drawn from a generator seeded by (seed, sample index), so each
  sample's noise is the same in every epoch and every run (the modified dataset is fixed, as ROAR requires).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_xai.gaussian import gaussian_kernel1d, truncated_radius

Fill = Callable[[Tensor, Tensor], Tensor]


class DatasetMeanFill:
    """Per-channel dataset mean: 0 in the normalised space (``(x − mean)/std``) of our DataModules."""

    def __init__(self) -> None:
        self.zero = torch.zeros(1, 1, 1, 1)

    def __call__(self, images: Tensor, indices: Tensor) -> Tensor:
        return self.zero.to(images.device)


class ImageMeanFill:
    """Per-channel mean of each (unmodified) image, seed 004's replacement value."""

    def __call__(self, images: Tensor, indices: Tensor) -> Tensor:
        return images.mean(dim=(2, 3), keepdim=True)


class BlurFill:
    """Gaussian blur of the image (separable, reflect padding), ``sigma`` in pixels, radius ``⌈truncate·σ⌉``."""

    def __init__(self, sigma: float = 2.0, truncate: float = 3.0) -> None:
        if sigma <= 0:
            raise ValueError(f"blur sigma must be positive, got {sigma}")
        self.radius = truncated_radius(sigma, truncate)
        self.kernel = gaussian_kernel1d(sigma, self.radius)

    def __call__(self, images: Tensor, indices: Tensor) -> Tensor:
        c = images.shape[1]
        kernel = self.kernel.to(images)
        if min(images.shape[-2:]) <= self.radius:
            raise ValueError(f"blur radius {self.radius} needs images larger than {tuple(images.shape[-2:])}")
        padded = F.pad(images, [self.radius] * 4, mode="reflect")
        rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class NoiseFill:
    """Gaussian noise N(0, std²) in normalised space, reproducible per sample (seeded by ``seed`` and its index)."""

    def __init__(self, std: float = 1.0, seed: int = 0) -> None:
        self.std, self.seed = std, seed

    def __call__(self, images: Tensor, indices: Tensor) -> Tensor:
        noise = torch.empty(images.shape, dtype=images.dtype)
        generator = torch.Generator()
        for row, index in enumerate(indices.tolist()):
            generator.manual_seed(self.seed * 1_000_003 + index)
            noise[row] = torch.randn(images.shape[1:], generator=generator, dtype=images.dtype)
        return (noise * self.std).to(images.device)


FILLS: dict[str, Callable[..., Fill]] = {
    "dataset_mean": DatasetMeanFill,
    "image_mean": ImageMeanFill,
    "blur": BlurFill,
    "noise": NoiseFill,
}


def build_fill(name: str, **kwargs: float) -> Fill:
    """A fill by name (``dataset_mean``, ``image_mean``, ``blur``, ``noise``) with its constructor arguments."""
    if name not in FILLS:
        raise ValueError(f"unknown removal fill {name!r}; choose one of {', '.join(FILLS)}")
    return FILLS[name](**kwargs)
