"""Pathway measures of seed 001 §3.4: share of originally dead neurons, Jaccard overlap (network-wide, per layer).

A pathway is a list of boolean masks (one ``[B, ...]`` tensor per ReLU call); every measure is per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_xai.pathways.neurons import flatten_neurons


def dead_neurons(activations: Sequence[Tensor]) -> list[Tensor]:
    """Masks of the neurons that are dead (``a ≤ 0``) in the original network."""
    return [a <= 0 for a in activations]


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` with 0 where the denominator is 0 (an empty pathway has no dead share)."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), torch.zeros_like(numerator))


def dead_share(pathway: Sequence[Tensor], dead: Sequence[Tensor]) -> Tensor:
    """Fraction of the pathway's neurons that were originally dead, ``[B]`` (seed 001 Fig. 1)."""
    path, dead_flat = flatten_neurons(pathway), flatten_neurons(dead)
    return _ratio((path & dead_flat).sum(1), path.sum(1))


def dead_share_per_layer(pathway: Sequence[Tensor], dead: Sequence[Tensor]) -> Tensor:
    """Per ReLU call, the fraction of the pathway's neurons there that were originally dead, ``[B, L]``."""
    return torch.stack(
        [_ratio((p & d).flatten(1).sum(1), p.flatten(1).sum(1)) for p, d in zip(pathway, dead, strict=True)], 1
    )


def _jaccard(a: Tensor, b: Tensor) -> Tensor:
    return _ratio((a & b).sum(1), (a | b).sum(1))


def jaccard(first: Sequence[Tensor], second: Sequence[Tensor]) -> Tensor:
    """Network-wide Jaccard similarity ``|e₁ ∧ e₂| / |e₁ ∨ e₂|`` of two pathways, ``[B]`` (seed 001 Fig. 2a)."""
    return _jaccard(flatten_neurons(first), flatten_neurons(second))


def jaccard_per_layer(first: Sequence[Tensor], second: Sequence[Tensor]) -> Tensor:
    """Jaccard similarity per ReLU call, ``[B, L]`` (seed 001 Fig. 2b)."""
    return torch.stack([_jaccard(a.flatten(1), b.flatten(1)) for a, b in zip(first, second, strict=True)], 1)
