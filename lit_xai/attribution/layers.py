"""Finding a layer by name, choosing one automatically, and capturing its output during a forward pass.

Layer methods (GradCAM, GradCAM++) and FullGrad need hidden activations. Everything here registers forward
hooks only inside a ``with`` block and removes them in ``finally``, so a failing forward leaves no hook behind.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

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
def forward_hooks(pairs: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Within the block, each ``(module, hook)`` pair's forward hook is registered; all are removed on exit."""
    handles = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def capture_outputs(modules: Sequence[nn.Module]) -> Iterator[list[OutputCapture]]:
    """Within the block, record every output of each module in ``modules`` (hooks removed on exit)."""
    captures = [OutputCapture() for _ in modules]
    with forward_hooks(zip(modules, captures)):
        yield captures


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
    with forward_hooks((module, recorder.hook(name)) for name, module in model.named_modules() if name):
        yield recorder


def last_spatial_layer(recorder: _SpatialRecorder, method: str = "gradcam") -> tuple[str, Tensor]:
    """Choose the automatic GradCAM layer: the last 4-D output that is not (the same tensor as) a pooling output.

    Completion order puts a container after its last child, so a ResNet yields its last stage (``layer4`` /
    ``layer3``) and a VGG the last conv ReLU before the final max-pool (``features.29``, conv5_3): "the last
    convolutional layer" of the GradCAM paper (Selvaraju et al. 2017) and reference.md §2. pytorch-grad-cam's README
    takes the same ResNet layer (``model.layer4[-1]``) but, for VGG, ``model.features[-1]`` — the max-pool after
    conv5_3 (7×7 instead of 14×14); pass ``layer="features.30"`` to reproduce it.

    The choice must be a convolutional feature map ``[B, C, h, w]``: its ``h × w`` must be the spatial size of a
    convolution's output. Otherwise — e.g. a vision transformer, whose last 4-D tensor is an attention
    ``[B, heads, tokens, dim]`` — there is no spatial layer to choose, and the call raises naming the layer.
    """
    pooled = {id(out) for _, module, out in recorder.calls if isinstance(module, POOLING_TYPES)}
    candidates = [(name, out) for name, module, out in recorder.calls if id(out) not in pooled]
    if not candidates:
        raise AttributionError(
            f"{method}: no layer with a spatial [B, C, h, w] output was found for the automatic layer choice; "
            "pass layer=<module name> (and reshape_transform= for token outputs)"
        )
    name, out = candidates[-1]
    conv_sizes = {tuple(o.shape[-2:]) for _, module, o in recorder.calls if isinstance(module, nn.modules.conv._ConvNd)}
    if tuple(out.shape[-2:]) not in conv_sizes:
        raise AttributionError(
            f"{method}: the automatic layer choice found {name!r} with output {list(out.shape)}, which is not a "
            f"convolutional feature map [B, C, h, w] (no convolution outputs a {out.shape[-2]}×{out.shape[-1]} map), "
            "so the model is not a CNN (e.g. a vision transformer). Pass layer=<module name> and, for token "
            "outputs [B, 1 + h·w, C], reshape_transform='vit' ('swin', or a callable returning [B, C, h, w])"
        )
    return name, out


def vit_reshape_transform(
    tokens: Tensor, height: int | None = None, width: int | None = None, prefix_tokens: int = 1
) -> Tensor:
    """ViT token output ``[B, prefix + h·w, C]`` → feature map ``[B, C, h, w]`` (drops the class/register tokens).

    pytorch-grad-cam's ``vit_reshape_transform`` convention (one class token, row-major patches); ``height``/``width``
    default to the square grid ``√(tokens − prefix)``.
    """
    if tokens.dim() != 3:
        raise AttributionError(f"vit_reshape_transform expects tokens [B, N, C], got shape {list(tokens.shape)}")
    patches = tokens[:, prefix_tokens:]
    height, width = _grid(patches.shape[1], height, width, "vit_reshape_transform")
    return patches.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def swin_reshape_transform(tokens: Tensor, height: int | None = None, width: int | None = None) -> Tensor:
    """Swin stage output → ``[B, C, h, w]``: ``[B, h, w, C]`` (timm's channels-last stages) is permuted,
    ``[B, h·w, C]`` (pytorch-grad-cam's ``swinT_reshape_transform`` convention, no class token) reshaped."""
    if tokens.dim() == 4:
        return tokens.permute(0, 3, 1, 2)
    if tokens.dim() != 3:
        raise AttributionError(
            f"swin_reshape_transform expects [B, h, w, C] or [B, h·w, C], got shape {list(tokens.shape)}"
        )
    height, width = _grid(tokens.shape[1], height, width, "swin_reshape_transform")
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def _grid(count: int, height: int | None, width: int | None, name: str) -> tuple[int, int]:
    if height is None and width is None:
        side = math.isqrt(count)
        if side * side != count:
            raise AttributionError(f"{name}: {count} patch tokens are not a square grid; pass height= and width=")
        return side, side
    height = height if height is not None else count // width
    width = width if width is not None else count // height
    if height * width != count:
        raise AttributionError(f"{name}: {count} patch tokens do not form a {height}×{width} grid")
    return height, width


#: ``reshape_transform`` names accepted by the layer methods
RESHAPE_TRANSFORMS = {"vit": vit_reshape_transform, "swin": swin_reshape_transform}
