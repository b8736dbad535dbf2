"""Reference inputs for the reference-based methods (DeepLIFT, DeepSHAP, GradientSHAP).

A reference is named the way a YAML config can: ``"zero"`` (the all-zero image, Captum's default for
``baselines=None``), a float (a constant image), a tensor, or the path of a tensor saved with ``torch.save``
(e.g. a background sample of training images for DeepSHAP).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from lit_xai.attribution.base import AttributionError

ReferenceSpec = str | float | Tensor


def check_reference_spec(spec: ReferenceSpec, method: str) -> None:
    """Reject what :func:`reference_images` could never resolve, at construction time."""
    if isinstance(spec, bool) or not isinstance(spec, (str, float, int, Tensor, os.PathLike)):
        raise AttributionError(f"{method}: a reference must be 'zero', a float, a tensor or a path to a saved tensor, "
                               f"got {type(spec).__name__}")
    if isinstance(spec, (str, os.PathLike)) and str(spec) != "zero" and not Path(spec).is_file():
        raise AttributionError(f"{method}: reference {str(spec)!r} is neither 'zero' nor an existing tensor file")


def reference_images(spec: ReferenceSpec, like: Tensor, method: str) -> Tensor:
    """The reference images ``[N, C, H, W]`` named by ``spec``, on ``like``'s device and dtype.

    ``"zero"`` and floats give one image (``N = 1``); a tensor of shape ``[C, H, W]`` is one image; a tensor
    ``[N, C', H', W']`` must broadcast to ``like``'s ``[C, H, W]``.
    """
    check_reference_spec(spec, method)
    shape = like.shape[1:]
    if isinstance(spec, (str, os.PathLike)) and str(spec) == "zero":
        return like.new_zeros(1, *shape)
    if isinstance(spec, (int, float)):
        return like.new_full((1, *shape), float(spec))
    if isinstance(spec, (str, os.PathLike)):
        spec = torch.load(spec, map_location=like.device, weights_only=True)
        if not isinstance(spec, Tensor):
            raise AttributionError(f"{method}: the reference file holds a {type(spec).__name__}, not a tensor")
    refs = spec.to(device=like.device, dtype=like.dtype)
    if refs.dim() == 3:
        refs = refs[None]
    if refs.dim() != 4 or refs.shape[0] == 0:
        raise AttributionError(f"{method}: references must have shape [N, C, H, W], got {tuple(spec.shape)}")
    try:
        refs = torch.broadcast_to(refs, (refs.shape[0], *shape))
    except RuntimeError as err:
        raise AttributionError(f"{method}: references of shape {tuple(refs.shape)} do not broadcast to the inputs' "
                               f"[C, H, W] = {tuple(shape)}") from err
    if not bool(torch.isfinite(refs).all()):
        raise AttributionError(f"{method}: the references contain NaN or inf values")
    return refs
