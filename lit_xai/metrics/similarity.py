"""Batched map similarities of the randomisation sanity check: Spearman rank correlation and SSIM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: SSIM data-range conventions besides a fixed number: ``"pair"`` = max − min over both maps of a pair (Quantus 0.6
#: ``similarity_func.ssim``)
SSIM_DATA_RANGES = ("pair",)


def average_ranks(values: Tensor) -> Tensor:
    """Ranks along the last dim (0-based, float64), ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    order, ranks = _sorted_average_ranks(values)
    return torch.empty_like(ranks).scatter_(-1, order, ranks)


def _sorted_average_ranks(values: Tensor) -> tuple[Tensor, Tensor]:
    """``(order, ranks)``: the sorting permutation and the average rank (float64) at each *sorted* position.

    One sort; without ties the ranks are the positions. Only the rows with ties get the tie-group scan (a few rows
    of a batch of maps, e.g. a map's exact zeros): a tie group spans sorted positions ``[first, last]`` and every
    member gets ``(first + last) / 2``, ``first`` a running maximum of group starts, ``last`` a reversed running
    minimum of group ends. The order within a tie group does not matter, so the sort need not be stable.
    """
    order = _argsort(values)
    ordered = values.gather(-1, order)
    n, rows = values.shape[-1], ordered[..., 0].numel()
    boundary = (ordered[..., 1:] != ordered[..., :-1]).reshape(rows, n - 1)  # a new tie group starts at i + 1
    positions = torch.arange(n, device=values.device, dtype=torch.float64)
    tied = ~boundary.all(-1)
    if not bool(tied.any()):  # continuous maps: no scan at all
        return order, positions.expand_as(ordered)
    ranks = positions.repeat(rows, 1)
    ranks[tied] = _tie_group_ranks(boundary[tied], n)
    return order, ranks.reshape(ordered.shape)


def _tie_group_ranks(boundary: Tensor, n: int) -> Tensor:
    """Average ranks (float64) at the sorted positions of rows ``[R, n]`` from their tie-group boundaries."""
    position = torch.arange(n, device=boundary.device).expand(boundary.shape[0], n)
    edge = boundary.new_ones(boundary.shape[0], 1)
    starts, ends = torch.cat([edge, boundary], -1), torch.cat([boundary, edge], -1)
    first = torch.where(starts, position, 0).cummax(-1).values
    last = torch.where(ends, position, n - 1).flip(-1).cummin(-1).values.flip(-1)
    return (first + last).to(torch.float64) / 2


def _argsort(values: Tensor) -> Tensor:
    """``values.argsort(-1)``; on the CPU through NumPy, whose vectorised quicksort is ~4× faster than ``torch.sort``
    there (2 × 50176 floats, 1 thread: 3 vs 12 ms)."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.argsort(values.detach().contiguous().numpy(), axis=-1))
    return values.argsort(dim=-1)


def centred_unit(rows: Tensor, eps: float = 1e-12) -> Tensor:
    """Each row ``[B, N]`` minus its mean, divided by its norm (float64); a constant row becomes 0.

    The Pearson correlation of two rows is the dot product of their centred unit rows, so a reference row can be
    prepared once and compared with many (the randomisation cascade compares one original map with every step).
    """
    centred = rows.double() - rows.double().mean(-1, keepdim=True)
    norm = centred.norm(dim=-1, keepdim=True)
    return torch.where(norm > eps, centred / norm.clamp_min(eps), torch.zeros_like(centred))


def spearman_reference(rows: Tensor) -> Tensor:
    """The centred unit average ranks of ``[B, N]`` rows: prepare once, compare with :func:`spearman_against`."""
    return centred_unit(average_ranks(rows))


def spearman_against(reference: Tensor, rows: Tensor, eps: float = 1e-12) -> Tensor:
    """Spearman correlation of ``rows`` with rows prepared by :func:`spearman_reference` (float32).

    The reference rows are centred, so ``ρ = ⟨reference, r⟩ / ‖r − r̄‖`` for the ranks ``r`` of ``rows``; both terms are
    taken in sorted order (the reference gathered by the sorting permutation), so the ranks are never scattered back.
    A constant row (‖r − r̄‖ = 0) scores 0, as with :func:`centred_unit`.
    """
    order, ranks = _sorted_average_ranks(rows)
    dot = (reference.gather(-1, order) * ranks).sum(-1)
    norm = (ranks - ranks.mean(-1, keepdim=True)).norm(dim=-1)
    return torch.where(norm > eps, dot / norm.clamp_min(eps), torch.zeros_like(dot)).float()


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of matching rows ``[B, N]`` (average ranks for ties; 0 where a row is constant,
    where ``scipy.stats.spearmanr`` gives NaN)."""
    return spearman_against(spearman_reference(a), b)


def check_data_range(data_range: float | str) -> float | str:
    """``data_range`` if it is a positive number or one of :data:`SSIM_DATA_RANGES`, else a ``ValueError``."""
    number = isinstance(data_range, int | float) and not isinstance(data_range, bool)
    if not ((number and data_range > 0) or data_range in SSIM_DATA_RANGES):
        raise ValueError(f"SSIM data_range must be a positive number or one of {SSIM_DATA_RANGES}, got {data_range!r}")
    return data_range


