"""Surrogate-model attributions on a segmentation: LIME (Ribeiro et al. 2016) and KernelSHAP (Lundberg & Lee 2017).

The image is split into ``M`` segments (a patch grid by default, or any label map). ``S`` binary coalitions
``z ∈ {0, 1}^M`` switch segments on (kept) or off (replaced by ``fill``); the model scores every perturbed image,
and a weighted linear surrogate ``g(z) = φ₀ + Σ_j φ_j z_j`` is fit to the scores::

    φ = argmin_φ Σ_s π(z_s) (f_t(x_{z_s}) − g(z_s))² + α ‖φ_{1..M}‖²

The map gives every pixel its segment's coefficient φ_j. All images of a call share one seeded set of
coalitions (and kernel weights), so the fit is one batched least-squares solve with one right-hand side per
image, on the inputs' device; the ``S·B`` forward passes run ``max_batch`` rows at a time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, AttributionMethod, check_target_range, resolve_target
from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.attribution.registry import register

OUTPUTS = ("softmax", "logit")
#: patches per side of the default segmentation: 6 × 6 = 36 ≈ the 29–34 segments of lime's default quickshift on
#: skimage's astronaut/chelsea/coffee/rocket photos resized to 224² (measured; lime itself uses quickshift)
DEFAULT_GRID = 6


def grid_segmentation(size: tuple[int, int], grid: int, device: torch.device) -> Tensor:
    """Labels ``[H, W]`` of a ``grid × grid`` patch grid (row-major; patches differ by at most one pixel)."""
    rows = torch.arange(size[0], device=device) * grid // size[0]
    cols = torch.arange(size[1], device=device) * grid // size[1]
    return rows[:, None] * grid + cols[None, :]


def check_segmentation(labels: Tensor, inputs: Tensor, method: str) -> Tensor:
    """Labels ``[H, W]`` or ``[B, H, W]`` (long, on the inputs' device) holding every value ``0..M−1``."""
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise AttributionError(f"{method}: segmentation must hold integer segment labels, got {labels.dtype}")
    size = tuple(inputs.shape[-2:])
    if tuple(labels.shape[-2:]) != size or labels.dim() not in (2, 3) or (
        labels.dim() == 3 and labels.shape[0] != inputs.shape[0]
    ):
        raise AttributionError(f"{method}: segmentation must have shape [H, W] or [B, H, W] = {size} / "
                               f"[{inputs.shape[0]}, ...], got {tuple(labels.shape)}")
    labels = labels.to(device=inputs.device, dtype=torch.long)
    count = int(labels.max()) + 1
    if int(labels.min()) < 0 or torch.unique(labels).numel() != count:
        raise AttributionError(f"{method}: segment labels must be exactly 0..M−1 (every label used)")
    return labels


def weighted_least_squares(design: Tensor, weights: Tensor, targets: Tensor, ridge: float) -> Tensor:
    """Coefficients ``[M + 1, B]`` (intercept last) of ``min Σ_s w_s (y_sb − [z_s, 1]·β_b)² + ridge·‖β_{:M}‖²``.

    Solved in float64 as one least-squares problem with ``B`` right-hand sides; the intercept is not penalised.
    """
    samples, features = design.shape
    x = torch.cat([design, design.new_ones(samples, 1)], dim=1).double()
    root = weights.double().sqrt()[:, None]
    a, b = root * x, root * targets.double()
    if ridge > 0:
        penalty = math.sqrt(ridge) * torch.eye(features, features + 1, dtype=torch.float64, device=x.device)
        a = torch.cat([a, penalty])
        b = torch.cat([b, b.new_zeros(features, b.shape[1])])
    return torch.linalg.lstsq(a, b).solution


class SurrogateMethod(AttributionMethod):
    """Shared machinery: segmentation, seeded coalitions, batched scoring and the weighted linear fit."""

    ridge = 0.0

    def __init__(
        self, n_samples: int, segmentation: str | Tensor, grid: int, fill: float, output: str, seed: int,
        max_batch: int | None,
    ) -> None:
        if not isinstance(n_samples, int) or n_samples < 2:
            raise AttributionError(f"{self.name}: n_samples must be an int ≥ 2, got {n_samples!r}")
        if isinstance(segmentation, str) and segmentation != "grid":
            raise AttributionError(f"{self.name}: segmentation must be 'grid' or a label tensor, got {segmentation!r}")
        if not isinstance(grid, int) or grid < 1:
            raise AttributionError(f"{self.name}: grid must be a positive int, got {grid!r}")
        if output not in OUTPUTS:
            raise AttributionError(f"{self.name}: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.n_samples = n_samples
        self.segmentation = segmentation
        self.grid = grid
        self.fill = float(fill)
        self.output = output
        self.seed = seed
        self.max_batch = check_max_batch(max_batch)

    def segments(self, inputs: Tensor) -> Tensor:
        """This call's labels ``[H, W]`` or ``[B, H, W]``."""
        if isinstance(self.segmentation, str):
            return grid_segmentation((inputs.shape[-2], inputs.shape[-1]), self.grid, inputs.device)
        return check_segmentation(self.segmentation, inputs, self.name)

    def sample_count(self, num_features: int) -> int:
        """The number of coalitions S for ``M`` segments."""
        return self.n_samples

    def coalitions(self, num_features: int, count: int) -> Tensor:
        """``count`` binary coalitions ``[S, M]`` (float, CPU), from a generator seeded with ``seed``."""
        raise NotImplementedError

    def kernel(self, coalitions: Tensor) -> Tensor:
        """The sample weights ``π(z)`` ``[S]``."""
        raise NotImplementedError

    @torch.no_grad()
    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        target = resolve_target(model, inputs, target)
        labels = self.segments(inputs)
        num_features = int(labels.max()) + 1
        count = self.sample_count(num_features)
        coalitions = self.coalitions(num_features, count).to(inputs)
        batch = inputs.shape[0]
        scores = inputs.new_empty(count * batch)
        for start, end in row_chunks(count * batch, rows_per_chunk(model, inputs, self.max_batch)):
            rows = torch.arange(start, end, device=inputs.device)
            images = rows % batch
            keep = coalitions[rows // batch]  # [R, M]
            if labels.dim() == 2:
                pixel_keep = keep[:, labels]
            else:
                pixel_keep = torch.gather(keep, 1, labels[images].flatten(1)).view(len(rows), *labels.shape[1:])
            pixel_keep = pixel_keep[:, None]
            logits = model(inputs[images] * pixel_keep + self.fill * (1 - pixel_keep))
            check_target_range(target, logits.shape[1])
            out = logits.softmax(1) if self.output == "softmax" else logits
            scores[start:end] = out.gather(1, target[images, None])[:, 0]
        coef = weighted_least_squares(coalitions, self.kernel(coalitions), scores.view(count, batch),
                                      self.ridge)
        phi = coef[:num_features].T.to(inputs.dtype)  # [B, M]
        if labels.dim() == 2:
            return phi[:, labels][:, None]
        return torch.gather(phi, 1, labels.flatten(1)).view(batch, 1, *labels.shape[1:])


@register("lime")
class Lime(SurrogateMethod):
    """LIME with the ``lime`` package's image defaults: ``n_samples`` 1000, the first coalition all-on and the rest
    uniform (``randint(0, 2)``), kernel ``π(z) = sqrt(exp(−d(z, 1)²/w²))`` with ``d`` the cosine distance to the
    all-on coalition and width ``w = 0.25``, ``Ridge(alpha=1)`` with an intercept, class probabilities
    (``output="softmax"``). Deviations: a ``grid × grid`` patch grid instead of quickshift superpixels (6 × 6 = 36
    patches ≈ the 29–34 segments ``lime``'s default ``quickshift(kernel_size=4, max_dist=200, ratio=0.2)`` gives on
    skimage's sample photos at 224², :data:`DEFAULT_GRID`),
    and segments off are filled with ``fill`` (0, Captum's default baseline) instead of the segment's mean colour.
    Returns ``[B, 1, H, W]``."""

    def __init__(
        self,
        n_samples: int = 1000,
        kernel_width: float = 0.25,
        alpha: float = 1.0,
        segmentation: str | Tensor = "grid",
        grid: int = DEFAULT_GRID,
        fill: float = 0.0,
        output: str = "softmax",
        seed: int = 0,
        max_batch: int | None = None,  # rows per forward (None: memory budget, lit_xai.attribution.batching)
    ) -> None:
        super().__init__(n_samples, segmentation, grid, fill, output, seed, max_batch)
        if not kernel_width > 0 or not alpha >= 0:
            raise AttributionError(f"lime: kernel_width must be > 0 and alpha ≥ 0, got {kernel_width!r}, {alpha!r}")
        self.kernel_width = float(kernel_width)
        self.ridge = float(alpha)

    def coalitions(self, num_features: int, count: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        draws = torch.randint(0, 2, (count, num_features), generator=generator).float()
        draws[0] = 1.0
        return draws

    def kernel(self, coalitions: Tensor) -> Tensor:
        on = coalitions.sum(1)
        cosine = on / (coalitions.norm(dim=1) * math.sqrt(coalitions.shape[1])).clamp_min(1e-12)
        distance = 1 - cosine
        return torch.exp(-distance.square() / self.kernel_width**2).sqrt()


#: the weight of the empty and the full coalition in Captum's KernelShap (``inf_weight``)
KERNEL_SHAP_INF_WEIGHT = 1e6


@register("kernel_shap")
class KernelShap(SurrogateMethod):
    """KernelSHAP as Captum's ``KernelShap`` computes it: the full and the empty coalition first (weight 1e6), then
    coalition sizes ``k`` drawn with ``p(k) ∝ (M−1)/(k(M−k))`` and ``k`` segments chosen uniformly (weight 1), so
    the sampling carries the Shapley kernel; unregularised least squares with an intercept on the raw
    ``output="logit"`` scores. ``n_samples`` defaults to ``2·M + 2048`` (shap's ``KernelExplainer`` ``"auto"``;
    Captum's default of 25 is a smoke-test value). Returns ``[B, 1, H, W]``."""

    def __init__(
        self,
        n_samples: int | None = None,
        segmentation: str | Tensor = "grid",
        grid: int = DEFAULT_GRID,
        fill: float = 0.0,
        output: str = "logit",
        seed: int = 0,
        max_batch: int | None = None,  # rows per forward (None: memory budget, lit_xai.attribution.batching)
    ) -> None:
        super().__init__(2 if n_samples is None else n_samples, segmentation, grid, fill, output, seed, max_batch)
        self.n_samples = n_samples

    def sample_count(self, num_features: int) -> int:
        return 2 * num_features + 2048 if self.n_samples is None else self.n_samples

    def coalitions(self, num_features: int, count: int) -> Tensor:
        if num_features < 2:
            raise AttributionError("kernel_shap needs at least 2 segments")
        generator = torch.Generator().manual_seed(self.seed)
        sizes = torch.arange(1, num_features, dtype=torch.float64)
        size_probs = (num_features - 1) / (sizes * (num_features - sizes))
        draws = count - 2
        k = torch.multinomial(size_probs, max(draws, 1), replacement=True, generator=generator)[:draws] + 1
        ranks = torch.rand(draws, num_features, generator=generator).argsort(dim=1).argsort(dim=1)
        chosen = (ranks < k[:, None]).float()
        return torch.cat([torch.ones(1, num_features), torch.zeros(1, num_features), chosen])

    def kernel(self, coalitions: Tensor) -> Tensor:
        weights = torch.ones(len(coalitions), dtype=coalitions.dtype, device=coalitions.device)
        weights[:2] = KERNEL_SHAP_INF_WEIGHT
        return weights
