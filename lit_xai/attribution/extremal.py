"""Extremal Perturbation (Fong, Patrick & Vedaldi, ICCV 2019), batched over images and areas.

For each target area ``a`` find the smooth mask ``m ∈ [0, 1]^{H×W}`` of area ``a`` that maximises the target
output of the perturbed image (Eq. 6, "preservation"; ``variant="delete"`` minimises it for the deleted region)::

    m* = argmax_m  Φ_t(m ⊗ x)  −  λ ‖ sort(vec m) − r_a ‖²,     r_a = [0, …, 0, 1, …, 1] with a·|canvas| ones

The reference algorithm is TorchRay's ``torchray.attribution.extremal_perturbation`` (v1.0.0.2, the authors' code);
every default below is its value, and the masks equal TorchRay's to float precision
(``tests/conformance/test_conformance_attribution.py``):

- ``m ⊗ x`` (§3.2): blur perturbation — a pyramid of ``levels`` Gaussian blurs of ``x``, σ_l = ``max_blur``·(1 −
  l/(L−1)) (σ = 20 px, kernel radius ⌈4σ⌉, zero padding, as TorchRay's ``imsmooth``); each pixel interpolates
  linearly between the two levels its mask value falls between: ``m = 1`` keeps the pixel, ``m = 0`` fully blurs it.
- Smooth masks (§3.3): the optimised parameter lives on a coarse grid (spacing ``step`` = 7 px); the mask at pixel
  ``u`` is the softmax-pooled (temperature ``coldness`` = 20) maximum over grid parameters ``m̄(v)`` weighted by the
  bump ``k(‖u − v‖/σ) = exp(−2·max(‖u − v‖/σ − ½, 0)²)`` (``sigma`` = 21 px), clamped to [0, 1]. As in TorchRay the
  mask is generated on a canvas that begins a margin of σ pixels before the image and extends past it (TorchRay's
  ``MaskGenerator.shape_out``, 260² at 224²); the image sees its crop and the area constraint is measured on the whole
  canvas (so ``a`` is a fraction of the canvas, not of the image). Only deviation: where TorchRay's canvas would end
  before the image does (e.g. step 4, σ 6 on 20 px, where TorchRay fails) whole grid cells are added.
- Area rank constraint (§3.1) with weight λ = ``area_penalty`` (300) growing × ``penalty_growth`` (1.0035) per
  iteration; ``r_a`` has ⌊|canvas|·(1 − a)⌋ zeros.
- Optimiser: SGD, lr 0.01, momentum 0.9 with dampening 0.9, parameters clamped to [0, 1] after each step, started
  at ``init`` = 1 (everything kept), 800 iterations; ``jitter`` flips the perturbed image horizontally on even
  iterations (TorchRay's deterministic jitter).
- Output: the mask of the *last evaluated* iteration (TorchRay returns the mask of its last forward, before the last
  update), ``[B, 1, H, W]``, summed over ``areas`` when several are given (the paper's summary).

``step``, ``sigma`` and ``max_blur`` are pixels, tuned by the authors for 224² ImageNet inputs; they are not rescaled
for other input sizes (pass smaller values for e.g. 32² images: the reference algorithm on a 32² input blurs with a
kernel larger than the image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, AttributionMethod, resolve_target, target_scores
from lit_xai.attribution.registry import register
from lit_xai.gaussian import gaussian_kernel1d

VARIANTS = ("preserve", "delete")


def zero_padded_blur(inputs: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian blur with radius ⌈``truncate``·σ⌉ and zero padding (TorchRay's ``imsmooth`` defaults)."""
    radius = math.ceil(truncate * sigma)
    if radius == 0:
        return inputs
    kernel = gaussian_kernel1d(sigma, radius, inputs.device, inputs.dtype)
    channels = inputs.shape[1]
    out = F.conv2d(inputs, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), padding=(radius, 0), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), padding=(0, radius), groups=channels)


