"""Robustness of a method to small input perturbations: Max-/Avg-Sensitivity (Yeh et al. 2019) and the Local
Lipschitz estimate (Alvarez-Melis & Jaakkola 2018).

The method is re-run on ``num_samples`` perturbed copies ``x + δ_n`` of every image and its maps are compared with
the given map ``a`` (entries of the map as given, flattened):

- :class:`MaxSensitivity`: ``max_n ‖a(x + δ_n) − a(x)‖₂ / ‖a(x)‖₂`` with δ ~ U[−r, r] per feature (Yeh et al. 2019
  Eq. 3 estimated by Monte Carlo, divided by ‖a‖ as Quantus 0.6 does); lower is better;
- :class:`AvgSensitivity`: the mean over n instead of the max (Yeh et al. Eq. 4); lower is better;
- :class:`LocalLipschitzEstimate`: ``max_n ‖a(x + δ_n) − a(x)‖₂ / (‖δ_n‖₂ + 1e-10)`` with δ ~ N(μ, σ²) per feature
  (Alvarez-Melis & Jaakkola 2018 Eq. 5, sampled as Quantus 0.6); lower is better.

Perturbations: row (n, b) draws from a CPU generator seeded with image b's seed (``seed``, its content;
:mod:`lit_xai.attribution.noise`) + n, so an image's δ_n do not depend on the batch, the chunking, the device or the
DDP rank, and the global generator is untouched. The method runs on chunks of ``max_batch`` perturbed images (rows
``n · B + b`` in order, so a chunk may span samples; ``None``: the methods' memory-budget rule,
:func:`lit_xai.attribution.batching.rows_per_chunk`, as every metric that evaluates many rows): the cost is
``num_samples`` method calls per image, and the scores do not depend on the chunking.

The perturbed maps must be finite (the metric contract): a non-finite map makes its row's ``‖a(x + δ) − a(x)‖``
non-finite (NaN or inf propagate through ``|·|``, the max-normalisation and the difference), so the full check runs
only on chunks with a non-finite norm, where it raises exactly when a map is non-finite.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.attribution.noise import sample_seeds
from lit_xai.metrics.base import Explainer, check_finite
from lit_xai.metrics.image_scores import ImageScoreMean, prepared_maps

#: the denominator guard of Quantus 0.6 ``similarity_func.lipschitz_constant``
LIPSCHITZ_EPS = 1e-10
NOISES = ("uniform", "gaussian")
REDUCTIONS = ("max", "mean")


def row_noise(inputs: Tensor, seeds: list[int], rows: Tensor, kind: str, low: float, high: float) -> Tensor:
    """The perturbations ``[N, C, H, W]`` of rows ``n · B + b``: U[low, high) or N(low, high²) (mean, std) per
    feature, drawn from a generator seeded with image b's seed (:func:`sample_seeds`) + n."""
    batch = inputs.shape[0]
    row_list = rows.tolist()
    draws = torch.empty(len(row_list), *inputs.shape[1:], dtype=inputs.dtype)
    generator = torch.Generator()  # one generator re-seeded per row: the same draws without a generator per row
    # in place on each row's view (torch.rand/randn's draws, without their per-call argument parsing and out= select)
    for out, row in zip(draws.view(len(row_list), -1).unbind(0), row_list):
        generator.manual_seed((seeds[row % batch] + row // batch) % 2**64)
        if kind == "uniform":
            out.uniform_(generator=generator)
        else:
            out.normal_(generator=generator)
    # scaled once for all rows (the same element-wise products and sums as per row)
    scale, shift = (high - low, low) if kind == "uniform" else (high, low)
    return draws.mul_(scale).add_(shift).to(inputs.device)


class InputPerturbationRobustness(ImageScoreMean):
    """The shared loop: the method re-run on seeded perturbed inputs, per-sample ratios reduced per image."""

    requires = frozenset({"method"})
    higher_is_better = False
    stream: str = ""

    def __init__(self, num_samples: int, noise: str, low: float, high: float, reduction: str, absolute: bool,
                 normalise: bool, seed: int, max_batch: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_samples < 1 or noise not in NOISES or reduction not in REDUCTIONS:
            raise ValueError(f"num_samples={num_samples}, noise={noise!r}, reduction={reduction!r}: expected ≥ 1, "
                             f"one of {NOISES} and one of {REDUCTIONS}")
        self.num_samples, self.noise, self.low, self.high = num_samples, noise, low, high
        self.reduction, self.absolute, self.normalise = reduction, absolute, normalise
        self.seed, self.max_batch = seed, check_max_batch(max_batch)

    def perturbations(self, inputs: Tensor, rows: Tensor | None = None, seeds: list[int] | None = None) -> Tensor:
        """δ of the rows ``n · B + b`` (default: all ``num_samples · B``), ``[N, C, H, W]``; ``seeds``: the images'
        :func:`sample_seeds` when already computed."""
        rows = torch.arange(self.num_samples * inputs.shape[0], device=inputs.device) if rows is None else rows
        seeds = sample_seeds(inputs, self.seed, self.stream) if seeds is None else seeds
        return row_noise(inputs, seeds, rows, self.noise, self.low, self.high)

    def ratio(self, change: Tensor, reference_norm: Tensor, delta: Tensor) -> Tensor:
        """The per-sample quantity ``[N]`` from ``‖a(x + δ) − a(x)‖₂`` ``[N]``, ``‖a(x)‖₂`` ``[N]`` and the
        flattened perturbations ``[N, F]``."""
        raise NotImplementedError

    def _image_scores(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                      method: Explainer | None) -> Tensor:
        assert method is not None
        batch = inputs.shape[0]
        reference = prepared_maps(maps, self.absolute, self.normalise).flatten(1)
        reference_norm = reference.norm(dim=1)
        total = self.num_samples * batch
        ratios = torch.empty(total, device=inputs.device)
        seeds = sample_seeds(inputs, self.seed, self.stream)
        for begin, stop in row_chunks(total, rows_per_chunk(model, inputs, self.max_batch)):
            rows = torch.arange(begin, stop, device=inputs.device)
            image = rows % batch
            delta = self.perturbations(inputs, rows, seeds)
            with torch.enable_grad():
                new_maps = method(model, inputs.index_select(0, image) + delta, target.index_select(0, image))
            if new_maps.shape[1:] != maps.shape[1:]:
                raise ValueError(f"the method's maps on perturbed inputs have shape {tuple(new_maps.shape[1:])}, "
                                 f"the given maps {tuple(maps.shape[1:])}")
            perturbed = prepared_maps(new_maps.detach(), self.absolute, self.normalise).flatten(1)
            change = (perturbed - reference.index_select(0, image)).norm(dim=1)
            if not bool(torch.isfinite(change).all()):  # a non-finite map gives a non-finite change (module doc)
                check_finite(new_maps, method)
            ratios[begin:stop] = self.ratio(change, reference_norm.index_select(0, image), delta.flatten(1))
        per_sample = ratios.view(self.num_samples, batch)
        return per_sample.amax(0) if self.reduction == "max" else per_sample.mean(0)


class Sensitivity(InputPerturbationRobustness):
    """``‖a(x + δ) − a(x)‖₂ / ‖a(x)‖₂`` reduced over δ by max (:class:`MaxSensitivity`) or mean
    (:class:`AvgSensitivity`). An all-zero map divides by 0 (inf or NaN), as in Quantus."""

    def ratio(self, change: Tensor, reference_norm: Tensor, delta: Tensor) -> Tensor:
        return change / reference_norm


class MaxSensitivity(Sensitivity):
    """Max-Sensitivity (Yeh et al. 2019 Eq. 3), Quantus 0.6's estimator; see the module docstring.

    Args:
        num_samples: perturbations per image, 200 (Quantus default ``nr_samples``).
        radius: δ ~ U[−radius, radius] per feature, 0.2 (Quantus default ``lower_bound``; Yeh's r).
        absolute, normalise: applied to every map first, both ``False`` (Quantus defaults).
        seed: base seed of δ (ours; Quantus draws from NumPy's global generator).
        max_batch: perturbed images per method call (rows of several samples n may share a call); ``None``
            (default): the methods' memory-budget rule (docs/performance.md "Chunk size"), as every metric that
            evaluates many rows (issue 18; Quantus: the batch, one call per sample). The scores do not depend on it.
    """

    stream = "max_sensitivity"

    def __init__(self, num_samples: int = 200, radius: float = 0.2, absolute: bool = False, normalise: bool = False,
                 seed: int = 0, max_batch: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_samples, "uniform", -radius, radius, "max", absolute, normalise, seed, max_batch,
                         **kwargs)


class AvgSensitivity(Sensitivity):
    """Avg-Sensitivity (Yeh et al. 2019 Eq. 4), Quantus 0.6's estimator; arguments as :class:`MaxSensitivity`."""

    stream = "avg_sensitivity"

    def __init__(self, num_samples: int = 200, radius: float = 0.2, absolute: bool = False, normalise: bool = False,
                 seed: int = 0, max_batch: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_samples, "uniform", -radius, radius, "mean", absolute, normalise, seed, max_batch,
                         **kwargs)


class LocalLipschitzEstimate(InputPerturbationRobustness):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018 Eq. 5), Quantus 0.6's sampled estimator.

    Args:
        num_samples: perturbations per image, 200 (Quantus default ``nr_samples``).
        perturb_mean, perturb_std: δ ~ N(mean, std²) per feature, 0.0 and 0.1 (Quantus defaults).
        absolute: ``|a|`` first, ``False`` (Quantus default).
        normalise: divide every map by its image's max |a|, ``True`` (Quantus default; Quantus divides by the max
            over the whole batch, ours per image: equal on one-image batches).
        seed, max_batch: as :class:`MaxSensitivity`.
    """

    stream = "local_lipschitz"

    def __init__(self, num_samples: int = 200, perturb_mean: float = 0.0, perturb_std: float = 0.1,
                 absolute: bool = False, normalise: bool = True, seed: int = 0, max_batch: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(num_samples, "gaussian", perturb_mean, perturb_std, "max", absolute, normalise, seed,
                         max_batch, **kwargs)

    def ratio(self, change: Tensor, reference_norm: Tensor, delta: Tensor) -> Tensor:
        return change / (delta.norm(dim=1) + LIPSCHITZ_EPS)
