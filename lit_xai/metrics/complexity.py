"""Complexity of a map: Sparseness (Gini index, Chalasani et al. 2020) and Complexity (entropy, Bhatt et al. 2020).

Both score the map alone (no model call), over every entry of the map as given (``[B, C', h, w]``: a 1-channel map
counts its h·w entries, a C-channel map its C·h·w entries), as Quantus 0.6 ``Sparseness``/``Complexity`` do:

- Sparseness: the Gini index of the sorted absolute values ``a_(1) ≤ … ≤ a_(n)``,
  ``G = Σ_k (2k − n − 1) a_(k) / (n Σ_k a_(k))`` (Chalasani et al. 2020, Eq. in §5.1; Hurley & Rickard 2009);
  1 = all relevance on one entry, 0 = uniform. Higher is better (a concise explanation).
- Complexity: the entropy of the fractional contributions ``P(i) = |a_i| / Σ_j |a_j|``,
  ``H = −Σ_i P(i) ln P(i)`` (Bhatt et al. 2020, Eq. 5); ln n = uniform, 0 = one entry. Lower is better.

:class:`ImageScoreMean` is the state shared by the metrics of this family and of :mod:`faithfulness`,
:mod:`robustness`, :mod:`random_logit`: the mean of per-image scores as a sum and a count (``dist_reduce_fx="sum"``),
so DDP ranks that see disjoint images reduce to the single-process mean; :meth:`ImageScoreMean.image_scores` gives the
per-image scores for paired comparisons, and ``last_image_scores`` keeps the last update's (so the callback needs no
second pass).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.metrics.base import AttributionMetric, Explainer, check_batch, check_finite

#: Quantus 0.6 ``Sparseness.evaluate_batch`` adds 1e-7 to every (normalised, absolute) entry before the Gini index
GINI_EPS = 1e-7
#: Quantus 0.6 ``Complexity.evaluate_batch``: ``−Σ P ln(P + 1e-12)``
ENTROPY_EPS = 1e-12


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


def gini(values: Tensor, eps: float = GINI_EPS) -> Tensor:
    """Gini index of each row ``[B, n]`` of non-negative values (Chalasani et al. 2020 §5.1), ``eps`` added first."""
    ordered = (values.double() + eps).sort(dim=1).values
    n = ordered.shape[1]
    k = torch.arange(1, n + 1, device=values.device, dtype=torch.float64)
    return (((2 * k - n - 1) * ordered).sum(1) / (n * ordered.sum(1))).float()


def entropy(values: Tensor, eps: float = ENTROPY_EPS) -> Tensor:
    """Entropy of the fractional contributions ``|v_i| / Σ|v_j|`` of each row ``[B, n]`` (Bhatt et al. 2020 Eq. 5)."""
    share = values.double().abs()
    share = share / share.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return (-(share * torch.log(share + eps)).sum(1)).float()


class ImageScoreMean(AttributionMetric):
    """A metric whose score is the mean of one number per image; subclasses implement :meth:`_image_scores`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        raise NotImplementedError

    def image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                     method: Explainer | None = None) -> Tensor:
        """The score of every image ``[B]`` (for paired per-image comparisons); the metric's state is unchanged."""
        if "method" in self.requires and method is None:
            raise ValueError(f"{type(self).__name__}.image_scores needs method (see AttributionMetric)")
        check_batch(inputs, target, maps)
        check_finite(maps, method)
        with torch.no_grad():
            return self._image_scores(model, inputs, target.long(), maps.detach(), method)

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        scores = self._image_scores(model, inputs, target, maps, extras.get("method"))
        self.score_sum += scores.double().sum()
        self.count += scores.shape[0]
        self.last_image_scores = scores  # this update's (not a state): the callback pairs methods without a 2nd pass

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError(f"{type(self).__name__}.compute() called before any image was evaluated")
        return {"score": (self.score_sum / self.count).float(), "count": self.count}


class Sparseness(ImageScoreMean):
    """Gini index of the map's absolute values (Chalasani et al. 2020); higher = sparser = better.

    Args:
        absolute: take ``|a|`` first, ``True`` (Chalasani: the Gini index of |attributions|; Quantus default).
        normalise: divide by each image's max |a| first, ``True`` (Quantus default; changes the score only through
            the 1e-7 offset, :data:`GINI_EPS`, which Quantus adds to the normalised values).
    """

    higher_is_better = True

    def __init__(self, absolute: bool = True, normalise: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.absolute, self.normalise = absolute, normalise

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        return gini(prepared_maps(maps, self.absolute, self.normalise).flatten(1))


class Complexity(ImageScoreMean):
    """Entropy of the map's fractional contributions (Bhatt et al. 2020 Eq. 5); lower = simpler = better.

    The contributions are always absolute values (Bhatt: ``P(i) = |g(f, x)_i| / Σ_j |g(f, x)_j|``; Quantus'
    ``abs=False`` would take logarithms of negative shares).

    Args:
        normalise: divide by each image's max |a| first, ``True`` (Quantus default; the entropy is scale-free, so
            only the 1e-12 in ``ln(P + 1e-12)`` sees it).
    """

    higher_is_better = False

    def __init__(self, normalise: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalise = normalise

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        return entropy(prepared_maps(maps, True, self.normalise).flatten(1))
