"""Neuron contributions to the response ``y_t`` (seed 001 §3.3; seed 000 Eq. 3).

- NeuronMCT (marginal contribution, Taylor): ``c = |a · ∂y/∂a|`` — one forward + backward for all neurons.
- NeuronIntGrad (Eq. 4): ``c = |a · ∫₀¹ ∂y/∂a'|_{a' = α·a} dα|`` with only that neuron's *layer* scaled by α (the
  Aumann–Shapley value of the layer's neurons with a zero baseline). The integral is a quadrature ``Σ_k w_k g(α_k)``
  (:func:`intgrad_alphas`; default: the midpoint rule with 5 points, chosen by the accuracy-vs-cost measurement
  of ``benchmarks/bench_intgrad_rules.py`` in docs/pathways.md); ``rule="reference"`` reproduces the authors'
  published code and ``rule="closed"`` lit_xai's former 11-point grid. Every layer needs its own gradients per α:
  the α values of one layer run as one batch whose prefix (the layers before the scaled one) is not recomputed but
  replayed from the clean pass (:mod:`lit_xai.pathways.layer_scaling`); the suffix and its backward run once per
  (layer, α).
- Conductance along the input path (an explicitly named alternative, not Eq. 4): the input is scaled by α, all
  layers move at once, ``c = |Σ_k Δa_k · ∂y/∂a|`` — ``steps`` forward+backward passes for every layer together.

All return detached per-call tensors shaped like the activations; a dead neuron (``a = 0``) gets 0 (Remark 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lit_xai.attribution.activations import ReLUInterceptor, require_relus
from lit_xai.attribution.base import AttributionError, target_scores
from lit_xai.attribution.batching import check_max_batch, rows_per_chunk
from lit_xai.pathways.layer_scaling import ForwardTrace, ReplayMismatch, SharedPrefixScaling
from lit_xai.pathways.neurons import NeuronTensors, expand_per_sample, relu_activations


@dataclass
class ScoringGraph:
    """The autograd graph of a scoring pass, kept for a second backward: its input leaf, the summed target score and
    the ReLU outputs still attached."""

    inputs: Tensor
    score: Tensor
    activations: list[Tensor]


@dataclass
class NeuronContributions:
    """Contributions and the activations they were computed from (all detached, one tensor per ReLU call);
    ``graph``: the scoring pass's graph where it was asked to be kept (:func:`mct_contributions`)."""

    contributions: NeuronTensors
    activations: NeuronTensors
    logits: Tensor
    target: Tensor
    graph: ScoringGraph | None = None


def _gradients(scores: Tensor, tensors: list[Tensor], retain_graph: bool = False) -> list[Tensor]:
    grads = torch.autograd.grad(scores.sum(), tensors, allow_unused=True, retain_graph=retain_graph)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors, strict=True)]


def _owned(tensors: list[Tensor]) -> list[Tensor]:
    """``tensors``, each safe to overwrite in place: repeats of one object (autograd may hand one gradient buffer to
    two inputs) and non-contiguous ones (e.g. the stride-0 gradient of a ``sum``) are cloned."""
    seen: set[int] = set()
    owned = []
    for t in tensors:
        owned.append(t if id(t) not in seen and t.is_contiguous() else t.clone(memory_format=torch.contiguous_format))
        seen.add(id(t))
    return owned


