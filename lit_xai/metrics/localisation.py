"""Localisation against ground truth: Effective Heat Ratio (dissertation §4.5, App. F) and the pointing game.

EHR reduces maps over channels (the mean, as the reference code), upsamples them to the input and applies fixed
thresholds to maps on one absolute [0, 1] scale, as the reference code does (it reads the maps as images, /255).
App. F's three cases — (a) 1 inside the box, (b) 1 inside and 0.25 outside, (c) 0.25 inside — score (a) above
(b) and (c) only on an absolute scale: any per-image rescaling turns (c) into (a).
The pointing game takes the map's (signed) maximum and accepts it within Euclidean distance < ``tolerance`` of the
object (Zhang et al. 2016; TorchRay).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.metrics.base import method_name, pixel_scores, trapezoid_auc
from lit_xai.metrics.image_scores import PerImageMetric

NORMALIZATIONS = ("min_max", "max", "none")


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Boxes ``[B, 4]`` (x0, y0, x1, y1; exclusive ends) → boolean masks ``[B, H*W]``."""
    height, width = size
    ys = torch.arange(height, device=boxes.device)[None, :, None]
    xs = torch.arange(width, device=boxes.device)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    return ((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)).flatten(1)


def normalise_scores(scores: Tensor, how: str, method: Any = None) -> Tensor:
    """Per-image normalisation of ``[B, P]`` scores: ``min_max`` → [0, 1], ``max`` → divide by max, ``none``
    (the scores must already lie in [0, 1]: a ``ValueError`` naming the method otherwise)."""
    if how == "none":
        low, high = float(scores.min()), float(scores.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"EHR with normalize='none' needs maps on a [0, 1] scale (App. F; the reference code reads maps as "
                f"images), but {method_name(method)} gave values in [{low:.3g}, {high:.3g}] after the channel "
                "reduction: normalise them on one scale (e.g. the method's postprocess {name: normalize, kwargs: "
                "{how: min_max}}) or pass normalize='max' (per image; App. F case (c) then scores like (a))"
            )
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


