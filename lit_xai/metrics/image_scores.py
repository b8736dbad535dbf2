"""Per-image results of a metric in one batched call, metrics scored as the mean of one number per image, and the
map preparation they share.

:class:`PerImageMetric` is the per-image API every registered metric has: :meth:`PerImageMetric.image_results`
gives, for a batch, each image's score ``[B]`` (NaN where the protocol skips the image, e.g. EHR's large boxes) and
its curves ``[B, K]``, each row equal to ``update`` + ``compute`` on that image alone, without touching the state;
:meth:`PerImageMetric.image_scores` is the score alone. The report and the callback's paired statistics use it.

:class:`ImageScoreMean` is the state of the complexity, faithfulness, robustness and Random Logit families: the mean
of per-image scores as a sum and a count (``dist_reduce_fx="sum"``), so DDP ranks that see disjoint images reduce to
the single-process mean; :meth:`ImageScoreMean.image_scores` gives the per-image scores for paired comparisons, and
``last_image_scores`` keeps the last update's (so the callback needs no second pass).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.metrics.base import AttributionMetric, Explainer, check_batch, check_finite


def prepared_maps(maps: Tensor, absolute: bool, normalise: bool, eps: float = 1e-12) -> Tensor:
    """``maps`` as float, divided by each image's max |value| (``normalise``; all-zero maps stay 0), then ``|·|``.

    Quantus 0.6 applies ``normalise_by_max`` then ``abs`` in this order; its ``normalise_by_max`` divides by the
    max over the *whole batch* (its default axes include the batch axis), ours per image, so a score never depends
    on which other images share the batch (a difference by design; equal on batches of one image).
    """
    maps = maps.float()
    if normalise:
        peak = maps.abs().flatten(1).amax(1).view(-1, *([1] * (maps.dim() - 1)))
        maps = torch.where(peak > eps, maps / peak.clamp_min(eps), maps)
    return maps.abs() if absolute else maps


def feature_maps(maps: Tensor, inputs: Tensor) -> Tensor:
    """The map per input feature ``[B, C, H, W]``: layer maps upsampled bilinearly to ``H×W``, a 1-channel map
    repeated over the channels (Quantus broadcasts ``a_batch`` to ``x_batch``'s shape the same way)."""
    if maps.shape[1] not in (1, inputs.shape[1]):
        raise ValueError(f"maps must have 1 or {inputs.shape[1]} channels (the inputs'), got {maps.shape[1]}")
    if tuple(maps.shape[-2:]) != tuple(inputs.shape[-2:]):
        maps = F.interpolate(maps.float(), size=inputs.shape[-2:], mode="bilinear", align_corners=False)
    return maps.expand(-1, inputs.shape[1], -1, -1)


class PerImageMetric(AttributionMetric):
    """A metric with batched per-image results; subclasses implement :meth:`_image_results`."""

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        raise NotImplementedError

    def image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, *,
                      method: Explainer | None = None, masks: Tensor | None = None,
                      boxes: Tensor | None = None) -> dict[str, Tensor]:
        """Every image's ``"score"`` ``[B]`` (NaN where the protocol skips the image) and, where the metric has
        curves, ``"curve/<name>"`` ``[B, K]`` over :meth:`curve_axis`: row b equals ``update`` + ``compute`` on image
        b alone. Arguments as :meth:`update`; the metric's state is unchanged."""
        extras = {"method": method, "masks": masks, "boxes": boxes}
        missing = sorted(name for name in self.requires if extras[name] is None)
        if missing:
            raise ValueError(f"{type(self).__name__}.image_results needs {', '.join(missing)} (see AttributionMetric)")
        check_batch(inputs, target, maps)
        check_finite(maps, method)
        with torch.no_grad():
            return self._image_results(model, inputs, target.long(), maps.detach(), **extras)

    def image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, *,
                     method: Explainer | None = None, masks: Tensor | None = None,
                     boxes: Tensor | None = None) -> Tensor:
        """The score of every image ``[B]`` (for paired per-image comparisons): ``image_results(...)["score"]``."""
        return self.image_results(model, inputs, target, maps, method=method, masks=masks, boxes=boxes)["score"]


class ImageScoreMean(PerImageMetric):
    """A metric whose score is the mean of one number per image; subclasses implement :meth:`_image_scores`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        raise NotImplementedError

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        return {"score": self._image_scores(model, inputs, target, maps, extras.get("method"))}

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        scores = self._image_scores(model, inputs, target, maps, extras.get("method"))
        self.score_sum += scores.double().sum()
        self.count += scores.shape[0]
        self.last_image_scores = scores  # this update's (not a state): the callback pairs methods without a 2nd pass

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError(f"{type(self).__name__}.compute() called before any image was evaluated")
        return {"score": (self.score_sum / self.count).float(), "count": self.count}
