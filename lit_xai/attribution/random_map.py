"""The random control map: the baseline every evaluation metric compares methods against."""

from __future__ import annotations

from torch import Tensor, nn

from lit_xai.attribution.base import AttributionMethod
from lit_xai.attribution.noise import per_sample_uniform
from lit_xai.attribution.registry import register


@register("random")
class RandomMap(AttributionMethod):
    """Uniform noise ``U[0, 1)`` of shape ``[B, 1, H, W]`` — one value per pixel, so a pixel ranking drawn from it is
    a uniformly random permutation (as ROAR's and pixel-perturbation's random control need) whatever channel
    reduction follows. The model is not called.

    Seeded per image: image ``b``'s map is drawn from a CPU generator seeded with (``seed``, the image's content)
    (:mod:`lit_xai.attribution.noise`), so an image gets the same map in any batch, position, process and call —
    1 or N DDP processes and any metric list (e.g. one that re-runs the method) give the same maps. Different images
    get independent maps; identical images get identical maps.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        height, width = inputs.shape[-2:]
        return per_sample_uniform(inputs, self.seed, self.name, (1, height, width))
