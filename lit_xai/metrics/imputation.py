"""A direct solve of ROAD's linear imputation system on the CPU: one banded Cholesky for the whole batch.

ROAD's noisy linear imputation (Rong et al. 2022; :func:`lit_xai.metrics.faithfulness.linear_imputation`) sets every
removed pixel to the stencil-weighted mean of its 8 in-image neighbours, ``(D − W) v = W_known x``. Written over
the *whole* grid, with every known pixel an identity row ``v = x`` (its couplings moved to the right-hand side), the
matrix stays symmetric positive definite and, in row-major pixel order, is banded: a pixel couples only with pixels
at most ``W + 1`` positions away. The images of a batch, one after another, keep that band (images never couple),
so the batch is one banded system, solved exactly by LAPACK's banded Cholesky (``scipy.linalg.solveh_banded``,
``pbsv``) with the channels as right-hand sides: ``N·H·W·(W + 1)²`` flops, no iterations. Conjugate gradients cost
``N·H·W`` per iteration over ``O(H + W)`` iterations, so the band wins on small images and loses on large ones
(shared CPU, 1 thread: 0.18× CG's time and 0.34× SciPy's per-system ``spsolve`` on ROAD's 320 systems of a batch of
32 digits at 32², ``benchmarks/bench_metric_families.py``; once, 1.6× CG's time at 224² with 2 images half removed;
interpolated, the crossover is near 150 px). The band is taken over the shorter side.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor

#: ``auto`` picks the banded solve on the CPU up to this shorter image side (below the interpolated crossover, ~150 px)
BANDED_MAX_SIDE = 128


def banded_imputation(images: Tensor, removed: Tensor, stencil: tuple[tuple[float, ...], ...]) -> Tensor:
    """``images`` ``[N, C, H, W]`` with the ``removed`` pixels (``[N, 1, H, W]`` bool) replaced by the exact
    solution of the imputation system of the 3×3 ``stencil`` (zero centre), in float64 on the CPU, returned in the
    images' dtype and device. An image with every pixel removed has no known value: its pixels become 0 (the
    conjugate-gradient solve's answer for a zero right-hand side)."""
    if images.dim() != 4 or removed.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"images [N, C, H, W] and removed [N, 1, H, W] expected, got {tuple(images.shape)} and "
                         f"{tuple(removed.shape)}")
    transpose = images.shape[-1] > images.shape[-2]  # the band is the row length + 1: rows along the shorter side
    x = images.detach().to("cpu", torch.float64)
    unknown = removed.detach().to("cpu", torch.bool)
    kernel = torch.tensor(stencil, dtype=torch.float64)
    if transpose:
        x, unknown, kernel = x.transpose(-1, -2), unknown.transpose(-1, -2), kernel.T
    n, c, h, w = x.shape
    solvable = unknown & ~unknown.flatten(1).all(1).view(-1, 1, 1, 1)  # all removed: identity rows, rhs 0 → 0
    known = torch.where(unknown, 0.0, x)
    weights = kernel.view(1, 1, 3, 3)
    inflow = F.conv2d(known.reshape(n * c, 1, h, w), weights, padding=1).view(n, c, h, w)
    rhs = torch.where(solvable, inflow, known)
    degree = F.conv2d(torch.ones(1, 1, h, w, dtype=torch.float64), weights, padding=1)[0, 0]
    # lower form: band[d, j] = A[j + d, j]; NumPy's zeros come from calloc (pages zeroed as LAPACK touches them),
    # 0.72× the solve's time of torch.zeros' explicit fill on ROAD's systems at 32²
    band = torch.from_numpy(np.zeros((w + 2, n * h * w)))
    band[0] = torch.where(solvable[:, 0], degree, 1.0).reshape(-1)
    free = solvable[:, 0]
    for di, dj in ((0, 1), (1, -1), (1, 0), (1, 1)):  # the lower half of the stencil: offset d = di·w + dj > 0
        rows, cols = slice(0, h - di), slice(max(0, -dj), w - max(0, dj))
        both = torch.zeros_like(free)
        both[:, rows, cols] = free[:, rows, cols] & free[:, di:h, max(0, dj):w + min(0, dj)]
        band[di * w + dj] = (both.to(torch.float64) * -kernel[di + 1, dj + 1]).reshape(-1)
    solution = scipy.linalg.solveh_banded(band.numpy(), rhs.permute(0, 2, 3, 1).reshape(n * h * w, c).numpy(),
                                          lower=True, check_finite=False)
    filled = torch.from_numpy(solution).view(n, h, w, c).permute(0, 3, 1, 2)
    filled = torch.where(unknown, filled, x)
    if transpose:
        filled = filled.transpose(-1, -2)
    return filled.to(images.device, images.dtype)
