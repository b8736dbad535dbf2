"""Metrics of the axiom framework "Model knows best" (dissertation ch. 7 §3.4, Eq. 8-11) as torchmetrics.

All metrics take attribution maps already reduced to one value per pixel, ``[B, H, W]``, and boolean patch
masks ``[B, H, W]``. Ratio metrics (Eq. 8, 9) average per-sample ratios; samples whose denominator is zero
(an all-zero map on the patch) are undefined, skipped and counted in ``skipped``. Correlation metrics
(Eq. 10, 11) collect one pair of numbers per sample and correlate them across samples (Pearson, or Spearman
as in the authors' code); their states are concatenated across DDP ranks.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef
from torchmetrics.utilities import dim_zero_cat

Correlation = Literal["pearson", "spearman"]


def _check(maps: Tensor, *masks: Tensor) -> None:
    if maps.dim() != 3:
        raise ValueError(f"attribution maps must have shape [B, H, W], got {tuple(maps.shape)}")
    for mask in masks:
        if mask.shape != maps.shape or mask.dtype != torch.bool:
            raise ValueError(f"patch masks must be bool tensors of the maps' shape {tuple(maps.shape)}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")


def _masked_sum(maps: Tensor, mask: Tensor) -> Tensor:
    return (maps * mask).flatten(1).sum(1)


class _MeanRatio(Metric):
    """Mean of per-sample ratios over the samples where the ratio is defined."""

    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("ratio_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _accumulate(self, numerator: Tensor, denominator: Tensor) -> None:
        defined = denominator != 0
        self.ratio_sum += (numerator[defined] / denominator[defined]).double().sum()
        self.count += int(defined.sum())
        self.skipped += int((~defined).sum())

    def compute(self) -> Tensor:
        return (self.ratio_sum / self.count).float() if self.count > 0 else torch.tensor(float("nan"))

    def plot(self, val: Tensor | list[Tensor] | None = None, ax: Any = None) -> Any:
        return self._plot(val, ax)


class NullFeatureScore(_MeanRatio):
    """Eq. 8: attribution on the null feature relative to the attribution on the real feature,
    ``Σ_{f_null} S_a / Σ_{f_a} S_a`` (signed sums; 0 is ideal, lower is better)."""

    higher_is_better = False

    def update(self, maps: Tensor, feature_mask: Tensor, null_mask: Tensor) -> None:
        _check(maps, feature_mask, null_mask)
        self._accumulate(_masked_sum(maps, null_mask), _masked_sum(maps, feature_mask))


class ClassSensitivityDoubleScore(_MeanRatio):
    """Eq. 9: ``Σ_{f_a∪f_b} min(|S_a|, |S_b|) / (Σ_{f_a} |S_a| + Σ_{f_b} |S_b|)`` — 1 when the maps for ``a`` and
    ``b`` are identical, 0 when each lies only on its own patch (lower is better)."""

    higher_is_better = False
    plot_upper_bound = 1.0

    def update(self, maps_a: Tensor, maps_b: Tensor, mask_a: Tensor, mask_b: Tensor) -> None:
        _check(maps_a, mask_a, mask_b)
        _check(maps_b, mask_a, mask_b)
        abs_a, abs_b = maps_a.abs(), maps_b.abs()
        overlap = _masked_sum(torch.minimum(abs_a, abs_b), mask_a | mask_b)
        self._accumulate(overlap, _masked_sum(abs_a, mask_a) + _masked_sum(abs_b, mask_b))


class _SampleCorrelation(Metric):
    """Correlation across samples of two per-sample statistics ``x`` and ``y``."""

    is_differentiable = False
    full_state_update = False
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, correlation: Correlation = "spearman", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if correlation not in ("pearson", "spearman"):
            raise ValueError(f"correlation must be 'pearson' or 'spearman', got {correlation!r}")
        self.correlation = correlation
        self.add_state("x", [], dist_reduce_fx="cat")
        self.add_state("y", [], dist_reduce_fx="cat")

    def _append(self, x: Tensor, y: Tensor) -> None:
        finite = torch.isfinite(x) & torch.isfinite(y)
        self.x.append(x[finite].double())
        self.y.append(y[finite].double())

    def compute(self) -> Tensor:
        x, y = dim_zero_cat(self.x), dim_zero_cat(self.y)
        if x.numel() < 2:
            return torch.tensor(float("nan"))
        corr = pearson_corrcoef if self.correlation == "pearson" else spearman_corrcoef
        return corr(x.float(), y.float())

    def plot(self, val: Tensor | list[Tensor] | None = None, ax: Any = None) -> Any:
        return self._plot(val, ax)


class ClassSensitivitySingleScore(_SampleCorrelation):
    """Eq. 10: correlation across samples between ``mean_{f_a} S_a / mean_{∖f_a} S_a`` and the same ratio of
    ``S_b`` (the map for the class the patch is null for). High = both maps point at the patch (lower is better).
    ``eps`` is added to both means, as in the authors' code."""

    higher_is_better = False

    def __init__(self, correlation: Correlation = "spearman", eps: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(correlation, **kwargs)
        self.eps = eps

    def _inside_outside(self, maps: Tensor, mask: Tensor) -> Tensor:
        inside = _masked_sum(maps, mask) / mask.flatten(1).sum(1).clamp_min(1)
        outside = _masked_sum(maps, ~mask) / (~mask).flatten(1).sum(1).clamp_min(1)
        return (inside + self.eps) / (outside + self.eps)

    def update(self, maps_a: Tensor, maps_b: Tensor, mask: Tensor) -> None:
        _check(maps_a, mask)
        _check(maps_b, mask)
        self._append(self._inside_outside(maps_a, mask), self._inside_outside(maps_b, mask))


class FeatureSaturationScore(_SampleCorrelation):
    """Eq. 11: correlation across samples of ``Σ_{f_a1} S_a`` and ``Σ_{f_a2} S_a``; a method that picks only one
    of two saturating features scores low (higher is better)."""

    higher_is_better = True

    def update(self, maps: Tensor, mask_1: Tensor, mask_2: Tensor) -> None:
        _check(maps, mask_1, mask_2)
        self._append(_masked_sum(maps, mask_1), _masked_sum(maps, mask_2))
