"""Extremal Perturbation (Fong, Patrick & Vedaldi, ICCV 2019), batched over images and areas.

For each target area ``a`` find the smooth mask ``m ∈ [0, 1]^{H×W}`` of area ``a`` that maximises the target
output of the perturbed image (Eq. 6, "preservation"; ``variant="delete"`` minimises it for the deleted region)::

    m* = argmax_m  Φ_t(m ⊗ x)  −  λ ‖ sort(vec m) − r_a ‖²,     r_a = [0, …, 0, 1, …, 1] with a·HW ones

- ``m ⊗ x`` (§3.2): blur perturbation — a pyramid of Gaussian blurs of ``x`` from σ = ``max_blur`` down to 0, and
  each pixel picks (interpolates) its level by the mask value: ``m = 1`` keeps the pixel, ``m = 0`` fully blurs it.
- Smooth masks (§3.3): the optimised parameter lives on a coarse grid (spacing ``step``); the mask at pixel ``u`` is a
  smooth maximum (softmax pooling, temperature ``coldness``) over the grid parameters weighted by a Gaussian bump of
  width ``sigma`` centred on each grid point, so the mask is smooth at scale ``sigma`` by construction.
- Area rank constraint (§3.1) with weight λ = ``area_penalty`` growing × ``penalty_growth`` per iteration.

Defaults follow reference.md §2 (areas [0.1], blur, 800 iterations, SGD lr 0.01 momentum 0.9, λ = 300 × 1.0035^t).
``step``, ``sigma`` and ``max_blur`` default to the reference values at 224² (7, 21, 20) scaled to the input size.
Output ``[B, 1, H, W]``: the optimal mask, summed over ``areas`` when several are given (the paper's summary).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, AttributionMethod, resolve_target, target_scores
from lit_xai.attribution.postprocess import gaussian_smooth
from lit_xai.attribution.registry import register

REFERENCE_SIZE = 224
VARIANTS = ("preserve", "delete")


class BlurPerturbation:
    """``m ⊗ x`` for the blur perturbation: per-pixel interpolation in a pyramid of ``levels`` blurs of ``x``."""

    def __init__(self, inputs: Tensor, levels: int, max_blur: float) -> None:
        if levels < 2:
            raise AttributionError(f"extremal_perturbation: need at least 2 blur levels, got {levels}")
        sigmas = torch.linspace(max_blur, 0.0, levels).tolist()  # level 0 = most blurred, last = the input
        self.levels = levels
        self.pyramid = torch.stack([gaussian_smooth(inputs, s) if s > 0 else inputs for s in sigmas], dim=1)

    def apply(self, mask: Tensor) -> Tensor:
        """``mask [N, 1, H, W]`` in [0, 1] → perturbed images ``[N, C, H, W]`` (pyramid rows repeat over N)."""
        position = mask * (self.levels - 1)
        lower = position.floor().clamp(max=self.levels - 2)
        frac = position - lower
        repeats = mask.shape[0] // self.pyramid.shape[0]
        pyramid = self.pyramid.repeat(repeats, 1, 1, 1, 1)  # [N, L, C, H, W]
        index = lower.long()[:, None].expand(-1, 1, pyramid.shape[2], -1, -1)
        low = pyramid.gather(1, index).squeeze(1)
        high = pyramid.gather(1, index + 1).squeeze(1)
        return low + frac * (high - low)


class SmoothMask:
    """Parameter grid → smooth mask (§3.3): ``m(u) = smax_v k(u − v) m̄(v)`` over grid points ``v`` near ``u``."""

    def __init__(self, height: int, width: int, step: int, sigma: float, coldness: float, device: torch.device):
        self.step, self.coldness = step, coldness
        self.radius = math.ceil(sigma / step) + 1  # grid points within reach of the Gaussian bump
        self.grid_shape = (math.ceil(height / step) + 1, math.ceil(width / step) + 1)
        diameter = 2 * self.radius + 1
        ys = torch.arange(height, dtype=torch.float32, device=device)
        xs = torch.arange(width, dtype=torch.float32, device=device)
        offsets = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32, device=device)
        # distance from pixel u to grid point (cell(u) + offset) · step, per axis
        dy = ys[None, :] - (torch.div(ys, step, rounding_mode="floor")[None, :] + offsets[:, None]) * step
        dx = xs[None, :] - (torch.div(xs, step, rounding_mode="floor")[None, :] + offsets[:, None]) * step
        dist2 = dy[:, None, :, None] ** 2 + dx[None, :, None, :] ** 2  # [D, D, H, W]
        self.weight = torch.exp(-dist2 / (2 * sigma**2)).reshape(diameter * diameter, height, width)
        self.cell_y = torch.div(ys, step, rounding_mode="floor").long()
        self.cell_x = torch.div(xs, step, rounding_mode="floor").long()

    def __call__(self, params: Tensor) -> Tensor:
        """``params [N, 1, gh, gw]`` → mask ``[N, 1, H, W]`` in [0, 1]."""
        diameter = 2 * self.radius + 1
        neighbours = F.unfold(params, diameter, padding=self.radius)  # [N, D², gh·gw]
        neighbours = neighbours.view(params.shape[0], diameter * diameter, *self.grid_shape)
        neighbours = neighbours[:, :, self.cell_y][:, :, :, self.cell_x]  # each pixel's cell neighbourhood
        bumps = self.weight * neighbours
        mask = (bumps * torch.softmax(self.coldness * bumps, dim=1)).sum(dim=1, keepdim=True)
        return mask.clamp(0.0, 1.0)


@register("extremal_perturbation")
class ExtremalPerturbation(AttributionMethod):
    """Extremal Perturbation masks (see the module docstring for the objective and defaults)."""

    def __init__(
        self,
        areas: Sequence[float] = (0.1,),
        iterations: int = 800,
        lr: float = 0.01,
        momentum: float = 0.9,
        area_penalty: float = 300.0,
        penalty_growth: float = 1.0035,
        variant: str = "preserve",
        levels: int = 8,
        max_blur: float | None = None,
        step: int | None = None,
        sigma: float | None = None,
        coldness: float = 20.0,
        init: float = 0.5,
    ) -> None:
        areas = tuple(float(a) for a in areas)
        if not areas or not all(0.0 < a < 1.0 for a in areas):
            raise AttributionError(f"extremal_perturbation: areas must lie in (0, 1), got {areas}")
        if variant not in VARIANTS:
            raise AttributionError(f"extremal_perturbation: variant must be one of {VARIANTS}, got {variant!r}")
        if iterations < 1:
            raise AttributionError(f"extremal_perturbation: iterations must be ≥ 1, got {iterations}")
        self.areas = areas
        self.iterations = iterations
        self.lr = lr
        self.momentum = momentum
        self.area_penalty = area_penalty
        self.penalty_growth = penalty_growth
        self.variant = variant
        self.levels = levels
        self.max_blur = max_blur
        self.step = step
        self.sigma = sigma
        self.coldness = coldness
        self.init = init

    def scaled(self, value: float | None, reference: float, size: int) -> float:
        """``value`` if given, else the 224²-reference ``reference`` scaled to the input size."""
        return value if value is not None else reference * size / REFERENCE_SIZE

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        target = resolve_target(model, inputs, target)
        batch, _, height, width = inputs.shape
        size = min(height, width)
        step = max(1, round(self.scaled(self.step, 7, size)))
        sigma = self.scaled(self.sigma, 21, size)
        perturbation = BlurPerturbation(inputs, self.levels, self.scaled(self.max_blur, 20, size))
        smooth_mask = SmoothMask(height, width, step, sigma, self.coldness, inputs.device)

        n_areas = len(self.areas)
        # area-major rows: row i·B + b is image b with area i
        rows_target = target.repeat(n_areas)
        areas = torch.tensor(self.areas, dtype=inputs.dtype, device=inputs.device).repeat_interleave(batch)
        pixels = height * width
        ranks = torch.arange(pixels, device=inputs.device)[None]
        reference = (ranks >= (pixels - (areas[:, None] * pixels).round())).to(inputs.dtype)  # sorted 0…0 1…1

        params = torch.full((n_areas * batch, 1, *smooth_mask.grid_shape), self.init, dtype=inputs.dtype,
                            device=inputs.device, requires_grad=True)
        optimizer = torch.optim.SGD([params], lr=self.lr, momentum=self.momentum)
        penalty = self.area_penalty
        for _ in range(self.iterations):
            mask = smooth_mask(params)
            kept = mask if self.variant == "preserve" else 1 - mask
            scores, _ = target_scores(model(perturbation.apply(kept)), rows_target)
            reward = scores if self.variant == "preserve" else -scores
            area_loss = (mask.flatten(1).sort(dim=1).values - reference).square().mean(dim=1)
            loss = (penalty * area_loss - reward).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                params.clamp_(0.0, 1.0)
            penalty *= self.penalty_growth
        with torch.no_grad():
            masks = smooth_mask(params)
        return masks.view(n_areas, batch, 1, height, width).sum(dim=0)
