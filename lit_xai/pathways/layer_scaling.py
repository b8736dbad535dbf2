"""Scale one ReLU call's output by several α in one forward pass that computes the network prefix only once.

NeuronIntGrad (seed 001 Eq. 4) needs ``∂y/∂a'`` at ``a' = α·a`` for every α, with only ReLU call ``l`` scaled.
Everything before call ``l`` (the prefix) is the same for every α, so it is computed once on the ``B`` images;
call ``l``'s output is replaced by the leaf ``a' = α_k·a`` for all α (α-major, ``[S·B, ...]``), and from there on
the suffix runs on ``S·B`` rows. A prefix tensor that meets an expanded one later (a skip connection of a residual
block, a concatenation) is repeated ``S`` times at that moment, so each (α, image) row sees exactly what it would
see if it had been forwarded on its own.

The prefix need not even be recomputed: :class:`ForwardTrace` records the clean forward pass (every torch function
call, its per-sample tensor output, the ReLU outputs), and :class:`SharedPrefixScaling` given that trace returns the
recorded outputs (sliced to the images of the pass) instead of computing the prefix. The replay is used for call
``l`` only if no recorded prefix tensor was modified in place after call ``l`` in the clean pass (checked with the
tensors' version counters), and it stops with :class:`ReplayMismatch` if the forward calls a different function
than the recorded one at the same position (the caller then computes that prefix).

This needs to know which tensors are per-sample: both modes track every tensor computed from the input and (in
:class:`SharedPrefixScaling`) every tensor computed from the expanded activation. Per-sample tensors are assumed
batch-first. A per-sample tensor that is *not* computed from the input (e.g. ``torch.zeros(x.shape[0], ...)``) is
not tracked, and combining it with an expanded tensor raises a shape error (for B = 1 it broadcasts, which is also
correct); such models can use ``intgrad_contributions(..., share_prefix=False)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

from lit_xai.attribution.activations import RELU_FUNCTIONS, check_activation


class ReplayMismatch(RuntimeError):
    """The forward pass does not follow the recorded trace; the prefix must be computed instead."""


def _tensor_leaves(value: Any) -> list[Tensor]:
    return [v for v in tree_flatten(value)[0] if isinstance(v, Tensor)]


class ForwardTrace(TorchFunctionMode):
    """Records one forward pass for later prefix replay: ``with trace.recording(inputs): model(inputs)``.

    :attr:`activations` are the ReLU outputs in call order, attached to the graph (as
    :func:`~lit_xai.attribution.activations.forward_with_activations` returns them); :attr:`funcs` is the function
    of every call and :attr:`outputs` its detached output where that is a per-sample tensor (else ``None``). A call of
    a non-ReLU activation raises the :class:`AttributionError` of ``check_activation`` naming ``method``.
    """

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = method
        self.batch = 0
        self.funcs: list[Any] = []
        self.outputs: list[Tensor | None] = []
        self.activations: list[Tensor] = []
        self._cached: list[Tensor] = []
        self._versions_at_relu: list[list[int]] = []
        self._per_sample: dict[int, Tensor] = {}

    def recording(self, inputs: Tensor) -> ForwardTrace:
        """This trace, ready to record a forward of ``inputs`` ``[B, ...]`` (use as a context manager)."""
        self.batch = inputs.shape[0]
        self._per_sample = {id(inputs): inputs}
        return self

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        check_activation(func, args, kwargs or {}, self.method)
        out = func(*args, **(kwargs or {}))
        per_sample = any(id(v) in self._per_sample for v in _tensor_leaves((args, kwargs)))
        if per_sample:
            for value in _tensor_leaves(out):
                self._per_sample[id(value)] = value
        self.funcs.append(func)
        cached = out.detach() if per_sample and isinstance(out, Tensor) else None
        self.outputs.append(cached)
        if cached is not None:
            self._cached.append(cached)
        if func in RELU_FUNCTIONS and isinstance(out, Tensor):
            self.activations.append(out)
            self._versions_at_relu.append([t._version for t in self._cached])
        return out

    def replayable(self, call: int) -> bool:
        """Whether ReLU call ``call``'s prefix can be replayed: no recorded tensor up to that call was modified in
        place later in the pass (the recorded values are then the values the suffix read)."""
        return all(t._version == v for t, v in zip(self._cached, self._versions_at_relu[call], strict=False))


class SharedPrefixScaling(TorchFunctionMode):
    """Context manager for one forward of ``inputs`` ``[B, ...]`` with ReLU call ``index`` scaled by ``alphas`` [S].

    After the forward, :attr:`scaled` is the leaf ``[S·B, ...]`` (α-major) that replaced that call's output;
    ``∂y/∂scaled`` is the integrand of Eq. 4. The prefix runs without autograd (nothing before the scaled call
    needs a gradient) or, with ``trace`` (the clean pass of a batch whose rows ``rows`` are ``inputs``), is replayed
    from it; :attr:`calls` counts the ReLU calls seen.
    """

    def __init__(
        self, index: int, alphas: Tensor, inputs: Tensor, trace: ForwardTrace | None = None, rows: slice | None = None
    ) -> None:
        super().__init__()
        self.index = index
        self.alphas = alphas
        self.batch = inputs.shape[0]
        self.calls = 0
        self.scaled: Tensor | None = None
        self.trace = trace
        self.rows = rows if rows is not None else slice(None)
        self._position = 0
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

    def _recorded(self, func: Any) -> Tensor | None:
        """The trace's output for this call (sliced to ``rows``), or ``None`` where the call must run."""
        position = self._position
        self._position += 1
        if self.trace is None or self.scaled is not None:
            return None
        if position >= len(self.trace.funcs) or self.trace.funcs[position] is not func:
            raise ReplayMismatch(f"call {position} is {func} in this pass, not the recorded function")
        cached = self.trace.outputs[position]
        if cached is None or self.rows == slice(None):
            return cached
        if cached.dim() == 0 or cached.shape[0] != self.trace.batch:
            raise ReplayMismatch(f"recorded output of call {position} is not batch-first")
        return cached[self.rows]

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
        out = self._recorded(func)
        if out is None:
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


__all__ = ["ForwardTrace", "ReplayMismatch", "SharedPrefixScaling"]
