"""The random control map: the baseline every evaluation metric compares methods against."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionMethod
from lit_xai.attribution.registry import register


@register("random")
class RandomMap(AttributionMethod):
    """Uniform noise ``U[0, 1)`` of shape ``[B, 1, H, W]`` — one value per pixel, so a pixel ranking drawn from it is
    a uniformly random permutation (as ROAR's and pixel-perturbation's random control need) whatever channel
    reduction follows. The model is not called.

    Seeded: a CPU ``torch.Generator`` is created from ``seed`` at construction and advances across calls, so a
    sequence of calls is reproducible (on any device) while different batches get different maps; :meth:`reset`
    restarts the sequence.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        """Restart the sequence of maps from ``seed``."""
        self._generator.manual_seed(self.seed)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        batch, _, height, width = inputs.shape
        noise = torch.rand((batch, 1, height, width), generator=self._generator, dtype=inputs.dtype)
        return noise.to(inputs.device)
