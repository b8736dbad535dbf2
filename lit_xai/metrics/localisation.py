"""Localisation against ground truth: Effective Heat Ratio (dissertation §4.5, App. F) and the pointing game.

Maps are reduced over channels (``abs_sum`` by default: attribution mass regardless of sign), upsampled to the
input, and (EHR) divided by their maximum per image before the fixed thresholds apply.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.metrics.base import AttributionMetric, pixel_scores, trapezoid_auc

NORMALIZATIONS = ("min_max", "max", "none")


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Boxes ``[B, 4]`` (x0, y0, x1, y1; exclusive ends) → boolean masks ``[B, H*W]``."""
    height, width = size
    ys = torch.arange(height, device=boxes.device)[None, :, None]
    xs = torch.arange(width, device=boxes.device)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    return ((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)).flatten(1)


def normalise_scores(scores: Tensor, how: str) -> Tensor:
    """Per-image normalisation of ``[B, P]`` scores: ``min_max`` → [0, 1], ``max`` → divide by max, ``none``."""
    if how == "none":
        return scores
    if how == "max":
        return scores / scores.amax(1, keepdim=True).clamp_min(1e-12)
    if how == "min_max":
        low = scores.amin(1, keepdim=True)
        return (scores - low) / (scores.amax(1, keepdim=True) - low).clamp_min(1e-12)
    raise ValueError(f"unknown normalisation {how!r}; expected one of {NORMALIZATIONS}")


def effective_heat_ratios(
    scores: Tensor, inside: Tensor, quantiles: Tensor, min_value: float = 0.1, max_threshold: float = 0.99
) -> Tensor:
    """EHR curve ``[B, Q]``: at each quantile q, the attribution mass inside the box among the pixels at or above the
    threshold, divided by the number of those pixels. Thresholds are the q-quantiles of the pixels ≥ ``min_value``,
    capped at ``max_threshold`` · max. Images without a pixel ≥ ``min_value`` score 0."""
    valid = scores >= min_value
    candidates = torch.where(valid, scores, torch.full_like(scores, float("nan")))
    thresholds = torch.nanquantile(candidates, quantiles.to(scores), dim=1).T  # [B, Q]
    cap = max_threshold * scores.amax(1, keepdim=True)
    thresholds = torch.minimum(thresholds, cap)
    above = scores[:, None, :] >= thresholds[:, :, None]  # [B, Q, P]
    mass = (scores * inside)[:, None, :].mul(above).sum(-1)
    ratios = mass / above.sum(-1).clamp_min(1)
    return torch.where(valid.any(1, keepdim=True), ratios, torch.zeros_like(ratios)).nan_to_num(0.0)


class EffectiveHeatRatio(AttributionMetric):
    """EHR: AUC over quantile thresholds of the attribution mass inside the GT box per pixel above the threshold.

    Args:
        num_quantiles: thresholds q = linspace(0, 1, num_quantiles) (reference code: 11).
        min_value: pixels below this (after normalisation) are dropped from the quantiles (0.1).
        max_threshold: thresholds are capped at this fraction of the map's maximum (0.99).
        max_box_fraction: images whose box covers more than this fraction of the image are skipped (0.33).
        normalize: per-image normalisation before thresholding (``max``: divide by the maximum, keeps a weak
            background weak as in App. F Fig. 11b; ``min_max``; ``none``: maps already on a common [0, 1] scale).
        channel_reduction: how maps are reduced over channels.
    """

    requires = frozenset({"boxes"})
    higher_is_better = True
    curve_label = "quantile threshold"

    def __init__(
        self,
        num_quantiles: int = 11,
        min_value: float = 0.1,
        max_threshold: float = 0.99,
        max_box_fraction: float = 0.33,
        normalize: str = "max",
        channel_reduction: str = "abs_sum",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_quantiles < 2:
            raise ValueError(f"num_quantiles must be ≥ 2, got {num_quantiles}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalisation {normalize!r}; expected one of {NORMALIZATIONS}")
        self.num_quantiles, self.min_value, self.max_threshold = num_quantiles, min_value, max_threshold
        self.max_box_fraction, self.normalize, self.channel_reduction = max_box_fraction, normalize, channel_reduction
        self.add_state("curve_sum", torch.zeros(num_quantiles), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("skipped", torch.tensor(0.0), dist_reduce_fx="sum")

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        size = (inputs.shape[-2], inputs.shape[-1])
        inside = box_masks(extras["boxes"].to(inputs.device), size)
        keep = inside.float().mean(1) <= self.max_box_fraction
        self.skipped += (~keep).sum()
        if not bool(keep.any()):
            return
        scores = normalise_scores(pixel_scores(maps[keep], size, self.channel_reduction), self.normalize)
        curves = effective_heat_ratios(
            scores, inside[keep].float(), self.curve_axis().to(scores.device), self.min_value, self.max_threshold
        )
        self.curve_sum += curves.sum(0)
        self.count += keep.sum()

    def curve_axis(self) -> Tensor:
        return torch.linspace(0, 1, self.num_quantiles)

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError("EffectiveHeatRatio.compute() called before any image was evaluated")
        curve = self.curve_sum / self.count
        return {"score": trapezoid_auc(curve, self.curve_axis()), "curve/ehr": curve, "count": self.count,
                "skipped": self.skipped}


class PointingGame(AttributionMetric):
    """Pointing game (Zhang et al. 2016): a hit when the map's maximum falls on the object.

    The object is the GT mask when the batch has one, else the GT box; ``tolerance`` pixels of dilation
    (Zhang et al.: 15 at 224²) widen it. Score: the hit rate.
    """

    higher_is_better = True

    def __init__(self, tolerance: int = 0, channel_reduction: str = "abs_sum", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if tolerance < 0:
            raise ValueError(f"tolerance must be ≥ 0, got {tolerance}")
        self.tolerance, self.channel_reduction = tolerance, channel_reduction
        self.add_state("hits", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        size = (inputs.shape[-2], inputs.shape[-1])
        if extras["masks"] is not None:
            region = extras["masks"].to(inputs.device).reshape(inputs.shape[0], 1, *size).float()
        elif extras["boxes"] is not None:
            region = box_masks(extras["boxes"].to(inputs.device), size).view(-1, 1, *size).float()
        else:
            raise ValueError("PointingGame.update needs masks or boxes (see AttributionMetric)")
        if self.tolerance:
            region = F.max_pool2d(region, 2 * self.tolerance + 1, stride=1, padding=self.tolerance)
        peak = pixel_scores(maps, size, self.channel_reduction).argmax(1)
        self.hits += region.flatten(1).gather(1, peak[:, None]).gt(0).sum()
        self.count += inputs.shape[0]

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError("PointingGame.compute() called before any image was evaluated")
        return {"score": self.hits / self.count, "count": self.count}
