"""Network-wide pathway selection from neuron scores (seed 001 §3.3; seed 000 §3.1).

Scores of all neurons of a sample are ranked together (not layer by layer). With sparsity κ, the threshold
``c_κ`` is the score of rank ``round(κ·N)`` (ascending); a neuron is on the pathway iff its score is strictly
above ``c_κ``. So at most ``(1−κ)·N`` neurons are kept, ties with the threshold are removed, and a neuron with
zero score (a dead neuron under NeuronMCT / NeuronIntGrad, Remark 2) is never kept unless κ = 0, where the
whole network is the pathway.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_xai.pathways.neurons import NeuronTensors, expand_per_sample, flatten_neurons


def check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity κ must lie in [0, 1) (the fraction of neurons removed), got {sparsity}")


def sparsity_thresholds(scores: Sequence[Tensor], sparsity: float) -> Tensor:
    """Per-sample threshold ``c_κ`` ``[B]``: the ``round(κ·N)``-th smallest score (−inf when κ·N rounds to 0)."""
    check_sparsity(sparsity)
    flat = flatten_neurons(scores)
    removed = int(round(sparsity * flat.shape[1]))
    if removed == 0:
        return torch.full((flat.shape[0],), float("-inf"), device=flat.device, dtype=flat.dtype)
    return flat.kthvalue(removed, dim=1).values


def select_pathway(scores: Sequence[Tensor], sparsity: float) -> NeuronTensors:
    """Boolean pathway masks (one per ReLU call): neurons whose score is above the network-wide ``c_κ``."""
    thresholds = sparsity_thresholds(scores, sparsity)
    return [s > expand_per_sample(thresholds, s) for s in scores]
