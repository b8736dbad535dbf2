"""Hidden neurons of a ReLU network: one neuron = one element of one ReLU call's output (seeds 000, 001).

A network's neurons are held as a list with one tensor ``[B, ...]`` per ReLU *call* (in call order), so a
ReLU module reused inside a ResNet block contributes one entry per call. Every function is batched: each
sample has its own activations, contributions and pathway.

- :func:`relu_activations` — the activations ``a`` of one forward pass.
- :class:`NeuronGate` — the ``ReLUInterceptor`` transform that restricts a forward pass to a pathway: neurons
  off the pathway are either replaced by constants equal to their original activation (seed 001 §4.1: the
  activation pattern is kept, no gradient flows through them) or set to zero (pruning, seed 000 Eq. 1;
  the PathwayGrad reference code), or multiplied by continuous gates (Distillation Guided Routing).
- :func:`flatten_neurons` / :func:`unflatten_neurons` — the network-wide ``[B, N]`` view used for ranking.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lit_xai.attribution.activations import ReLUInterceptor, forward_with_activations, require_relus
from lit_xai.attribution.base import AttributionError

NeuronTensors = list[Tensor]
Replacement = Literal["constant", "zero"]
REPLACEMENTS = ("constant", "zero")


def check_replacement(replacement: str) -> None:
    if replacement not in REPLACEMENTS:
        raise ValueError(f"replacement must be one of {REPLACEMENTS}, got {replacement!r}")


def relu_activations(model: nn.Module, inputs: Tensor, method: str) -> tuple[Tensor, NeuronTensors]:
    """Forward ``inputs``; return (logits, ReLU outputs in call order), both attached to the graph."""
    return forward_with_activations(model, inputs, method)


def flatten_neurons(neurons: Sequence[Tensor]) -> Tensor:
    """Concatenate per-call tensors ``[B, ...]`` into one network-wide ``[B, N]`` tensor."""
    return torch.cat([n.flatten(1) for n in neurons], dim=1)


def unflatten_neurons(flat: Tensor, like: Sequence[Tensor]) -> NeuronTensors:
    """Inverse of :func:`flatten_neurons`: split ``[B, N]`` back into tensors shaped like ``like``."""
    sizes = [t[0].numel() for t in like]
    return [chunk.reshape(t.shape) for chunk, t in zip(flat.split(sizes, dim=1), like, strict=True)]


class NeuronGate:
    """``ReLUInterceptor`` transform that restricts every ReLU call to ``keep`` (bool or float gates).

    ``replacement="zero"``: output ``a·keep`` (pruning; float ``keep`` = continuous gates).
    ``replacement="constant"``: output ``a·keep + c·(1−keep)`` with ``c`` the detached original activations:
    the value at the explained input is unchanged and no gradient flows through off-pathway neurons.
    ``record=True`` keeps the gated outputs (in the graph) in :attr:`outputs`.
    """

    def __init__(
        self,
        keep: Sequence[Tensor],
        replacement: Replacement = "zero",
        constants: Sequence[Tensor] | None = None,
        record: bool = False,
    ) -> None:
        check_replacement(replacement)
        if replacement == "constant" and constants is None:
            raise ValueError("replacement='constant' needs the original activations as constants")
        self.keep = list(keep)
        self.replacement = replacement
        self.constants = list(constants) if constants is not None else None
        self.record = record
        self.outputs: NeuronTensors = []
        self._converted: dict[tuple[int, torch.dtype], Tensor] = {}

    def _as_dtype(self, index: int, dtype: torch.dtype) -> Tensor:
        """Mask ``index`` in ``dtype``, converted once per gate (PrunePGD reuses one gate for all its steps). A float
        multiply, not ``torch.where`` on the bool mask: 3.3× faster forward + backward on CPU (resnet8, batch 32)."""
        keep = self.keep[index]
        if keep.dtype == dtype or keep.requires_grad:  # continuous gates (DGR) stay in the graph
            return keep if keep.dtype == dtype else keep.to(dtype)
        key = (index, dtype)
        if key not in self._converted:
            self._converted[key] = keep.to(dtype)
        return self._converted[key]

    def __call__(self, index: int, activation: Tensor) -> Tensor:
        if index >= len(self.keep):
            raise AttributionError(
                f"the forward pass made more ReLU calls ({index + 1}) than the pathway has layers ({len(self.keep)})"
            )
        keep = self.keep[index]
        if keep.shape != activation.shape:
            raise AttributionError(
                f"pathway mask of ReLU call {index} has shape {tuple(keep.shape)}, "
                f"the activation has shape {tuple(activation.shape)}"
            )
        keep = self._as_dtype(index, activation.dtype)
        out = activation * keep
        if self.replacement == "constant":
            out = out + self.constants[index] * (1 - keep)
        if self.record:
            self.outputs.append(out)
        return out


@contextlib.contextmanager
def gated(gate: NeuronGate, method: str) -> Iterator[ReLUInterceptor]:
    """Run the block with ``gate`` applied to every ReLU call; check the call count on exit."""
    with ReLUInterceptor(gate, method) as mode:
        yield mode
    require_relus(mode.calls, method)
    if mode.calls != len(gate.keep):
        raise AttributionError(
            f"{method}: the forward pass made {mode.calls} ReLU calls, the pathway covers {len(gate.keep)}"
        )


def expand_per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample ``[B]`` tensor so that it broadcasts against ``like`` ``[B, ...]``."""
    return values.view(-1, *([1] * (like.dim() - 1)))
