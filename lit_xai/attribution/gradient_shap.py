"""GradientSHAP / expected gradients (Lundberg & Lee 2017; Erion et al. 2021; Captum ``GradientShap``).

SHAP values as an expectation over references ``x̄ ~ D`` (the background), path positions ``α ~ U[0, 1]`` and,
optionally, SmoothGrad noise ``ε ~ N(0, σ²)``::

    φ(x) = E_{x̄, α, ε} [ (x̃ − x̄) ⊙ ∂y_t/∂x |_{x̄ + α (x̃ − x̄)} ],    x̃ = x + ε

estimated with ``n_samples`` draws per image (Captum's estimator). In expectation this is Integrated Gradients
averaged over the background, so ``E[Σ φ] = f(x) − E f(x̄)`` (completeness in expectation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, AttributionMethod, resolve_target
from lit_xai.attribution.batching import check_max_batch
from lit_xai.attribution.gradients import accumulate_input_gradients
from lit_xai.attribution.noise import NoiseStream, per_sample, sample_generators
from lit_xai.attribution.references import ReferenceSpec, check_reference_spec, reference_images
from lit_xai.attribution.registry import register


@register("gradient_shap")
class GradientShap(AttributionMethod):
    """GradientSHAP with ``n_samples`` draws per image (default 5 ← Captum ``GradientShap.attribute``), noise
    standard deviation ``stdevs`` (default 0.0 ← Captum) and references drawn uniformly from ``background``
    (``[N, C, H, W]`` tensor or the path of a saved one, ``"zero"``/a float for a constant image).

    Randomness: image ``b``'s own CPU generator, seeded with (``seed``, the image's content)
    (:mod:`lit_xai.attribution.noise`), draws, in this order, its ``n_samples`` reference indices, its positions α,
    then (if ``stdevs > 0``) one noise image per sample — the same draws whatever ``max_batch``, batch, process,
    device or call order.
    """

    def __init__(
        self,
        background: ReferenceSpec = "zero",
        n_samples: int = 5,
        stdevs: float = 0.0,
        seed: int = 0,
        max_batch: int | None = None,  # rows per forward (None: memory budget, lit_xai.attribution.batching)
    ) -> None:
        check_reference_spec(background, "gradient_shap")
        if not isinstance(n_samples, int) or n_samples < 1:
            raise AttributionError(f"gradient_shap: n_samples must be a positive int, got {n_samples!r}")
        if not stdevs >= 0:
            raise AttributionError(f"gradient_shap: stdevs must be ≥ 0, got {stdevs!r}")
        self.background = background
        self.n_samples = n_samples
        self.stdevs = float(stdevs)
        self.seed = seed
        self.max_batch = check_max_batch(max_batch)

    def draw(self, inputs: Tensor, num_references: int) -> tuple[Tensor, Tensor, NoiseStream]:
        """This call's samples: reference indices and α (both ``[n_samples, B]``, on the inputs' device) and
        the noise stream (rows ``s·B + b``)."""
        sigma = inputs.new_full((inputs.shape[0],), self.stdevs)
        generators = sample_generators(inputs, self.seed, self.name)
        n = self.n_samples
        index = per_sample(generators, lambda g: torch.randint(num_references, (n,), generator=g), inputs.device).T
        alpha = per_sample(generators, lambda g: torch.rand(n, generator=g, dtype=inputs.dtype), inputs.device).T
        return index, alpha, NoiseStream(inputs, sigma, generators)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        refs = reference_images(self.background, inputs, self.name)
        target = resolve_target(model, inputs, target)
        index, alpha, noise = self.draw(inputs, refs.shape[0])
        batch = inputs.shape[0]
        index, alpha = index.flatten(), alpha.flatten()
        delta: dict[str, Tensor] = {}

        def points(start: int, end: int) -> Tensor:
            rows = torch.arange(start, end, device=inputs.device)
            x = inputs[rows % batch]
            if self.stdevs > 0:
                x = x + noise.rows(start, end)
            ref = refs[index[start:end]]
            delta["chunk"] = x - ref
            return ref + alpha[start:end].view(-1, 1, 1, 1) * delta["chunk"]

        def times_delta(grad: Tensor, rows: Tensor) -> Tensor:
            return delta["chunk"] * grad

        total = accumulate_input_gradients(
            model, points, self.n_samples * batch, target, inputs, self.max_batch, times_delta
        )
        return total / self.n_samples
