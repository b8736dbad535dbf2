"""lit_xai methods outside lit_xai: NumPy in/out and a Quantus ``explain_func``.

Quantus (``quantus/metrics/base.py``, ``explain_batch``) calls ``explain_func(model=…, inputs=x_batch,
targets=y_batch, **explain_func_kwargs)`` with NumPy arrays ``[B, C, H, W]`` and integer targets ``[B]`` and expects
a NumPy array of attributions back (it broadcasts a missing channel axis itself). :class:`QuantusExplainer` is that
callable for any registered method::

    import quantus
    from lit_xai.attribution.interop import QuantusExplainer

    metric = quantus.PixelFlipping(features_in_step=16)
    scores = metric(model=net, x_batch=x, y_batch=y, explain_func=QuantusExplainer("integrated_gradients", steps=16))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionMethod
from lit_xai.attribution.registry import build_method


def _as_tensor(array: Any, dtype: torch.dtype, device: torch.device, name: str) -> Tensor:
    if isinstance(array, Tensor):
        return array.to(device=device, dtype=dtype)
    try:
        return torch.as_tensor(np.asarray(array), dtype=dtype, device=device)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a NumPy array or a tensor, got {type(array).__name__}: {error}") from None


def explain_numpy(
    method: AttributionMethod, model: nn.Module, inputs: Any, targets: Any = None, device: str | None = None
) -> np.ndarray:
    """``method`` on NumPy (or tensor) inputs ``[B, C, H, W]`` or one image ``[C, H, W]``; targets an int, ``[B]``
    or ``None`` (the prediction). Returns the raw map as a float32 NumPy array with the batch shape of ``inputs``."""
    parameter = next(model.parameters(), None)
    where = torch.device(device) if device is not None else (parameter.device if parameter is not None else "cpu")
    x = _as_tensor(inputs, torch.float32, where, "inputs")
    single = x.dim() == 3
    if single:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"inputs must have shape [B, C, H, W] or [C, H, W], got {tuple(x.shape)}")
    target = None
    if targets is not None:
        target = _as_tensor(targets, torch.long, where, "targets").reshape(-1)
        if target.numel() == 1 and x.shape[0] > 1:
            target = target.expand(x.shape[0])
        if target.numel() != x.shape[0]:
            raise ValueError(f"targets must have one entry per image ({x.shape[0]}), got {target.numel()}")
    maps = method(model, x, target).detach().float().cpu().numpy()
    return maps[0] if single else maps


class QuantusExplainer:
    """A Quantus ``explain_func``: ``QuantusExplainer(name, **method_kwargs)`` or ``QuantusExplainer(method)``.

    Args:
        method: a registered method name or an :class:`~lit_xai.attribution.base.AttributionMethod` instance.
        **kwargs: the method's arguments (with a name).
    """

    def __init__(self, method: str | AttributionMethod, **kwargs: Any) -> None:
        if isinstance(method, str):
            method = build_method(method, **kwargs)
        elif kwargs:
            raise TypeError("method arguments go with a method name, not with a built method")
        self.method = method

    def __call__(
        self, model: nn.Module, inputs: Any, targets: Any = None, device: str | None = None, **kwargs: Any
    ) -> np.ndarray:
        if kwargs:
            raise TypeError(f"unexpected explain_func_kwargs {sorted(kwargs)}: configure the method at construction")
        return explain_numpy(self.method, model, inputs, targets, device)
