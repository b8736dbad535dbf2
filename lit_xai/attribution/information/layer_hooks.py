"""Reading and replacing the output of one named layer, leaving the model exactly as found.

Every hook is registered inside ``try``/``finally`` and removed on exit, also when the forward raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule named ``layer`` (dotted path, e.g. ``"features.17"`` or ``"layer2"``)."""
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
        raise AttributionError(f"layer {layer!r} not found in {type(model).__name__}; named modules: {shown}") from None


@contextlib.contextmanager
def replaced_output(module: nn.Module, replace: Callable[[Tensor], Tensor]) -> Iterator[list[int]]:
    """Within the block, ``module``'s output ``r`` is replaced by ``replace(r)``.

    Yields a one-element list counting the module's calls, so callers can reject a module that runs
    more than once per forward (a bottleneck must sit on exactly one tensor).
    """
    calls = [0]

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        calls[0] += 1
        if not isinstance(output, Tensor):
            raise AttributionError(f"layer {type(module).__name__} returns {type(output).__name__}, not a tensor")
        return replace(output)

    handle = module.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


class _StopForward(Exception):
    """Raised by the capture hook to end a forward pass once the layer output is known."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output


def layer_output(model: nn.Module, module: nn.Module, inputs: Tensor) -> Tensor:
    """``module``'s output for ``inputs``; the forward stops right after that layer (no wasted compute).

    Gradients flow from the returned tensor back to ``inputs`` when the caller enables them.
    """

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        if not isinstance(output, Tensor):
            raise AttributionError(f"layer {type(module).__name__} returns {type(output).__name__}, not a tensor")
        raise _StopForward(output)

    handle = module.register_forward_hook(hook)
    try:
        model(inputs)
    except _StopForward as stop:
        return stop.output
    finally:
        handle.remove()
    raise AttributionError(f"layer {type(module).__name__} was not called during the forward pass")


def run_with_layer_output(model: nn.Module, module: nn.Module, inputs: Tensor, replacement: Tensor) -> Tensor:
    """Forward ``inputs`` with ``module``'s output replaced by ``replacement``; returns the model output.

    ``replacement`` may hold k samples per input (``[k·B, ...]``, input-major): the layers after ``module``
    then see k·B samples while the layers before it run on B inputs only.
    """

    def replace(output: Tensor) -> Tensor:
        if output.shape[1:] != replacement.shape[1:] or replacement.shape[0] % output.shape[0]:
            raise AttributionError(
                f"bottleneck shape {tuple(replacement.shape)} does not match the layer output {tuple(output.shape)}"
            )
        return replacement

    with replaced_output(module, replace) as calls:
        out = model(inputs)
    if calls[0] != 1:
        raise AttributionError(
            f"the bottleneck layer {type(module).__name__} was called {calls[0]} times in one forward; "
            "choose a module that runs exactly once (e.g. a block or conv, not a shared ReLU)"
        )
    return out


class BottleneckForward:
    """Model output for bottleneck samples ``z`` (``draws`` per input, input-major) placed at ``module``.

    First tries to run the layers before ``module`` once per input and expand at the layer (cheap); if the
    model cannot take a larger batch after the layer (a skip connection across it), it falls back for good
    to repeating every input ``draws`` times.
    """

    def __init__(
        self, model: nn.Module, module: nn.Module, inputs: Tensor, draws: int, expand_at_layer: bool = True
    ) -> None:
        self.model, self.module, self.inputs, self.draws = model, module, inputs, draws
        self.expand_at_layer = expand_at_layer and draws > 1

    def __call__(self, z: Tensor) -> Tensor:
        if self.expand_at_layer:
            try:
                out = run_with_layer_output(self.model, self.module, self.inputs, z)
                if out.shape[0] == z.shape[0]:
                    return out
            except RuntimeError:
                pass
            self.expand_at_layer = False
        repeated = self.inputs.repeat_interleave(self.draws, 0)
        return run_with_layer_output(self.model, self.module, repeated, z)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameterless model)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")
