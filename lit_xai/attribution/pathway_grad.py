"""Pathway Gradient (seed 001, Khakzar et al., CVPR 2021): the input gradient of a critical pathway.

1. Neuron contributions: NeuronMCT ``|a·∂y/∂a|`` (Eq. 2), NeuronIntGrad (Eq. 4: one layer scaled at a time,
   S α values of a quadrature rule per layer, default the 5-point midpoint rule), or — a named alternative that is
   not Eq. 4 — the neurons' conductance along the input path ``α·x`` (all layers at once, S passes), see
   :mod:`lit_xai.pathways.contributions`.
2. Network-wide selection of the top ``1−κ`` neurons (§3.3); dead neurons are never selected (Remark 2).
3. The pathway network ``Φ̂(x; e)``: neurons off the pathway are replaced by constants equal to their original
   activation (§4.1, the default ``replacement="constant"``: the activation pattern is unchanged and the network
   is locally linear at x, Prop. 5) or, as in the authors' code, multiplied by zero (``replacement="zero"``).
4. The map is ``∂Φ̂/∂x`` ``[B, C, H, W]``.

Registry names: ``neuron_mct``, ``neuron_intgrad``, ``neuron_conductance``, the smoothed ``*`` variants
``neuron_mct_star`` / ``neuron_intgrad_star`` (morphological opening of the absolute map, §4.3), and the
input-space counterparts of the paper's tables, ``input_mct`` (= Input×Gradient) and ``input_intgrad``
(= Integrated Gradients).
Sparsity: the paper uses κ = 70% on ResNet-50 and 90% on VGG-16 (App. C); the default here is 0.9. κ counts all
neurons, dead ones included: if κ is below the share of zero-contribution neurons (dead, or active but unused, e.g.
not selected by a max-pool: 79% in the digits CNN of ``benchmarks/report_pathways.py``), the pathway is every
contributing neuron and the pathway gradient equals the plain gradient.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from lit_xai.attribution.activations import ReLUInterceptor, require_relus
from lit_xai.attribution.base import AttributionError, AttributionMethod, target_scores
from lit_xai.attribution.batching import check_max_batch
from lit_xai.attribution.gradients import InputXGradient, IntegratedGradients
from lit_xai.attribution.postprocess import morphological_opening
from lit_xai.attribution.registry import register
from lit_xai.pathways.contributions import (
    CONDUCTANCE_STEPS,
    CONTRIBUTION_KINDS,
    INTGRAD_RULE,
    INTGRAD_STEPS,
    ScoringGraph,
    intgrad_alphas,
    mct_contributions,
    neuron_contributions,
)
from lit_xai.pathways.neurons import NeuronGate, Replacement, check_replacement, expand_per_sample, gated
from lit_xai.pathways.selection import check_sparsity, sparsity_thresholds


def pathway_masks(scores: list[Tensor], sparsity: float) -> list[Tensor]:
    """:func:`~lit_xai.pathways.selection.select_pathway`'s masks (score above the network-wide ``c_κ``) as 0/1 in
    the scores' dtype: written by the comparison itself, so the gated pass needs no conversion (a bool mask converted
    afterwards cost 6× the comparison on CPU)."""
    thresholds = sparsity_thresholds(scores, sparsity)
    return [torch.gt(s, expand_per_sample(thresholds, s), out=torch.empty_like(s)) for s in scores]


class PrunedReLUs:
    """``ReLUInterceptor`` transform of the pruned network (seed 000 Eq. 1, ``a·m`` with 0/1 masks ``m``): every ReLU
    output is multiplied by its mask in place, through ``.data`` so that autograd does not record it.

    The ReLU node saved its output for its backward ``g·[out > 0]``; that output is now ``a·m``, so the backward is
    ``g·m·[a > 0]``, the pruned network's own derivative: the same values and gradients as
    ``NeuronGate(keep, "zero")`` (``a·m`` as a new tensor, then ``g·m``), without the copy forward and the
    multiplication backward per layer. The model must continue with the ReLU's return value (as for every
    ``ReLUInterceptor`` transform), and intercepted calls are ``relu``/``relu_`` only, whose backward reads the output.
    """

    def __init__(self, keep: Sequence[Tensor]) -> None:
        self.keep = list(keep)

    def __call__(self, index: int, activation: Tensor) -> Tensor:
        if index >= len(self.keep):
            raise AttributionError(
                f"the forward pass made more ReLU calls ({index + 1}) than the pruned network has masks "
                f"({len(self.keep)})"
            )
        if self.keep[index].shape != activation.shape:
            raise AttributionError(
                f"pruning mask of ReLU call {index} has shape {tuple(self.keep[index].shape)}, "
                f"the activation has shape {tuple(activation.shape)}"
            )
        activation.data.mul_(self.keep[index])
        return activation


@contextlib.contextmanager
def pruned(keep: Sequence[Tensor], method: str) -> Iterator[ReLUInterceptor]:
    """Run the block in the pruned network of the 0/1 masks ``keep`` (:class:`PrunedReLUs`); check the call count."""
    with ReLUInterceptor(PrunedReLUs(keep), method) as mode:
        yield mode
    require_relus(mode.calls, method)
    if mode.calls != len(keep):
        raise AttributionError(f"{method}: the forward pass made {mode.calls} ReLU calls, the masks cover {len(keep)}")


def pathway_gradient(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    keep: list[Tensor],
    activations: list[Tensor],
    replacement: Replacement,
    method: str,
) -> tuple[Tensor, Tensor]:
    """(∂Φ̂/∂x, logits of Φ̂ at x) for the pathway ``keep`` (one forward + backward; ``"zero"``: 0/1 masks in
    :func:`pruned`)."""
    x = inputs.detach().requires_grad_(True)
    with pruned(keep, method) if replacement == "zero" else gated(NeuronGate(keep, replacement, activations), method):
        logits = model(x)
    scores, _ = target_scores(logits, target)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad, logits.detach()


def retained_pathway_gradient(graph: ScoringGraph, keep: list[Tensor]) -> Tensor:
    """∂Φ̂/∂x of the constant-replacement pathway network (§4.1) from the scoring pass's retained graph.

    At the explained input Φ̂ computes exactly the network's values (off-pathway neurons are held at their own
    activation, ``a·m + a·(1−m) = a``), so its graph is the scoring pass's graph with each ReLU output's gradient
    multiplied by its 0/1 mask: a second backward with the masks as tensor hooks gives the map of
    :func:`pathway_gradient` without its forward (the hook multiplies ``g·m`` as its ``a·m`` node did). The scoring
    pass already differentiated through every recorded output, so none was modified in place after its call."""
    masks = zip(graph.activations, keep, strict=True)
    handles = [a.register_hook(functools.partial(torch.mul, other=m)) for a, m in masks]
    try:
        (grad,) = torch.autograd.grad(graph.score, graph.inputs)
    finally:
        for handle in handles:
            handle.remove()
    return grad


@register("pathway_grad")
class PathwayGrad(AttributionMethod):
    """Gradient of the critical pathway selected by ``contribution`` ∈ {"mct", "intgrad", "conductance"} at
    sparsity κ.

    ``steps``: α values of NeuronIntGrad (default 5, with ``rule="midpoint"``; see
    :func:`~lit_xai.pathways.contributions.intgrad_alphas` for ``"reference"``, the authors' code) or of the
    conductance (default 11); ``max_batch`` bounds the (α, image) rows per pass — ``None`` (default): the shared
    activation-memory budget of :func:`~lit_xai.attribution.batching.rows_per_chunk`, as Integrated Gradients (the
    rows, not the result, change with it); ``share_prefix`` (NeuronIntGrad)
    replays the layers before the scaled one from the clean pass (same result, cheaper; ``False`` is the fallback
    for models with untracked per-sample tensors).
    ``opening_kernel``: if set, the absolute map is smoothed by a morphological opening (the paper's ``*``
    variants).
    """

    def __init__(
        self,
        contribution: str = "mct",
        sparsity: float = 0.9,
        replacement: Replacement = "constant",
        steps: int | None = None,
        max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
        opening_kernel: int | None = None,
        share_prefix: bool = True,
        rule: str = INTGRAD_RULE,
    ) -> None:
        check_sparsity(sparsity)
        check_replacement(replacement)
        if contribution not in CONTRIBUTION_KINDS:
            raise ValueError(f"contribution must be one of {CONTRIBUTION_KINDS}, got {contribution!r}")
        if steps is None:
            steps = CONDUCTANCE_STEPS if contribution == "conductance" else INTGRAD_STEPS
        if contribution == "intgrad":
            intgrad_alphas(rule, steps)  # validate early
        if steps < 2 and contribution == "conductance":
            raise ValueError(f"{contribution} needs at least 2 α steps, got {steps}")
        self.contribution = contribution
        self.sparsity = sparsity
        self.replacement = replacement
        self.steps = steps
        self.max_batch = check_max_batch(max_batch)
        self.opening_kernel = opening_kernel
        self.share_prefix = share_prefix
        self.rule = rule

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        if self.contribution == "mct":  # one pass for all neurons: no rows to chunk; its graph serves Φ̂ too
            contrib = mct_contributions(model, inputs, target, self.name, retain_graph=self.replacement == "constant")
        else:
            contrib = neuron_contributions(
                model,
                inputs,
                target,
                self.name,
                self.contribution,
                self.steps,
                self.max_batch,
                self.share_prefix,
                self.rule,
            )
        keep = pathway_masks(contrib.contributions, self.sparsity)
        if contrib.graph is not None:
            grad = retained_pathway_gradient(contrib.graph, keep)
        else:
            grad, _ = pathway_gradient(
                model, inputs, contrib.target, keep, contrib.activations, self.replacement, self.name
            )
        if self.opening_kernel is not None:
            return morphological_opening(grad.abs(), self.opening_kernel)
        return grad


@register("neuron_mct")
class NeuronMCT(PathwayGrad):
    """Pathway gradient with NeuronMCT contributions ``|a·∂y/∂a|`` (seed 001 Eq. 2)."""

    def __init__(
        self, sparsity: float = 0.9, replacement: Replacement = "constant", opening_kernel: int | None = None
    ) -> None:
        super().__init__("mct", sparsity, replacement, opening_kernel=opening_kernel)


@register("neuron_intgrad")
class NeuronIntGrad(PathwayGrad):
    """Pathway gradient with NeuronIntGrad contributions (seed 001 Eq. 4), ``steps`` α of the quadrature ``rule``.

    Default: the 5-point midpoint rule, the integral of Eq. 4 (chosen by the accuracy-vs-cost measurement in
    docs/pathways.md); ``rule="reference", steps=11`` is the authors' published code.
    """

    def __init__(
        self,
        sparsity: float = 0.9,
        replacement: Replacement = "constant",
        steps: int = INTGRAD_STEPS,
        max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
        opening_kernel: int | None = None,
        share_prefix: bool = True,
        rule: str = INTGRAD_RULE,
    ) -> None:
        super().__init__(
            "intgrad", sparsity, replacement, steps, max_batch, opening_kernel, share_prefix, rule
        )


@register("neuron_conductance")
class NeuronConductance(PathwayGrad):
    """Pathway gradient with the neurons' conductance along the input path ``α·x`` as contributions.

    Not Eq. 4 (which scales one layer with the rest of the network held at x): every layer moves with the input,
    so all contributions cost ``steps`` forward+backward passes instead of about ``layers × steps``. Per layer
    that is a cut of the network the contributions still sum to ``y(x) − y(0)`` (completeness), so they remain
    comparable across layers (§3.3's argument for network-wide ranking).
    """

    def __init__(
        self,
        sparsity: float = 0.9,
        replacement: Replacement = "constant",
        steps: int = CONDUCTANCE_STEPS,
        max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
        opening_kernel: int | None = None,
    ) -> None:
        super().__init__("conductance", sparsity, replacement, steps, max_batch, opening_kernel)


@register("neuron_mct_star")
class NeuronMCTStar(NeuronMCT):
    """NeuronMCT* : the NeuronMCT map's absolute value smoothed by a morphological opening."""

    def __init__(self, sparsity: float = 0.9, replacement: Replacement = "constant", opening_kernel: int = 3) -> None:
        super().__init__(sparsity, replacement, opening_kernel)


@register("neuron_intgrad_star")
class NeuronIntGradStar(NeuronIntGrad):
    """NeuronIntGrad* : the NeuronIntGrad map's absolute value smoothed by a morphological opening."""

    def __init__(
        self,
        sparsity: float = 0.9,
        replacement: Replacement = "constant",
        steps: int = INTGRAD_STEPS,
        max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
        opening_kernel: int = 3,
        share_prefix: bool = True,
        rule: str = INTGRAD_RULE,
    ) -> None:
        super().__init__(sparsity, replacement, steps, max_batch, opening_kernel, share_prefix, rule)


@register("input_mct")
class InputMCT(InputXGradient):
    """InputMCT of seed 001's tables: the marginal-contribution Taylor score on pixels, i.e. Input×Gradient."""


@register("input_intgrad")
class InputIntGrad(IntegratedGradients):
    """InputIntGrad of seed 001's tables: Integrated Gradients on pixels (zero baseline)."""


__all__ = [
    "InputIntGrad",
    "InputMCT",
    "NeuronConductance",
    "NeuronIntGrad",
    "NeuronIntGradStar",
    "NeuronMCT",
    "NeuronMCTStar",
    "PathwayGrad",
    "PrunedReLUs",
    "pathway_gradient",
    "pathway_masks",
    "pruned",
    "retained_pathway_gradient",
]
