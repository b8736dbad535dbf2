"""Post-processing of raw attribution maps, as separate composable functions (reference.md §1).

Every function takes a batch of maps ``[B, C, H, W]`` and returns a new tensor; none mutates its input.
Compose them with :func:`pipeline`, e.g.
``pipeline(partial(reduce_channels, how="max_abs"), partial(normalize, how="max_abs"))(maps)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce

import torch.nn.functional as F
from torch import Tensor

from lit_xai.attribution.base import AttributionError
from lit_xai.gaussian import gaussian_kernel1d, truncated_radius

Step = Callable[[Tensor], Tensor]

CHANNEL_REDUCTIONS = ("sum", "abs_sum", "max_abs", "mean")
NORMALIZATIONS = ("max_abs", "min_max")


def _check_maps(maps: Tensor) -> None:
    if not isinstance(maps, Tensor) or maps.dim() != 4:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise AttributionError(f"attribution maps must have shape [B, C, H, W], got {shape}")


def reduce_channels(maps: Tensor, how: str = "sum") -> Tensor:
    """``[B, C, H, W] → [B, 1, H, W]``: ``sum`` (signed), ``abs_sum`` (Σ|·|), ``max_abs`` (max_c |·|, saliency) or
    ``mean`` (signed; EHR's reference code). The one channel reduction of the package (methods, metrics, figures)."""
    _check_maps(maps)
    if how == "sum":
        return maps.sum(dim=1, keepdim=True)
    if how == "abs_sum":
        return maps.abs().sum(dim=1, keepdim=True)
    if how == "max_abs":
        return maps.abs().amax(dim=1, keepdim=True)
    if how == "mean":
        return maps.mean(dim=1, keepdim=True)
    raise AttributionError(f"unknown channel reduction {how!r}; choose one of {', '.join(CHANNEL_REDUCTIONS)}")


def absolute(maps: Tensor) -> Tensor:
    """Element-wise absolute value."""
    _check_maps(maps)
    return maps.abs()


def upsample(maps: Tensor, size: tuple[int, int] | Tensor, align_corners: bool = False) -> Tensor:
    """Bilinear resize to ``size`` (``(H, W)`` or a tensor whose last two dims give it), e.g. GradCAM to the input.

    ``align_corners=False`` matches ``captum.attr.LayerAttribution.interpolate``.
    """
    _check_maps(maps)
    if isinstance(size, Tensor):
        size = (size.shape[-2], size.shape[-1])
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=align_corners)


def normalize(maps: Tensor, how: str = "max_abs", eps: float = 1e-12) -> Tensor:
    """Per-sample normalisation over (C, H, W): ``max_abs`` → divide by max |·| (keeps sign, range [−1, 1]);
    ``min_max`` → ``(m − min)/(max − min)`` (range [0, 1]). A constant map becomes 0 rather than NaN."""
    _check_maps(maps)
    flat = maps.flatten(1)
    if how == "max_abs":
        scale = flat.abs().amax(dim=1).clamp_min(eps)
        return maps / scale[:, None, None, None]
    if how == "min_max":
        low, high = flat.amin(dim=1), flat.amax(dim=1)
        return (maps - low[:, None, None, None]) / (high - low).clamp_min(eps)[:, None, None, None]
    raise AttributionError(f"unknown normalisation {how!r}; choose one of {', '.join(NORMALIZATIONS)}")


def gaussian_smooth(maps: Tensor, sigma: float = 1.0, truncate: float = 3.0) -> Tensor:
    """Separable Gaussian blur of every channel with reflect padding (also used for blurred IG baselines)."""
    _check_maps(maps)
    if sigma <= 0:
        raise AttributionError(f"Gaussian sigma must be positive, got {sigma}")
    radius = truncated_radius(sigma, truncate)
    kernel = gaussian_kernel1d(sigma, radius, maps.device).to(maps.dtype)
    channels = maps.shape[1]
    out = maps
    for dim in (2, 3):  # rows, then columns
        size = out.shape[dim]
        pad_mode = "reflect" if radius < size else "replicate"
        padding = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
        out = F.pad(out, padding, mode=pad_mode)
        weight = kernel.view(1, 1, -1, 1) if dim == 2 else kernel.view(1, 1, 1, -1)
        out = F.conv2d(out, weight.expand(channels, 1, *weight.shape[2:]), groups=channels)
    return out


def morphological_opening(maps: Tensor, kernel_size: int = 3) -> Tensor:
    """Grey-scale opening (erosion then dilation, square window): removes bright specks smaller than the window.

    The ``*`` variants of PathwayGrad (seed 001) smooth maps this way.
    """
    _check_maps(maps)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise AttributionError(f"opening kernel_size must be a positive odd integer, got {kernel_size}")
    pad = kernel_size // 2
    eroded = -F.max_pool2d(F.pad(-maps, (pad,) * 4, mode="replicate"), kernel_size, stride=1)
    return F.max_pool2d(F.pad(eroded, (pad,) * 4, mode="replicate"), kernel_size, stride=1)


def pipeline(*steps: Step) -> Step:
    """Compose post-processing steps left to right into one function."""
    return lambda maps: reduce(lambda acc, step: step(acc), steps, maps)