def mct_contributions(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    trace: ForwardTrace | None = None,
    retain_graph: bool = False,
) -> NeuronContributions:
    """NeuronMCT ``|a·∂y_t/∂a|`` for every ReLU output element, from one forward + backward (seed 001 Eq. 2).

    With ``trace`` (a :class:`ForwardTrace` of ``inputs``) the pass is recorded there for prefix replay; with
    ``retain_graph`` (no ``trace``) the pass's graph is kept in :attr:`NeuronContributions.graph`, so that a second
    backward of the same forward can follow (:func:`~lit_xai.attribution.pathway_grad.retained_pathway_gradient`).
    """
    if retain_graph and trace is not None:
        raise ValueError("mct_contributions keeps the graph of a plain pass only (retain_graph without trace)")
    # the input requires grad so the activations are in the graph even when the parameters are frozen
    x = inputs.detach().requires_grad_(True)
    if trace is None:
        logits, activations = relu_activations(model, x, method)
    else:
        with trace.recording(x):
            logits = model(x)
        require_relus(len(trace.activations), method)
        activations = trace.activations
    scores, target = target_scores(logits, target)
    score = scores.sum()
    grads = _owned(_gradients(score, activations, retain_graph))
    graph = ScoringGraph(x, score, activations) if retain_graph else None
    activations = [a.detach() for a in activations]
    # |a·g| written into the gradient buffers: no allocation per layer
    contributions = [g.mul_(a).abs_() for a, g in zip(activations, grads, strict=True)]
    return NeuronContributions(contributions, activations, logits.detach(), target, graph)


INTGRAD_RULES = ("midpoint", "gausslegendre", "trapezoid", "closed", "reference")
INTGRAD_RULE = "midpoint"  # the measured choice: docs/pathways.md, benchmarks/bench_intgrad_rules.py
# S = 5 midpoint: relative error 0.037 / pathway overlap 0.971 against a 256-point integral on the trained digits CNN,
# where the former 11-point closed grid gave 0.106 / 0.945 (docs/pathways.md, "NeuronIntGrad's α rule")
INTGRAD_STEPS = 5
# conductance along the input path: no paper defines this variant; S = 11 (10 intervals) is kept from lit_xai's former
# NeuronIntGrad grid, not re-measured (Captum's LayerConductance defaults to n_steps=50)
CONDUCTANCE_STEPS = 11


def intgrad_alphas(rule: str, steps: int) -> tuple[Tensor, Tensor]:
    """Points α_k and weights w_k of NeuronIntGrad's quadrature ``Σ_k w_k ∂y/∂a'(α_k·a)`` (float64).

    - ``"midpoint"``: α_k = (k − ½)/S, w_k = 1/S — the integral of Eq. 4, never evaluating the degenerate α = 0.
    - ``"gausslegendre"``: Gauss–Legendre nodes and weights on [0, 1].
    - ``"trapezoid"``: α_k = k/(S−1), the end points weighted ½.
    - ``"closed"``: α_k = k/(S−1), w_k = 1/S (both ends weighted fully; lit_xai's former default with S = 11, the
      grid docs/reference.md ascribes to the reference code).
    - ``"reference"``: the authors' published code (PathwayGrad ``src/Pruner.py``, ``_calc_integrad_scores``), whose
      α mask *accumulates* ``j/(S−1)`` for j = 0..S−1: α_j = j(j+1) / (2(S−1)) (0, 0.1, 0.3, …, 5.5 for S = 11),
      w_j = 1/S. It extends α beyond 1, so it is not an integral over [0, 1]; use it only to reproduce their numbers.
    """
    if rule not in INTGRAD_RULES:
        raise ValueError(f"NeuronIntGrad rule must be one of {INTGRAD_RULES}, got {rule!r}")
    minimum = 2 if rule in ("trapezoid", "closed", "reference") else 1
    if steps < minimum:
        raise ValueError(f"NeuronIntGrad rule {rule!r} needs at least {minimum} α steps, got {steps}")
    n = steps
    weights = np.full(n, 1.0 / n)
    if rule == "midpoint":
        alphas = (np.arange(n) + 0.5) / n
    elif rule == "gausslegendre":
        nodes, gl_weights = np.polynomial.legendre.leggauss(n)
        alphas, weights = (nodes + 1.0) / 2.0, gl_weights / 2.0
    elif rule == "reference":
        j = np.arange(n)
        alphas = j * (j + 1) / (2.0 * (n - 1))
    else:
        alphas = np.linspace(0.0, 1.0, n)
        if rule == "trapezoid":
            weights = np.full(n, 1.0 / (n - 1))
            weights[[0, -1]] = 0.5 / (n - 1)
    return torch.as_tensor(alphas, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64)


