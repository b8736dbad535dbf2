"""Scale one ReLU call's output by several α in one forward pass that computes the network prefix only once.

NeuronIntGrad (seed 001 Eq. 4) needs ``∂y/∂a'`` at ``a' = α·a`` for every α, with only ReLU call ``l`` scaled.
Everything before call ``l`` (the prefix) is the same for every α, so it is computed once on the ``B`` images;
call ``l``'s output is replaced by the leaf ``a' = α_k·a`` for all α (α-major, ``[S·B, ...]``), and from there on
the suffix runs on ``S·B`` rows. A prefix tensor that meets an expanded one later (a skip connection of a residual
block, a concatenation) is repeated ``S`` times at that moment, so each (α, image) row sees exactly what it would
see if it had been forwarded on its own.

This needs to know which tensors are per-sample: :class:`SharedPrefixScaling` (a ``TorchFunctionMode``) tracks
every tensor computed from the input and every tensor computed from the expanded activation. A per-sample tensor
that is *not* computed from the input (e.g. ``torch.zeros(x.shape[0], ...)``) is not tracked, and combining it
with an expanded tensor raises a shape error (for B = 1 it broadcasts, which is also correct); such models can use
``intgrad_contributions(..., share_prefix=False)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

from lit_xai.attribution.activations import RELU_FUNCTIONS


class SharedPrefixScaling(TorchFunctionMode):
    """Context manager for one forward of ``inputs`` ``[B, ...]`` with ReLU call ``index`` scaled by ``alphas`` [S].

    After the forward, :attr:`scaled` is the leaf ``[S·B, ...]`` (α-major) that replaced that call's output;
    ``∂y/∂scaled`` is the integrand of Eq. 4. The prefix runs without autograd (nothing before the scaled call
    needs a gradient); :attr:`calls` counts the ReLU calls seen.
    """

    def __init__(self, index: int, alphas: Tensor, inputs: Tensor) -> None:
        super().__init__()
        self.index = index
        self.alphas = alphas
        self.batch = inputs.shape[0]
        self.calls = 0
        self.scaled: Tensor | None = None
        # tensors are kept alive so that their ids cannot be reused by unrelated tensors during the forward
        self._per_sample: dict[int, Tensor] = {id(inputs): inputs}
        self._expanded: dict[int, Tensor] = {}
        self._repeated: dict[int, Tensor] = {}

    def _repeat(self, tensor: Tensor) -> Tensor:
        """The per-sample ``tensor`` repeated for every α (α-major), computed once per tensor."""
        key = id(tensor)
        if key not in self._repeated:
            self._repeated[key] = tensor.repeat(len(self.alphas), *([1] * (tensor.dim() - 1)))
        return self._repeated[key]

    def _is_per_sample(self, value: Any) -> bool:
        return isinstance(value, Tensor) and id(value) in self._per_sample

    def _scale(self, activation: Tensor) -> Tensor:
        rows = activation.detach().repeat(len(self.alphas), *([1] * (activation.dim() - 1)))
        factors = self.alphas.to(activation.dtype).repeat_interleave(self.batch)
        self.scaled = (rows * factors.view(-1, *([1] * (activation.dim() - 1)))).requires_grad_(True)
        return self.scaled

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        leaves, spec = tree_flatten((args, kwargs or {}))
        expanded = any(isinstance(v, Tensor) and id(v) in self._expanded for v in leaves)
        per_sample = any(self._is_per_sample(v) for v in leaves)
        if expanded and per_sample:
            leaves = [
                self._repeat(v) if self._is_per_sample(v) and v.dim() > 0 and v.shape[0] == self.batch else v
                for v in leaves
            ]
            args, kwargs = tree_unflatten(leaves, spec)
        if self.scaled is None:
            with torch.no_grad():
                out = func(*args, **(kwargs or {}))
        else:
            out = func(*args, **(kwargs or {}))
        if func in RELU_FUNCTIONS and isinstance(out, Tensor):
            call = self.calls
            self.calls += 1
            if call == self.index:
                out = self._scale(out)
                self._expanded[id(out)] = out
                return out
        if expanded or per_sample:
            registry = self._expanded if expanded else self._per_sample
            for value in tree_flatten(out)[0]:
                if isinstance(value, Tensor):
                    registry[id(value)] = value
        return out


__all__ = ["SharedPrefixScaling"]
