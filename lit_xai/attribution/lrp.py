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

Cost (the pass floor, docs/protocols.md): each call's input and output are kept from the one forward, so the ε and
Norm rules cost only the call's own transposed pass (the merged layer's output is the BatchNorm of the kept conv
output, not a second conv); z⁺ adds one forward with the modified weights and replaces the transposed pass by that
of the modified layer; αβ and γ need two such pairs. The ``x⁻`` branches are skipped where ``x ≥ 0`` is known (a
ReLU output, or a pooling of one), where they are exactly zero. Modified weights (merged BatchNorm, ``W⁺``, γ
weights) are kept between calls while their source tensors are unchanged (:class:`WeightCache`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
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
#: max pooling keeps x ≥ 0 (its output is a selection of its input)
MAX_POOLS = frozenset({F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                       F.adaptive_max_pool3d})

Branches = list[tuple[Tensor, Tensor, Tensor | None]]


def stabilize(z: Tensor, eps: float) -> Tensor:
    """zennit's stabiliser ``z + ε·sign(z)``, sign(0) = +1, as ``copysign(ε, z) + z``: one new tensor, two full
    passes. It differs only at ``z = −0.0``, which a sum yields only when all its terms are zero: then so is every
    input's share ``x_i w_i R / s(z)``, whatever the sign of ``s``."""
    return torch.copysign(z.new_full((), eps), z).add_(z)


def share(relevance: Tensor, z: Tensor, eps: float) -> Tensor:
    """``R / s(z)``, written into the stabiliser's buffer (no gradient flows through it)."""
    s = stabilize(z, eps)
    return torch.div(relevance, s, out=s)


@dataclass
class Affine:
    """One conv/linear call: ``op(x, weight, bias)`` with its other arguments bound, and ``transpose(g, x, weight)``,
    its transposed pass ``Jᵀ_W g`` at input ``x`` (``None``: through autograd, see :func:`transposed_pass`)."""

    op: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    weight: Tensor
    bias: Tensor | None
    transpose: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return self.op(x, weight, bias)


def transposed_pass(func: Any, rest: tuple, rest_kw: dict) -> Callable[[Tensor, Tensor, Tensor], Tensor] | None:
    """``(g, x, W) ↦ Jᵀ_W g`` for ``F.linear`` (``g·W``) and ``F.conv2d`` with numeric padding: the kernel autograd's
    own convolution backward calls, without building a graph and running a nested backward per layer. ``None`` for
    string padding (``"same"``/``"valid"``), which then goes through autograd."""
    if func is F.linear:
        return lambda g, x, w: g.matmul(w)
    bound = dict(zip(("stride", "padding", "dilation", "groups"), rest)) | rest_kw
    if isinstance(bound.get("padding", 0), str):
        return None
    stride, padding, dilation = (_pair(bound.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)))
    groups = bound.get("groups", 1)
    return lambda g, x, w: torch.ops.aten.convolution_backward(
        g, x, w, None, stride, padding, dilation, False, [0, 0], groups, (True, False, False))[0]


def pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


class Relevance(torch.autograd.Function):
    """Value ``value`` (a copy: the model may change it in place); backward ``R ↦ backward_fn(R)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, value: Tensor, backward_fn: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.backward_fn = backward_fn
        return value.clone()

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None, None]:
        return ctx.backward_fn(relevance), None, None


class Pass(torch.autograd.Function):
    """Value ``fn(z)``; relevance passes through unchanged (zennit ``Pass``)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        return fn(z)

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None]:
        return relevance, None


class InputTimes(torch.autograd.Function):
    """Value ``x`` (a view); backward ``g ↦ x ⊙ g``: the ``x ⊙`` of the ε and Norm rules on the native graph."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        return ctx.saved_tensors[0] * g


class Normalized(torch.autograd.Function):
    """Value ``z`` (a copy: the model may change it in place); backward ``R ↦ R / s(z)``."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z)
        ctx.eps = eps
        return z.clone()

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None]:
        return share(relevance, ctx.saved_tensors[0], ctx.eps), None