class _ScaleOneCall:
    """Scale the output of ReLU call ``index`` by a per-row factor and keep it for the gradient."""

    def __init__(self, index: int, alphas: Tensor) -> None:
        self.index = index
        self.alphas = alphas
        self.scaled: Tensor | None = None

    def __call__(self, index: int, activation: Tensor) -> Tensor:
        if index != self.index:
            return activation
        self.scaled = activation * expand_per_sample(self.alphas.to(activation.dtype), activation)
        return self.scaled


def _layer_gradient_sum_full(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    index: int,
    alphas: Tensor,
    weights: Tensor,
    rows_per_pass: int,
    method: str,
    trace: ForwardTrace | None,
) -> Tensor:
    """``Σ_k w_k ∂y/∂a'(α_k)`` for ReLU call ``index``, forwarding all (α, image) rows through the whole network."""
    batch = inputs.shape[0]
    rep_inputs = inputs.detach().repeat(len(alphas), *([1] * (inputs.dim() - 1))).requires_grad_(True)
    rep_target = target.repeat(len(alphas))
    rep_alphas = alphas.repeat_interleave(batch)
    rep_weights = weights.repeat_interleave(batch)
    grad_sum: Tensor | None = None
    for start in range(0, rep_inputs.shape[0], rows_per_pass):
        stop = min(start + rows_per_pass, rep_inputs.shape[0])
        scaler = _ScaleOneCall(index, rep_alphas[start:stop])
        with ReLUInterceptor(scaler, method) as mode:
            logits = model(rep_inputs[start:stop])
        require_relus(mode.calls, method)
        scores, _ = target_scores(logits, rep_target[start:stop])
        (grad,) = _gradients(scores * rep_weights[start:stop].to(scores.dtype), [scaler.scaled])
        if grad_sum is None:
            grad_sum = grad.new_zeros(batch, *grad.shape[1:])
        sample = torch.arange(start, stop, device=inputs.device) % batch
        grad_sum.index_add_(0, sample, grad.detach())
    return grad_sum


def _scaled_pass(
    model: nn.Module, images: Tensor, index: int, alphas: Tensor, trace: ForwardTrace | None, rows: slice, method: str
) -> tuple[Tensor, Tensor]:
    """(logits ``[S·B, K]``, the scaled leaf) of one :class:`SharedPrefixScaling` forward of ``images``."""
    scaling = SharedPrefixScaling(index, alphas, images, trace, rows)
    with scaling:
        logits = model(images)
    require_relus(scaling.calls, method)
    if scaling.scaled is None:
        raise AttributionError(f"{method}: ReLU call {index} was not reached in the forward pass")
    return logits, scaling.scaled


