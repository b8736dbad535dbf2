"""Critical pathways of ReLU networks (seed 001): neuron contributions, pathway selection (NeuronMCT,
NeuronIntGrad, pathological greedy pruning, Distillation Guided Routing) and their measures.

The command (``python -m lit_xai pathways``) lives in :mod:`lit_xai.pathways.command`; it is not imported here.
"""

from lit_xai.pathways.analysis import SELECTION_METHODS, PathwaySelection, PathwayStatistics, select_pathways
from lit_xai.pathways.contributions import (
    NeuronContributions,
    conductance_contributions,
    input_path_conductance,
    intgrad_contributions,
    mct_contributions,
    neuron_contributions,
)
from lit_xai.pathways.greedy import greedy_pruning_pathway
from lit_xai.pathways.measures import dead_neurons, dead_share, dead_share_per_layer, jaccard, jaccard_per_layer
from lit_xai.pathways.neurons import NeuronGate, flatten_neurons, relu_activations, unflatten_neurons
from lit_xai.pathways.routing import routing_gates, routing_pathway
from lit_xai.pathways.selection import select_pathway, sparsity_thresholds

__all__ = [
    "SELECTION_METHODS",
    "NeuronContributions",
    "NeuronGate",
    "PathwaySelection",
    "PathwayStatistics",
    "conductance_contributions",
    "dead_neurons",
    "dead_share",
    "dead_share_per_layer",
    "flatten_neurons",
    "greedy_pruning_pathway",
    "input_path_conductance",
    "intgrad_contributions",
    "jaccard",
    "jaccard_per_layer",
    "mct_contributions",
    "neuron_contributions",
    "relu_activations",
    "routing_gates",
    "routing_pathway",
    "select_pathway",
    "select_pathways",
    "sparsity_thresholds",
    "unflatten_neurons",
]