@dataclass
class SSIMReference:
    """One side of many SSIM comparisons, pooled once: the map (float64), its local means, their squares and the
    local sample variances."""

    maps: Tensor
    mean: Tensor
    mean_square: Tensor  # μ_a²
    variance: Tensor  # σ_a² with the sample correction n / (n − 1)
    window: tuple[int, int]


def _box(t: Tensor, window: tuple[int, int]) -> Tensor:
    """Uniform ``window`` mean over every position where it fits (``avg_pool2d(t, window, stride=1)``), separably:
    ``w − 1`` shifted-slice additions along the rows, then ``h − 1`` along the columns (on CPU in float64 about half
    the time of ``avg_pool2d``'s ``h·w`` reads per output; equal to rounding: ``tests/test_metrics_randomisation.py``).
    """
    h, w = window
    width, height = t.shape[-1] - w + 1, t.shape[-2] - h + 1
    rows = t[..., :width].clone()
    for shift in range(1, w):
        rows += t[..., shift:shift + width]
    total = rows[..., :height, :].clone()
    for shift in range(1, h):
        total += rows[..., shift:shift + height, :]
    return total / (h * w)


def ssim_reference(a: Tensor, window: int = 5) -> SSIMReference:
    """Prepare ``[B, C, H, W]`` maps for :func:`ssim_against`; maps of one row (``H = 1``) are 1-D signals."""
    kernel = (1 if a.shape[-2] == 1 else window, window)
    if a.dim() != 4 or a.shape[-2] < kernel[0] or a.shape[-1] < window:
        raise ValueError(f"SSIM window {window} needs [B, C, H, W] maps at least that large, got {tuple(a.shape)}")
    a = a.double()
    mean, n = _box(a, kernel), kernel[0] * kernel[1]
    mean_square = mean.square()
    return SSIMReference(a, mean, mean_square, (_box(a * a, kernel) - mean_square).mul_(n / (n - 1)), kernel)


def ssim_against(
    reference: SSIMReference, b: Tensor, data_range: float | str = 2.0, k1: float = 0.01, k2: float = 0.03
) -> Tensor:
    """Mean SSIM of each map of ``b`` with the matching reference map (float32; see :func:`ssim`)."""
    a, b = reference.maps, b.double()
    if b.shape != a.shape:
        raise ValueError(f"SSIM needs maps of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if check_data_range(data_range) == "pair":
        both = torch.cat([a.flatten(1), b.flatten(1)], 1)
        value_range = (both.amax(1) - both.amin(1)).view(-1, 1, 1, 1)
    else:
        value_range = torch.tensor(float(data_range), dtype=torch.float64, device=a.device)
    n = reference.window[0] * reference.window[1]
    mu_b, square_b, product = _box(torch.cat([b, b * b, a * b], 1), reference.window).chunk(3, 1)
    mu_a, correction = reference.mean, n / (n - 1)
    mu_ab = mu_a * mu_b
    c1, c2 = (k1 * value_range) ** 2, (k2 * value_range) ** 2
    # (2 μ_a μ_b + c1)(2 σ_ab + c2) / ((μ_a² + μ_b² + c1)(σ_a² + σ_b² + c2)), σ with the sample correction
    numerator = (2 * mu_ab + c1).mul_((product - mu_ab).mul_(2 * correction).add_(c2))
    mu_b_square = mu_b.square()
    denominator = (reference.mean_square + mu_b_square + c1).mul_(
        (square_b - mu_b_square).mul_(correction).add_(reference.variance).add_(c2))
    index = torch.where(denominator > 0, numerator / denominator.where(denominator > 0, 1.0), 1.0)
    return index.flatten(1).mean(1).float()


def ssim(a: Tensor, b: Tensor, window: int = 5, data_range: float | str = 2.0) -> Tensor:
    """Mean SSIM (Wang et al. 2004) per pair of ``[B, C, H, W]`` maps, uniform ``window×window`` filter.

    Same definition as ``skimage.metrics.structural_similarity(win_size=window, data_range=data_range)``: sample
    covariances, the mean over the positions where the window fits entirely (and over channels, as skimage's
    ``channel_axis``). Maps of one row (``H = 1``) are 1-D signals with a ``window``-long filter (skimage on 1-D
    arrays). ``data_range`` is a number, or ``"pair"``: max − min over both maps of each pair, Quantus 0.6's
    ``similarity_func.ssim`` convention (two equal constant maps, range 0, score 1).
    """
    return ssim_against(ssim_reference(a, window), b, data_range)


#: the floor of :func:`normalize_max_abs`'s divisor: a zero map stays zero
MAX_ABS_EPS = 1e-12


def normalize_max_abs(maps: Tensor, eps: float = MAX_ABS_EPS, scale: Tensor | None = None) -> Tensor:
    """Divide each map by its maximum absolute value (range [−1, 1]); a zero map stays zero. ``scale``: those maxima
    ``[B]`` where the caller has them already."""
    scale = maps.flatten(1).abs().amax(1) if scale is None else scale
    return maps / scale.clamp_min(eps).view(-1, *([1] * (maps.dim() - 1)))
