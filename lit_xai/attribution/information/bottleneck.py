"""The Gaussian bottleneck Z = λ·R + (1−λ)·ε and its information cost (dissertation ch. 6, Eq. 1-2, Prop. 3).

All functions are batched over images; λ is parameterised as λ = smooth(sigmoid(α)) and 1−λ is computed as
smooth(sigmoid(−α)) (exact, since the smoothing kernel sums to one) so the log-variance stays finite when
α saturates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_xai.gaussian import gaussian_kernel1d

#: border rules of :class:`GaussianSmoothing`
SMOOTHING_PADDINGS = ("reflect", "replicate")


def border_index(index: Tensor, size: int, padding: str) -> Tensor:
    """Where a tap at ``index`` (possibly outside ``[0, size)``) reads from under the border rule ``padding``.

    ``"reflect"`` mirrors without repeating the edge (``d c b | a b c d | c b a``: ``torch.nn.ReflectionPad2d``,
    scipy's ``"mirror"``), folded again as often as needed, so taps further out than the map is wide are defined
    too; ``"replicate"`` repeats the edge value.
    """
    if padding == "replicate" or size == 1:
        return index.clamp(0, size - 1)
    period = 2 * (size - 1)
    folded = index.remainder(period)
    return torch.where(folded >= size, period - folded, folded)


class GaussianSmoothing:
    """Per-channel spatial Gaussian blur of a mask ``[..., h, w]`` (IBA smooths λ with σ = 1).

    Defaults follow Schulz et al.'s IBA code (``per_sample_bottleneck.py`` / ``IBA/pytorch.py``,
    ``SpatialGaussianKernel``): kernel radius ``int(round(truncate·σ))`` with ``truncate = 2`` (their
    ``kernel_size = int(round(2 * sigma)) * 2 + 1``, 5×5 at σ = 1), the kernel normalised to sum 1 (their 2-D
    kernel is the outer product of this 1-D one) and reflection padding (``nn.ReflectionPad2d``). Where the radius
    reaches past a small map, where ``ReflectionPad2d`` would raise, the reflection is folded again (see
    :func:`border_index`). ``padding="replicate", truncate=3`` is lit_xai's earlier rule (7×7, edge repeated).
    The separable blur is applied as two small matrix products, ``S_h · mask · S_wᵀ``, with the padding folded
    into the matrices: one batched matmul per axis instead of a single-channel convolution per (image, channel).
    """

    def __init__(self, sigma: float, truncate: float = 2.0, padding: str = "reflect") -> None:
        if sigma < 0:
            raise ValueError(f"smoothing sigma must be ≥ 0, got {sigma}")
        if truncate < 0:
            raise ValueError(f"smoothing truncate must be ≥ 0, got {truncate}")
        if padding not in SMOOTHING_PADDINGS:
            raise ValueError(f"smoothing padding must be one of {SMOOTHING_PADDINGS}, got {padding!r}")
        self.sigma = float(sigma)
        self.padding = padding
        self.radius = int(round(truncate * sigma)) if sigma > 0 else 0  # Python's round, as the reference
        self._matrices: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}

    def matrix(self, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``[size, size]`` operator of the padded 1-D blur: ``out[i] = Σ_j M[i, j]·x[j]`` (cached)."""
        key = (size, device, dtype)
        if key not in self._matrices:
            offsets = torch.arange(-self.radius, self.radius + 1, device=device)
            source = border_index(torch.arange(size, device=device)[:, None] + offsets[None], size, self.padding)
            kernel = gaussian_kernel1d(self.sigma, self.radius, device, dtype).expand(size, -1)
            self._matrices[key] = torch.zeros(size, size, device=device, dtype=dtype).scatter_add_(1, source, kernel)
        return self._matrices[key]

    def __call__(self, mask: Tensor) -> Tensor:
        if self.radius == 0:
            return mask
        h, w = mask.shape[-2:]
        rows = self.matrix(h, mask.device, mask.dtype)
        cols = self.matrix(w, mask.device, mask.dtype)
        return rows @ mask @ cols.T


def mask_pair(alpha: Tensor, smoothing: GaussianSmoothing) -> tuple[Tensor, Tensor]:
    """(λ, 1−λ) with λ = smooth(sigmoid(α)); both computed without cancellation, blurred in one call."""
    lam, one_minus_lam = smoothing(torch.sigmoid(torch.stack([alpha, -alpha]))).unbind(0)
    return lam, one_minus_lam


def iba_kl(
    features: Tensor, lam: Tensor, one_minus_lam: Tensor, mean: Tensor | None = None, std: Tensor | None = None
) -> Tensor:
    """Per-element D_KL[N(λ·r̂, (1−λ)²) ‖ N(0, 1)] in nats with r̂ = (r − μ_R)/σ_R (IBA, Schulz et al. Eq. 5).

    This is D_KL[P(Z|R) ‖ Q(Z)] of Z = λR + (1−λ)ε, ε ~ N(μ_R, σ_R²), written in standardised units. Without
    ``mean`` and ``std`` the ``features`` are taken as already standardised (r̂, computed once per optimisation).
    """
    standardised = features if mean is None or std is None else (features - mean) / std
    mu_z = lam * standardised
    var_z = one_minus_lam**2
    return 0.5 * (mu_z**2 + var_z - 1.0) - torch.log(one_minus_lam)


def prior_kl(
    inputs: Tensor, lam: Tensor, one_minus_lam: Tensor, prior: Tensor, mean: Tensor, std: Tensor
) -> Tensor:
    """Per-element D_KL[P(Z_I|I) ‖ P(Z_I)] in nats of InputIBA's Proposition 3, with prior mask λ_G = ``prior``:

    log((1−λ_GΛ)/(1−Λ)) + (1−Λ)²/(2(1−λ_GΛ)²) + (I−μ_I)²(Λ−λ_GΛ)²/(2(1−λ_GΛ)²σ_I²) − 1/2.
    """
    one_minus_prior_lam = one_minus_lam + lam * (1.0 - prior)  # 1 − λ_G·Λ, never below 1 − Λ
    ratio = one_minus_lam / one_minus_prior_lam
    deviation = (inputs - mean) * lam * (1.0 - prior) / (one_minus_prior_lam * std)
    return -torch.log(ratio) + 0.5 * ratio**2 + 0.5 * deviation**2 - 0.5


def capacity_bits(kl_nats: Tensor, active: Tensor | None = None) -> Tensor:
    """Capacity map ``[B, 1, h, w]`` in bits: per-element KL (zero at inactive positions) summed over channels."""
    if active is not None:
        kl_nats = kl_nats * active
    return kl_nats.sum(1, keepdim=True) / math.log(2.0)


def capacity_per_input_pixel(capacity: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a capacity map ``[B, 1, h, w]`` (bits) to the input size as *bits per input pixel*.

    Bilinear upsampling, then each image is rescaled so its total (the information that passes the
    bottleneck, in bits) is unchanged: ``out.sum((1, 2, 3)) == capacity.sum((1, 2, 3))``.
    """
    if capacity.dim() != 4 or capacity.shape[1] != 1:
        raise ValueError(f"capacity map must have shape [B, 1, h, w], got {tuple(capacity.shape)}")
    resized = F.interpolate(capacity, size=size, mode="bilinear", align_corners=False).clamp_min(0)
    total = capacity.sum((1, 2, 3), keepdim=True)
    resized_total = resized.sum((1, 2, 3), keepdim=True)
    scale = torch.where(resized_total > 0, total / resized_total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
    return resized * scale
