"""Layer-wise Relevance Propagation with zennit-style composites (Bach et al. 2015; Montavon et al. 2019).

Relevance ``R`` starts as the target logit ``y_t`` at the output and flows back layer by layer. Each affine call
(``F.conv2d``/``F.linear``) redistributes it with a rule; writing ``s(z) = z + ε·sign(z)`` (sign(0) = +1) and
``J_{W,b}`` for the layer with modified parameters::

    ε / LRP-0:  R_in = x ⊙ Jᵀ_{W}(R / s(W x + b))
    z⁺:         R_in = x⁺ ⊙ Jᵀ_{W⁺}(R / s(z⁺)) + x⁻ ⊙ Jᵀ_{W⁻}(R / s(z⁺)),  z⁺ = W⁺x⁺ + b⁺ + W⁻x⁻
    αβ:         α·(z⁺-share) − β·(the same with W⁻ on x⁺ and W⁺ on x⁻),  α − β = 1
    γ:          the generalised γ rule of zennit (W + γW⁺ on positive outputs, W + γW⁻ on negative ones)
    flat:       R_in = Jᵀ_{1}(R / s(1·1)),  zB: R_in = (x ⊙ Jᵀ_W − l ⊙ Jᵀ_{W⁺} − h ⊙ Jᵀ_{W⁻})(R / s(z − z_l − z_h))

Average pooling uses the normalised z rule (zennit ``Norm``), ReLU and unmerged BatchNorm pass relevance through
(zennit ``Pass``), max pooling and other operations keep their gradient. A BatchNorm whose input is the output of
the preceding conv/linear call is folded into it (zennit's ``MergeBatchNorm`` canonizer): the rule acts on the
merged layer. Composites assign rules per layer type as zennit's do (the first affine call is "the first layer").
Everything runs through a ``TorchFunctionMode`` (every call of a module reused in a block, functional calls), so
nothing is registered on the model. The map is the relevance at the input, ``[B, C, H, W]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lit_xai.attribution.activations import RELU_FUNCTIONS, check_activation, require_relus
from lit_xai.attribution.base import AttributionError, AttributionMethod, target_scores
from lit_xai.attribution.registry import register

#: composite → (first-layer rule, conv rule, dense rule), as in zennit.composites
COMPOSITES = {
    "epsilon_plus_flat": ("flat", "zplus", "epsilon"),
    "epsilon_gamma_box": ("zbox", "gamma", "epsilon"),
    "epsilon_plus": ("zplus", "zplus", "epsilon"),
    "epsilon_alpha2_beta1_flat": ("flat", "alpha_beta", "epsilon"),
    "epsilon": ("epsilon", "epsilon", "epsilon"),
}
AVG_POOLS = frozenset({F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                       F.adaptive_avg_pool3d})


def stabilize(z: Tensor, eps: float) -> Tensor:
    """zennit's stabiliser: ``z + ε·sign(z)`` with sign(0) = +1."""
    return z + eps * (2 * (z >= 0).to(z.dtype) - 1)


@dataclass
class Affine:
    """One conv/linear call: ``op(x, weight, bias)`` with its other arguments bound."""

    op: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    weight: Tensor
    bias: Tensor | None

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return self.op(x, weight, bias)


def pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


