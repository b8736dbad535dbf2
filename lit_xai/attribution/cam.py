"""Class activation maps from gradients at a hidden layer: GradCAM and GradCAM++.

One forward with the layer's output captured (a forward hook registered and removed inside a ``with`` block),
one backward to that activation only (``torch.autograd.grad`` w.r.t. the activation, parameters frozen).
Output: ``[B, 1, h, w]`` at the layer's resolution; upsample to the input with
:func:`lit_xai.attribution.postprocess.upsample` (or construct the method with ``upsample=True``).

Token models (ViT, Swin) need ``layer=`` and a ``reshape_transform`` that turns the layer's token output into a
feature map ``[B, C, h, w]``; it is applied to the activation and to its gradient, as in pytorch-grad-cam.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, AttributionMethod, target_scores
from lit_xai.attribution.layers import (
    RESHAPE_TRANSFORMS,
    capture_outputs,
    last_spatial_layer,
    record_spatial_outputs,
    resolve_layer,
)
from lit_xai.attribution.postprocess import upsample as upsample_maps
from lit_xai.attribution.registry import register

ReshapeTransform = Callable[[Tensor], Tensor]


def resolve_reshape_transform(transform: str | ReshapeTransform | None) -> ReshapeTransform | None:
    """``None``, a name in :data:`~lit_xai.attribution.layers.RESHAPE_TRANSFORMS` (``"vit"``, ``"swin"``) or a
    callable ``[B, …] → [B, C, h, w]``."""
    if transform is None or callable(transform):
        return transform
    if transform in RESHAPE_TRANSFORMS:
        return RESHAPE_TRANSFORMS[transform]
    raise AttributionError(
        f"unknown reshape_transform {transform!r}; choose one of {', '.join(RESHAPE_TRANSFORMS)} or pass a callable"
    )


def layer_activation_and_gradient(
    model: nn.Module, inputs: Tensor, target: Tensor | None, layer: str | None,
    reshape_transform: ReshapeTransform | None = None, method: str = "gradcam",
) -> tuple[Tensor, Tensor]:
    """(A, ∂y_t/∂A) at ``layer`` (a module name; ``None`` = the last spatial layer, see
    :func:`~lit_xai.attribution.layers.last_spatial_layer`). If the module runs several times, its last call is used.
    ``reshape_transform`` maps the layer's output and its gradient to ``[B, C, h, w]``."""
    x = inputs.detach().requires_grad_(True)
    if layer is None:
        if reshape_transform is not None:
            raise AttributionError(f"{method}: reshape_transform needs an explicit layer=<module name>")
        with record_spatial_outputs(model) as recorder:
            logits = model(x)
        _, activation = last_spatial_layer(recorder, method)
    else:
        module = resolve_layer(model, layer)
        with capture_outputs([module]) as (capture,):
            logits = model(x)
        activation = capture.last
    scores, _ = target_scores(logits, target)
    (grad,) = torch.autograd.grad(scores.sum(), activation)
    activation = activation.detach()
    if reshape_transform is not None:
        activation, grad = reshape_transform(activation), reshape_transform(grad)
    if activation.dim() != 4:
        raise AttributionError(
            f"{method}: layer {layer!r} outputs shape {list(activation.shape)}, not a feature map [B, C, h, w]; "
            "for token outputs pass reshape_transform='vit' ('swin', or a callable returning [B, C, h, w])"
        )
    return activation, grad


class _LayerCAM(AttributionMethod):
    """Shared constructor and plumbing; subclasses define the channel weights."""

    def __init__(
        self, layer: str | None = None, relu: bool = True, upsample: bool = False,
        reshape_transform: str | ReshapeTransform | None = None,
    ) -> None:
        self.layer = layer
        self.relu = relu
        self.upsample = upsample
        self.reshape_transform = reshape_transform
        resolve_reshape_transform(reshape_transform)  # fail at construction on an unknown name

    def channel_weights(self, activation: Tensor, grad: Tensor) -> Tensor:
        raise NotImplementedError

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        transform = resolve_reshape_transform(self.reshape_transform)
        activation, grad = layer_activation_and_gradient(model, inputs, target, self.layer, transform, self.name)
        cam = (self.channel_weights(activation, grad) * activation).sum(dim=1, keepdim=True)
        if self.relu:
            cam = cam.clamp_min(0)
        return upsample_maps(cam, inputs) if self.upsample else cam


@register("gradcam")
class GradCAM(_LayerCAM):
    """GradCAM (Selvaraju et al. 2017, Eq. 1–2): ``ReLU(Σ_k α_k A_k)``, ``α_k = mean_ij ∂y_t/∂A_kij``.

    ``layer``: module name (``None`` = "the last convolutional layer" of the paper: ResNet last stage, VGG last conv
    ReLU; a model without a convolutional feature map, e.g. a ViT, raises); ``relu=False`` keeps the signed map;
    ``upsample=True`` resizes bilinearly to the input; ``reshape_transform`` (``"vit"``, ``"swin"`` or a callable)
    turns a token output into ``[B, C, h, w]``. Equals ``captum.attr.LayerGradCam`` and
    ``pytorch_grad_cam.GradCAM`` (before its min-max scaling).
    """

    def channel_weights(self, activation: Tensor, grad: Tensor) -> Tensor:
        return grad.mean(dim=(2, 3), keepdim=True)


@register("gradcam_pp")
class GradCAMPlusPlus(_LayerCAM):
    """GradCAM++ (Chattopadhyay et al. 2018, Eq. 19 with the exponential score, Eq. 20): ``ReLU(Σ_k w_k A_k)``, ::

        w_k = Σ_ij α_kij ReLU(g_kij),   α_kij = g² / (2 g² + Σ_ab A_kab · g³ + eps)   (g = ∂y_t/∂A, α = 0 where g = 0)

    ``eps = 0`` (default) is the paper's formula (a zero denominator is replaced by 1, as in the authors' code);
    ``eps = 1e-6`` reproduces ``pytorch_grad_cam.GradCAMPlusPlus``. Not done (as in pytorch-grad-cam): the authors'
    code also multiplies ``ReLU(g)`` by ``exp(y_t)`` (one positive factor per image) and divides α by its spatial
    sum per channel, which Eq. 19 does not contain.
    """

    def __init__(
        self, layer: str | None = None, relu: bool = True, upsample: bool = False,
        reshape_transform: str | ReshapeTransform | None = None, eps: float = 0.0,
    ) -> None:
        super().__init__(layer, relu, upsample, reshape_transform)
        if eps < 0:
            raise AttributionError(f"gradcam_pp: eps must be ≥ 0, got {eps}")
        self.eps = eps

    def channel_weights(self, activation: Tensor, grad: Tensor) -> Tensor:
        grad2 = grad.square()
        denominator = 2 * grad2 + activation.sum(dim=(2, 3), keepdim=True) * grad2 * grad + self.eps
        denominator = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = torch.where(grad != 0, grad2 / denominator, torch.zeros_like(grad))
        return (alpha * grad.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
