"""Occlusion (Zeiler & Fergus 2014): the output drop when a square patch is set to a baseline.

Each pixel's attribution is the mean drop ``y_t(x) − y_t(x with patch ← baseline)`` over all patches that cover it
(the convention of ``captum.attr.Occlusion``). Patches span all channels and slide with ``stride``; the last patch of
a row/column may stick out of the image and is cropped. All occluded copies are forwarded without gradients, in
chunks of at most ``max_batch`` images.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, AttributionMethod, target_scores
from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.attribution.registry import register


def patch_masks(height: int, width: int, patch: int, stride: int, device: torch.device) -> Tensor:
    """``[N, H, W]`` binary masks of every patch position (``ceil((H − patch)/stride) + 1`` per axis, cropped)."""

    def starts(size: int) -> Tensor:
        count = max(math.ceil((size - patch) / stride), 0) + 1
        return torch.arange(count, device=device) * stride

    pixels_y = torch.arange(height, device=device)
    pixels_x = torch.arange(width, device=device)
    in_y = (pixels_y[None] >= starts(height)[:, None]) & (pixels_y[None] < starts(height)[:, None] + patch)
    in_x = (pixels_x[None] >= starts(width)[:, None]) & (pixels_x[None] < starts(width)[:, None] + patch)
    return (in_y[:, None, :, None] & in_x[None, :, None, :]).flatten(0, 1)


@register("occlusion")
class Occlusion(AttributionMethod):
    """Occlusion sensitivity with a ``patch × patch`` window moved by ``stride``; ``baseline`` is the fill value
    (0 = the dataset mean in normalised space: Zeiler & Fergus occlude "with a grey square") or a tensor broadcastable
    to one input ``[C, H, W]``. Output ``[B, C, H, W]`` (the same value in every channel).

    ``patch=8, stride=4`` is lit_xai's choice, not a published default (neither the paper nor Captum, whose
    ``sliding_window_shapes``/``strides`` are required, fixes one): a quarter of the side of the project's 32² inputs,
    half-overlapping windows. Scale it with the input (e.g. Captum's ImageNet tutorial uses 15/8 on 224²).
    ``captum.attr.Occlusion(model).attribute(x, sliding_window_shapes=(C, patch, patch), strides=stride,
    baselines=baseline, target=t)`` gives the same map (``tests/test_attribution_captum.py``)."""

    def __init__(
        self,
        patch: int = 8,  # lit_xai's choice for 32² inputs (see the class docstring)
        stride: int = 4,  # lit_xai's choice: half-overlapping windows
        baseline: float | Tensor = 0.0,  # grey = the dataset mean in normalised space (Zeiler & Fergus 2014, §4.2)
        max_batch: int | None = None,  # rows per forward (None: memory budget); does not change the map
    ) -> None:
        if patch < 1 or stride < 1:
            raise AttributionError(f"occlusion: patch and stride must be ≥ 1, got patch={patch}, stride={stride}")
        self.patch = patch
        self.stride = stride
        self.baseline = baseline
        self.max_batch = check_max_batch(max_batch)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        batch, _, height, width = inputs.shape
        if self.patch > min(height, width):
            raise AttributionError(f"occlusion: patch {self.patch} is larger than the input {height}×{width}")
        baseline = torch.as_tensor(self.baseline, dtype=inputs.dtype, device=inputs.device)
        baseline = torch.broadcast_to(baseline, inputs.shape[1:])
        masks = patch_masks(height, width, self.patch, self.stride, inputs.device)
        n_patches = masks.shape[0]
        with torch.no_grad():
            clean, target = target_scores(model(inputs), target)
            drops = torch.empty(n_patches * batch, dtype=inputs.dtype, device=inputs.device)
            # patch-major rows: row p·B + b is image b with patch p occluded
            for start, end in row_chunks(n_patches * batch, rows_per_chunk(model, inputs, self.max_batch)):
                rows = torch.arange(start, end, device=inputs.device)
                images, mask = rows % batch, masks[rows // batch][:, None]
                occluded = torch.where(mask, baseline, inputs[images])
                scores, _ = target_scores(model(occluded), target[images])
                drops[start:end] = clean[images] - scores
            drops = drops.view(n_patches, batch)
            masks_f = masks.to(inputs.dtype)
            total = torch.einsum("pb,phw->bhw", drops, masks_f)
            coverage = masks_f.sum(0)  # 0 only where stride > patch leaves gaps: those pixels get 0
        return (total / coverage.clamp_min(1))[:, None].expand_as(inputs).contiguous()
