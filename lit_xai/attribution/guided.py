"""Modified-backward methods: Guided Backprop and RectGrad.

Both change how the gradient passes through every ReLU *call*. We intercept ReLU calls with
:class:`~lit_xai.attribution.activations.ReLUInterceptor` (a ``TorchFunctionMode``), which sees ``nn.ReLU`` modules
(also ``inplace=True`` and one module called several times per forward, as in torchvision/timm ResNet blocks) and
functional ``F.relu`` / ``torch.relu`` / ``Tensor.relu_`` alike. On each ReLU output we register a tensor gradient
hook that rewrites the gradient flowing back into it; nothing is registered on the model. Networks with other
activations (GELU, SiLU, ``clamp(min=0)``, …) raise a clear error (see :mod:`lit_xai.attribution.activations`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.attribution.activations import ReLUInterceptor, require_relus
from lit_xai.attribution.base import AttributionError, AttributionMethod, target_scores
from lit_xai.attribution.order_statistics import kth_smallest
from lit_xai.attribution.registry import register

GradientRule = Callable[[Tensor, Tensor], Tensor]


def modified_relu_gradient(
    model: nn.Module, inputs: Tensor, target: Tensor | None, rule: GradientRule, method: str
) -> Tensor:
    """∂y_t/∂x where, at every ReLU output ``a``, the incoming gradient ``g`` is replaced by ``rule(a, g)``.

    The ReLU's own backward then multiplies by ``1[a > 0]``.
    """

    def attach(index: int, activation: Tensor) -> Tensor:
        if activation.requires_grad:
            saved = activation.detach()
            activation.register_hook(lambda grad: rule(saved, grad))
        return activation

    x = inputs.detach().requires_grad_(True)
    with ReLUInterceptor(attach, method) as mode:
        logits = model(x)
    require_relus(mode.calls, method)
    scores, _ = target_scores(logits, target)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad


def guided_rule(activation: Tensor, grad: Tensor) -> Tensor:
    """Guided Backprop: pass only positive gradients (the ReLU backward adds the forward mask 1[a > 0])."""
    return grad.clamp_min(0)


@register("guided_backprop")
class GuidedBackprop(AttributionMethod):
    """Guided Backpropagation (Springenberg et al. 2015, §3.4 and Fig. 1): ``∂y_t/∂x`` with every ReLU backward
    replaced by ``g_in = 1[a > 0] · max(g_out, 0)`` — only positive gradients where the forward activation was
    positive. Equals ``captum.attr.GuidedBackprop`` (``tests/test_attribution_captum.py``). No options."""

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        return modified_relu_gradient(model, inputs, target, guided_rule, self.name)


def percentile_per_sample(values: Tensor, q: float) -> Tensor:
    """The nearest-rank ``q``-th percentile of each sample's values (no size limit), shape ``[B]``."""
    flat = values.flatten(1)
    k = int(round(q / 100.0 * (flat.shape[1] - 1))) + 1
    return kth_smallest(flat, k)


@register("rectgrad")
class RectGrad(AttributionMethod):
    """Rectified Gradient (Kim et al. 2019, Eq. 5): at every ReLU, propagate the gradient only through units whose
    importance ``a ⊙ g`` exceeds τ, the ``percentile``-th percentile of ``a ⊙ g`` over that layer call, per sample::

        g_in = 1[a ⊙ g_out > τ] ⊙ g_out        (the ReLU backward adds 1[a > 0])
    """

    def __init__(self, percentile: float = 98.0) -> None:  # q = 98: Kim et al. 2019, §4 (the authors' setting)
        if not 0.0 <= percentile <= 100.0:
            raise AttributionError(f"rectgrad: percentile must lie in [0, 100], got {percentile}")
        self.percentile = percentile

    def rule(self, activation: Tensor, grad: Tensor) -> Tensor:
        importance = activation * grad
        threshold = percentile_per_sample(importance, self.percentile)
        return grad * (importance > threshold.view(-1, *([1] * (grad.dim() - 1))))

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        return modified_relu_gradient(model, inputs, target, self.rule, self.name)
