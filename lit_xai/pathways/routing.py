"""Distillation Guided Routing (seed 001 Eq. 3; Wang et al. 2018), batched per sample.

Every neuron gets a continuous gate ``λ ≥ 0`` multiplying its activation. The gates minimise the distillation
loss — the cross-entropy between the original softmax output and the gated network's output — plus
``γ·‖λ‖₁``, with SGD (lr 0.01, momentum 0.9, γ = 0.01, gates clamped to [0, 100] after each step, as in the
reference code). For each sample the gates of the lowest-loss step at which its prediction is unchanged are
kept. Initialisation ``"ones"`` (DGR(init=1), as in Wang et al.) or ``"uniform"`` (DGR(init=r), U[0, 1), from a
seeded generator). The pathway of sparsity κ is the network-wide top ``1−κ`` of the positive gates (exact count,
ties broken by position: all dead neurons' gates decay identically and form one large tied block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.pathways.neurons import NeuronGate, NeuronTensors, gated
from lit_xai.pathways.selection import select_pathway

METHOD = "distillation_guided_routing"
GATE_INITS = ("ones", "uniform")


def routing_gates(
    model: nn.Module,
    inputs: Tensor,
    template: NeuronTensors,
    init: str = "ones",
    steps: int = 300,
    lr: float = 0.01,
    momentum: float = 0.9,
    l1_weight: float = 0.01,
    max_gate: float = 100.0,
    seed: int = 0,
) -> NeuronTensors:
    """Optimised gates ``λ`` (one tensor per ReLU call, shaped like ``template``, the clean activations)."""
    if init not in GATE_INITS:
        raise ValueError(f"init must be one of {GATE_INITS}, got {init!r}")
    if init == "ones":
        gates = [torch.ones_like(t) for t in template]
    else:
        generator = torch.Generator(device=inputs.device).manual_seed(seed)
        gates = [torch.rand(t.shape, generator=generator, device=inputs.device, dtype=t.dtype) for t in template]
    for g in gates:
        g.requires_grad_(True)
    with torch.no_grad(), gated(NeuronGate([torch.ones_like(t) for t in template], "zero"), METHOD):
        reference = model(inputs)
    teacher = reference.softmax(1)
    predicted = reference.argmax(1)
    best = [g.detach().clone() for g in gates]
    best_loss = torch.full((inputs.shape[0],), float("inf"), device=inputs.device)
    optimizer = torch.optim.SGD(gates, lr=lr, momentum=momentum)
    for _ in range(steps):
        with gated(NeuronGate(gates, "zero"), METHOD):
            logits = model(inputs)
        distill = -(teacher * F.log_softmax(logits, 1)).sum(1)
        loss = distill + l1_weight * sum(g.flatten(1).abs().sum(1) for g in gates)
        with torch.no_grad():  # keep, per sample, the best gates that leave the prediction unchanged
            improved = (logits.argmax(1) == predicted) & (loss < best_loss)
            best_loss = torch.where(improved, loss, best_loss)
            for b, g in zip(best, gates, strict=True):
                b[improved] = g[improved]
        # gradients w.r.t. the gates only: the model's parameters never receive a .grad
        for g, grad in zip(gates, torch.autograd.grad(loss.sum(), gates), strict=True):
            g.grad = grad
        optimizer.step()
        with torch.no_grad():
            for g in gates:
                g.clamp_(0.0, max_gate)
    return best


def routing_pathway(
    model: nn.Module,
    inputs: Tensor,
    template: NeuronTensors,
    sparsity: float,
    init: str = "ones",
    steps: int = 300,
    l1_weight: float = 0.01,
    seed: int = 0,
) -> NeuronTensors:
    """The DGR pathway: neurons whose gate is above the network-wide κ threshold of the gates."""
    gates = routing_gates(model, inputs, template, init, steps=steps, l1_weight=l1_weight, seed=seed)
    return select_pathway(gates, sparsity, exact_count=True)
