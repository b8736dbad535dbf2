"""Pathological greedy pruning (seed 001 Algorithm 1): a pruning-objective solver that selects dead neurons.

Start with every neuron kept. Repeatedly score the neurons of the *currently pruned* network by
``|a·∂y/∂a|`` (Eq. 2), and remove the lowest-scoring neurons that are not dead (score ≠ 0) — a fraction
``step_fraction`` of all neurons per step (the reference code removes 1% per step) — then re-rank. Dead neurons
are never removed, so removing active neurons can switch originally dead neurons on; they then enter the
pathway. The loop stops, per sample, once at most ``(1−κ)·N`` kept neurons still carry a nonzero score; the
pathway is those neurons (the ones the pruned network uses).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import target_scores
from lit_xai.pathways.neurons import NeuronGate, NeuronTensors, flatten_neurons, gated, unflatten_neurons
from lit_xai.pathways.selection import check_sparsity

METHOD = "greedy_pruning"


def _scores_in_pruned_network(
    model: nn.Module, inputs: Tensor, target: Tensor, keep: NeuronTensors
) -> tuple[NeuronTensors, Tensor]:
    """|a·∂y/∂a| of the neurons of the zero-masked network ``keep`` (pruned neurons output 0 ⇒ score 0)."""
    gate = NeuronGate(keep, "zero", record=True)
    with gated(gate, METHOD):
        logits = model(inputs.detach().requires_grad_(True))
    scores, _ = target_scores(logits, target)
    grads = torch.autograd.grad(scores.sum(), gate.outputs, allow_unused=True)
    contributions = [
        (out.detach() * (torch.zeros_like(out) if g is None else g)).abs()
        for out, g in zip(gate.outputs, grads, strict=True)
    ]
    return contributions, logits.detach()


def greedy_pruning_pathway(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    sparsity: float,
    template: NeuronTensors,
    step_fraction: float = 0.01,
    max_steps: int = 1000,
) -> NeuronTensors:
    """Algorithm 1, batched (each sample prunes on its own). ``template``: the clean activations (for shapes)."""
    check_sparsity(sparsity)
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction must lie in (0, 1], got {step_fraction}")
    keep_flat = torch.ones_like(flatten_neurons(template), dtype=torch.bool)
    total = keep_flat.shape[1]
    budget = int(math.floor((1 - sparsity) * total))
    per_step = max(1, int(round(step_fraction * total)))
    for _ in range(max_steps):
        scores, _ = _scores_in_pruned_network(model, inputs, target, unflatten_neurons(keep_flat, template))
        flat = flatten_neurons(scores)
        active = keep_flat & (flat > 0)
        excess = active.sum(1) - budget
        if bool((excess <= 0).all()):
            break
        removals = excess.clamp(min=0, max=per_step)
        candidates = torch.where(active, flat, torch.full_like(flat, float("inf")))
        ranks = candidates.argsort(dim=1).argsort(dim=1)
        keep_flat &= ~(ranks < removals[:, None])
    scores, _ = _scores_in_pruned_network(model, inputs, target, unflatten_neurons(keep_flat, template))
    return unflatten_neurons(keep_flat & (flatten_neurons(scores) > 0), template)
