"""Guided Integrated Gradients (Kapishnikov et al. 2021, Algorithm 1; PAIR ``saliency`` ``guided_ig.py``).

An adaptive path from the baseline ``x̄`` to ``x``: at each of ``steps`` steps the features with the smallest
``|∂y_t/∂x|`` (the ``fraction`` quantile, lower interpolation) move toward ``x`` first, until the path's L1 distance to
``x`` drops to ``L1(x, x̄)·(1 − k/steps)``; features lagging behind ``α_k − max_dist`` are pulled up and none runs
ahead of ``α_k + max_dist``. The map accumulates ``Σ (x_new − x_old) ⊙ ∂y_t/∂x|_{x_old}`` along the path, so
``Σ map ≈ f(x) − f(x̄)`` as for Integrated Gradients.

The steps are sequential (each needs the gradient at the point the previous one reached), but all images of a
batch move together: one forward + backward of the batch per step; each image's inner selection loop runs as
masked tensor operations until every image has met its L1 target.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, AttributionMethod, resolve_target, target_scores
from lit_xai.attribution.references import ReferenceSpec, check_reference_spec, reference_images
from lit_xai.attribution.registry import register

#: the absolute and relative tolerance of the L1-target test (``EPSILON = 1E-9`` in the reference code)
L1_TOLERANCE = 1e-9


def lower_quantile(values: Tensor, q: float) -> Tensor:
    """Per-row ``np.quantile(row, q, method="lower")``: the ``⌊q·(n−1)⌋``-th smallest value (0-based), ``[B]``."""
    k = int(q * (values.shape[1] - 1)) + 1
    return values.kthvalue(k, dim=1).values


@register("guided_ig")
class GuidedIntegratedGradients(AttributionMethod):
    """Guided IG with ``steps`` (200), ``fraction`` (0.25) and ``max_dist`` (0.02) ← the reference ``GuidedIG``
    defaults (``x_steps``, ``fraction``, ``max_dist``); ``baseline`` ``"zero"`` (the reference examples' black
    image), a float, a tensor or the path of a saved one."""

    def __init__(self, steps: int = 200, fraction: float = 0.25, max_dist: float = 0.02,
                 baseline: ReferenceSpec = "zero") -> None:
        if not isinstance(steps, int) or steps < 1:
            raise AttributionError(f"guided_ig: steps must be a positive int, got {steps!r}")
        if not 0.0 <= fraction <= 1.0 or not 0.0 <= max_dist <= 1.0:
            raise AttributionError(f"guided_ig: fraction and max_dist must lie in [0, 1], got {fraction}, {max_dist}")
        check_reference_spec(baseline, "guided_ig")
        self.steps = steps
        self.fraction = fraction
        self.max_dist = max_dist
        self.baseline = baseline

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        target = resolve_target(model, inputs, target)
        refs = reference_images(self.baseline, inputs, self.name)
        if refs.shape[0] not in (1, inputs.shape[0]):
            raise AttributionError(f"guided_ig: {refs.shape[0]} baselines for {inputs.shape[0]} inputs")
        x_in = inputs.flatten(1)
        base = refs.expand_as(inputs).flatten(1)
        diff = x_in - base
        l1_total = diff.abs().sum(1)
        x = base.clone()
        attr = torch.zeros_like(x_in)
        for step in range(self.steps):
            point = x.view_as(inputs).clone().requires_grad_(True)
            scores, _ = target_scores(model(point), target)
            (grad_actual,) = torch.autograd.grad(scores.sum(), point)
            grad_actual = grad_actual.flatten(1)
            with torch.no_grad():
                self.move(x, attr, grad_actual, x_in, base, diff, l1_total, step)
        return attr.view_as(inputs)

    def move(self, x: Tensor, attr: Tensor, grad_actual: Tensor, x_in: Tensor, base: Tensor, diff: Tensor,
             l1_total: Tensor, step: int) -> None:
        """One step of Algorithm 1 for every image, updating ``x`` and ``attr`` in place."""
        alpha = (step + 1.0) / self.steps
        alpha_min, alpha_max = max(alpha - self.max_dist, 0.0), min(alpha + self.max_dist, 1.0)
        x_min, x_max = base + diff * alpha_min, base + diff * alpha_max
        l1_target = l1_total * (1 - (step + 1) / self.steps)
        grad = grad_actual.clone()
        active = l1_total > 0  # an input equal to its baseline gets a zero map
        while bool(active.any()):
            x_old = x.clone()
            x_alpha = torch.where(diff != 0, (x - base) / diff.where(diff != 0, torch.ones_like(diff)),
                                  torch.full_like(x, alpha_max))
            lagging = (x_alpha < alpha_min) & active[:, None]
            x.copy_(torch.where(lagging, x_min, x))
            l1_current = (x - x_in).abs().sum(1)
            gap = (l1_target - l1_current).abs()
            close = gap <= torch.clamp(L1_TOLERANCE * torch.maximum(l1_target.abs(), l1_current.abs()),
                                       min=L1_TOLERANCE)
            moving = active & ~close
            grad.masked_fill_((x == x_max) & moving[:, None], float("inf"))
            threshold = lower_quantile(grad.abs(), self.fraction)
            selected = (grad.abs() <= threshold[:, None]) & (grad != float("inf")) & moving[:, None]
            l1_selected = ((x - x_max).abs() * selected).sum(1)
            gamma = torch.where(l1_selected > 0, (l1_current - l1_target) / l1_selected.clamp_min(1e-300),
                                torch.full_like(l1_selected, float("inf")))
            jump = selected & (gamma > 1)[:, None]
            partial = selected & (gamma <= 1)[:, None]
            x.copy_(torch.where(jump, x_max, x))
            x.copy_(torch.where(partial, x + (x_max - x) * gamma.clamp(max=1.0)[:, None], x))
            attr.add_((x - x_old) * grad_actual * active[:, None])
            active = moving & (gamma > 1)