def _layer_gradient_sum_shared(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    index: int,
    alphas: Tensor,
    weights: Tensor,
    rows_per_pass: int,
    method: str,
    trace: ForwardTrace | None,
) -> Tensor:
    """As :func:`_layer_gradient_sum_full`, but the prefix before call ``index`` is replayed from ``trace`` (the
    clean pass) where :meth:`ForwardTrace.replayable`, else computed once per image chunk
    (:class:`SharedPrefixScaling`); chunks hold all α of ``rows_per_pass // S`` images (or, if fewer rows are
    allowed than α values, one image and ``rows_per_pass`` α values)."""
    images_per_pass = max(1, rows_per_pass // len(alphas))
    alphas_per_pass = max(1, min(len(alphas), rows_per_pass // images_per_pass))
    if trace is not None and not trace.replayable(index):
        trace = None
    sums = []
    for start in range(0, inputs.shape[0], images_per_pass):
        rows = slice(start, min(start + images_per_pass, inputs.shape[0]))
        images, labels = inputs[rows].detach(), target[rows]
        grad_sum: Tensor | None = None
        chunks = zip(alphas.split(alphas_per_pass), weights.split(alphas_per_pass), strict=True)
        for alpha_chunk, weight_chunk in chunks:
            try:
                logits, scaled = _scaled_pass(model, images, index, alpha_chunk, trace, rows, method)
            except ReplayMismatch:
                trace = None  # the forward does not follow the recorded trace: compute the prefix from now on
                logits, scaled = _scaled_pass(model, images, index, alpha_chunk, None, rows, method)
            scores, _ = target_scores(logits, labels.repeat(len(alpha_chunk)))
            row_weights = weight_chunk.to(scores.dtype).repeat_interleave(images.shape[0])
            (grad,) = _gradients(scores * row_weights, [scaled])
            grad = grad.detach().view(len(alpha_chunk), images.shape[0], *grad.shape[1:]).sum(0)
            grad_sum = grad if grad_sum is None else grad_sum + grad
        sums.append(grad_sum)
    return torch.cat(sums)


def intgrad_contributions(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    steps: int = INTGRAD_STEPS,
    max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
    share_prefix: bool = True,
    rule: str = INTGRAD_RULE,
) -> NeuronContributions:
    """NeuronIntGrad (seed 001 Eq. 4): per layer, ``|a · Σ_k w_k ∂y/∂a'|`` at ``a' = α_k·a``.

    ``steps`` α values of the quadrature ``rule`` (:func:`intgrad_alphas`); at most ``max_batch`` (α, image) rows
    per pass (``None``: the shared activation-memory budget, :func:`~lit_xai.attribution.batching.rows_per_chunk`;
    the result does not depend on it). ``share_prefix`` replays the layers before the scaled call from the clean
    pass (or, where that is not possible, computes them once per image) instead of forwarding every (α, image) row
    through them (same result; ``False`` is the fallback for models whose per-sample tensors
    :class:`SharedPrefixScaling` cannot track).
    """
    alphas, weights = intgrad_alphas(rule, steps)
    alphas, weights = alphas.to(inputs.device), weights.to(inputs.device)
    trace = ForwardTrace(method) if share_prefix else None
    clean = mct_contributions(model, inputs, target, method, trace)
    gradient_sum = _layer_gradient_sum_shared if share_prefix else _layer_gradient_sum_full
    rows_per_pass = rows_per_chunk(model, inputs, check_max_batch(max_batch))
    contributions = [
        (
            activation
            * gradient_sum(model, inputs, clean.target, index, alphas, weights, rows_per_pass, method, trace)
        ).abs_()
        for index, activation in enumerate(clean.activations)
    ]
    return NeuronContributions(contributions, clean.activations, clean.logits, clean.target)


def input_path_conductance(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    steps: int = CONDUCTANCE_STEPS,
    max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
) -> NeuronContributions:
    """Signed conductance of every neuron along the input path ``α·x`` (Dhamdhere et al.):
    ``Σ_{k=1}^{S−1} (a(α_k x) − a(α_{k−1} x)) · ∂y/∂a(α_k x)`` with ``α_k = k/(S−1)`` (gradient at the end of each
    α interval; Captum's ``LayerConductance`` takes it at the start, so this equals minus Captum's conductance from
    ``x`` to 0).

    All layers move at once, so one forward+backward of the rows ``α_1 x … α_{S−1} x`` gives every layer; the
    gradient at α = 0 is not needed and ``a(0·x)`` is the same for every image, so it is one shared row (α-major;
    a pass holds ``max(1, max_batch // (S−1))`` images; ``max_batch=None``: the shared activation-memory budget).
    For a layer that is a cut of the network (every path to the output passes through it) the layer's sum tends to
    ``y(x) − y(0)`` (completeness), exactly so when ``y`` is affine in that layer. This is not Eq. 4, which scales
    the layer's own activation with the rest of the network held at ``x``. The returned activations and logits are
    those at α = 1 (the input itself).
    """
    if steps < 2:
        raise ValueError(f"conductance needs at least 2 α steps, got {steps}")
    path_alphas = torch.linspace(0.0, 1.0, steps, device=inputs.device)[1:]
    images_per_pass = max(1, rows_per_chunk(model, inputs, check_max_batch(max_batch)) // (steps - 1))
    chunks: list[tuple[NeuronTensors, NeuronTensors, Tensor, Tensor]] = []
    for start in range(0, inputs.shape[0], images_per_pass):
        images = inputs[start : start + images_per_pass].detach()
        batch = images.shape[0]
        labels = None if target is None else target[start : start + images_per_pass]
        factors = path_alphas.to(images.dtype).repeat_interleave(batch)
        scaled = images.repeat(steps - 1, *([1] * (images.dim() - 1))) * expand_per_sample(factors, images)
        rows = torch.cat([torch.zeros_like(images[:1]), scaled])
        logits, activations = relu_activations(model, rows.requires_grad_(True), method)
        clean_logits = logits.detach()[1:].view(steps - 1, batch, *logits.shape[1:])[-1]
        _, labels = target_scores(clean_logits, labels)
        scores, _ = target_scores(logits[1:], labels.repeat(steps - 1))
        grads = _gradients(scores, activations)
        conductance, clean = [], []
        for activation, grad in zip(activations, grads, strict=True):
            activation = activation.detach()
            origin = activation[:1].unsqueeze(0).expand(1, batch, *activation.shape[1:])
            path = activation[1:].view(steps - 1, batch, *activation.shape[1:])
            previous = torch.cat([origin, path[:-1]])
            conductance.append(((path - previous) * grad.detach()[1:].view_as(path)).sum(0))
            clean.append(path[-1])
        chunks.append((conductance, clean, clean_logits, labels))
    conductances, clean_activations, clean_logits, labels = zip(*chunks, strict=True)
    return NeuronContributions(
        [torch.cat(layer) for layer in zip(*conductances, strict=True)],
        [torch.cat(layer) for layer in zip(*clean_activations, strict=True)],
        torch.cat(clean_logits),
        torch.cat(labels),
    )


def conductance_contributions(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    steps: int = CONDUCTANCE_STEPS,
    max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
) -> NeuronContributions:
    """``|conductance|`` along the input path (:func:`input_path_conductance`), zero for neurons dead at x.

    A neuron dead at x can be active at ``α·x`` (biases), so its conductance need not vanish; it is set to 0 so
    that, as for NeuronMCT / NeuronIntGrad (Remark 2), pathways contain only active neurons (Prop. 5).
    Cost: about ``steps − 1`` forward+backward passes for all layers together.
    """
    signed = input_path_conductance(model, inputs, target, method, steps, max_batch)
    contributions = [c.abs() * (a > 0) for c, a in zip(signed.contributions, signed.activations, strict=True)]
    return NeuronContributions(contributions, signed.activations, signed.logits, signed.target)


CONTRIBUTION_KINDS = ("mct", "intgrad", "conductance")


def neuron_contributions(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor | None,
    method: str,
    contribution: str = "mct",
    steps: int | None = None,
    max_batch: int | None = None,  # None: sized by memory (lit_xai.attribution.batching)
    share_prefix: bool = True,
    rule: str = INTGRAD_RULE,
) -> NeuronContributions:
    """Dispatch on ``contribution`` ∈ {"mct", "intgrad", "conductance"} (``share_prefix``, ``rule``: intgrad only;
    ``steps=None``: each contribution's own default)."""
    if contribution == "mct":
        return mct_contributions(model, inputs, target, method)
    if contribution == "intgrad":
        steps = INTGRAD_STEPS if steps is None else steps
        return intgrad_contributions(model, inputs, target, method, steps, max_batch, share_prefix, rule)
    if contribution == "conductance":
        steps = CONDUCTANCE_STEPS if steps is None else steps
        return conductance_contributions(model, inputs, target, method, steps, max_batch)
    raise ValueError(f"contribution must be one of {CONTRIBUTION_KINDS}, got {contribution!r}")
