"""Finding a layer by name, choosing one automatically, and capturing its output during a forward pass.

Layer methods (GradCAM, GradCAM++) and FullGrad need hidden activations. Everything here registers forward
hooks only inside a ``with`` block and removes them in ``finally``, so a failing forward leaves no hook behind.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Sequence

from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError

#: modules whose output is a pooled summary of the feature map, never the "last spatial layer"
POOLING_TYPES: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
    nn.Flatten,
)


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``); a wrong name lists close matches."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise AttributionError(
        f"model {type(model).__name__} has no layer named {name!r}.{hint} "
        "Layer names are the keys of model.named_modules()."
    )


class OutputCapture:
    """The outputs of one module, one entry per call, in call order (attached to the autograd graph).

    The hook hands a *clone* on to the rest of the network, so that a following in-place operation
    (``ReLU(inplace=True)``, ``out += shortcut``) cannot overwrite the captured activation.
    """

    def __init__(self) -> None:
        self.outputs: list[Tensor] = []

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor):
            raise AttributionError(f"layer {type(module).__name__} returns {type(output).__name__}, not a tensor")
        self.outputs.append(output)
        return output.clone()

    @property
    def last(self) -> Tensor:
        if not self.outputs:
            raise AttributionError("the chosen layer was not called during the forward pass")
        return self.outputs[-1]


@contextlib.contextmanager
def capture_outputs(modules: Sequence[nn.Module]) -> Iterator[list[OutputCapture]]:
    """Within the block, record every output of each module in ``modules`` (hooks removed on exit)."""
    captures = [OutputCapture() for _ in modules]
    handles = []
    try:
        for module, capture in zip(modules, captures):
            handles.append(module.register_forward_hook(capture))
        yield captures
    finally:
        for handle in handles:
            handle.remove()


class _SpatialRecorder:
    """Forward-hook state for :func:`find_last_spatial_layer`: (name, output) of each 4-D output, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, nn.Module, Tensor]] = []

    def hook(self, name: str):  # noqa: ANN201  (a hook factory)
        def record(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, Tensor) and output.dim() == 4:
                self.calls.append((name, module, output))

        return record


@contextlib.contextmanager
def record_spatial_outputs(model: nn.Module) -> Iterator[_SpatialRecorder]:
    """Record the 4-D outputs of every submodule (in completion order) during the block."""
    recorder = _SpatialRecorder()
    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(recorder.hook(name)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


def last_spatial_layer(recorder: _SpatialRecorder) -> tuple[str, Tensor]:
    """Choose the automatic GradCAM layer: the last 4-D output that is not (the same tensor as) a pooling output.

    Completion order puts a container after its last child, so a ResNet yields its last stage (``layer4`` /
    ``layer3``) and a VGG the last conv ReLU before the final max-pool (``features.29``) — the layers the
    GradCAM paper and reference code use (reference.md §2).
    """
    pooled = {id(out) for _, module, out in recorder.calls if isinstance(module, POOLING_TYPES)}
    candidates = [(name, out) for name, module, out in recorder.calls if id(out) not in pooled]
    if not candidates:
        raise AttributionError("no layer with a spatial [B, C, h, w] output was found for the automatic layer choice")
    return candidates[-1]
