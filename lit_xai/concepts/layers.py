"""The activations of named layers during a forward pass, by forward hooks that are removed when the call ends."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from lit_xai.models.classifier import ConfigurationError


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """``{name: module}`` for ``names`` of ``model.named_modules()``; an unknown name is a
    :class:`ConfigurationError` listing close names and the conv/ReLU layers that exist."""
    if not names:
        raise ConfigurationError("dissect: give at least one layer (e.g. features.8 of digits_cnn)")
    modules = dict(model.named_modules())
    found = {}
    for name in names:
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
            spatial = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.ReLU))]
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigurationError(
                f"unknown layer {name!r} in {type(model).__name__}.{hint} Conv/ReLU layers: {', '.join(spatial)}"
            )
        found[name] = modules[name]
    return found


def check_spatial(name: str, activation: Tensor) -> None:
    """Units are feature maps: a layer output must be ``[B, K, h, w]``."""
    if activation.dim() != 4:
        raise ConfigurationError(
            f"layer {name!r} outputs shape {tuple(activation.shape)}; Network Dissection needs feature maps "
            "[B, K, h, w] (choose a conv or ReLU layer)"
        )


@contextmanager
def recording(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Within the block, every forward of ``model`` stores each named layer's output (detached, cloned: a later
    in-place op such as ``ReLU(inplace=True)`` cannot alter it) in the yielded dict. The hooks are removed on exit,
    also when the block raises."""
    modules = resolve_layers(model, names)
    store: dict[str, Tensor] = {}
    handles = []
    try:
        for name, module in modules.items():
            def hook(_module: nn.Module, _inputs: tuple, output: Tensor, name: str = name) -> None:
                store[name] = output.detach().clone()

            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()
