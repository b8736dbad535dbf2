"""Complexity of a map: Sparseness (Gini index, Chalasani et al. 2020) and Complexity (entropy, Bhatt et al. 2020).

Both score the map alone (no model call), over every entry of the map as given (``[B, C', h, w]``: a 1-channel map
counts its h·w entries, a C-channel map its C·h·w entries), as Quantus 0.6 ``Sparseness``/``Complexity`` do:

- Sparseness: the Gini index of the sorted absolute values ``a_(1) ≤ … ≤ a_(n)``,
  ``G = Σ_k (2k − n − 1) a_(k) / (n Σ_k a_(k))`` (Chalasani et al. 2020, Eq. in §5.1; Hurley & Rickard 2009);
  1 = all relevance on one entry, 0 = uniform. Higher is better (a concise explanation).
- Complexity: the entropy of the fractional contributions ``P(i) = |a_i| / Σ_j |a_j|``,
  ``H = −Σ_i P(i) ln P(i)`` (Bhatt et al. 2020, Eq. 5); ln n = uniform, 0 = one entry. Lower is better.

"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.metrics.base import Explainer
from lit_xai.metrics.image_scores import ImageScoreMean, prepared_maps

#: Quantus 0.6 ``Sparseness.evaluate_batch`` adds 1e-7 to every (normalised, absolute) entry before the Gini index
GINI_EPS = 1e-7
#: Quantus 0.6 ``Complexity.evaluate_batch``: ``−Σ P ln(P + 1e-12)``
ENTROPY_EPS = 1e-12


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