class Relevance(torch.autograd.Function):
    """Value ``value``; backward ``R ↦ backward_fn(R)`` (the rule's input relevance)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, value: Tensor, backward_fn: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.backward_fn = backward_fn
        return value.clone()

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None, None]:
        return ctx.backward_fn(relevance), None, None


def branch_relevance(layer: Affine, branches: list[tuple[Tensor, Tensor, Tensor | None]],
                     grads: Callable[[list[Tensor]], list[Tensor]], times_input: bool) -> Tensor:
    """``Σ_k in_k ⊙ Jᵀ_k g_k`` (or ``Σ_k Jᵀ_k g_k``) for branches ``(in_k, W_k, b_k)`` and ``g = grads(outputs)``."""
    with torch.enable_grad():
        inputs = [b[0].detach().requires_grad_(True) for b in branches]
        outputs = [layer(i, w, b) for i, (_, w, b) in zip(inputs, branches)]
        g = grads([o.detach() for o in outputs])
        vjps = torch.autograd.grad(outputs, inputs, g, allow_unused=True)
    total = 0
    for i, v in zip(inputs, vjps):
        if v is not None:
            total = total + (i.detach() * v if times_input else v)
    return total


@dataclass
class RuleSet:
    """The rule parameters: ``epsilon`` (ε rule), ``stabilizer`` (all others), ``gamma``, ``alpha``/``beta``,
    ``low``/``high`` (zB bounds)."""

    epsilon: float
    stabilizer: float
    gamma: float
    alpha: float
    beta: float
    low: float
    high: float

    def backward(self, rule: str, layer: Affine, x: Tensor) -> Callable[[Tensor], Tensor]:
        """The input-relevance function of ``rule`` at ``layer`` applied to ``x``."""
        w, b, st = layer.weight.detach(), None if layer.bias is None else layer.bias.detach(), self.stabilizer
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        if rule == "epsilon":
            return lambda r: branch_relevance(layer, [(x, w, b)], lambda o: [r / stabilize(o[0], self.epsilon)], True)
        if rule == "zplus":
            return lambda r: branch_relevance(layer, [(xp, pos(w), pos(b)), (xn, neg(w), None)],
                                              lambda o: [r / stabilize(o[0] + o[1], st)] * 2, True)
        if rule == "alpha_beta":
            def alpha_beta(r: Tensor) -> Tensor:
                plus = branch_relevance(layer, [(xp, pos(w), pos(b)), (xn, neg(w), None)],
                                        lambda o: [r / stabilize(o[0] + o[1], st)] * 2, True)
                minus = branch_relevance(layer, [(xp, neg(w), neg(b)), (xn, pos(w), None)],
                                         lambda o: [r / stabilize(o[0] + o[1], st)] * 2, True)
                return self.alpha * plus - self.beta * minus
            return alpha_beta
        if rule == "gamma":
            g = self.gamma
            wgp, wgn = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
            bgp = None if b is None else b + g * b.clamp(min=0)
            bgn = None if b is None else b + g * b.clamp(max=0)
            z = layer(x, w, b).detach()

            def gamma_grads(r: Tensor) -> Callable[[list[Tensor]], list[Tensor]]:
                def grads(o: list[Tensor]) -> list[Tensor]:
                    up = (z > 0).to(r.dtype) * r / stabilize(o[0] + o[1], st)
                    down = (z < 0).to(r.dtype) * r / stabilize(o[2] + o[3], st)
                    return [up, up, down, down]
                return grads

            return lambda r: branch_relevance(
                layer, [(xp, wgp, bgp), (xn, wgn, None), (xp, wgn, bgn), (xn, wgp, None)], gamma_grads(r), True
            )
        if rule == "flat":
            ones = torch.ones_like(x)
            return lambda r: branch_relevance(layer, [(ones, torch.ones_like(w), None)],
                                              lambda o: [r / stabilize(o[0], st)], False)
        if rule == "zbox":
            low, high = torch.full_like(x, self.low), torch.full_like(x, self.high)

            def zbox(r: Tensor) -> Tensor:
                with torch.enable_grad():
                    ins = [t.detach().requires_grad_(True) for t in (x, low, high)]
                    outs = [layer(ins[0], w, b), layer(ins[1], pos(w), pos(b)), layer(ins[2], neg(w), neg(b))]
                    g = r / stabilize((outs[0] - outs[1] - outs[2]).detach(), st)
                    vjps = torch.autograd.grad(outs, ins, [g, g, g])
                return ins[0].detach() * vjps[0] - ins[1].detach() * vjps[1] - ins[2].detach() * vjps[2]
            return zbox
        raise AttributionError(f"lrp: unknown rule {rule!r}")


class LRPMode(TorchFunctionMode):
    """Context manager: conv/linear calls get their composite rule, BatchNorm after them is folded, average
    pooling gets the normalised z rule, ReLU and other BatchNorms pass relevance through."""

    def __init__(self, rules: tuple[str, str, str], params: RuleSet, method: str) -> None:
        super().__init__()
        self.rules, self.params, self.method = rules, params, method
        self.affine_calls = 0
        self.relu_calls = 0
        self.last: tuple[Tensor, Tensor, Affine, str] | None = None

    def affine(self, x: Tensor, layer: Affine, rule: str) -> Tensor:
        value = layer(x, layer.weight, layer.bias).detach()
        out = Relevance.apply(x, value, self.params.backward(rule, layer, x.detach()))
        self.last = (out, x, layer, rule)
        return out

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        check_activation(func, args, kwargs, self.method)
        if func in (F.conv2d, F.linear):
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            rest, rest_kw = args[3:], {k: v for k, v in kwargs.items() if k not in ("weight", "bias")}
            layer = Affine(lambda i, w, b: func(i, w, b, *rest, **rest_kw), weight, bias)
            first, conv, dense = self.rules
            rule = first if self.affine_calls == 0 else conv if func is F.conv2d else dense
            self.affine_calls += 1
            return self.affine(x, layer, rule)
        if func is F.batch_norm and self.last is not None and args[0] is self.last[0]:
            return self.fold(args, kwargs)
        if func is F.batch_norm or func in RELU_FUNCTIONS:
            if func in RELU_FUNCTIONS:
                self.relu_calls += 1
            z = args[0] if args else kwargs["input"]
            kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
            value = (F.relu(z) if func in RELU_FUNCTIONS else func(*args, **kwargs)).detach()
            return z + (value - z.detach())  # value forward, relevance passes through (zennit Pass)
        if func in AVG_POOLS:
            x = args[0]
            value = func(*args, **kwargs).detach()
            layer = Affine(lambda i, w, b: func(i, *args[1:], **kwargs), x, None)
            st = self.params.stabilizer
            return Relevance.apply(x, value, lambda r: branch_relevance(
                layer, [(x.detach(), x, None)], lambda o: [r / stabilize(o[0], st)], True))
        return func(*args, **kwargs)

    def fold(self, args: tuple, kwargs: dict) -> Tensor:
        """BatchNorm (eval statistics) right after a conv/linear: redo that call's rule on the merged layer."""
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        bound = dict(zip(names, args)) | kwargs
        if bound.get("training", False):
            raise AttributionError("lrp: BatchNorm must use running statistics (the method runs in eval mode)")
        _, x, layer, rule = self.last
        scale = bound["weight"] / torch.sqrt(bound["running_var"] + bound.get("eps", 1e-5))
        shift = bound["bias"] - bound["running_mean"] * scale
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        weight = layer.weight * scale.view(shape)
        bias = shift if layer.bias is None else layer.bias * scale + shift
        return self.affine(x, Affine(layer.op, weight, bias), rule)