class BlurPerturbation:
    """``m ⊗ x`` for the blur perturbation: per-pixel interpolation in a pyramid of ``levels`` blurs of ``x``."""

    def __init__(self, inputs: Tensor, levels: int, max_blur: float) -> None:
        if levels < 2:
            raise AttributionError(f"extremal_perturbation: need at least 2 blur levels, got {levels}")
        if max_blur <= 0:
            raise AttributionError(f"extremal_perturbation: max_blur must be positive, got {max_blur}")
        # level 0 = most blurred, the last level = the input (TorchRay: σ_l = (1 − linspace(0, 1, L)_l)·max_blur)
        sigmas = ((1 - torch.linspace(0, 1, levels)) * max_blur).tolist()
        self.levels = levels
        self.pyramid = torch.stack([zero_padded_blur(inputs, s) for s in sigmas], dim=1)  # [B, L, C, H, W]
        self._rows: dict[int, Tensor] = {}

    def rows(self, repeats: int) -> Tensor:
        """The pyramid repeated ``repeats`` times along the batch (cached: built once per call of the method)."""
        if repeats not in self._rows:
            self._rows[repeats] = self.pyramid.repeat(repeats, 1, 1, 1, 1)
        return self._rows[repeats]

    def apply(self, mask: Tensor) -> Tensor:
        """``mask [N, 1, H, W]`` in [0, 1] → perturbed images ``[N, C, H, W]`` (pyramid rows repeat over N).

        Level ``k = ⌊m(L−1)⌋`` and ``k + 1`` (clamped to the top level) mixed as ``(1 − w)·y_k + w·y_{k+1}`` with
        ``w = m(L−1) − k``: at ``m = 1`` both levels are the input, so the mask gets no gradient from the image there
        (TorchRay's ``Perturbation.apply``)."""
        position = mask * (self.levels - 1)
        lower = position.floor()
        frac = position - lower
        pyramid = self.rows(mask.shape[0] // self.pyramid.shape[0])
        index = lower.long()[:, None].expand(-1, 1, pyramid.shape[2], -1, -1)
        low = pyramid.gather(1, index).squeeze(1)
        high = pyramid.gather(1, (index + 1).clamp(max=self.levels - 1)).squeeze(1)
        return (1 - frac) * low + frac * high


class SmoothMask:
    """Parameter grid → smooth mask (§3.3, TorchRay's ``MaskGenerator`` geometry).

    Grid parameter ``(i, j)`` sits at canvas pixel ``(margin + step·i, margin + step·j)``; the canvas extends the
    image by ``margin = sigma`` pixels on each side. ``canvas(params)`` is the mask on the whole canvas (what the area
    constraint measures), ``crop`` cuts the image-sized centre out of it, and calling the object does both.
    """

    def __init__(self, height: int, width: int, step: int, sigma: float, coldness: float, device: torch.device):
        if step < 1 or int(step) != step:
            raise AttributionError(f"extremal_perturbation: step must be a positive integer, got {step}")
        if sigma <= 0:
            raise AttributionError(f"extremal_perturbation: sigma must be positive, got {sigma}")
        step = int(step)
        self.step, self.coldness, self.height, self.width = step, coldness, height, width
        margin = sigma
        self.offset = round(margin)
        self.radius = 1 + math.ceil(sigma / step)  # grid points within reach of a bump
        self.padding = 1 + math.ceil((margin + sigma) / step)  # grid points beyond the image border
        self.grid_shape = (math.ceil(height / step), math.ceil(width / step))
        diameter = 2 * self.radius + 1
        # neighbourhoods per axis: TorchRay's count, plus whole cells on the far side where its canvas would end
        # before the image does (TorchRay fails there with a shape mismatch, e.g. step 4, σ 6 on 20 px)
        cells = []
        for grid, size in zip(self.grid_shape, (height, width)):
            count = grid + 2 * self.padding - diameter + 1
            count += max(0, math.ceil((self.offset + size - (step * count - step + 1)) / step))
            cells.append(count)
        self.cells = tuple(cells)
        self.canvas_shape = (step * cells[0] - step + 1, step * cells[1] - step + 1)
        offsets = torch.arange(diameter, dtype=torch.float32, device=device) - self.padding

        def axis(size: int) -> Tensor:
            pixels = torch.arange(size, device=device)
            cell = torch.div(pixels, step, rounding_mode="floor")
            # distance from canvas pixel u to the grid point of neighbour k of u's cell
            return pixels[None].float() - (margin + step * (cell[None].float() + offsets[:, None]))

        dy = axis(self.canvas_shape[0])
        dx = axis(self.canvas_shape[1])
        distance = (dy[:, None, :, None].square() + dx[None, :, None, :].square()).sqrt() / sigma  # [D, D, h, w]
        self.weight = torch.exp(-2 * (distance - 0.5).clamp_min(0).square()).reshape(diameter**2, *self.canvas_shape)

    def canvas(self, params: Tensor) -> Tensor:
        """``params [N, 1, gh, gw]`` → mask on the margin-extended canvas ``[N, 1, h, w]``, clamped to [0, 1]."""
        batch, taps, step = params.shape[0], (2 * self.radius + 1) ** 2, self.step
        rows, cols = self.cells
        extra_rows = rows - (self.grid_shape[0] + 2 * self.padding - 2 * self.radius)
        extra_cols = cols - (self.grid_shape[1] + 2 * self.padding - 2 * self.radius)
        padded = F.pad(params, (self.padding, self.padding + extra_cols, self.padding, self.padding + extra_rows))
        neighbours = F.unfold(padded, 2 * self.radius + 1)  # [N, D², rows · cols]
        neighbours = neighbours.view(batch, taps, rows, 1, cols, 1)
        # every pixel of a step × step cell shares its cell's neighbourhood (nearest upsampling), cropped to the canvas
        neighbours = neighbours.expand(-1, -1, -1, step, -1, step).reshape(batch, taps, rows * step, -1)
        neighbours = neighbours[:, :, : self.canvas_shape[0], : self.canvas_shape[1]]
        bumps = self.weight.to(params.dtype) * neighbours
        mask = (bumps * torch.softmax(self.coldness * bumps, dim=1)).sum(dim=1, keepdim=True)
        return mask.clamp(0.0, 1.0)

    def crop(self, canvas: Tensor) -> Tensor:
        """The image-sized centre ``[N, 1, H, W]`` of a canvas mask."""
        return canvas[:, :, self.offset:self.offset + self.height, self.offset:self.offset + self.width]

    def __call__(self, params: Tensor) -> Tensor:
        return self.crop(self.canvas(params))


@register("extremal_perturbation")
class ExtremalPerturbation(AttributionMethod):
    """Extremal Perturbation masks (see the module docstring for the objective; every default is TorchRay's)."""

    def __init__(
        self,
        areas: Sequence[float] = (0.1,),  # TorchRay areas=[0.1]
        iterations: int = 800,  # TorchRay max_iter
        lr: float = 0.01,  # TorchRay learning_rate
        momentum: float = 0.9,  # TorchRay momentum
        dampening: float = 0.9,  # TorchRay: optim.SGD(..., dampening=momentum)
        area_penalty: float = 300.0,  # TorchRay regul_weight
        penalty_growth: float = 1.0035,  # TorchRay: regul_weight *= 1.0035 per iteration
        variant: str = "preserve",  # TorchRay PRESERVE_VARIANT
        levels: int = 8,  # TorchRay num_levels
        max_blur: float = 20.0,  # TorchRay Perturbation(max_blur=20), pixels
        step: int = 7,  # TorchRay step, pixels
        sigma: float = 21.0,  # TorchRay sigma, pixels
        coldness: float = 20.0,  # TorchRay MaskGenerator.coldness
        init: float = 1.0,  # TorchRay: pmask = torch.ones(...)
        jitter: bool = True,  # TorchRay jitter: flip horizontally on even iterations
    ) -> None:
        areas = tuple(float(a) for a in areas)
        if not areas or not all(0.0 < a < 1.0 for a in areas):
            raise AttributionError(f"extremal_perturbation: areas must lie in (0, 1), got {areas}")
        if variant not in VARIANTS:
            raise AttributionError(f"extremal_perturbation: variant must be one of {VARIANTS}, got {variant!r}")
        if iterations < 1:
            raise AttributionError(f"extremal_perturbation: iterations must be ≥ 1, got {iterations}")
        if not 0.0 <= init <= 1.0:
            raise AttributionError(f"extremal_perturbation: init must lie in [0, 1], got {init}")
        self.areas = areas
        self.iterations = iterations
        self.lr = lr
        self.momentum = momentum
        self.dampening = dampening
        self.area_penalty = area_penalty
        self.penalty_growth = penalty_growth
        self.variant = variant
        self.levels = levels
        self.max_blur = max_blur
        self.step = step
        self.sigma = sigma
        self.coldness = coldness
        self.init = init
        self.jitter = jitter

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        target = resolve_target(model, inputs, target)
        batch, _, height, width = inputs.shape
        perturbation = BlurPerturbation(inputs, self.levels, self.max_blur)
        smooth_mask = SmoothMask(height, width, self.step, self.sigma, self.coldness, inputs.device)

        n_areas = len(self.areas)
        # area-major rows: row i·B + b is image b with area i
        rows_target = target.repeat(n_areas)
        canvas = smooth_mask.canvas_shape[0] * smooth_mask.canvas_shape[1]
        zeros = torch.tensor([int(canvas * (1 - a)) for a in self.areas], device=inputs.device).repeat_interleave(batch)
        ranks = torch.arange(canvas, device=inputs.device)[None]
        reference = (ranks >= zeros[:, None]).to(inputs.dtype)  # sorted 0…0 1…1, ⌊|canvas|(1 − a)⌋ zeros

        params = torch.full((n_areas * batch, 1, *smooth_mask.grid_shape), self.init, dtype=inputs.dtype,
                            device=inputs.device, requires_grad=True)
        optimizer = torch.optim.SGD([params], lr=self.lr, momentum=self.momentum, dampening=self.dampening)
        penalty = self.area_penalty
        for iteration in range(self.iterations):
            full = smooth_mask.canvas(params)
            mask = smooth_mask.crop(full)
            perturbed = perturbation.apply(mask if self.variant == "preserve" else 1 - mask)
            if self.jitter and iteration % 2 == 0:
                perturbed = perturbed.flip(dims=(3,))
            scores, _ = target_scores(model(perturbed), rows_target)
            reward = scores if self.variant == "preserve" else -scores
            area_loss = (full.flatten(1).sort(dim=1).values - reference).square().mean(dim=1)
            loss = (penalty * area_loss - reward).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                params.clamp_(0.0, 1.0)
            penalty *= self.penalty_growth
        return mask.detach().view(n_areas, batch, 1, height, width).sum(dim=0)
