"""Sensitivity-N (Ancona et al. 2018).

For each set size n of a log-spaced schedule, ``num_masks`` random sets of n cells are drawn once per evaluation
(seeded, shared by all images). For every image and set S: the attribution summed over S, ``Σ_{i∈S} R_i``, and the
output drop ``f_t(x) − f_t(x_{S←baseline})``. Sensitivity-n is their Pearson correlation over the sets, per image,
averaged over images; the curve is over n, the score its mean over the schedule (higher is better).

Defaults and their sources: set sizes ``logspace(0, 4.5, 45)`` truncated to integers and made unique, as the
InputIBA code's ``np.logspace(0, log_n_max, 45, dtype=int)`` (42 sizes at 224²); on other image sizes the same
curve is scaled to the same fraction of the cells, ``10^4.5 / 224²`` (``n_rounding="round"`` rounds instead);
200 sets per n (dissertation §4.4.1: "We randomly sample 200 index sets for each n"; the InputIBA code's default is
100); fill ``zero`` (the InputIBA code's ``input * (1 − mask)`` on normalised inputs); the target logit.

A cell is a pixel (``patch_size=1``) or a ``patch_size × patch_size`` square of a grid (seed 004: 14×14 patches).
Maps are reduced over channels (``sum``: the attribution of a pixel is the sum over its channels) and upsampled if
needed. The (sets × images) perturbed inputs are evaluated ``max_batch`` per forward (``None``: the methods'
memory-budget rule, :func:`lit_xai.attribution.batching.rows_per_chunk`); the result does not depend on the chunking.

Quantus 0.6's ``SensitivityN`` is a different protocol (features removed cumulatively in attribution order, the
attribution of the last step only, correlation across the images of a batch); no argument here reproduces it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.metrics.base import pixel_scores
from lit_xai.metrics.baselines import Fill, baseline_images, check_fill
from lit_xai.metrics.image_scores import PerImageMetric
from lit_xai.metrics.outputs import check_output, target_output

#: InputIBA's largest set, 10^4.5 cells, as a fraction of its 224² images
INPUTIBA_MAX_FRACTION = 10**4.5 / 224**2
N_ROUNDINGS = ("truncate", "round")


def log_schedule(num_cells: int, num_n: int, max_fraction: float, rounding: str = "truncate") -> Tensor:
    """Distinct set sizes ``logspace(0, log10(max_fraction · cells), num_n)`` made integers by ``rounding``
    (``truncate``: the InputIBA code's ``dtype=int``; ``round``), each in [1, cells − 1]."""
    if rounding not in N_ROUNDINGS:
        raise ValueError(f"unknown n_rounding {rounding!r}; expected one of {N_ROUNDINGS}")
    top = max(1.0, max_fraction * num_cells)
    values = torch.logspace(0, math.log10(top), num_n, dtype=torch.float64)
    values = values.floor() if rounding == "truncate" else values.round()
    return values.long().clamp(1, max(1, num_cells - 1)).unique()


def random_sets(num_cells: int, sizes: Tensor, num_masks: int, seed: int) -> Tensor:
    """Boolean ``[K, M, cells]``: for each size n_k, ``M`` uniformly random sets of exactly n_k cells (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    sets = torch.empty(sizes.numel(), num_masks, num_cells, dtype=torch.bool)
    for k, size in enumerate(sizes.tolist()):  # one size at a time bounds the float keys to [M, cells]
        keys = torch.rand(num_masks, num_cells, generator=generator)
        sets[k] = keys <= keys.kthvalue(size, dim=1, keepdim=True).values
    return sets


def pearson(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Pearson correlation along the last dim; 0 where either side is constant."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denominator = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    return torch.where(denominator > eps, (a * b).sum(-1) / denominator.clamp_min(eps), torch.zeros_like(denominator))


class SensitivityN(PerImageMetric):
    """Sensitivity-N: Pearson(Σ attribution in S, target drop when S is removed) per n.

    Args:
        n_values: explicit set sizes (cells); default: ``num_n`` log-spaced sizes up to ``max_fraction`` of the cells.
        num_n, max_fraction, n_rounding: the log-spaced schedule (InputIBA: 45 sizes up to 10^4.5 at 224²,
            truncated) and how its sizes become integers (``truncate`` or ``round``).
        num_masks: random sets per n, shared by all images (dissertation §4.4.1: 200).
        patch_size: cell side in pixels (1: pixel sets; e.g. 14: the patch-mask variant).
        baseline: the fill of removed cells (:mod:`lit_xai.metrics.baselines`): ``zero`` (dataset mean of
            normalised inputs), ``black`` (needs ``data_mean``/``data_std``), ``image_mean``, ``image_min``, ``blur``
            or a number.
        output: ``logit`` (target logit drop, Ancona), ``probability`` (softmax), ``sigmoid`` (a multi-label
            output) or ``identity`` (a regression or expected region score, seed 002 Fig. 3b; the CheXplain-IBA code
            records the regression output as is), :mod:`lit_xai.metrics.outputs`.
        channel_reduction: reduction of the maps over channels before summing inside a set.
        seed: seed of the random sets.
        max_batch: perturbed images per forward pass; ``None`` (default): the methods' memory-budget rule
            (docs/performance.md "Chunk size"). The result does not depend on it.
    """

    higher_is_better = True
    curve_label = "n (cells removed)"

    def __init__(
        self,
        n_values: list[int] | None = None,
        num_n: int = 45,  # InputIBA code: logspace(0, 4.5, 45)
        max_fraction: float = INPUTIBA_MAX_FRACTION,  # InputIBA code: 10^4.5 cells at 224²
        num_masks: int = 200,  # dissertation §4.4.1: "200 index sets for each n"
        patch_size: int = 1,
        baseline: Fill = "zero",  # InputIBA code: input * (1 − mask) on normalised inputs
        output: str = "logit",  # Ancona et al.: the target output before the softmax
        channel_reduction: str = "sum",
        seed: int = 0,
        max_batch: int | None = None,  # None: lit_xai.attribution.batching's memory budget
        blur_kernel_size: int = 29,
        blur_sigma: float = 15.0,
        n_rounding: str = "truncate",  # InputIBA code: np.logspace(..., dtype=int)
        data_mean: list[float] | None = None,
        data_std: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_fill(baseline, data_mean, data_std)
        if n_rounding not in N_ROUNDINGS:
            raise ValueError(f"unknown n_rounding {n_rounding!r}; expected one of {N_ROUNDINGS}")
        check_output(output)
        if num_masks < 2 or patch_size < 1:
            raise ValueError(f"need num_masks ≥ 2 and patch_size ≥ 1; got {num_masks}, {patch_size}")
        self.n_values, self.num_n, self.max_fraction = n_values, num_n, max_fraction
        self.num_masks, self.patch_size, self.baseline, self.output = num_masks, patch_size, baseline, output
        self.channel_reduction, self.seed, self.max_batch = channel_reduction, seed, check_max_batch(max_batch)
        self.blur_kernel_size, self.blur_sigma, self.n_rounding = blur_kernel_size, blur_sigma, n_rounding
        self.data_mean = None if data_mean is None else tuple(float(m) for m in data_mean)
        self.data_std = None if data_std is None else tuple(float(v) for v in data_std)
        self._image_size: tuple[int, int] | None = None
        self._sizes: Tensor | None = None
        self._sets: Tensor | None = None
        self.add_state("correlation_sum", torch.zeros(0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def _grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return math.ceil(image_size[0] / self.patch_size), math.ceil(image_size[1] / self.patch_size)

    def set_data_normalisation(self, mean: list[float] | None, std: list[float] | None) -> None:
        if self.data_mean is None and mean is not None and std is not None:
            check_fill(self.baseline, mean, std)
            self.data_mean, self.data_std = tuple(float(m) for m in mean), tuple(float(v) for v in std)

    def prepare(self, model: nn.Module, image_size: tuple[int, ...]) -> None:
        """Draw the random sets for ``image_size`` (``(H, W)`` or ``(C, H, W)``; once per evaluation) and allocate
        the curve state."""
        self._draw_sets(image_size)
        assert self._sizes is not None
        if self.correlation_sum.numel() != self._sizes.numel():
            self.correlation_sum = torch.zeros(self._sizes.numel(), device=self.count.device)

    def _draw_sets(self, image_size: tuple[int, ...]) -> None:
        """The set sizes and the random sets for ``image_size`` (drawn again only when the size changes)."""
        image_size = (int(image_size[-2]), int(image_size[-1]))
        if self._image_size != image_size:
            grid = self._grid(image_size)
            cells = grid[0] * grid[1]
            if self.n_values is not None:
                sizes = torch.tensor(sorted(set(self.n_values)))
                if sizes.min() < 1 or sizes.max() >= cells:
                    raise ValueError(f"n_values must lie in [1, {cells - 1}] for a {grid[0]}×{grid[1]} cell grid")
            else:
                sizes = log_schedule(cells, self.num_n, self.max_fraction, self.n_rounding)
            self._sizes = sizes
            self._sets = random_sets(cells, sizes, self.num_masks, self.seed).to(self.count.device)
            self._image_size = image_size

    def _cells_to_pixels(self, cell_masks: Tensor) -> Tensor:
        """``[N, cells]`` boolean → ``[N, 1, H, W]`` pixel masks."""
        assert self._image_size is not None
        height, width = self._image_size
        grid_h, grid_w = self._grid(self._image_size)
        masks = cell_masks.view(-1, 1, grid_h, grid_w)
        if self.patch_size > 1:
            masks = masks.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)
        return masks[..., :height, :width]

    def _cell_scores(self, maps: Tensor) -> Tensor:
        """Attribution summed per cell ``[B, cells]``."""
        assert self._image_size is not None
        height, width = self._image_size
        scores = pixel_scores(maps, self._image_size, self.channel_reduction).view(-1, 1, height, width)
        if self.patch_size > 1:
            grid_h, grid_w = self._grid(self._image_size)
            padded = F.pad(scores, (0, grid_w * self.patch_size - width, 0, grid_h * self.patch_size - height))
            scores = F.avg_pool2d(padded, self.patch_size, divisor_override=1)
        return scores.flatten(1)

    def _target_output(self, logits: Tensor, target: Tensor) -> Tensor:
        return target_output(logits, target, self.output)

    def correlations(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor) -> Tensor:
        """Sensitivity-n of every image at every set size ``[B, K]``: Pearson over the sets (Ancona et al. §4)."""
        self._draw_sets(tuple(inputs.shape[-2:]))
        assert self._sets is not None and self._sizes is not None
        sets = self._sets.to(inputs.device)
        num_sizes, num_masks, _ = sets.shape
        batch = inputs.shape[0]
        cell_scores = self._cell_scores(maps)  # one set size at a time: a [M, cells] float copy, not [K, M, cells]
        attribution_sums = torch.stack([cell_scores @ sets[k].T.to(cell_scores.dtype) for k in range(num_sizes)], 1)
        base = baseline_images(inputs, self.baseline, self.blur_kernel_size, self.blur_sigma,
                               data_mean=self.data_mean, data_std=self.data_std)
        clean = self._target_output(model(inputs), target)
        flat_sets = sets.view(num_sizes * num_masks, -1)
        total = num_sizes * num_masks * batch
        perturbed = torch.empty(total, device=inputs.device)
        for begin, stop in row_chunks(total, rows_per_chunk(model, inputs, self.max_batch)):
            pair = torch.arange(begin, stop, device=inputs.device)
            set_index, image = pair // batch, pair % batch
            removed = self._cells_to_pixels(flat_sets[set_index])
            logits = model(torch.where(removed, base[image], inputs[image]))
            perturbed[pair] = self._target_output(logits, target[image])
        drops = clean[:, None, None] - perturbed.view(num_sizes, num_masks, batch).permute(2, 0, 1)
        return pearson(attribution_sums, drops)

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        correlations = self.correlations(model, inputs, target, maps)
        return {"score": correlations.mean(1), "curve/correlation": correlations}

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        self.prepare(model, tuple(inputs.shape[-2:]))
        correlations = self.correlations(model, inputs, target, maps)
        self.correlation_sum += correlations.sum(0)
        self.count += inputs.shape[0]
        self.last_image_scores = correlations.mean(1)  # this update's (not a state), as ImageScoreMean

    def curve_axis(self) -> Tensor:
        if self._sizes is None:
            raise ValueError("SensitivityN has seen no images yet")
        return self._sizes.float()

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError("SensitivityN.compute() called before any image was evaluated")
        curve = self.correlation_sum / self.count
        return {"score": curve.mean(), "curve/correlation": curve, "count": self.count}
