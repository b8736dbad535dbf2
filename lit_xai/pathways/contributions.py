"""Neuron contributions to the response ``y_t`` (seed 001 §3.3; seed 000 Eq. 3).

- NeuronMCT (marginal contribution, Taylor): ``c = |a · ∂y/∂a|`` — one forward + backward for all neurons.
- NeuronIntGrad (Eq. 4): ``c = |a · mean_α ∂y/∂a'|_{a' = α·a}`` with only that neuron's *layer* scaled by α
  (the Aumann–Shapley value of the layer's neurons with a zero baseline; the reference code uses 11 α values
  on [0, 1] and takes the absolute value). Exactly as defined, every layer needs its own pass per α, so the cost
  is (ReLU calls × α values) forward+backward passes; the α values of one layer run as one batch
  (chunked by ``internal_batch_size``).

Both return detached per-call tensors shaped like the activations; a dead neuron (``a = 0``) gets 0 (Remark 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_xai.attribution.activations import ReLUInterceptor, require_relus
from lit_xai.attribution.base import target_scores
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
    """Scale the output of ReLU call ``index`` by a per-sample factor and keep it for the gradient."""

    def __init__(self, index: int, alphas: Tensor) -> None:
        self.index = index
        self.alphas = alphas
        self.scaled: Tensor | None = None

    def __call__(self, index: int, activation: Tensor) -> Tensor:
        if index != self.index:
            return activation
        self.scaled = activation * expand_per_sample(self.alphas.to(activation.dtype), activation)
        return self.scaled


def intgrad_contributions(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    steps: int = 11,
    internal_batch_size: int = 256,
) -> NeuronContributions:
    """NeuronIntGrad (seed 001 Eq. 4): per layer, ``|a · mean over α of ∂y/∂a'|`` at ``a' = α·a``.

    ``steps`` α values on a uniform grid over [0, 1] (both ends included, as in the reference code).
    """
    if steps < 2:
        raise ValueError(f"NeuronIntGrad needs at least 2 α steps, got {steps}")
    clean = mct_contributions(model, inputs, target, method)
    target = clean.target
    batch = inputs.shape[0]
    alphas = torch.linspace(0.0, 1.0, steps, device=inputs.device)
    # one row per (α, sample), α-major
    rep_inputs = inputs.detach().repeat(steps, 1, 1, 1).requires_grad_(True)
    rep_target = target.repeat(steps)
    rep_alphas = alphas.repeat_interleave(batch)
    chunk = max(1, internal_batch_size)
    contributions = []
    for index, activation in enumerate(clean.activations):
        grad_sum = torch.zeros_like(activation)
        for start in range(0, rep_inputs.shape[0], chunk):
            stop = min(start + chunk, rep_inputs.shape[0])
            scaler = _ScaleOneCall(index, rep_alphas[start:stop])
            with ReLUInterceptor(scaler) as mode:
                logits = model(rep_inputs[start:stop])
            require_relus(mode.calls, method)
            scores, _ = target_scores(logits, rep_target[start:stop])
            (grad,) = _gradients(scores, [scaler.scaled])
            sample = torch.arange(start, stop, device=inputs.device) % batch
            grad_sum.index_add_(0, sample, grad.detach())
        contributions.append((activation * grad_sum / steps).abs())
    return NeuronContributions(contributions, clean.activations, clean.logits, target)


CONTRIBUTION_KINDS = ("mct", "intgrad")


def neuron_contributions(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    contribution: str = "mct",
    steps: int = 11,
    internal_batch_size: int = 256,
) -> NeuronContributions:
    """Dispatch on ``contribution`` ∈ {"mct", "intgrad"}."""
    if contribution == "mct":
        return mct_contributions(model, inputs, target, method)
    if contribution == "intgrad":
        return intgrad_contributions(model, inputs, target, method, steps, internal_batch_size)
    raise ValueError(f"contribution must be one of {CONTRIBUTION_KINDS}, got {contribution!r}")
