"""Intercept every ReLU call of a forward pass — module, functional or in-place — in call order.

Methods that act on hidden neurons (Guided Backprop, RectGrad, PruneGrad, PathwayGrad) need each ReLU
*call*, not each ReLU *module*: torchvision/timm ResNet blocks call one ``nn.ReLU`` module twice, and
some models call ``F.relu`` directly. Forward hooks on ``nn.ReLU`` see neither functional calls nor, by
themselves, distinguish repeated calls. We therefore use a :class:`torch.overrides.TorchFunctionMode`,
which sees ``F.relu``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu`` and ``Tensor.relu_`` (what
``nn.ReLU(inplace=True)`` calls) alike. Nothing is registered on the model, so nothing can be left behind.

The ``transform`` callback receives ``(call_index, activation)`` — the ReLU output of that call — and
returns the tensor the network continues with. For in-place ReLUs the model must use the return value
(as torchvision, timm and all built-in nets do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from lit_xai.attribution.base import AttributionError

RELU_FUNCTIONS = frozenset({F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.relu_})

Transform = Callable[[int, Tensor], Tensor]


class ReLUInterceptor(TorchFunctionMode):
    """Context manager: apply ``transform(call_index, activation)`` to the output of every ReLU call.

    ``calls`` counts the ReLU calls seen so far; :meth:`reset` starts a new forward pass at index 0.
    """

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self.transform = transform
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in RELU_FUNCTIONS and isinstance(out, Tensor):
            index = self.calls
            self.calls += 1
            return self.transform(index, out)
        return out


def require_relus(calls: int, method: str) -> None:
    """Raise the clear error for models without ReLU activations."""
    if calls == 0:
        raise AttributionError(
            f"{method} needs a network with ReLU activations (it acts on ReLU neurons), "
            "but no ReLU call was seen in the forward pass (GELU/SiLU/other activations are not supported)"
        )


class ActivationRecorder:
    """Record the ReLU output of every call of one forward pass (kept in the graph, for gradients)."""

    def __init__(self) -> None:
        self.activations: list[Tensor] = []

    def __call__(self, index: int, activation: Tensor) -> Tensor:
        self.activations.append(activation)
        return activation


def forward_with_activations(model: torch.nn.Module, inputs: Tensor, method: str) -> tuple[Tensor, list[Tensor]]:
    """Forward ``inputs`` and return (logits, ReLU outputs in call order), both attached to the graph."""
    recorder = ActivationRecorder()
    with ReLUInterceptor(recorder) as mode:
        logits = model(inputs)
    require_relus(mode.calls, method)
    return logits, recorder.activations
