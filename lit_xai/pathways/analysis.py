"""Select pathways with several methods and accumulate the seed 001 §3.4 measures over a dataset.

Methods (names used in plots and summaries):
``neuron_mct`` / ``neuron_intgrad`` (contribution-based, §3.3), ``greedy_pruning`` (Algorithm 1),
``dgr_init_1`` / ``dgr_init_r`` (Distillation Guided Routing with gates initialised to 1 or U[0, 1)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import preserved_model_state
from lit_xai.pathways.contributions import intgrad_contributions, mct_contributions
from lit_xai.pathways.greedy import greedy_pruning_pathway
from lit_xai.pathways.measures import dead_neurons, dead_share, dead_share_per_layer, jaccard, jaccard_per_layer
from lit_xai.pathways.neurons import NeuronTensors
from lit_xai.pathways.routing import ROUTING_MAX_ROUNDS, ROUTING_STEPS, routing_pathway
from lit_xai.pathways.selection import check_sparsity, select_pathway

SELECTION_METHODS = ("neuron_mct", "neuron_intgrad", "greedy_pruning", "dgr_init_1", "dgr_init_r")


@dataclass
class PathwaySelection:
    """Pathways of one batch by method, with the originally dead neurons and the explained target."""

    pathways: dict[str, NeuronTensors]
    dead: NeuronTensors
    target: Tensor


def select_pathways(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None = None,
    sparsity: float = 0.9,
    methods: Sequence[str] = SELECTION_METHODS,
    intgrad_steps: int = 11,
    greedy_step_fraction: float = 0.01,
    routing_steps: int = ROUTING_STEPS,
    routing_l1_weight: float = 0.01,
    seed: int = 0,
    routing_max_rounds: int = ROUTING_MAX_ROUNDS,
) -> PathwaySelection:
    """Pathways of sparsity κ for ``inputs`` by each method in ``methods``; the model is left unchanged."""
    check_sparsity(sparsity)
    unknown = sorted(set(methods) - set(SELECTION_METHODS))
    if unknown:
        raise ValueError(f"unknown pathway selection method(s) {unknown}; choose from {SELECTION_METHODS}")
    inputs = inputs.detach()
    with torch.inference_mode(False), torch.enable_grad(), preserved_model_state(model, freeze=True):
        if inputs.is_inference():
            inputs = inputs.clone()
        clean = mct_contributions(model, inputs, target, "pathway selection")
        target, template = clean.target, clean.activations
        pathways: dict[str, NeuronTensors] = {}
        for method in methods:
            if method == "neuron_mct":
                pathways[method] = select_pathway(clean.contributions, sparsity)
            elif method == "neuron_intgrad":
                contrib = intgrad_contributions(model, inputs, target, method, intgrad_steps)
                pathways[method] = select_pathway(contrib.contributions, sparsity)
            elif method == "greedy_pruning":
                pathways[method] = greedy_pruning_pathway(
                    model, inputs, target, sparsity, template, greedy_step_fraction
                )
            else:
                init = "ones" if method == "dgr_init_1" else "uniform"
                pathways[method] = routing_pathway(
                    model, inputs, template, sparsity, init, routing_steps, routing_l1_weight, seed, routing_max_rounds
                )
    return PathwaySelection(pathways, dead_neurons(template), target)


@dataclass
class PathwayStatistics:
    """Running sums of the measures over samples; :meth:`summary` gives the dataset means."""

    reference: str = "neuron_intgrad"
    count: int = 0
    dead: dict[str, float] = field(default_factory=dict)
    dead_layers: dict[str, Tensor] = field(default_factory=dict)
    overlap: dict[tuple[str, str], float] = field(default_factory=dict)
    overlap_layers: dict[str, Tensor] = field(default_factory=dict)

    def update(self, selection: PathwaySelection) -> None:
        names = list(selection.pathways)
        for name in names:
            path = selection.pathways[name]
            self.dead[name] = self.dead.get(name, 0.0) + float(dead_share(path, selection.dead).sum())
            layers = dead_share_per_layer(path, selection.dead).sum(0).cpu()
            self.dead_layers[name] = self.dead_layers.get(name, torch.zeros_like(layers)) + layers
            for other in names:
                value = float(jaccard(path, selection.pathways[other]).sum())
                self.overlap[(name, other)] = self.overlap.get((name, other), 0.0) + value
            if self.reference in selection.pathways:
                per_layer = jaccard_per_layer(path, selection.pathways[self.reference]).sum(0).cpu()
                self.overlap_layers[name] = self.overlap_layers.get(name, torch.zeros_like(per_layer)) + per_layer
        self.count += selection.target.shape[0]

    def summary(self) -> dict:
        """Means over the samples seen: dead share (network, per layer), Jaccard matrix, per-layer Jaccard."""
        if self.count == 0:
            raise ValueError("no samples were analysed")
        n = self.count
        names = list(self.dead)
        return {
            "samples": n,
            "methods": names,
            "dead_share": {k: v / n for k, v in self.dead.items()},
            "dead_share_per_layer": {k: (v / n).tolist() for k, v in self.dead_layers.items()},
            "jaccard": [[self.overlap[(a, b)] / n for b in names] for a in names],
            "jaccard_reference": self.reference,
            "jaccard_per_layer": {k: (v / n).tolist() for k, v in self.overlap_layers.items()},
        }