class EffectiveHeatRatio(PerImageMetric):
    """EHR: AUC over quantile thresholds of the attribution mass inside the GT box per pixel above the threshold.

    Args:
        num_quantiles: thresholds q = linspace(0, 1, num_quantiles) (reference code: 11).
        min_value: pixels below this (after normalisation) are dropped from the quantiles (0.1).
        max_threshold: thresholds are capped at this fraction of the map's maximum (0.99).
        max_box_fraction: images whose box covers more than this fraction of the image are skipped (0.33).
        normalize: ``none`` (default; the reference code and App. F: maps already on one [0, 1] scale, else an
            error), or per image before thresholding: ``max`` (divide by the maximum; App. F case (c) scores as (a))
            or ``min_max``.
        channel_reduction: how maps are reduced over channels (``mean``: the reference code's ``heatmap.mean(0)``,
            which keeps [0, 1] maps in [0, 1]; ``abs_sum`` for signed maps with ``normalize="max"``).
    """

    requires = frozenset({"boxes"})
    higher_is_better = True
    curve_label = "quantile threshold"

    def __init__(
        self,
        num_quantiles: int = 11,  # reference code: np.linspace(0, 1.0, 11)
        min_value: float = 0.1,  # reference code: base_threshold=0.1
        max_threshold: float = 0.99,  # reference code: min(quantile, max_heat * 0.99)
        max_box_fraction: float = 0.33,  # §4.5: "bounding box covering less than 33% of the whole image"
        normalize: str = "none",  # App. F, Fig. 11: cases (a) > (b), (c) need one absolute scale
        channel_reduction: str = "mean",  # reference code: heatmap.mean(0)
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

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        """Per image the EHR curve ``[B, Q]`` and its AUC; NaN for images whose box exceeds ``max_box_fraction``."""
        size = (inputs.shape[-2], inputs.shape[-1])
        inside = box_masks(extras["boxes"].to(inputs.device), size)
        keep = inside.float().mean(1) <= self.max_box_fraction
        axis = self.curve_axis().to(inputs.device)
        curves = torch.full((inputs.shape[0], self.num_quantiles), float("nan"), device=inputs.device)
        if bool(keep.any()):
            scores = pixel_scores(maps[keep], size, self.channel_reduction)
            scores = normalise_scores(scores, self.normalize, extras.get("method"))
            curves[keep] = effective_heat_ratios(scores, inside[keep].float(), axis, self.min_value,
                                                 self.max_threshold)
        return {"score": trapezoid_auc(curves, axis), "curve/ehr": curves}

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        results = self._image_results(model, inputs, target, maps, **extras)
        keep = ~results["score"].isnan()
        self.curve_sum += results["curve/ehr"][keep].sum(0)
        self.count += keep.sum()
        self.skipped += (~keep).sum()
        self.last_image_scores = results["score"]  # this update's (not a state; NaN: skipped), as ImageScoreMean

    def curve_axis(self) -> Tensor:
        return torch.linspace(0, 1, self.num_quantiles)

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError("EffectiveHeatRatio.compute() called before any image was evaluated")
        curve = self.curve_sum / self.count
        return {"score": trapezoid_auc(curve, self.curve_axis()), "curve/ehr": curve, "count": self.count,
                "skipped": self.skipped}


TIES = ("first", "any")


def disk_dilation(region: Tensor, tolerance: float) -> Tensor:
    """Pixels within Euclidean distance < ``tolerance`` of ``region`` ``[B, 1, H, W]`` (TorchRay's acceptance
    disk ``u² + v² < t²``); ``tolerance`` 0 keeps the region itself."""
    radius = math.ceil(tolerance) - 1
    if radius < 1:
        return region
    offsets = torch.arange(-radius, radius + 1, device=region.device, dtype=region.dtype)
    disk = (offsets[:, None].square() + offsets[None, :].square() < tolerance**2).to(region.dtype)
    return F.conv2d(region, disk[None, None], padding=radius).gt(0).to(region.dtype)


class PointingGame(PerImageMetric):
    """Pointing game (Zhang et al. 2016): a hit when the map's maximum lies within ``tolerance`` of the object.

    The object is the GT mask when the batch has one, else the GT box. A hit: Euclidean distance from the maximum to
    the object < ``tolerance`` pixels (Zhang et al., TorchRay: 15 at 224²), or the maximum on the object itself
    (so ``tolerance`` 0, the default, needs an exact hit; TorchRay's strict ``<`` never hits at 0). Score: the hit rate.

    Args:
        tolerance: the acceptance radius in pixels (0: on the object).
        channel_reduction: ``sum`` (default: the signed map's maximum, as the paper's "maximum point"), ``abs_sum``
            (the largest magnitude, positive or negative), ``max_abs``, ``mean``.
        ties: ``first`` (the first maximum in row-major order, ``argmax`` as TorchRay) or ``any`` (a hit when any
            tied maximum is accepted, as Quantus).
    """

    higher_is_better = True

    def __init__(
        self,
        tolerance: float = 0,  # lit_xai choice for small images (Zhang et al./TorchRay: 15 at 224²)
        channel_reduction: str = "sum",  # Zhang et al.: the maximum point of the (signed) map
        ties: str = "first",  # TorchRay: argmax, the first maximum in row-major order
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if tolerance < 0:
            raise ValueError(f"tolerance must be ≥ 0, got {tolerance}")
        if ties not in TIES:
            raise ValueError(f"unknown tie rule {ties!r}; expected one of {TIES}")
        self.tolerance, self.channel_reduction, self.ties = tolerance, channel_reduction, ties
        self.add_state("hits", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        """Per image 1.0 for a hit, 0.0 for a miss."""
        size = (inputs.shape[-2], inputs.shape[-1])
        if extras["masks"] is not None:
            region = extras["masks"].to(inputs.device).reshape(inputs.shape[0], 1, *size).float()
        elif extras["boxes"] is not None:
            region = box_masks(extras["boxes"].to(inputs.device), size).view(-1, 1, *size).float()
        else:
            raise ValueError("PointingGame needs masks or boxes (see AttributionMetric)")
        accepted = disk_dilation(region, self.tolerance).flatten(1).gt(0)
        scores = pixel_scores(maps, size, self.channel_reduction)
        if self.ties == "first":
            peaks = torch.zeros_like(accepted).scatter_(1, scores.argmax(1, keepdim=True), True)
        else:
            peaks = scores == scores.amax(1, keepdim=True)
        return {"score": (peaks & accepted).any(1).float()}

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        hits = self._image_results(model, inputs, target, maps, **extras)["score"]
        self.hits += hits.sum()
        self.count += inputs.shape[0]
        self.last_image_scores = hits  # this update's (not a state), as ImageScoreMean

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError("PointingGame.compute() called before any image was evaluated")
        return {"score": self.hits / self.count, "count": self.count}
