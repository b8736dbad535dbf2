"""Excitation Backprop and its contrastive variant (Zhang et al. 2016; TorchRay ``excitation_backprop``).

Marginal winning probabilities flow back from a one-hot at the target. Through every conv/linear call the
pseudo-gradient ``p`` becomes (§3.2, TorchRay's backward)::

    p' = x ⊙ f*(W⁺, p ⊘ (f(x; W⁺, no bias) + 1e-20))

(``f*`` the layer's vector-Jacobian product), average pooling the same with the pooling itself, BatchNorm passes
``p`` through, ReLU and max pooling keep their gradient. The map is ``Σ_c p`` at ``layer`` (``None``: the input).
The contrastive variant backpropagates once with the classifier's (last conv/linear call's) weights negated down to
the contrast point — here the classifier's input — subtracts that from the true pass there, continues to ``layer``
and keeps the positive part. Rules run through a ``TorchFunctionMode``; nothing is registered on the model except
the capture of ``layer``'s output (removed on exit).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lit_xai.attribution.activations import RELU_FUNCTIONS, check_activation, require_relus
from lit_xai.attribution.base import AttributionError, AttributionMethod, target_scores
from lit_xai.attribution.layers import capture_outputs, resolve_layer
from lit_xai.attribution.lrp import AVG_POOLS, Relevance, WeightCache, transposed_pass
from lit_xai.attribution.registry import register

#: the division guard of TorchRay's excitation backward (``output_ebp + 1e-20``)
EB_GUARD = 1e-20
AFFINE = frozenset({F.conv1d, F.conv2d, F.conv3d, F.linear})
#: calls whose transposed pass runs the kernel autograd would call, without a graph and a nested backward
#: (:func:`~lit_xai.attribution.lrp.transposed_pass`); conv1d/conv3d and string padding keep autograd
DIRECT_TRANSPOSE = frozenset({F.conv2d, F.linear})


class ExcitationMode(TorchFunctionMode):
    """Context manager: Excitation Backprop backward rules on every conv/linear/average-pool/BatchNorm call.

    ``affine_inputs`` keeps each conv/linear call's input; with ``negate_last`` set at backward time, the last such
    call (the classifier) backpropagates with ``−W``.
    """

    def __init__(self, method: str, cache: WeightCache | None = None) -> None:
        super().__init__()
        self.method = method
        self.cache = WeightCache() if cache is None else cache
        self.affine_inputs: list[Tensor] = []
        self.relu_calls = 0
        self.negate_last = False

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        check_activation(func, args, kwargs, self.method)
        if func in AFFINE:
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            rest, rest_kw = args[3:], {k: v for k, v in kwargs.items() if k not in ("weight", "bias")}
            index = len(self.affine_inputs)
            self.affine_inputs.append(x)
            value = func(x, weight, bias, *rest, **rest_kw).detach()

            transpose = transposed_pass(func, rest, rest_kw) if func in DIRECT_TRANSPOSE else None

            def backward(p: Tensor) -> Tensor:
                negate = self.negate_last and index == len(self.affine_inputs) - 1
                w = self.cache.get(("excitation", negate), (weight,),
                                   lambda: (-weight.detach() if negate else weight.detach()).clamp(min=0))
                if transpose is None:
                    return excite(lambda i: func(i, w, None, *rest, **rest_kw), x, p)
                xd = x.detach()
                return xd * transpose(p / (func(xd, w, None, *rest, **rest_kw) + EB_GUARD), xd, w)

            return Relevance.apply(x, value, backward)
        if func in AVG_POOLS:
            x = args[0]
            value = func(*args, **kwargs).detach()
            return Relevance.apply(x, value, lambda p: excite(lambda i: func(i, *args[1:], **kwargs), x, p))
        if func is F.batch_norm:
            z = args[0]
            return z + (func(*args, **kwargs).detach() - z.detach())
        if func in RELU_FUNCTIONS:
            self.relu_calls += 1
        return func(*args, **kwargs)


def excite(layer: Any, x: Tensor, p: Tensor) -> Tensor:
    """``x ⊙ layer*(p ⊘ (layer(x) + guard))`` for a linear ``layer`` with non-negative weights."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        out = layer(xi)
        (grad,) = torch.autograd.grad(out, xi, p / (out.detach() + EB_GUARD))
    return xi.detach() * grad


@register("excitation_backprop")
class ExcitationBackprop(AttributionMethod):
    """Excitation Backprop (Zhang et al. 2016, §3.2; TorchRay): ``Σ_c`` of the marginal winning probability at
    ``layer`` (a module name; ``None`` = the input, TorchRay's default ``saliency_layer=''``), ``[B, 1, h, w]``.
    ``contrastive=True`` gives contrastive Excitation Backprop (§3.3; TorchRay
    ``contrastive_excitation_backprop``) with the contrast at the classifier's input, positive part kept."""

    def __init__(self, layer: str | None = None, contrastive: bool = False) -> None:
        self.layer = layer
        self.contrastive = contrastive
        self._cache = WeightCache()  # W⁺ (and (−W)⁺ of the classifier) kept while the parameters are unchanged

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_cache"}  # weak references do not pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, _cache=WeightCache())

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        x = inputs.detach().requires_grad_(True)
        modules = [] if self.layer is None else [resolve_layer(model, self.layer)]
        self._cache.prune()
        with capture_outputs(modules) as captures, ExcitationMode(self.name, self._cache) as mode:
            logits = model(x)
        require_relus(mode.relu_calls, self.name)
        if not mode.affine_inputs:
            raise AttributionError(f"{self.name}: the model made no conv/linear call")
        saliency_at = x if self.layer is None else captures[0].last
        scores, _ = target_scores(logits, target)
        if not self.contrastive:
            (p,) = torch.autograd.grad(scores.sum(), saliency_at)
            return p.sum(1, keepdim=True)
        contrast_at = mode.affine_inputs[-1]
        mode.negate_last = True
        (contrast,) = torch.autograd.grad(scores.sum(), contrast_at, retain_graph=True)
        mode.negate_last = False
        (positive,) = torch.autograd.grad(scores.sum(), contrast_at, retain_graph=True)
        (p,) = torch.autograd.grad(contrast_at, saliency_at, positive - contrast)
        return p.sum(1, keepdim=True).clamp(min=0)
