"""Batched map similarities of the randomisation sanity check: Spearman rank correlation and SSIM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def average_ranks(values: Tensor) -> Tensor:
    """Ranks along the last dim (0-based), ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    ordered = values.sort(dim=-1).values.contiguous()
    below = torch.searchsorted(ordered, values.contiguous(), right=False)
    up_to = torch.searchsorted(ordered, values.contiguous(), right=True)
    return (below + up_to - 1).to(torch.float64) / 2


def pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Pearson correlation of matching rows ``[B, N]``; 0 where a row is constant."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    denominator = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    return torch.where(denominator > eps, (a * b).sum(-1) / denominator.clamp_min(eps), torch.zeros_like(denominator))


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of matching rows ``[B, N]`` (average ranks for ties)."""
    return pearson_rows(average_ranks(a), average_ranks(b)).float()


def ssim(a: Tensor, b: Tensor, window: int = 5, data_range: float = 2.0, k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Mean SSIM (Wang et al. 2004) per pair of ``[B, 1, H, W]`` maps, uniform ``window×window`` filter.

    Same definition as ``skimage.metrics.structural_similarity(win_size=window, data_range=data_range)``:
    sample covariances, and the mean over the positions where the window fits entirely.
    """
    if min(a.shape[-2:]) < window:
        raise ValueError(f"SSIM window {window} is larger than the maps ({tuple(a.shape[-2:])})")
    a, b = a.double(), b.double()
    n = window * window
    pool = lambda t: F.avg_pool2d(t, window, stride=1)
    mu_a, mu_b = pool(a), pool(b)
    correction = n / (n - 1)
    var_a = (pool(a * a) - mu_a.square()) * correction
    var_b = (pool(b * b) - mu_b.square()) * correction
    cov = (pool(a * b) - mu_a * mu_b) * correction
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(1).float()


def normalize_max_abs(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Divide each map by its maximum absolute value (range [−1, 1]); a zero map stays zero."""
    return maps / maps.flatten(1).abs().amax(1).clamp_min(eps).view(-1, *([1] * (maps.dim() - 1)))
