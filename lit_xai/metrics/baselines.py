"""Replacement values for perturbed pixels: zero (the dataset mean in normalised space), per-image mean, blur."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_xai.gaussian import gaussian_kernel1d

BASELINES = ("zero", "mean", "blur")


def gaussian_blur(images: Tensor, kernel_size: int = 29, sigma: float = 15.0) -> Tensor:
    """Separable Gaussian blur per channel, replicate padding (works for images smaller than the kernel).

    Petsiuk et al.'s insertion canvas uses kernel 29, σ 15.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    kernel = gaussian_kernel1d(sigma, kernel_size // 2, images.device).to(images.dtype)
    channels, pad = images.shape[1], kernel_size // 2
    out = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def baseline_images(inputs: Tensor, kind: str, blur_kernel_size: int = 29, blur_sigma: float = 15.0) -> Tensor:
    """The image whose pixels replace removed ones, same shape as ``inputs``.

    ``zero``: 0 in normalised space (= the dataset mean); ``mean``: the image's own per-channel mean;
    ``blur``: a Gaussian-blurred copy of the image.
    """
    if kind == "zero":
        return torch.zeros_like(inputs)
    if kind == "mean":
        return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs)
    if kind == "blur":
        return gaussian_blur(inputs, blur_kernel_size, blur_sigma)
    raise ValueError(f"unknown baseline {kind!r}; expected one of {BASELINES}")
