"""Row-wise order statistics shared by the methods that threshold scores per sample (pathway sparsity κ, DGA's
WC/EPC masks, RectGrad's percentile)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor


def kth_smallest(values: Tensor, k: int) -> Tensor:
    """Row-wise ``k``-th smallest (1-based) of ``values`` ``[B, N]``, as ``kthvalue`` but by ``topk`` on the shorter
    side (the ``N − k + 1`` largest when κ > ½): ~1.7× faster than ``kthvalue`` on CPU at ResNet-8 sizes."""
    count = values.shape[1]
    if not 1 <= k <= count:
        raise ValueError(f"k must lie in [1, {count}], got {k}")
    if k <= count - k + 1:
        return values.topk(k, dim=1, largest=False, sorted=False).values.amax(1)
    return values.topk(count - k + 1, dim=1, largest=True, sorted=False).values.amin(1)


#: Rows shorter than this go straight to one sort of the concatenation (:func:`_kth_by_sort`): too short for a
#: sample to pay.
SAMPLED_SELECTION_MIN = 1 << 12
#: With NumPy (CPU), rows shorter than this are sorted whole too: on the digits CNN (28 672 neurons per image, b64)
#: concatenating and sorting took 3.4 ms where the sampled selection took 13 ms (κ = 0.9); on ResNet-8 (294 912, b32)
#: the two were even (51 vs 48–55 ms CPU), and the sampled passes grow as N, the sort as N log N.
SAMPLED_BAND_MIN = 1 << 16
#: Sample size (at most; ``count // 64`` for shorter rows, at least 256) and bracket half-width in standard deviations
#: of the sample rank, of :func:`kth_smallest_of_parts` (measured flat within ±10% for 2048–8192 and 2–4 σ on
#: ResNet-8; 3 σ misses a row's quantile with probability 0.3%, which then costs one plain selection of that row).
SELECTION_SAMPLE = 4096
SELECTION_SPREAD = 3.0
#: CPU tensors of these dtypes run the selection steps through NumPy, zero-copy. On 1 thread (torch 2.14, NumPy 2.4)
#: NumPy's SIMD sort, comparisons into bool and ``flatnonzero`` were much faster than torch's CPU kernels: sorting a
#: [32, 4096] sample 0.3 vs 7.7 ms; a band over 32 × 294 912 float32 values (ResNet-8's scores at b32; two comparisons
#: and the positions) 15 vs 44 ms. Elsewhere (accelerators, other dtypes) the same steps run in torch.
NUMPY_DTYPES = (torch.float32, torch.float64)


def _numpy(values: Tensor) -> bool:
    return values.device.type == "cpu" and values.dtype in NUMPY_DTYPES


def _sorted_rows(values: Tensor) -> Tensor:
    """Each row of ``[B, n]`` sorted ascending (NaN last, as ``torch.sort``)."""
    if _numpy(values):
        return torch.from_numpy(np.sort(values.detach().numpy(), axis=1))
    return values.sort(1).values


def _kth_by_sort(values: Tensor, k: int) -> Tensor:
    """:func:`kth_smallest` by one sort (on CPU through NumPy), NaN included: where :func:`kth_smallest` selects the
    largest side (``k > N − k + 1``) a NaN anywhere in the row is among the values it takes the minimum of."""
    if not _numpy(values):
        return kth_smallest(values, k)
    ordered = _sorted_rows(values)
    result = ordered[:, k - 1]
    if k > values.shape[1] - k + 1:
        result = torch.where(ordered[:, -1].isnan(), ordered[:, -1], result)
    return result


def _count(flats: Sequence[Tensor], compare: Callable[..., Tensor], bound: Tensor) -> Tensor:
    """Row-wise number of values with ``compare(v, bound)`` (``torch.le`` / ``torch.lt``; NaN never counts). With
    NumPy: a bool mask in one reused buffer and ``count_nonzero``; else float sums of a float mask in one reused
    buffer — exact below 2^24 (float32) / 2^53 (float64) per row, and on CPU ~3× faster than summing a bool mask
    (``torch.sum`` of bools converts them to int64 first)."""
    size = max(f.numel() for f in flats)
    total = torch.zeros(flats[0].shape[0], dtype=torch.long, device=flats[0].device)
    if all(_numpy(f) for f in flats):
        numpy_compare = {torch.le: np.less_equal, torch.lt: np.less}[compare]
        buffer, limits = np.empty(size, dtype=bool), bound.detach().numpy()[:, None]
        for flat in flats:
            values = flat.detach().contiguous().numpy()
            mask = numpy_compare(values, limits, out=buffer[: flat.numel()].reshape(flat.shape))
            total += torch.from_numpy(np.count_nonzero(mask, axis=1))
        return total
    count_dtype = torch.float32 if sum(f.shape[1] for f in flats) < 2**24 else torch.float64
    buffer = torch.empty(size, dtype=count_dtype, device=flats[0].device)
    for flat in flats:
        total += compare(flat, bound[:, None], out=buffer[: flat.numel()].view(flat.shape)).sum(1).long()
    return total


def kth_smallest_of_parts(
    parts: Sequence[Tensor], k: int, sample: int = SELECTION_SAMPLE, spread: float = SELECTION_SPREAD, seed: int = 0
) -> Tensor:
    """Row-wise ``k``-th smallest (1-based) of the row-wise concatenation of ``parts`` (``[B, ...]`` each): exactly
    :func:`kth_smallest` of ``torch.cat([p.flatten(1) for p in parts], 1)``, without that copy and with a few
    memory passes instead of a selection over every value (Floyd & Rivest's sample-bracketed selection):

    1. ``sample`` columns drawn at random (generator seeded with ``seed``, the same columns in every row) bracket the
       ``q = k/N`` quantile between the sample values ``lo ≤ hi`` of ranks ``q·m ∓ (spread·√(m·q(1−q)) + 1)``;
    2. one pass counts the values ``≤ lo`` (``c``). Where ``k ≤ c`` the answer is ``lo`` if fewer than ``k`` values
       are ``< lo`` (a tie block, e.g. the zero scores of dead neurons), else the row missed;
    3. elsewhere the band ``lo < v < hi`` is extracted: where ``k ≤ c + |band|`` the answer is the band's
       ``(k − c)``-th smallest, else ``hi`` if at least ``k`` values are ``≤ hi``, else the row missed.

    Missed rows (a sample that missed the quantile, NaNs) fall back to :func:`kth_smallest`: the sample only decides
    the speed, never the value. Rows shorter than :data:`SAMPLED_SELECTION_MIN` (with NumPy: than
    :data:`SAMPLED_BAND_MIN`) are sorted whole instead. On CPU the steps run through NumPy (:data:`NUMPY_DTYPES`).
    """
    rows = parts[0].shape[0]
    flats = [p.detach().reshape(rows, -1) for p in parts]  # a value: no gradient flows through a threshold
    count = sum(f.shape[1] for f in flats)
    if not 1 <= k <= count:
        raise ValueError(f"k must lie in [1, {count}], got {k}")
    if count < (SAMPLED_BAND_MIN if all(_numpy(f) for f in flats) else SAMPLED_SELECTION_MIN):
        return _kth_by_sort(torch.cat(flats, 1), k)
    lo, hi = _bracket(flats, count, k, min(sample, max(256, count // 64)), spread, seed)
    # 2. the k-th value at or below lo
    at_most_lo = _count(flats, torch.le, lo)
    low = k <= at_most_lo
    result = lo.clone()
    missed = torch.zeros_like(low)
    if bool(low.any()):
        missed |= low & (_count(flats, torch.lt, lo) >= k)
    # 3. the k-th value inside the band lo < v < hi, or at hi
    if not bool(low.all()):
        band_values, band_size = _band(flats, lo, hi, ~low)
        inside = ~low & (k <= at_most_lo + band_size)
        if bool(inside.any()):
            rank = torch.where(inside, k - at_most_lo, 1)
            result = torch.where(inside, _ranked(band_values, band_size, rank), result)
        above = ~low & ~inside
        if bool(above.any()):
            result = torch.where(above, hi, result)
            missed |= above & (_count(flats, torch.le, hi) < k)
    missed_rows = missed.nonzero()[:, 0]
    if len(missed_rows):
        result[missed_rows] = kth_smallest(torch.cat([f[missed_rows] for f in flats], 1), k)
    return result


def _bracket(
    flats: Sequence[Tensor], count: int, k: int, sample: int, spread: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Step 1: per-row ``(lo, hi)`` from the sorted values of ``sample`` random columns (−inf / +inf past its ends)."""
    rows, device = flats[0].shape[0], flats[0].device
    columns = torch.randint(count, (sample,), generator=torch.Generator().manual_seed(seed)).sort().values
    columns, pieces, start = columns.to(device), [], 0
    for flat in flats:
        local = columns[(columns >= start) & (columns < start + flat.shape[1])] - start
        pieces.append(flat.index_select(1, local))
        start += flat.shape[1]
    sampled = _sorted_rows(torch.cat(pieces, 1))
    quantile = k / count
    half_width = spread * math.sqrt(sample * quantile * (1 - quantile)) + 1
    lo_rank, hi_rank = math.floor(quantile * sample - half_width), math.ceil(quantile * sample + half_width)
    lo = sampled[:, lo_rank] if lo_rank >= 0 else sampled.new_full((rows,), -math.inf)
    hi = sampled[:, hi_rank] if hi_rank < sample else sampled.new_full((rows,), math.inf)
    return lo, hi


def _band(
    flats: Sequence[Tensor], lo: Tensor, hi: Tensor, wanted: Tensor
) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    """Per part, (values ``lo < v < hi`` of the ``wanted`` rows in row-major order, their count per row), and the
    band size per row. Rows not ``wanted`` (answered already) compare against NaN, which no value passes."""
    rows = flats[0].shape[0]
    lo, hi = torch.where(wanted, lo, math.nan), torch.where(wanted, hi, math.nan)
    parts, band_size = [], torch.zeros_like(lo, dtype=torch.long)
    for flat in flats:
        flat = flat.detach().contiguous()
        if _numpy(flat):
            values = flat.numpy()
            inside = np.greater(values, lo.detach().numpy()[:, None])
            np.logical_and(inside, np.less(values, hi.detach().numpy()[:, None]), out=inside)
            index = torch.from_numpy(np.flatnonzero(inside))
        else:
            index = (torch.gt(flat, lo[:, None]) & torch.lt(flat, hi[:, None])).view(-1).nonzero()[:, 0]
        # row r's values sit at [r·n, (r+1)·n) of the row-major positions: their count by two binary searches
        ends = torch.searchsorted(index, torch.arange(1, rows + 1, device=index.device) * flat.shape[1])
        per_row = torch.diff(ends, prepend=ends.new_zeros(1))
        parts.append((flat.view(-1)[index], per_row))
        band_size += per_row
    return parts, band_size


def _ranked(band: list[tuple[Tensor, Tensor]], band_size: Tensor, rank: Tensor) -> Tensor:
    """Row-wise ``rank``-th smallest of the band values: each row padded with ``max(rank) − rank`` values −inf before
    its band (and +inf after), so that one selection at rank ``max(rank)`` serves every row (the band holds no NaN
    and no ±inf: ``lo < v < hi``)."""
    top = int(rank.max())
    lead = top - rank
    values = band[0][0]
    width = max(int((lead + band_size).max()), 1)
    padded = values.new_full((len(rank), width), math.inf)
    padded[torch.arange(width, device=padded.device)[None, :] < lead[:, None]] = -math.inf
    row_start = torch.arange(len(rank), device=padded.device) * width + lead  # next free position of each row
    for values, per_row in band:
        first = per_row.cumsum(0) - per_row  # where each row's run starts in this part's row-major list
        shift = (row_start - first).repeat_interleave(per_row, output_size=len(values))
        padded.view(-1)[torch.arange(len(values), device=padded.device) + shift] = values
        row_start = row_start + per_row
    return _sorted_rows(padded)[:, top - 1] if _numpy(padded) else kth_smallest(padded, top)
