"""RISE: Randomized Input Sampling for Explanation (Petsiuk et al. 2018, §3; reference code eclique/RISE).

``N`` binary grids ``s × s`` with cells on with probability ``p`` are bilinearly upsampled to ``(s+1)·⌈H/s⌉``
exactly as the reference code's ``skimage.transform.resize(order=1, mode="reflect")`` does (pixel-centre
coordinates, mirror boundary — not ``F.interpolate``'s edge clamp) and cropped to ``H × W`` at a random shift in
``[0, ⌈H/s⌉)``. The saliency of
class ``t`` is the Monte-Carlo estimate::

    S_t(x) = 1 / (N·p) · Σ_i f_t(x ⊙ M_i) · M_i

with ``f_t`` the class probability (the reference code appends a softmax; ``output="logit"`` uses the raw score).
As in the reference code, every image of a call sees the same masks. Masks are built chunk by chunk from the
``[N, s, s]`` grids and ``[N, 2]`` shifts, so memory is bounded by ``max_batch``, not by ``N``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, AttributionMethod, check_target_range, resolve_target
from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.attribution.registry import register

OUTPUTS = ("softmax", "logit")


def mirror_bilinear_matrix(size: int, out: int) -> Tensor:
    """``A [out, size]`` with ``A @ v`` = skimage's order-1 resize of ``v`` (``mode="reflect"``, i.e. mirror).

    Output ``o`` samples the input at ``(o + ½)·size/out − ½``; indices outside ``[0, size)`` reflect about the
    edge pixels (``-1 → 1``), as in ``scipy.ndimage`` ``mode="mirror"``.
    """
    coord = (torch.arange(out, dtype=torch.float64) + 0.5) * size / out - 0.5
    low = coord.floor()
    frac = coord - low
    matrix = torch.zeros(out, size, dtype=torch.float64)
    rows = torch.arange(out)
    for index, weight in ((low.long(), 1 - frac), (low.long() + 1, frac)):
        if size > 1:
            index = index.remainder(2 * (size - 1))
            index = torch.where(index >= size, 2 * (size - 1) - index, index)
        else:
            index = torch.zeros_like(index)
        matrix.index_put_((rows, index), weight, accumulate=True)
    return matrix


@register("rise")
class Rise(AttributionMethod):
    """RISE with ``num_masks`` masks, grid size ``mask_resolution`` and keep probability ``p`` — N = 6000, s = 8,
    p = 0.1 ← the reference code (eclique/RISE ``Saliency.py``: ``generate_masks(N=6000, s=8, p1=0.1)``) — and
    ``output`` ``"softmax"`` (← its ``nn.Sequential(model, nn.Softmax(dim=1))``) or ``"logit"``. The grids and
    shifts come from one CPU generator seeded with ``seed`` at every call (grids first, then shifts), the same masks
    for every image. Returns ``[B, 1, H, W]``."""

    def __init__(
        self,
        num_masks: int = 6000,
        mask_resolution: int = 8,
        p: float = 0.1,
        output: str = "softmax",
        seed: int = 0,
        max_batch: int | None = None,  # rows per forward (None: memory budget, lit_xai.attribution.batching)
    ) -> None:
        if not isinstance(num_masks, int) or num_masks < 1:
            raise AttributionError(f"rise: num_masks must be a positive int, got {num_masks!r}")
        if not isinstance(mask_resolution, int) or mask_resolution < 1:
            raise AttributionError(f"rise: mask_resolution must be a positive int, got {mask_resolution!r}")
        if not 0.0 < p <= 1.0:
            raise AttributionError(f"rise: p must lie in (0, 1], got {p!r}")
        if output not in OUTPUTS:
            raise AttributionError(f"rise: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.num_masks = num_masks
        self.mask_resolution = mask_resolution
        self.p = p
        self.output = output
        self.seed = seed
        self.max_batch = check_max_batch(max_batch)

    def cell(self, size: tuple[int, int]) -> tuple[int, int]:
        """The upsampled size of one grid cell, ``⌈H/s⌉ × ⌈W/s⌉``."""
        return math.ceil(size[0] / self.mask_resolution), math.ceil(size[1] / self.mask_resolution)

    def grids_and_shifts(self, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """This call's binary grids ``[N, s, s]`` (float, CPU) and integer shifts ``[N, 2]`` in ``[0, cell)``."""
        generator = torch.Generator().manual_seed(self.seed)
        s, cell = self.mask_resolution, self.cell(size)
        grids = (torch.rand(self.num_masks, s, s, generator=generator) < self.p).float()
        shift_h = torch.randint(cell[0], (self.num_masks,), generator=generator)
        shift_w = torch.randint(cell[1], (self.num_masks,), generator=generator)
        return grids, torch.stack([shift_h, shift_w], dim=1)

    def masks(self, grids: Tensor, shifts: Tensor, size: tuple[int, int]) -> Tensor:
        """Upsample ``grids`` ``[n, s, s]`` to ``(s+1)·cell`` and crop ``size`` at the shifts: ``[n, H, W]``."""
        s, cell = self.mask_resolution, self.cell(size)
        along_h = mirror_bilinear_matrix(s, (s + 1) * cell[0]).to(grids)
        along_w = mirror_bilinear_matrix(s, (s + 1) * cell[1]).to(grids)
        up = along_h @ grids @ along_w.T
        rows = shifts[:, :1] + torch.arange(size[0], device=grids.device)
        cols = shifts[:, 1:] + torch.arange(size[1], device=grids.device)
        index = torch.arange(len(grids), device=grids.device)
        return up[index[:, None, None], rows[:, :, None], cols[:, None, :]]

    @torch.no_grad()
    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        target = resolve_target(model, inputs, target)
        batch, size = inputs.shape[0], (inputs.shape[-2], inputs.shape[-1])
        grids, shifts = self.grids_and_shifts(size)
        grids, shifts = grids.to(inputs), shifts.to(inputs.device)
        saliency = inputs.new_zeros(batch, *size)
        for start, end in row_chunks(self.num_masks * batch, rows_per_chunk(model, inputs, self.max_batch)):
            rows = torch.arange(start, end, device=inputs.device)
            first, last = start // batch, (end - 1) // batch + 1
            masks = self.masks(grids[first:last], shifts[first:last], size)
            row_masks = masks[rows // batch - first]
            images = rows % batch
            logits = model(inputs[images] * row_masks[:, None])
            check_target_range(target, logits.shape[1])
            scores = logits.softmax(1) if self.output == "softmax" else logits
            weights = scores.gather(1, target[images, None])
            saliency.index_add_(0, images, weights[:, :, None] * row_masks)
        return (saliency / (self.num_masks * self.p))[:, None]