def branch_relevance(layer: Affine, branches: Branches, grads: Callable[[list[Tensor]], list[Tensor]],
                     times_input: bool) -> Tensor:
    """``Σ_k in_k ⊙ Jᵀ_k g_k`` (or ``Σ_k Jᵀ_k g_k``) for branches ``(in_k, W_k, b_k)`` and ``g = grads(outputs)``:
    one modified forward and one transposed pass per branch."""
    if layer.transpose is not None:
        outputs = [layer(i, w, b) for i, w, b in branches]
        total = 0
        for (i, w, _), g in zip(branches, grads(outputs)):
            v = layer.transpose(g, i, w)
            total = total + (i * v if times_input else v)
        return total
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


def shared(r: Tensor, st: float) -> Callable[[list[Tensor]], list[Tensor]]:
    """Every branch gets ``R / s(Σ_k o_k)`` (the z⁺-type share)."""
    return lambda o: [share(r, o[0] if len(o) == 1 else o[0] + o[1], st)] * len(o)


class WeightCache:
    """Modified weights of earlier calls, reused while every tensor they were computed from is the same object with
    the same version, storage and device and an unchanged value sample. ``Tensor._version`` counts in-place changes
    (an optimiser step, ``load_state_dict``, ``copy_`` under ``no_grad``) and reassigning ``.data`` or moving the
    model changes the storage; in-place changes through ``.data`` (``w.data.normal_()``, common in randomisation
    code) bypass the version counter, so a strided sample of ``sample_size`` values per tensor is kept and compared:
    re-initialising, rescaling or copying a tensor through ``.data`` is seen, an edit through ``.data`` that spares
    every sampled value is not (a full comparison cost 1.1-1.3× of a warm call on ResNet-18 8 × 32²; in-place edits
    under ``torch.no_grad()`` are always seen). Sources are held weakly; entries of dead tensors are dropped."""

    def __init__(self, sample_size: int = 1024) -> None:
        self.sample_size = sample_size  # ours: reading 1024 values per tensor is negligible next to a conv pass
        self.entries: dict[tuple, tuple[tuple, tuple, tuple[Tensor, ...], Any]] = {}

    @staticmethod
    def state(tensors: Sequence[Tensor]) -> tuple:
        return tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in tensors)

    def sample(self, t: Tensor) -> Tensor:
        """Every ``⌈numel / sample_size⌉``-th value of ``t`` (a strided view; all values of a small tensor)."""
        flat = t.detach().reshape(-1)
        return flat[:: max(1, -(-flat.numel() // self.sample_size))]

    def get(self, kind: Any, sources: Sequence[Any], compute: Callable[[], Any]) -> Any:
        """``compute()``, or its value from an earlier call with the same ``kind`` and unchanged ``sources``."""
        tensors = [s for s in sources if isinstance(s, Tensor)]
        if any(t.is_inference() for t in tensors):  # inference tensors have no version counter
            return compute()
        key = (kind, *(id(s) if isinstance(s, Tensor) else s for s in sources))
        state = self.state(tensors)
        entry = self.entries.get(key)
        if (
            entry is not None and entry[1] == state and all(ref() is t for ref, t in zip(entry[0], tensors))
            and all(torch.equal(self.sample(t), kept) for t, kept in zip(tensors, entry[2]))
        ):
            return entry[3]
        value = compute()
        kept = tuple(self.sample(t).clone() for t in tensors)
        self.entries[key] = (tuple(weakref.ref(t) for t in tensors), state, kept, value)
        return value

    def prune(self) -> None:
        """Drop the entries whose source tensors no longer exist."""
        for key in [k for k, (refs, *_) in self.entries.items() if any(ref() is None for ref in refs)]:
            del self.entries[key]


@dataclass
class LayerCall:
    """One conv/linear call of the forward: its input ``x``, its output ``z`` with its graph (from ``leaf``, a
    detached leaf of ``x``, for the rules run by :class:`Relevance`; from ``x`` itself for the ε rule), the layer, the
    BatchNorm ``(mean, var, weight, bias, eps)`` merged into it, whether ``x ≥ 0`` is known, and the tensors its
    parameters come from (``sources``, the key of ``cache``)."""

    x: Tensor
    leaf: Tensor | None
    z: Tensor
    layer: Affine | None = None
    nonnegative: bool = False
    batch_norm: tuple[Tensor, Tensor, Tensor | None, Tensor | None, float] | None = None
    sources: tuple = ()
    cache: WeightCache | None = None

    def derived(self, kind: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` of this layer's parameters, from the cache when they are unchanged."""
        return compute() if self.cache is None else self.cache.get(kind, self.sources, compute)

    def merged(self) -> tuple[Tensor, Tensor | None]:
        """Weight and bias with the following BatchNorm ``(mean, var, weight, bias, eps)`` merged in (zennit
        ``MergeBatchNorm``: ``W·s``, ``(b − mean)·s + β`` with ``s = γ/√(var + eps)``); a fresh weight when merged."""
        w, b = self.layer.weight, self.layer.bias
        if self.batch_norm is None:
            return w, b
        mean, var, bn_weight, bn_bias, eps = self.batch_norm
        scale = torch.rsqrt(var + eps)
        scale = scale if bn_weight is None else bn_weight.detach() * scale
        shift = -mean * scale if bn_bias is None else bn_bias.detach() - mean * scale
        weight = w * scale.view((-1,) + (1,) * (w.dim() - 1))
        return weight, shift if b is None else b * scale + shift

    def clamped(self, positive: bool) -> tuple[Tensor, Tensor | None]:
        """``(W⁺, b⁺)`` or ``(W⁻, b⁻)`` of the merged layer (a merged weight is clamped in place)."""
        def compute() -> tuple[Tensor, Tensor | None]:
            w, b = self.merged()
            bound = {"min": 0} if positive else {"max": 0}
            w = w.clamp_(**bound) if self.batch_norm is not None else w.clamp(**bound)
            return w, None if b is None else b.clamp(**bound)
        return self.derived("positive" if positive else "negative", compute)

    def signed(self, flip: bool) -> Branches:
        """z⁺-type branches ``(x⁺, W⁺, b⁺), (x⁻, W⁻, 0)`` (``flip``: ``(x⁺, W⁻, b⁻), (x⁻, W⁺, 0)``); only the first
        when ``x ≥ 0`` (the second is then exactly zero)."""
        w, b = self.clamped(not flip)
        if self.nonnegative:
            return [(self.x, w, b)]
        return [(self.x.clamp(min=0), w, b), (self.x.clamp(max=0), self.clamped(flip)[0], None)]


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

    def backward(self, rule: str, call: LayerCall) -> Callable[[Tensor], Tensor]:
        """The input-relevance function of ``rule`` at ``call`` (modified weights are formed when it runs; the ε
        rule runs on the native graph instead, :meth:`LRPMode.epsilon`)."""
        layer, st = call.layer, self.stabilizer
        if rule == "zplus":
            return lambda r: branch_relevance(layer, call.signed(False), shared(r, st), True)
        if rule == "alpha_beta":
            def alpha_beta(r: Tensor) -> Tensor:
                plus = branch_relevance(layer, call.signed(False), shared(r, st), True)
                minus = branch_relevance(layer, call.signed(True), shared(r, st), True)
                return self.alpha * plus - self.beta * minus
            return alpha_beta
        if rule == "gamma":
            def gamma_weights() -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
                w, b = call.merged()
                g = self.gamma
                return (torch.add(w, w.clamp(min=0), alpha=g), torch.add(w, w.clamp(max=0), alpha=g),
                        None if b is None else torch.add(b, b.clamp(min=0), alpha=g),
                        None if b is None else torch.add(b, b.clamp(max=0), alpha=g))

            def gamma(r: Tensor) -> Tensor:
                wgp, wgn, bgp, bgn = call.derived(("gamma", self.gamma), gamma_weights)
                z = call.z.detach()
                up, down = (z > 0).to(r.dtype) * r, (z < 0).to(r.dtype) * r
                # positive outputs: the z⁺-type share with W + γW⁺; negative ones: with W + γW⁻, x⁺ and x⁻ swapped
                if call.nonnegative:
                    branches = [(call.x, wgp, bgp), (call.x, wgn, bgn)]
                else:
                    xp, xn = call.x.clamp(min=0), call.x.clamp(max=0)
                    branches = [(xp, wgp, bgp), (xn, wgn, None), (xp, wgn, bgn), (xn, wgp, None)]
                half = len(branches) // 2
                return branch_relevance(layer, branches,
                                        lambda o: shared(up, st)(o[:half]) + shared(down, st)(o[half:]), True)
            return gamma
        if rule == "flat":
            return lambda r: branch_relevance(
                layer, [(torch.ones_like(call.x), call.derived("ones", lambda: torch.ones_like(layer.weight)), None)],
                lambda o: [share(r, o[0], st)], False)
        if rule == "zbox":
            def zbox(r: Tensor) -> Tensor:
                (wp, bp), (wn, bn) = call.clamped(True), call.clamped(False)
                with torch.enable_grad():
                    ins = [torch.full_like(call.x, v).requires_grad_(True) for v in (self.low, self.high)]
                    outs = [layer(ins[0], wp, bp), layer(ins[1], wn, bn)]
                    g = share(r, call.z.detach() - outs[0].detach() - outs[1].detach(), st)
                    vjps = torch.autograd.grad([call.z, *outs], [call.leaf, *ins], [g, g, g], retain_graph=True)
                return call.x * vjps[0] - ins[0].detach() * vjps[1] - ins[1].detach() * vjps[2]
            return zbox
        raise AttributionError(f"lrp: unknown rule {rule!r}")


class LRPMode(TorchFunctionMode):
    """Context manager: conv/linear calls get their composite rule, BatchNorm after them is folded, average
    pooling gets the normalised z rule, ReLU and other BatchNorms pass relevance through."""

    def __init__(self, rules: tuple[str, str, str], params: RuleSet, method: str,
                 cache: WeightCache | None = None) -> None:
        super().__init__()
        self.rules, self.params, self.method, self.cache = rules, params, method, cache
        self.affine_calls = 0
        self.relu_calls = 0
        self.last: tuple[Tensor, Tensor, LayerCall, str] | None = None
        self.known_nonnegative: dict[int, tuple[Tensor, int]] = {}  # id → (tensor, its version when known ≥ 0)

    def __exit__(self, *exc: Any) -> Any:
        self.known_nonnegative.clear()
        self.last = None
        return super().__exit__(*exc)

    def nonnegative(self, t: Any) -> bool:
        entry = self.known_nonnegative.get(id(t))
        return entry is not None and entry[0] is t and entry[1] == t._version

    def mark_nonnegative(self, t: Tensor) -> Tensor:
        self.known_nonnegative[id(t)] = (t, t._version)
        return t

    def relevance(self, source: Tensor, call: LayerCall, rule: str) -> Tensor:
        """The call's value, with ``rule``'s relevance flowing back to ``source`` (the call's input in the graph).
        ε: ``x ⊙ Jᵀ(R / s(z))`` on the native graph ``x → x ⊙ · → layer → R / s(·)``, so the layer's own backward is
        the transposed pass (no nested backward)."""
        if rule == "epsilon":
            out = Normalized.apply(call.z, self.params.epsilon)
        else:
            out = Relevance.apply(source, call.z.detach(), self.params.backward(rule, call))
        self.last = (out, source, call, rule)
        return out

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        check_activation(func, args, kwargs, self.method)
        if func in (F.conv2d, F.linear):
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            rest, rest_kw = args[3:], {k: v for k, v in kwargs.items() if k not in ("weight", "bias")}
            layer = Affine(lambda i, w, b: func(i, w, b, *rest, **rest_kw), weight.detach(),
                           None if bias is None else bias.detach(), transposed_pass(func, rest, rest_kw))
            first, conv, dense = self.rules
            rule = first if self.affine_calls == 0 else conv if func is F.conv2d else dense
            self.affine_calls += 1
            leaf = None if rule == "epsilon" else x.detach().requires_grad_(True)
            with torch.enable_grad():
                z = layer(InputTimes.apply(x) if leaf is None else leaf, layer.weight, layer.bias)
            call = LayerCall(x.detach(), leaf, z, layer, self.nonnegative(x), sources=(weight, bias), cache=self.cache)
            return self.relevance(x, call, rule)
        if func is F.batch_norm and self.last is not None and args and args[0] is self.last[0]:
            return self.fold(args, kwargs)
        if func in RELU_FUNCTIONS:
            self.relu_calls += 1
            return self.mark_nonnegative(Pass.apply(args[0] if args else kwargs["input"], F.relu))
        if func is F.batch_norm:
            rest_kw = {k: v for k, v in kwargs.items() if k != "input"}
            return Pass.apply(args[0] if args else kwargs["input"], lambda t: func(t, *args[1:], **rest_kw))
        if func in AVG_POOLS:
            x = args[0]
            with torch.enable_grad():
                out = Normalized.apply(func(InputTimes.apply(x), *args[1:], **kwargs), self.params.stabilizer)
            return self.mark_nonnegative(out) if self.nonnegative(x) else out
        out = func(*args, **kwargs)
        if func in MAX_POOLS and isinstance(out, Tensor) and args and self.nonnegative(args[0]):
            self.mark_nonnegative(out)
        return out

    def fold(self, args: tuple, kwargs: dict) -> Tensor:
        """BatchNorm (eval statistics) right after a conv/linear: that call's rule acts on the merged layer, whose
        output is the BatchNorm of the call's kept output (no second conv)."""
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        bound = dict(zip(names, args)) | kwargs
        if bound.get("training", False):
            raise AttributionError("lrp: BatchNorm must use running statistics (the method runs in eval mode)")
        _, source, call, rule = self.last
        batch_norm = (bound["running_mean"], bound["running_var"], bound.get("weight"), bound.get("bias"),
                      bound.get("eps", 1e-5))
        with torch.enable_grad():
            z = F.batch_norm(call.z, *batch_norm[:4], False, 0.0, batch_norm[4])
        merged = LayerCall(call.x, call.leaf, z, call.layer, call.nonnegative, batch_norm,
                           (*call.sources, *batch_norm), call.cache)
        return self.relevance(source, merged, rule)


@register("lrp")
class LRP(AttributionMethod):
    """LRP with a zennit composite (default ``"epsilon_plus_flat"``, the composite of zennit's README example):
    ``epsilon_plus_flat`` (flat first, z⁺ conv, ε dense), ``epsilon_gamma_box`` (zB first with ``low``/``high``,
    γ conv, ε dense), ``epsilon_plus``, ``epsilon_alpha2_beta1_flat``, ``epsilon`` (ε everywhere; with ε → 0 on a
    bias-free ReLU net the map sums to ``y_t``). ``epsilon`` = ``stabilizer`` = 1e-6, ``gamma`` = 0.25 ← zennit's
    defaults; ``alpha``/``beta`` = 2/1 (zennit ``AlphaBeta``); ``low``/``high`` = 0/1 (zennit's ``ZBox`` advice for
    raw images: pass the bounds of your normalised inputs). Relevance starts at the target logit. The modified
    weights are kept between calls (one copy of the conv weights) while the model's parameters are unchanged."""

    def __init__(self, composite: str = "epsilon_plus_flat", epsilon: float = 1e-6, stabilizer: float = 1e-6,
                 gamma: float = 0.25, alpha: float = 2.0, beta: float = 1.0, low: float = 0.0,
                 high: float = 1.0) -> None:
        if composite not in COMPOSITES:
            raise AttributionError(f"lrp: unknown composite {composite!r}; choose one of {', '.join(COMPOSITES)}")
        if alpha - beta != 1 or beta < 0:
            raise AttributionError(f"lrp: alpha − beta must be 1 with beta ≥ 0, got alpha={alpha}, beta={beta}")
        self.composite = composite
        self.params = RuleSet(epsilon, stabilizer, gamma, alpha, beta, low, high)
        self._cache = WeightCache()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_cache"}  # weak references do not pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, _cache=WeightCache())

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        x = inputs.detach().requires_grad_(True)
        self._cache.prune()
        with LRPMode(COMPOSITES[self.composite], self.params, self.name, self._cache) as mode:
            logits = model(x)
        require_relus(mode.relu_calls, self.name)
        scores, _ = target_scores(logits, target)
        (relevance,) = torch.autograd.grad(scores, x, scores.detach())
        return relevance
