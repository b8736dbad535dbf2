"""Score an attribution method on generated scenes with the scenario's metric (dissertation ch. 7 §3.4).

What is explained per scenario: ``null_feature`` — class ``a`` on ``X{f_a, f_null}`` (Eq. 8);
``class_sensitivity_double`` — ``a`` and ``b`` on ``X{f_a, f_b}`` (Eq. 9); ``class_sensitivity_single`` — ``a``
and ``b`` on ``X{f_a}`` (Eq. 10); ``saturation`` — ``a`` on ``X{f_a1, f_a2}`` (Eq. 11). Maps are reduced
to one value per pixel (``abs``: sum of absolute values over channels, the usual heatmap; ``positive``;
``signed``) and layer maps are upsampled bilinearly to the image size.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from lit_xai.attribution.base import AttributionMethod
from lit_xai.axioms.generation import GenerationConfig, SceneBatch
from lit_xai.axioms.scenarios import patch_masks
from lit_xai.metrics.axioms import (
    ClassSensitivityDoubleScore,
    ClassSensitivitySingleScore,
    Correlation,
    FeatureSaturationScore,
    NullFeatureScore,
)

Reduction = Literal["abs", "positive", "signed"]

#: class slots explained per scenario (slot 0 = a, slot 1 = b)
EXPLAINED_SLOTS: dict[str, tuple[int, ...]] = {
    "null_feature": (0,),
    "class_sensitivity_single": (0, 1),
    "class_sensitivity_double": (0, 1),
    "saturation": (0,),
}


def make_metric(scenario: str, correlation: Correlation = "spearman") -> Metric:
    """The scenario's metric (Eq. 8-11)."""
    if scenario == "null_feature":
        return NullFeatureScore()
    if scenario == "class_sensitivity_double":
        return ClassSensitivityDoubleScore()
    if scenario == "class_sensitivity_single":
        return ClassSensitivitySingleScore(correlation)
    if scenario == "saturation":
        return FeatureSaturationScore(correlation)
    raise ValueError(f"unknown axiom scenario {scenario!r}")


def reduce_maps(maps: Tensor, size: int, reduction: Reduction = "abs") -> Tensor:
    """``[B, C, h, w]`` attribution → ``[B, size, size]``: channel reduction, then bilinear upsampling if needed."""
    if maps.dim() != 4:
        raise ValueError(f"attribution maps must have shape [B, C, H, W], got {tuple(maps.shape)}")
    if reduction == "abs":
        maps = maps.abs().sum(1, keepdim=True)
    elif reduction == "positive":
        maps = maps.sum(1, keepdim=True).clamp_min(0)
    elif reduction == "signed":
        maps = maps.sum(1, keepdim=True)
    else:
        raise ValueError(f"reduction must be 'abs', 'positive' or 'signed', got {reduction!r}")
    if maps.shape[-2:] != (size, size):
        maps = F.interpolate(maps.float(), size=(size, size), mode="bilinear", align_corners=False)
    return maps[:, 0]


def scene_maps(
    method: AttributionMethod,
    model: nn.Module,
    scenes: SceneBatch,
    config: GenerationConfig,
    reduction: Reduction = "abs",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Maps ``[N, T, H, W]`` for the ``T`` explained classes of every scene, batched over scenes and targets."""
    slots = EXPLAINED_SLOTS[scenes.scenario]
    out = []
    for start in range(0, len(scenes), batch_size):
        chunk = scenes.select(slice(start, start + batch_size))
        images = config.normalize(chunk.images()).to(device)
        inputs = images.repeat(len(slots), 1, 1, 1)
        targets = torch.cat([chunk.classes[:, s] for s in slots]).to(device)
        maps = reduce_maps(method(model, inputs, targets), config.image_size, reduction)
        out.append(maps.view(len(slots), len(chunk), *maps.shape[-2:]).transpose(0, 1).cpu())
    return torch.cat(out)


def update_metric(metric: Metric, scenes: SceneBatch, maps: Tensor, config: GenerationConfig) -> None:
    """Feed ``maps`` (from :func:`scene_maps`) and the scenes' patch masks to the scenario's metric."""
    masks = patch_masks(scenes.corners, config.image_size, config.patch_size)
    if scenes.scenario == "null_feature":
        metric.update(maps[:, 0], masks[:, 0], masks[:, 1])
    elif scenes.scenario == "class_sensitivity_double":
        metric.update(maps[:, 0], maps[:, 1], masks[:, 0], masks[:, 1])
    elif scenes.scenario == "class_sensitivity_single":
        metric.update(maps[:, 0], maps[:, 1], masks[:, 0])
    elif scenes.scenario == "saturation":
        metric.update(maps[:, 0], masks[:, 0], masks[:, 1])
    else:
        raise ValueError(f"unknown axiom scenario {scenes.scenario!r}")
