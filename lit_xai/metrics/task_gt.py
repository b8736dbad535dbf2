"""Localisation IoU and attribution–severity correlation for the chest tasks of seed 002 (docs/tasks.md).

- :class:`LocalisationIoU` ("Explaining COVID-19 and Thoracic Pathology Model Predictions…", Table 1): the map is
  thresholded into an activation mask A and compared with the ground truth G of the explained target (the concept
  mask/box of the explained label, the region mask of the explained region); over the data set
  IoU = Σ_n |A_n ∩ G_n| / Σ_n |A_n ∪ G_n| (intersections and unions summed, not per-image IoUs averaged).
  Threshold rules, after the CheXplain-IBA code (``model/merged_visualize_prediction.py``, ``eval_localization``):
  ``gt_area`` (default; its ``iou_percentile_dynamic``: A = pixels ≥ the (100 − 100·|G|/P)-th percentile of the map,
  i.e. as many top pixels as the ground truth covers), ``top_fraction`` (its ``iou_percentile_static``: the top
  ``fraction`` of pixels) and ``value`` (its ``iou``: A = map ≥ ``value``). Percentiles interpolate linearly, as
  ``np.percentile`` does, and ties at the threshold are kept (``≥``).
- :class:`SeverityCorrelation` (the chapter's PCC analysis): per image the Pearson correlation between the map and
  the per-pixel severity map (each lung pixel carries its region's score), averaged over images; a map equal to the
  severity map scores 1, an independent random map ≈ 0, a constant map 0.

Both take their ground truth through the contract's ``masks`` argument (the callback's ``ground_truth`` option says
which batch key fills it): ``[B, 1, H, W]``, or ``[B, K, H, W]`` with one channel per output, of which channel
``target[b]`` is used (``concept_masks`` for a multi-label model, ``region_masks`` for the regions model).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.metrics.base import pixel_scores
from lit_xai.metrics.image_scores import ImageScoreMean, PerImageMetric
from lit_xai.metrics.localisation import box_masks
from lit_xai.metrics.sensitivity_n import pearson

THRESHOLDS = ("gt_area", "top_fraction", "value")
GROUND_TRUTHS = ("masks", "boxes")


def target_ground_truth(gt: Tensor, target: Tensor) -> Tensor:
    """Per image the ground truth of its target: ``[B, 1, …]`` as is, ``[B, K, …]`` → channel ``target[b]``."""
    if gt.shape[1] == 1:
        return gt[:, 0]
    if int(target.max()) >= gt.shape[1] or int(target.min()) < 0:
        raise ValueError(f"targets {target.tolist()} do not index the {gt.shape[1]} ground-truth channels")
    return gt[torch.arange(len(gt), device=gt.device), target.to(gt.device)]


def activation_masks(scores: Tensor, gt: Tensor, threshold: str, fraction: float, value: float) -> Tensor:
    """Boolean activation masks ``[B, P]`` of pixel scores ``[B, P]`` by the rule ``threshold`` (module doc)."""
    if threshold == "value":
        return scores >= value
    keep = gt.float().mean(1) if threshold == "gt_area" else torch.full_like(scores[:, 0], fraction)
    return scores >= percentiles(scores, 1.0 - keep)[:, None]


def percentiles(scores: Tensor, q: Tensor) -> Tensor:
    """Per row the ``q[b]``-quantile of ``scores[b]`` ``[B]``, interpolated linearly between order statistics (the
    default of ``np.percentile`` and ``torch.quantile``)."""
    ordered = scores.sort(1).values
    position = q.clamp(0.0, 1.0).to(scores.dtype) * (scores.shape[1] - 1)
    low = position.floor().long()
    high = (low + 1).clamp_max(scores.shape[1] - 1)
    below, above = ordered.gather(1, low[:, None])[:, 0], ordered.gather(1, high[:, None])[:, 0]
    return below + (above - below) * (position - low.to(scores.dtype))


class LocalisationIoU(PerImageMetric):
    """Localisation IoU over the data set (seed 002, Table 1): Σ|A ∩ G| / Σ|A ∪ G| (module doc).

    Args:
        threshold: ``gt_area`` (default; CheXplain-IBA ``iou_percentile_dynamic``), ``top_fraction`` or ``value``.
        fraction: the kept top fraction of pixels for ``top_fraction``.
        value: the map threshold for ``value`` (on the maps as given, after the channel reduction).
        ground_truth: ``masks`` (pixel masks, default) or ``boxes`` (``[B, 4]`` or ``[B, K, 4]``, turned into masks).
        channel_reduction: reduction of the maps over channels before thresholding (``sum``).
    Images whose ground truth is empty (a label absent from the image) are skipped and counted in ``skipped``.
    """

    higher_is_better = True

    def __init__(self, threshold: str = "gt_area", fraction: float = 0.05, value: float = 0.5,
                 ground_truth: str = "masks", channel_reduction: str = "sum", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if threshold not in THRESHOLDS:
            raise ValueError(f"unknown threshold {threshold!r}; expected one of {THRESHOLDS}")
        if ground_truth not in GROUND_TRUTHS:
            raise ValueError(f"unknown ground_truth {ground_truth!r}; expected one of {GROUND_TRUTHS}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
        self.threshold, self.fraction, self.value = threshold, fraction, value
        self.ground_truth, self.channel_reduction = ground_truth, channel_reduction
        self.requires = frozenset({ground_truth})
        self.add_state("intersection", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("union", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("skipped", torch.tensor(0.0), dist_reduce_fx="sum")

    def overlaps(self, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> tuple[Tensor, Tensor]:
        """Per image |A ∩ G| and |A ∪ G| ``[B]``; both 0 where the ground truth is empty."""
        size = (inputs.shape[-2], inputs.shape[-1])
        if self.ground_truth == "boxes":
            boxes = extras["boxes"].to(inputs.device)
            boxes = boxes[:, None] if boxes.dim() == 2 else boxes
            gt = box_masks(target_ground_truth(boxes, target), size)
        else:
            masks = extras["masks"].to(inputs.device)
            if tuple(masks.shape[-2:]) != size:
                raise ValueError(f"ground-truth masks of size {tuple(masks.shape[-2:])} for inputs of size {size}")
            gt = target_ground_truth(masks, target).flatten(1).bool()
        scores = pixel_scores(maps, size, self.channel_reduction)
        active = activation_masks(scores, gt, self.threshold, self.fraction, self.value)
        present = gt.any(1, keepdim=True)
        intersection = (active & gt & present).sum(1).double()
        union = ((active | gt) & present).sum(1).double()
        return intersection, union

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        intersection, union = self.overlaps(inputs, target, maps, **extras)
        return {"score": torch.where(union > 0, intersection / union.clamp_min(1), torch.nan).float()}

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        intersection, union = self.overlaps(inputs, target, maps, **extras)
        valid = union > 0
        self.intersection += intersection.sum()
        self.union += union.sum()
        self.count += valid.sum()
        self.skipped += (~valid).sum()
        self.last_image_scores = torch.where(valid, intersection / union.clamp_min(1), torch.nan).float()

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError("LocalisationIoU.compute() called before any image with ground truth was evaluated")
        return {"score": (self.intersection / self.union).float(), "count": self.count, "skipped": self.skipped}


class SeverityCorrelation(ImageScoreMean):
    """Mean over images of Pearson(map, severity map) over pixels (seed 002's PCC analysis; module doc).

    Args:
        channel_reduction: reduction of the maps over channels (``sum``); maps are upsampled to the severity map.
    The severity map comes as ``masks`` ``[B, 1, H, W]`` (float); ``[B, K, H, W]`` picks channel ``target[b]``.
    """

    requires = frozenset({"masks"})
    higher_is_better = True

    def __init__(self, channel_reduction: str = "sum", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channel_reduction = channel_reduction

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        return {"score": self._correlations(target, maps, extras["masks"])}

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        scores = self._correlations(target, maps, extras["masks"])
        self.score_sum += scores.double().sum()
        self.count += scores.shape[0]
        self.last_image_scores = scores

    def _correlations(self, target: Tensor, maps: Tensor, severity: Tensor) -> Tensor:
        severity = target_ground_truth(severity.to(maps.device), target).float()
        scores = pixel_scores(maps, (severity.shape[-2], severity.shape[-1]), self.channel_reduction)
        return pearson(scores, severity.flatten(1))
