"""Distilled Gradient Aggregation (seed 004, Jeon et al.).

Local attribution (pluggable): Uniform FullGrad (Eq. 4), ``UFG(x) = x ⊙ ∂y/∂x + (Σ_l Σ b_l ⊙ ∂y/∂b_l) / dim(x)``
— FullGrad's bias-gradient terms summed and spread uniformly over all input elements — or Input×Gradient
(the paper's ablation, App. G).

Distillation sequence (Algorithm 1, Eq. 5-11): ``x̃(0) = x``; for ``n = 0..N`` record ``φ(x̃(n))`` and set
``x̃(n+1) = x ⊙ ((n/N)·M^WC + (1 − n/N)·M^EPC)``, where the Weak-Contributor mask M^WC zeroes every feature whose
rank fraction by ``|φ|`` (``|{k : |φ_k| ≤ |φ_j|}| / dim(x)``, Eq. 6-7) is at most ``n/N``, and the
Extreme-Positive-Contributor mask M^EPC zeroes every feature whose rank fraction by the signed ``φ`` exceeds
``q`` (Eq. 9-10). Aggregation (Eq. 12 / Algorithm 1 line 7): the mean of ``ReLU(φ)`` over the recorded
sequence (all N+1 local attributions, as Algorithm 1 records them). Cost: N+1 forward+backward passes.
The class is fixed to the explained input's (target or prediction at x) for the whole sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_xai.attribution.activations import ReLUInterceptor, require_relus
from lit_xai.attribution.base import AttributionMethod, input_gradient
from lit_xai.attribution.fullgrad import bias_gradient_terms
from lit_xai.attribution.order_statistics import kth_smallest
from lit_xai.attribution.registry import register

LOCAL_ATTRIBUTIONS = ("uniform_fullgrad", "input_x_gradient")


def uniform_fullgrad(model: nn.Module, inputs: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
    """(UFG map ``[B, C, H, W]``, explained target) — seed 004 Eq. 4 with Ψ_u spreading the bias terms."""
    terms = bias_gradient_terms(model, inputs, target)
    bias_total = torch.zeros(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
    for term in terms.bias_terms:
        bias_total = bias_total + term.flatten(1).sum(1)
    spread = bias_total / inputs[0].numel()
    return inputs * terms.input_grad + spread.view(-1, 1, 1, 1), terms.target


def input_x_gradient(model: nn.Module, inputs: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
    """(``x ⊙ ∂y/∂x``, explained target) — the alternative local attribution of seed 004 App. G."""
    grad, _, target = input_gradient(model, inputs, target)
    return inputs * grad, target


def rank_fraction_at_most(values: Tensor, fraction: float) -> Tensor:
    """Per sample, whether ``|{k : v_k ≤ v_j}| / dim ≤ fraction`` for every element j (ties share the largest
    rank), ``[B, ...]`` bool. A threshold, not a full ranking: with ``m`` the largest count allowed, exactly the
    elements below the ``(m+1)``-th smallest value qualify — one ``topk`` per sample instead of a sort."""
    flat = values.flatten(1)
    dim = flat.shape[1]
    counts = torch.arange(dim + 1, device=flat.device).to(flat.dtype)
    allowed = int(((counts / dim) <= fraction).sum()) - 1  # the largest count c with c / dim ≤ fraction
    if allowed >= dim:
        return torch.ones_like(values, dtype=torch.bool)
    threshold = kth_smallest(flat, allowed + 1)
    return (flat < threshold[:, None]).view_as(values)


def weak_contributor_mask(local: Tensor, step: int, steps: int) -> Tensor:
    """M^WC (Eq. 6-7): 0 where the rank fraction of ``|φ|`` is ≤ n/N, else 1."""
    return (~rank_fraction_at_most(local.abs(), step / steps)).to(local.dtype)


def extreme_positive_contributor_mask(local: Tensor, quantile: float) -> Tensor:
    """M^EPC (Eq. 9-10): 1 where the rank fraction of the signed ``φ`` is ≤ q, else 0."""
    return rank_fraction_at_most(local, quantile).to(local.dtype)


@register("uniform_fullgrad")
class UniformFullGrad(AttributionMethod):
    """Uniform FullGrad (seed 004 Eq. 4): ``x ⊙ ∂y/∂x`` plus the summed bias-gradient terms spread uniformly."""

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        return uniform_fullgrad(model, inputs, target)[0]


@register("dga")
class DistilledGradientAggregation(AttributionMethod):
    """DGA (seed 004 Algorithm 1): ``steps`` = N (30), ``epc_quantile`` = q (0.9), ``local_attribution`` ∈
    {"uniform_fullgrad", "input_x_gradient"}. Map ``[B, C, H, W]``, non-negative."""

    def __init__(self, steps: int = 30, epc_quantile: float = 0.9, local_attribution: str = "uniform_fullgrad") -> None:
        if steps < 1:
            raise ValueError(f"DGA needs steps N ≥ 1, got {steps}")
        if not 0.0 < epc_quantile <= 1.0:
            raise ValueError(f"epc_quantile q must lie in (0, 1], got {epc_quantile}")
        if local_attribution not in LOCAL_ATTRIBUTIONS:
            raise ValueError(f"local_attribution must be one of {LOCAL_ATTRIBUTIONS}, got {local_attribution!r}")
        self.steps = steps
        self.epc_quantile = epc_quantile
        self.local_attribution = local_attribution

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        local_fn = uniform_fullgrad if self.local_attribution == "uniform_fullgrad" else input_x_gradient
        distilled = inputs
        total = torch.zeros_like(inputs)
        for step in range(self.steps + 1):
            if step == 0:  # the distillation argument (Sec. 3.1) is about piecewise-linear ReLU networks
                with ReLUInterceptor(lambda _index, activation: activation, self.name) as mode:
                    local, target = local_fn(model, distilled, target)
                require_relus(mode.calls, self.name)
            else:
                local, target = local_fn(model, distilled, target)
            local = local.detach()
            total += local.clamp_min(0)
            if step == self.steps:
                break
            weight = step / self.steps
            mask = weight * weak_contributor_mask(local, step, self.steps) + (1 - weight) * (
                extreme_positive_contributor_mask(local, self.epc_quantile)
            )
            distilled = inputs * mask
        return total / (self.steps + 1)
