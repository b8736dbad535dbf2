"""Neuron contributions to the response ``y_t`` (seed 001 §3.3; seed 000 Eq. 3).

- NeuronMCT (marginal contribution, Taylor): ``c = |a · ∂y/∂a|`` — one forward + backward for all neurons.
- NeuronIntGrad (Eq. 4): ``c = |a · mean_α ∂y/∂a'|_{a' = α·a}`` with only that neuron's *layer* scaled by α
  (the Aumann–Shapley value of the layer's neurons with a zero baseline; the reference code uses 11 α values
  on [0, 1] and takes the absolute value). Exactly as defined, every layer needs its own gradients per α: the
  α values of one layer run as one batch whose prefix (the layers before the scaled one) is computed only once
  per image (:mod:`lit_xai.pathways.layer_scaling`); the suffix and its backward run once per (layer, α).
- Conductance along the input path (an explicitly named alternative, not Eq. 4): the input is scaled by α, all
  layers move at once, ``c = |Σ_k Δa_k · ∂y/∂a|`` — ``steps`` forward+backward passes for every layer together.

All return detached per-call tensors shaped like the activations; a dead neuron (``a = 0``) gets 0 (Remark 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_xai.attribution.activations import ReLUInterceptor, require_relus
from lit_xai.attribution.base import AttributionError, target_scores
from lit_xai.pathways.layer_scaling import SharedPrefixScaling
from lit_xai.pathways.neurons import NeuronTensors, expand_per_sample, relu_activations


@dataclass
class NeuronContributions:
    """Contributions and the activations they were computed from (all detached, one tensor per ReLU call)."""

    contributions: NeuronTensors
    activations: NeuronTensors
    logits: Tensor
    target: Tensor


def _gradients(scores: Tensor, tensors: list[Tensor]) -> list[Tensor]:
    grads = torch.autograd.grad(scores.sum(), tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors, strict=True)]


def mct_contributions(model: nn.Module, inputs: Tensor, target: Tensor | None, method: str) -> NeuronContributions:
    """NeuronMCT ``|a·∂y_t/∂a|`` for every ReLU output element, from one forward + backward (seed 001 Eq. 2)."""
    # the input requires grad so the activations are in the graph even when the parameters are frozen
    logits, activations = relu_activations(model, inputs.detach().requires_grad_(True), method)
    scores, target = target_scores(logits, target)
    grads = _gradients(scores, activations)
    activations = [a.detach() for a in activations]
    contributions = [(a * g).abs() for a, g in zip(activations, grads, strict=True)]
    return NeuronContributions(contributions, activations, logits.detach(), target)


class _ScaleOneCall:
    """Scale the output of ReLU call ``index`` by a per-row factor and keep it for the gradient."""

    def __init__(self, index: int, alphas: Tensor) -> None:
        self.index = index
        self.alphas = alphas
        self.scaled: Tensor | None = None

    def __call__(self, index: int, activation: Tensor) -> Tensor:
        if index != self.index:
            return activation
        self.scaled = activation * expand_per_sample(self.alphas.to(activation.dtype), activation)
        return self.scaled


def _layer_gradient_sum_full(
    model: nn.Module, inputs: Tensor, target: Tensor, index: int, alphas: Tensor, rows_per_pass: int, method: str
) -> Tensor:
    """``Σ_α ∂y/∂a'`` for ReLU call ``index``, forwarding all (α, image) rows through the whole network."""
    batch = inputs.shape[0]
    rep_inputs = inputs.detach().repeat(len(alphas), *([1] * (inputs.dim() - 1))).requires_grad_(True)
    rep_target = target.repeat(len(alphas))
    rep_alphas = alphas.repeat_interleave(batch)
    grad_sum: Tensor | None = None
    for start in range(0, rep_inputs.shape[0], rows_per_pass):
        stop = min(start + rows_per_pass, rep_inputs.shape[0])
        scaler = _ScaleOneCall(index, rep_alphas[start:stop])
        with ReLUInterceptor(scaler) as mode:
            logits = model(rep_inputs[start:stop])
        require_relus(mode.calls, method)
        scores, _ = target_scores(logits, rep_target[start:stop])
        (grad,) = _gradients(scores, [scaler.scaled])
        if grad_sum is None:
            grad_sum = grad.new_zeros(batch, *grad.shape[1:])
        sample = torch.arange(start, stop, device=inputs.device) % batch
        grad_sum.index_add_(0, sample, grad.detach())
    return grad_sum


