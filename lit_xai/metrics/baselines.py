"""What perturbed pixels become (the *fill*), and the insertion canvas.

A fill is a name or a number, always producing an image in the model's input space:

- ``zero``: 0 in the model's input space, i.e. the dataset mean for inputs normalised with the data's statistics
  (RISE code's ``torch.zeros_like`` on normalised tensors; seeds 000/001's MoRF/LeRF; Ancona/InputIBA Sensitivity-N);
- ``black``: pixel value 0 before normalisation, ``(0 − mean)/std`` per channel (dissertation App. D.3 Deletion); it
  needs the data's ``mean``/``std`` (the DataModules expose them; the callback passes them);
- ``image_mean``: the image's own per-channel mean; ``image_min``: the image's minimum over all channels and pixels
  (Quantus' ``perturb_baseline="black"``);
- ``blur``: a Gaussian-blurred copy (Petsiuk's insertion canvas: kernel 29, σ 15);
- a number: that constant in the model's input space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_xai.gaussian import gaussian_kernel1d

BASELINES = ("zero", "black", "image_mean", "image_min", "blur")
BLUR_PADDINGS = ("replicate", "reflect", "zeros")

Fill = str | float


def check_fill(fill: Fill, data_mean: Sequence[float] | None = None, data_std: Sequence[float] | None = None) -> None:
    """A ``ValueError`` for an unknown fill or mismatched mean/std (``black`` without them is checked at use)."""
    if isinstance(fill, bool) or not isinstance(fill, str | int | float):
        raise ValueError(f"fill must be one of {BASELINES} or a number, got {fill!r}")
    if isinstance(fill, str) and fill not in BASELINES:
        hint = " ('mean' is ambiguous: 'zero' is the dataset mean of normalised inputs)" if fill == "mean" else ""
        raise ValueError(f"unknown fill {fill!r}{hint}; expected one of {BASELINES} or a number")
    if (data_mean is None) != (data_std is None):
        raise ValueError("give both data_mean and data_std (the data's per-channel normalisation) or neither")
    if data_std is not None and any(float(s) <= 0 for s in data_std):
        raise ValueError(f"data_std must be positive, got {list(data_std)}")


def gaussian_blur(images: Tensor, kernel_size: int = 29, sigma: float = 15.0, padding: str = "replicate") -> Tensor:
    """Separable Gaussian blur per channel (Petsiuk et al.'s insertion canvas: kernel 29, σ 15).

    ``padding``: ``replicate`` (lit_xai default: works for images smaller than the kernel), ``reflect``
    (torchvision's ``GaussianBlur``, used by the InputIBA code) or ``zeros`` (the RISE code's ``conv2d`` padding).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if padding not in BLUR_PADDINGS:
        raise ValueError(f"unknown blur padding {padding!r}; expected one of {BLUR_PADDINGS}")
    pad = kernel_size // 2
    if padding == "reflect" and pad >= min(images.shape[-2:]):
        raise ValueError(f"reflect padding needs images larger than kernel_size // 2 = {pad}, got "
                         f"{tuple(images.shape[-2:])}; use padding='replicate' or a smaller kernel")
    kernel = gaussian_kernel1d(sigma, pad, images.device).to(images.dtype)
    channels = images.shape[1]
    mode = "constant" if padding == "zeros" else padding
    out = F.pad(images, (pad, pad, pad, pad), mode=mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def baseline_images(
    inputs: Tensor,
    kind: Fill,
    blur_kernel_size: int = 29,
    blur_sigma: float = 15.0,
    *,
    data_mean: Sequence[float] | None = None,
    data_std: Sequence[float] | None = None,
    blur_padding: str = "replicate",
) -> Tensor:
    """The image whose pixels replace removed ones, same shape as ``inputs`` (see the module docstring)."""
    check_fill(kind, data_mean, data_std)
    if not isinstance(kind, str):
        return torch.full_like(inputs, float(kind))
    if kind == "zero":
        return torch.zeros_like(inputs)
    if kind == "black":
        if data_mean is None or data_std is None:
            raise ValueError("fill 'black' (pixel value 0 before normalisation) needs the data's normalisation: pass "
                             "data_mean and data_std (the DataModule's mean/std; the callback passes them), or use "
                             "fill 'zero' for the dataset mean")
        if len(data_mean) not in (1, inputs.shape[1]):
            raise ValueError(f"data_mean has {len(data_mean)} channels, the inputs {inputs.shape[1]}")
        mean = inputs.new_tensor([float(m) for m in data_mean]).view(1, -1, 1, 1)
        std = inputs.new_tensor([float(s) for s in data_std]).view(1, -1, 1, 1)
        return ((0 - mean) / std).expand_as(inputs)
    if kind == "image_mean":
        return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs)
    if kind == "image_min":
        return inputs.amin(dim=(1, 2, 3), keepdim=True).expand_as(inputs)
    return gaussian_blur(inputs, blur_kernel_size, blur_sigma, blur_padding)
