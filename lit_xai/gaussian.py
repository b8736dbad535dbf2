"""The normalised 1-D Gaussian shared by every separable blur: smoothed maps, the blurred perturbation baseline,
ROAR's blur fill and IBA's mask smoothing. Map smoothing and ROAR's fill truncate at ``max(1, ⌈truncate·σ⌉)``
(:func:`truncated_radius`); the perturbation baseline takes a kernel size and IBA allows σ = 0 (radius 0)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def gaussian_kernel1d(
    sigma: float, radius: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``exp(−½(k/σ)²)`` for ``k = −radius … radius``, normalised to sum 1 (length ``2·radius + 1``)."""
    if sigma <= 0:
        raise ValueError(f"Gaussian sigma must be positive, got {sigma}")
    if radius < 0:
        raise ValueError(f"Gaussian radius must be ≥ 0, got {radius}")
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def truncated_radius(sigma: float, truncate: float) -> int:
    """``max(1, ⌈truncate·σ⌉)``: the kernel reaches ``truncate`` standard deviations and is never a single tap."""
    return max(1, math.ceil(truncate * sigma))
