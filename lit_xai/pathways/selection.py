"""Network-wide pathway selection from neuron scores (seed 001 §3.3; seed 000 §3.1).

Scores of all neurons of a sample are ranked together (not layer by layer). With sparsity κ, the threshold
``c_κ`` is the score of rank ``round(κ·N)`` (ascending); a neuron is on the pathway iff its score is strictly
above ``c_κ``. So at most ``(1−κ)·N`` neurons are kept, ties with the threshold are removed, and a neuron with
zero score (a dead neuron under NeuronMCT / NeuronIntGrad, Remark 2) is never kept unless κ = 0, where the
whole network is the pathway.

Scores with large tied blocks (the gates of Distillation Guided Routing: every dead neuron's gate decays by the
same L1 step) would lose the whole tied block under the strict rule; ``exact_count=True`` instead keeps exactly
the ``N − round(κ·N)`` highest positive scores, breaking ties by neuron position (a stable sort).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_xai.attribution.order_statistics import kth_smallest_of_parts
from lit_xai.pathways.neurons import NeuronTensors, expand_per_sample, flatten_neurons, unflatten_neurons


def check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity κ must lie in [0, 1) (the fraction of neurons removed), got {sparsity}")


def sparsity_thresholds(scores: Sequence[Tensor], sparsity: float) -> Tensor:
    """Per-sample threshold ``c_κ`` ``[B]``: the ``round(κ·N)``-th smallest score (−inf when κ·N rounds to 0)."""
    check_sparsity(sparsity)
    removed = int(round(sparsity * sum(s[0].numel() for s in scores)))
    if removed == 0:
        return torch.full((scores[0].shape[0],), float("-inf"), device=scores[0].device, dtype=scores[0].dtype)
    return kth_smallest_of_parts(scores, removed)  # no network-wide copy of the scores


def select_pathway(scores: Sequence[Tensor], sparsity: float, exact_count: bool = False) -> NeuronTensors:
    """Boolean pathway masks (one per ReLU call): neurons whose score is above the network-wide ``c_κ``
    (or, with ``exact_count``, the top ``N − round(κ·N)`` positive scores, ties broken by position)."""
    if not exact_count:
        thresholds = sparsity_thresholds(scores, sparsity)
        return [s > expand_per_sample(thresholds, s) for s in scores]
    check_sparsity(sparsity)
    flat = flatten_neurons(scores)
    kept = flat.shape[1] - int(round(sparsity * flat.shape[1]))
    order = flat.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return unflatten_neurons((ranks < kept) & (flat > 0), scores)
