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

The same mode refuses networks whose neurons are not (all) ReLUs: a call of another elementwise activation —
GELU, SiLU, ELU, SELU, CELU, (Leaky/P/R)ReLU, Softplus, Mish, Hardswish, Hardtanh/ReLU6, Threshold, or a ReLU
written as ``clamp(min=0)`` — raises an :class:`AttributionError` naming the method and the function, because the
method would act on the ReLU calls only and silently treat the others as plain layers. Gates and normalisers
(sigmoid/tanh in squeeze-excitation or attention, softmax) are not neurons of this kind and pass unchanged.
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

#: elementwise activations other than ReLU (what calls them, for the error message)
OTHER_ACTIVATIONS: dict[Any, str] = {
    F.gelu: "nn.GELU / F.gelu",
    F.silu: "nn.SiLU / F.silu",
    F.elu: "nn.ELU / F.elu",
    F.elu_: "F.elu_",
    F.selu: "nn.SELU / F.selu",
    torch.selu: "torch.selu",
    torch.selu_: "torch.selu_",
    F.celu: "nn.CELU / F.celu",
    torch.celu: "torch.celu",
    torch.celu_: "torch.celu_",
    F.leaky_relu: "nn.LeakyReLU / F.leaky_relu",
    F.leaky_relu_: "F.leaky_relu_",
    F.prelu: "F.prelu",
    torch.prelu: "nn.PReLU / torch.prelu",
    F.rrelu: "nn.RReLU / F.rrelu",
    F.rrelu_: "F.rrelu_",
    torch.rrelu: "torch.rrelu",
    F.softplus: "nn.Softplus / F.softplus",
    F.mish: "nn.Mish / F.mish",
    F.hardswish: "nn.Hardswish / F.hardswish",
    F.hardtanh: "nn.Hardtanh / nn.ReLU6 / F.hardtanh",
    F.hardtanh_: "F.hardtanh_",
    F.relu6: "F.relu6",
    F.threshold: "nn.Threshold / F.threshold",
    F.threshold_: "F.threshold_",
}
#: clamps, which act as a ReLU when their lower bound is 0 (the bound is their second argument or ``min=``)
CLAMP_FUNCTIONS: dict[Any, str] = {
    torch.clamp: "torch.clamp", Tensor.clamp: "Tensor.clamp", torch.clamp_: "torch.clamp_",
    Tensor.clamp_: "Tensor.clamp_", torch.clip: "torch.clip", Tensor.clip: "Tensor.clip",
    Tensor.clip_: "Tensor.clip_", torch.clamp_min: "torch.clamp_min", Tensor.clamp_min: "Tensor.clamp_min",
    torch.clamp_min_: "torch.clamp_min_", Tensor.clamp_min_: "Tensor.clamp_min_",
}

Transform = Callable[[int, Tensor], Tensor]


def unsupported_activation(func: Any, args: tuple, kwargs: dict) -> str | None:
    """The name of ``func`` if it is a non-ReLU activation (or a ``clamp`` with lower bound 0), else ``None``."""
    if func in OTHER_ACTIVATIONS:
        return OTHER_ACTIVATIONS[func]
    if func in CLAMP_FUNCTIONS:
        low = args[1] if len(args) > 1 else kwargs.get("min")
        if isinstance(low, (int, float)) and not isinstance(low, bool) and low == 0:
            return f"{CLAMP_FUNCTIONS[func]}(min=0), a ReLU written as a clamp"
    return None


def check_activation(func: Any, args: tuple, kwargs: dict, method: str) -> None:
    """Raise the clear error when a ReLU-based ``method`` meets another activation (see the module docstring)."""
    name = unsupported_activation(func, args, kwargs)
    if name is not None:
        raise AttributionError(
            f"{method or 'this ReLU-based method'} needs a network with ReLU activations only (it acts on ReLU "
            f"neurons), but the model calls {name}: those neurons would be treated as plain layers and the "
            "attribution would silently cover only the ReLU calls. "
            "Use a network whose activations are all ReLU, or a method that does not act on neurons "
            "(e.g. gradient, integrated_gradients, gradcam)"
        )


class ReLUInterceptor(TorchFunctionMode):
    """Context manager: apply ``transform(call_index, activation)`` to the output of every ReLU call.

    ``calls`` counts the ReLU calls seen so far; :meth:`reset` starts a new forward pass at index 0. A call of another
    activation raises :class:`AttributionError` naming ``method`` (see the module docstring).
    """

    def __init__(self, transform: Transform, method: str = "") -> None:
        super().__init__()
        self.transform = transform
        self.method = method
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        check_activation(func, args, kwargs or {}, self.method)
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
    with ReLUInterceptor(recorder, method) as mode:
        logits = model(inputs)
    require_relus(mode.calls, method)
    return logits, recorder.activations