def _layer_gradient_sum_shared(
    model: nn.Module, inputs: Tensor, target: Tensor, index: int, alphas: Tensor, rows_per_pass: int, method: str
) -> Tensor:
    """As :func:`_layer_gradient_sum_full`, but the prefix before call ``index`` runs once per image chunk
    (:class:`SharedPrefixScaling`); chunks hold all α of ``rows_per_pass // S`` images (or, if fewer rows are
    allowed than α values, one image and ``rows_per_pass`` α values)."""
    images_per_pass = max(1, rows_per_pass // len(alphas))
    alphas_per_pass = max(1, min(len(alphas), rows_per_pass // images_per_pass))
    sums = []
    for images, labels in zip(inputs.split(images_per_pass), target.split(images_per_pass), strict=True):
        images = images.detach()
        grad_sum: Tensor | None = None
        for alpha_chunk in alphas.split(alphas_per_pass):
            scaling = SharedPrefixScaling(index, alpha_chunk, images)
            with scaling:
                logits = model(images)
            require_relus(scaling.calls, method)
            if scaling.scaled is None:
                raise AttributionError(f"{method}: ReLU call {index} was not reached in the forward pass")
            scores, _ = target_scores(logits, labels.repeat(len(alpha_chunk)))
            (grad,) = _gradients(scores, [scaling.scaled])
            grad = grad.detach().view(len(alpha_chunk), images.shape[0], *grad.shape[1:]).sum(0)
            grad_sum = grad if grad_sum is None else grad_sum + grad
        sums.append(grad_sum)
    return torch.cat(sums)


def intgrad_contributions(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    steps: int = 11,
    internal_batch_size: int = 64,
    share_prefix: bool = True,
) -> NeuronContributions:
    """NeuronIntGrad (seed 001 Eq. 4): per layer, ``|a · mean over α of ∂y/∂a'|`` at ``a' = α·a``.

    ``steps`` α values on a uniform grid over [0, 1] (both ends included, as in the reference code); at most
    ``internal_batch_size`` (α, image) rows per pass. ``share_prefix`` computes the layers before the scaled call
    once per image instead of once per (α, image) row (same result; a fallback for models whose per-sample
    tensors :class:`SharedPrefixScaling` cannot track).
    """
    if steps < 2:
        raise ValueError(f"NeuronIntGrad needs at least 2 α steps, got {steps}")
    clean = mct_contributions(model, inputs, target, method)
    alphas = torch.linspace(0.0, 1.0, steps, device=inputs.device)
    gradient_sum = _layer_gradient_sum_shared if share_prefix else _layer_gradient_sum_full
    rows_per_pass = max(1, internal_batch_size)
    contributions = [
        (activation * gradient_sum(model, inputs, clean.target, index, alphas, rows_per_pass, method) / steps).abs()
        for index, activation in enumerate(clean.activations)
    ]
    return NeuronContributions(contributions, clean.activations, clean.logits, clean.target)


def input_path_conductance(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    steps: int = 11,
    internal_batch_size: int = 64,
) -> NeuronContributions:
    """Signed conductance of every neuron along the input path ``α·x`` (Dhamdhere et al.):
    ``Σ_{k=1}^{S−1} (a(α_k x) − a(α_{k−1} x)) · ∂y/∂a(α_k x)`` with ``α_k = k/(S−1)`` (gradient at the end of each
    α interval; Captum's ``LayerConductance`` takes it at the start, so this equals minus Captum's conductance from
    ``x`` to 0).

    All layers move at once, so one forward+backward of the rows ``α_1 x … α_{S−1} x`` gives every layer; the
    gradient at α = 0 is not needed and ``a(0·x)`` is the same for every image, so it is one shared row (α-major;
    a pass holds ``max(1, internal_batch_size // (S−1))`` images). For a layer that is a cut of the network
    (every path to the output passes through it) the layer's sum tends to ``y(x) − y(0)`` (completeness), exactly
    so when ``y`` is affine in that layer. This is not Eq. 4, which scales the layer's own activation with the rest
    of the network held at ``x``. The returned activations and logits are those at α = 1 (the input itself).
    """
    if steps < 2:
        raise ValueError(f"conductance needs at least 2 α steps, got {steps}")
    path_alphas = torch.linspace(0.0, 1.0, steps, device=inputs.device)[1:]
    images_per_pass = max(1, internal_batch_size // (steps - 1))
    chunks: list[tuple[NeuronTensors, NeuronTensors, Tensor, Tensor]] = []
    for start in range(0, inputs.shape[0], images_per_pass):
        images = inputs[start : start + images_per_pass].detach()
        batch = images.shape[0]
        labels = None if target is None else target[start : start + images_per_pass]
        factors = path_alphas.to(images.dtype).repeat_interleave(batch)
        scaled = images.repeat(steps - 1, *([1] * (images.dim() - 1))) * expand_per_sample(factors, images)
        rows = torch.cat([torch.zeros_like(images[:1]), scaled])
        logits, activations = relu_activations(model, rows.requires_grad_(True), method)
        clean_logits = logits.detach()[1:].view(steps - 1, batch, *logits.shape[1:])[-1]
        _, labels = target_scores(clean_logits, labels)
        scores, _ = target_scores(logits[1:], labels.repeat(steps - 1))
        grads = _gradients(scores, activations)
        conductance, clean = [], []
        for activation, grad in zip(activations, grads, strict=True):
            activation = activation.detach()
            origin = activation[:1].unsqueeze(0).expand(1, batch, *activation.shape[1:])
            path = activation[1:].view(steps - 1, batch, *activation.shape[1:])
            previous = torch.cat([origin, path[:-1]])
            conductance.append(((path - previous) * grad.detach()[1:].view_as(path)).sum(0))
            clean.append(path[-1])
        chunks.append((conductance, clean, clean_logits, labels))
    conductances, clean_activations, clean_logits, labels = zip(*chunks, strict=True)
    return NeuronContributions(
        [torch.cat(layer) for layer in zip(*conductances, strict=True)],
        [torch.cat(layer) for layer in zip(*clean_activations, strict=True)],
        torch.cat(clean_logits),
        torch.cat(labels),
    )


def conductance_contributions(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    steps: int = 11,
    internal_batch_size: int = 64,
) -> NeuronContributions:
    """``|conductance|`` along the input path (:func:`input_path_conductance`), zero for neurons dead at x.

    A neuron dead at x can be active at ``α·x`` (biases), so its conductance need not vanish; it is set to 0 so
    that, as for NeuronMCT / NeuronIntGrad (Remark 2), pathways contain only active neurons (Prop. 5).
    Cost: about ``steps − 1`` forward+backward passes for all layers together.
    """
    signed = input_path_conductance(model, inputs, target, method, steps, internal_batch_size)
    contributions = [c.abs() * (a > 0) for c, a in zip(signed.contributions, signed.activations, strict=True)]
    return NeuronContributions(contributions, signed.activations, signed.logits, signed.target)


CONTRIBUTION_KINDS = ("mct", "intgrad", "conductance")


def neuron_contributions(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    contribution: str = "mct",
    steps: int = 11,
    internal_batch_size: int = 64,
    share_prefix: bool = True,
) -> NeuronContributions:
    """Dispatch on ``contribution`` ∈ {"mct", "intgrad", "conductance"} (``share_prefix``: intgrad only)."""
    if contribution == "mct":
        return mct_contributions(model, inputs, target, method)
    if contribution == "intgrad":
        return intgrad_contributions(model, inputs, target, method, steps, internal_batch_size, share_prefix)
    if contribution == "conductance":
        return conductance_contributions(model, inputs, target, method, steps, internal_batch_size)
    raise ValueError(f"contribution must be one of {CONTRIBUTION_KINDS}, got {contribution!r}")
