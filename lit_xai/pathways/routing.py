"""Distillation Guided Routing (seed 001 Eq. 3; Wang et al. 2018), batched per sample.

Every neuron gets a continuous gate ``λ ≥ 0`` multiplying its activation. The gates minimise the distillation
loss — the cross-entropy between the original softmax output and the gated network's output — plus
``γ·‖λ‖₁``, with SGD. Defaults are those of the authors' code (CAMP-eXplain-AI/PathwayGrad, ``cdrp/main.py`` for
init 1, ``cdrp/main2.py`` for random init): 1000 steps, lr 0.01, momentum 0.9, γ = 0.01, gates clamped to
[0, 100] after each step. For each sample the gates of the lowest-loss step at which its prediction is unchanged
are kept. If no step of a round keeps the prediction, the optimisation continues from where it stopped with γ/10
(``main2.py``'s retry loop, at most 100 rounds); a sample still unresolved after ``max_rounds`` gets a
``UserWarning`` and its last gates. With init 1 the first step is the unchanged network, so no retry is needed.
Initialisation ``"ones"`` (DGR(init=1), as in Wang et al.) or ``"uniform"`` (DGR(init=r), U[0, 1), from a
seeded generator). The pathway of sparsity κ is the network-wide top ``1−κ`` of the positive gates (exact count,
ties broken by position: all dead neurons' gates decay identically and form one large tied block).

Known deviation: the loss uses ``log_softmax`` (exact) where the authors' code takes ``log(softmax + 1e-20)``;
the two differ only where a probability underflows.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.pathways.neurons import NeuronGate, NeuronTensors, expand_per_sample, gated
from lit_xai.pathways.selection import select_pathway

METHOD = "distillation_guided_routing"
GATE_INITS = ("ones", "uniform")
ROUTING_STEPS = 1000  # steps per round: ``for i in range(1000)`` in the authors' cdrp/main.py and main2.py
ROUTING_MAX_ROUNDS = 100  # γ/10 retry rounds: ``while cg_list is None and c < 100`` in the authors' cdrp/main2.py


def _initial_gates(template: NeuronTensors, init: str, seed: int, device: torch.device) -> NeuronTensors:
    if init == "ones":
        return [torch.ones_like(t) for t in template]
    generator = torch.Generator(device=device).manual_seed(seed)
    return [torch.rand(t.shape, generator=generator, device=device, dtype=t.dtype) for t in template]


def _optimise_round(
    model: nn.Module,
    inputs: Tensor,
    teacher: Tensor,
    predicted: Tensor,
    gates: NeuronTensors,
    velocity: NeuronTensors,
    l1_weight: float,
    steps: int,
    lr: float,
    momentum: float,
    max_gate: float,
) -> tuple[NeuronTensors, Tensor]:
    """``steps`` SGD steps on ``gates`` (updated in place, with their momentum ``velocity``; torch.optim.SGD's
    update without dampening). Returns the best prediction-keeping gates per row and whether a row found any."""
    best = [g.clone() for g in gates]
    best_loss = torch.full((inputs.shape[0],), float("inf"), device=inputs.device)
    for _ in range(steps):
        leaves = [g.requires_grad_(True) for g in gates]
        with gated(NeuronGate(leaves, "zero"), METHOD):
            logits = model(inputs)
        distill = -(teacher * F.log_softmax(logits, 1)).sum(1)
        loss = distill + l1_weight * sum(g.flatten(1).abs().sum(1) for g in leaves)
        # gradients w.r.t. the gates only: the model's parameters never receive a .grad
        grads = torch.autograd.grad(loss.sum(), leaves)
        with torch.no_grad():  # keep, per sample, the best gates that leave the prediction unchanged
            improved = (logits.argmax(1) == predicted) & (loss < best_loss)
            best_loss = torch.where(improved, loss, best_loss)
            for b, g, v, grad in zip(best, gates, velocity, grads, strict=True):
                # a per-sample select, not b[improved] = g[improved]: no nonzero (a device sync on GPU) per step
                torch.where(expand_per_sample(improved, b), g, b, out=b)
                g.requires_grad_(False)
                v.mul_(momentum).add_(grad)
                g.add_(v, alpha=-lr).clamp_(0.0, max_gate)
    return best, torch.isfinite(best_loss)


def routing_gates(
    model: nn.Module,
    inputs: Tensor,
    template: NeuronTensors,
    init: str = "ones",
    steps: int = ROUTING_STEPS,
    lr: float = 0.01,
    momentum: float = 0.9,
    l1_weight: float = 0.01,
    max_gate: float = 100.0,
    seed: int = 0,
    max_rounds: int = ROUTING_MAX_ROUNDS,
) -> NeuronTensors:
    """Optimised gates ``λ`` (one tensor per ReLU call, shaped like ``template``, the clean activations).

    Rows whose prediction no step of a round kept continue for another round with γ/10 (up to ``max_rounds``).
    """
    if init not in GATE_INITS:
        raise ValueError(f"init must be one of {GATE_INITS}, got {init!r}")
    if steps < 1 or max_rounds < 1:
        raise ValueError(f"DGR needs steps ≥ 1 and max_rounds ≥ 1, got steps={steps}, max_rounds={max_rounds}")
    gates = _initial_gates(template, init, seed, inputs.device)
    velocity = [torch.zeros_like(g) for g in gates]
    with torch.no_grad(), gated(NeuronGate([torch.ones_like(t) for t in template], "zero"), METHOD):
        reference = model(inputs)
    teacher = reference.softmax(1)
    predicted = reference.argmax(1)
    result = [g.clone() for g in gates]
    rows = torch.arange(inputs.shape[0], device=inputs.device)
    for round_index in range(max_rounds):
        gamma = l1_weight / 10**round_index
        sub_gates = [g[rows] for g in gates]
        sub_velocity = [v[rows] for v in velocity]
        best, found = _optimise_round(
            model, inputs[rows], teacher[rows], predicted[rows], sub_gates, sub_velocity, gamma, steps, lr, momentum,
            max_gate,
        )
        for r, g, v, b, sg, sv in zip(result, gates, velocity, best, sub_gates, sub_velocity, strict=True):
            r[rows] = torch.where(expand_per_sample(found, b), b, sg)  # unresolved rows: the last iterate so far
            g[rows], v[rows] = sg, sv
        rows = rows[~found]
        if rows.numel() == 0:
            break
    if rows.numel() > 0:
        warnings.warn(
            f"{METHOD}: for {rows.numel()} of {inputs.shape[0]} samples (indices {rows.tolist()}) no step of "
            f"{max_rounds} round(s) × {steps} steps (γ from {l1_weight} down to {gamma:g}) kept the prediction; "
            "their gates are the last iterate, not a prediction-preserving routing",
            UserWarning,
            stacklevel=2,
        )
    return result


def routing_pathway(
    model: nn.Module,
    inputs: Tensor,
    template: NeuronTensors,
    sparsity: float,
    init: str = "ones",
    steps: int = ROUTING_STEPS,
    l1_weight: float = 0.01,
    seed: int = 0,
    max_rounds: int = ROUTING_MAX_ROUNDS,
) -> NeuronTensors:
    """The DGR pathway: neurons whose gate is above the network-wide κ threshold of the gates."""
    gates = routing_gates(
        model, inputs, template, init, steps=steps, l1_weight=l1_weight, seed=seed, max_rounds=max_rounds
    )
    return select_pathway(gates, sparsity, exact_count=True)
