"""Gradient-based input attributions: Gradient, Input×Gradient, Integrated Gradients, SmoothGrad.

All of them only need ∂y_t/∂x. For speed every method (i) switches ``requires_grad`` off on the parameters for the
call (restored by :func:`~lit_xai.attribution.base.preserved_model_state`), so no weight gradient is ever formed,
(ii) differentiates with ``torch.autograd.grad`` w.r.t. the inputs only, and (iii) evaluates many points (IG steps,
SmoothGrad samples) as one flattened batch, split into chunks of ``max_batch`` rows — by default as many rows as
fit the activation-memory budget of :mod:`lit_xai.attribution.batching` (fast and memory-bounded on any model).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from lit_xai.attribution.base import (
    AttributionError,
    AttributionMethod,
    input_gradient,
    resolve_target,
    target_scores,
)
from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.attribution.noise import NoiseStream, sample_generators
from lit_xai.attribution.postprocess import gaussian_smooth
from lit_xai.attribution.registry import register

IG_RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def accumulate_input_gradients(
    model: nn.Module,
    make_points: Callable[[int, int], Tensor],
    num_rows: int,
    target: Tensor,
    like: Tensor,
    max_batch: int | None,
    transform: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """``Σ_rows transform(∂y_t/∂x at row, row index)``, summed per image, evaluated ``max_batch`` rows at a time
    (``None``: :func:`~lit_xai.attribution.batching.rows_per_chunk`'s memory budget).

    Rows are laid out step-major: row ``r`` belongs to image ``r % B`` and step ``r // B``. ``make_points(start,
    end)`` builds only the rows of one chunk, so peak memory is bounded by the chunk, not by the step count.
    """
    batch_size = like.shape[0]
    total = torch.zeros_like(like)
    for start, end in row_chunks(num_rows, rows_per_chunk(model, like, max_batch)):
        rows = torch.arange(start, end, device=like.device)
        images = rows % batch_size
        chunk = make_points(start, end).requires_grad_(True)
        scores, _ = target_scores(model(chunk), target[images])
        (grad,) = torch.autograd.grad(scores.sum(), chunk)
        total.index_add_(0, images, transform(grad, rows))
    return total


@register("gradient")
class Gradient(AttributionMethod):
    """Saliency: the plain input gradient ``∂y_t/∂x`` (Simonyan et al. 2014). One forward + backward."""

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        grad, _, _ = input_gradient(model, inputs, target)
        return grad


@register("input_x_gradient")
class InputXGradient(AttributionMethod):
    """Input×Gradient ``x ⊙ ∂y_t/∂x`` (Shrikumar et al. 2016; "InputMCT" in seed 001)."""

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        grad, _, _ = input_gradient(model, inputs, target)
        return inputs * grad


def integration_rule(rule: str, steps: int) -> tuple[Tensor, Tensor]:
    """Points α_k ∈ [0, 1] and weights w_k with ``∫₀¹ g(α)dα ≈ Σ_k w_k g(α_k)`` (float64)."""
    if steps < 1 or (rule == "riemann_trapezoid" and steps < 2):
        raise AttributionError(f"integrated_gradients: {rule} needs more steps, got steps={steps}")
    n = steps
    if rule == "riemann_left":
        alphas, weights = np.linspace(0.0, 1.0 - 1.0 / n, n), np.full(n, 1.0 / n)
    elif rule == "riemann_right":
        alphas, weights = np.linspace(1.0 / n, 1.0, n), np.full(n, 1.0 / n)
    elif rule == "riemann_middle":
        alphas, weights = np.linspace(0.5 / n, 1.0 - 0.5 / n, n), np.full(n, 1.0 / n)
    elif rule == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] = 0.5 / (n - 1)
    elif rule == "gausslegendre":
        nodes, gl_weights = np.polynomial.legendre.leggauss(n)  # on [-1, 1]
        alphas, weights = (nodes + 1.0) / 2.0, gl_weights / 2.0
    else:
        raise AttributionError(f"integrated_gradients: unknown rule {rule!r}; choose one of {', '.join(IG_RULES)}")
    return torch.as_tensor(alphas, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64)


@register("integrated_gradients")
class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al. 2017, Eq. 1, with the quadrature of ``rule``)::

        IG(x) = (x − x̄) ⊙ Σ_k w_k ∂y_t/∂x |_{x̄ + α_k (x − x̄)}

    ``baseline``: ``"zero"``, a float (constant image), a tensor broadcastable to the inputs, or ``"blur"``
    (the input Gaussian-blurred with ``blur_sigma`` pixels). ``steps · B`` path points are evaluated in chunks of
    at most ``max_batch`` rows, so peak memory is bounded by ``max_batch`` whatever ``steps`` is.
    """

    def __init__(
        self,
        steps: int = 50,
        rule: str = "gausslegendre",
        baseline: str | float | Tensor = "zero",
        blur_sigma: float = 5.0,
        max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
    ) -> None:
        integration_rule(rule, steps)  # validate early
        if isinstance(baseline, str) and baseline not in ("zero", "blur"):
            raise AttributionError(f"integrated_gradients: baseline must be 'zero', 'blur', a float or a tensor, "
                                   f"got {baseline!r}")
        self.steps = steps
        self.rule = rule
        self.baseline = baseline
        self.blur_sigma = blur_sigma
        self.max_batch = check_max_batch(max_batch)

    def baseline_for(self, inputs: Tensor) -> Tensor:
        """The reference point x̄ with the shape of ``inputs``."""
        if isinstance(self.baseline, str):
            if self.baseline == "zero":
                return torch.zeros_like(inputs)
            return gaussian_smooth(inputs, self.blur_sigma)
        if isinstance(self.baseline, Tensor):
            try:
                return torch.broadcast_to(self.baseline.to(inputs), inputs.shape)
            except RuntimeError as err:
                raise AttributionError(f"integrated_gradients: baseline of shape {tuple(self.baseline.shape)} does "
                                       f"not broadcast to the inputs {tuple(inputs.shape)}") from err
        return torch.full_like(inputs, float(self.baseline))

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        target = resolve_target(model, inputs, target)
        baseline = self.baseline_for(inputs)
        alphas, weights = integration_rule(self.rule, self.steps)
        alphas = alphas.to(device=inputs.device, dtype=inputs.dtype)
        weights = weights.to(device=inputs.device, dtype=inputs.dtype)
        delta = inputs - baseline
        batch = inputs.shape[0]

        def path_points(start: int, end: int) -> Tensor:  # row k·B + b = x̄_b + α_k (x_b − x̄_b)
            rows = torch.arange(start, end, device=inputs.device)
            images = rows % batch
            return torch.addcmul(baseline[images], alphas[rows // batch].view(-1, 1, 1, 1), delta[images])

        def weighted(grad: Tensor, rows: Tensor) -> Tensor:
            return grad * weights[rows // batch].view(-1, 1, 1, 1)

        mean_grad = accumulate_input_gradients(
            model, path_points, self.steps * batch, target, inputs, self.max_batch, weighted
        )
        return delta * mean_grad


#: the noise stream name shared by SmoothGrad and SmoothGrad² (:func:`~lit_xai.attribution.noise.sample_seeds`)
NOISE_STREAM = "smoothgrad"


@register("smoothgrad")
class SmoothGrad(AttributionMethod):
    """SmoothGrad (Smilkov et al. 2017): ``mean_n ∂y_t/∂x |_{x + ε_n}``, ``ε_n ~ N(0, σ²)``.

    ``σ = noise_level · (max x − min x)`` per image (reference.md §2: 0.15). ``squared=True`` gives the
    SmoothGrad² variant ``mean_n (∂y_t/∂x)²`` (Hooker et al. 2019). Each image's noise comes from its own CPU
    generator seeded with (``seed``, the image's content) (:mod:`lit_xai.attribution.noise`), so an image gets the
    same map in any batch, position, process, device and call; SmoothGrad and SmoothGrad² share the noise.
    """

    def __init__(
        self,
        samples: int = 50,
        noise_level: float = 0.15,
        squared: bool = False,
        seed: int = 0,
        max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
    ) -> None:
        if samples < 1:
            raise AttributionError(f"smoothgrad: samples must be ≥ 1, got {samples}")
        if noise_level < 0:
            raise AttributionError(f"smoothgrad: noise_level must be ≥ 0, got {noise_level}")
        self.samples = samples
        self.noise_level = noise_level
        self.squared = squared
        self.seed = seed
        self.max_batch = check_max_batch(max_batch)

    def noise_stream(self, inputs: Tensor) -> NoiseStream:
        """This call's noise (rows ``n·B + b``), σ per image, from per-image generators seeded by (seed, image)."""
        flat = inputs.flatten(1)
        sigma = self.noise_level * (flat.amax(dim=1) - flat.amin(dim=1))
        return NoiseStream(inputs, sigma, sample_generators(inputs, self.seed, NOISE_STREAM))

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        target = resolve_target(model, inputs, target)
        noise = self.noise_stream(inputs)
        batch = inputs.shape[0]

        def noisy_points(start: int, end: int) -> Tensor:
            rows = torch.arange(start, end, device=inputs.device)
            return inputs[rows % batch] + noise.rows(start, end)

        def statistic(grad: Tensor, rows: Tensor) -> Tensor:
            return grad.square() if self.squared else grad

        total = accumulate_input_gradients(
            model, noisy_points, self.samples * batch, target, inputs, self.max_batch, statistic
        )
        return total / self.samples


@register("smoothgrad_sq")
class SmoothGradSquared(SmoothGrad):
    """SmoothGrad²: :class:`SmoothGrad` with ``squared=True`` (mean of squared noisy gradients)."""

    def __init__(
        self, samples: int = 50, noise_level: float = 0.15, seed: int = 0, max_batch: int | None = None
    ) -> None:
        super().__init__(samples, noise_level, True, seed, max_batch)
