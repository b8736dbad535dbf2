"""PrunePGD_50* (seed 000 §4.8): PrunePGD on the network with only the originally dead neurons pruned.

Every neuron (element of a ReLU call's output) whose activation is zero at the explained image is fixed at zero
while the L2 PGD perturbation is optimised; all neurons active at the image stay. This is the adversarial defence of
Wagner et al. (2019): "gradients are only propagated if a neuron was active in the original image". The seed
reports ≈50% of ResNet-8's neurons dead on CIFAR-10, hence the name; here the pruned share is whatever is dead.

Passes: ``steps`` forward+backward passes, no more. At ``δ = 0`` the pruned network equals the unpruned one in value
and in gradient (a ReLU's gradient is already zero where its output is), so the first PGD step runs on the plain
network and its forward also yields the keep mask; the steps after it run on the pruned network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.attribution.activations import forward_with_activations
from lit_xai.attribution.base import target_scores
from lit_xai.attribution.pruning import PrunePGD
from lit_xai.attribution.registry import register
from lit_xai.pathways.neurons import NeuronGate, gated


@register("prune_pgd_dead")
class PrunePGDDead(PrunePGD):
    """PrunePGD_50*: :class:`~lit_xai.attribution.pruning.PrunePGD` (20 steps, step 0.01, L2 bound 0.1 ← seed 000
    §4.8) with the keep mask ``a(x) > 0`` per neuron instead of the κ lowest contributions."""

    def __init__(self, steps: int = 20, step_size: float = 0.01, bound: float = 0.1) -> None:
        super().__init__(sparsity=0.0, steps=steps, step_size=step_size, bound=bound)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        """L2 PGD ``argmax_δ f_p(x+δ)``, ``‖δ‖₂ ≤ bound`` (seed 000 Eq. 4): ``δ ← Π(δ + step_size·g/‖g‖₂)``."""
        delta = torch.zeros_like(inputs).requires_grad_(True)
        logits, activations = forward_with_activations(model, inputs + delta, self.name)
        scores, target = target_scores(logits, target)
        gate = NeuronGate([a.detach() > 0 for a in activations], "zero")
        del activations  # only the mask is kept for the later steps
        for step in range(self.steps):
            if step > 0:
                delta.requires_grad_(True)
                with gated(gate, self.name):
                    scores, _ = target_scores(model(inputs + delta), target)
            (grad,) = torch.autograd.grad(scores.sum(), delta)
            delta = self.step(delta, grad)
        return delta.detach()
