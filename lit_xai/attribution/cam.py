"""Class activation maps from gradients at a hidden layer: GradCAM and GradCAM++.

One forward with the layer's output captured (a forward hook registered and removed inside a ``with`` block),
one backward to that activation only (``torch.autograd.grad`` w.r.t. the activation, parameters frozen).
Output: ``[B, 1, h, w]`` at the layer's resolution; upsample to the input with
:func:`lit_xai.attribution.postprocess.upsample` (or construct the method with ``upsample=True``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionMethod, target_scores
from lit_xai.attribution.layers import capture_outputs, last_spatial_layer, record_spatial_outputs, resolve_layer
from lit_xai.attribution.postprocess import upsample as upsample_maps
from lit_xai.attribution.registry import register


def layer_activation_and_gradient(
    model: nn.Module, inputs: Tensor, target: Tensor | None, layer: str | None
) -> tuple[Tensor, Tensor]:
    """(A, ∂y_t/∂A) at ``layer`` (a module name; ``None`` = the last spatial layer, see
    :func:`~lit_xai.attribution.layers.last_spatial_layer`). If the module runs several times, its last call is used."""
    x = inputs.detach().requires_grad_(True)
    if layer is None:
        with record_spatial_outputs(model) as recorder:
            logits = model(x)
        _, activation = last_spatial_layer(recorder)
    else:
        module = resolve_layer(model, layer)
        with capture_outputs([module]) as (capture,):
            logits = model(x)
        activation = capture.last
    scores, _ = target_scores(logits, target)
    (grad,) = torch.autograd.grad(scores.sum(), activation)
    return activation.detach(), grad


class _LayerCAM(AttributionMethod):
    """Shared constructor and plumbing; subclasses define the channel weights."""

    def __init__(self, layer: str | None = None, relu: bool = True, upsample: bool = False) -> None:
        self.layer = layer
        self.relu = relu
        self.upsample = upsample

    def channel_weights(self, activation: Tensor, grad: Tensor) -> Tensor:
        raise NotImplementedError

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        activation, grad = layer_activation_and_gradient(model, inputs, target, self.layer)
        cam = (self.channel_weights(activation, grad) * activation).sum(dim=1, keepdim=True)
        if self.relu:
            cam = cam.clamp_min(0)
        return upsample_maps(cam, inputs) if self.upsample else cam


@register("gradcam")
class GradCAM(_LayerCAM):
    """GradCAM (Selvaraju et al. 2017, Eq. 1–2): ``ReLU(Σ_k α_k A_k)``, ``α_k = mean_ij ∂y_t/∂A_kij``.

    ``layer``: module name (``None`` = last spatial layer: ResNet last stage, VGG last conv ReLU);
    ``relu=False`` keeps the signed map; ``upsample=True`` resizes bilinearly to the input.
    """

    def channel_weights(self, activation: Tensor, grad: Tensor) -> Tensor:
        return grad.mean(dim=(2, 3), keepdim=True)


@register("gradcam_pp")
class GradCAMPlusPlus(_LayerCAM):
    """GradCAM++ (Chattopadhyay et al. 2018, Eq. 19 with the exponential score): ``ReLU(Σ_k w_k A_k)``, ::

        w_k = Σ_ij α_kij ReLU(g_kij),   α_kij = g² / (2 g² + Σ_ab A_kab · g³)   (g = ∂y_t/∂A, α = 0 where g = 0)
    """

    def __init__(self, layer: str | None = None, relu: bool = True, upsample: bool = False, eps: float = 1e-7) -> None:
        super().__init__(layer, relu, upsample)
        self.eps = eps

    def channel_weights(self, activation: Tensor, grad: Tensor) -> Tensor:
        grad2 = grad.square()
        denominator = 2 * grad2 + activation.sum(dim=(2, 3), keepdim=True) * grad2 * grad
        alpha = torch.where(grad != 0, grad2 / (denominator + self.eps), torch.zeros_like(grad))
        return (alpha * grad.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