@register("lrp")
class LRP(AttributionMethod):
    """LRP with a zennit composite (default ``"epsilon_plus_flat"``, the composite of zennit's README example):
    ``epsilon_plus_flat`` (flat first, z⁺ conv, ε dense), ``epsilon_gamma_box`` (zB first with ``low``/``high``,
    γ conv, ε dense), ``epsilon_plus``, ``epsilon_alpha2_beta1_flat``, ``epsilon`` (ε everywhere; with ε → 0 on a
    bias-free ReLU net the map sums to ``y_t``). ``epsilon`` = ``stabilizer`` = 1e-6, ``gamma`` = 0.25 ← zennit's
    defaults; ``alpha``/``beta`` = 2/1 (zennit ``AlphaBeta``); ``low``/``high`` = 0/1 (zennit's ``ZBox`` advice for
    raw images: pass the bounds of your normalised inputs). Relevance starts at the target logit."""

    def __init__(self, composite: str = "epsilon_plus_flat", epsilon: float = 1e-6, stabilizer: float = 1e-6,
                 gamma: float = 0.25, alpha: float = 2.0, beta: float = 1.0, low: float = 0.0,
                 high: float = 1.0) -> None:
        if composite not in COMPOSITES:
            raise AttributionError(f"lrp: unknown composite {composite!r}; choose one of {', '.join(COMPOSITES)}")
        if alpha - beta != 1 or beta < 0:
            raise AttributionError(f"lrp: alpha − beta must be 1 with beta ≥ 0, got alpha={alpha}, beta={beta}")
        self.composite = composite
        self.params = RuleSet(epsilon, stabilizer, gamma, alpha, beta, low, high)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        x = inputs.detach().requires_grad_(True)
        with LRPMode(COMPOSITES[self.composite], self.params, self.name) as mode:
            logits = model(x)
        require_relus(mode.relu_calls, self.name)
        scores, _ = target_scores(logits, target)
        (relevance,) = torch.autograd.grad(scores, x, scores.detach())
        return relevance
