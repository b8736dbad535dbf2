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


@contextlib.contextmanager
def patched_forwards(replacements: dict[nn.Module, Callable[..., Tensor]]) -> Iterator[None]:
    """Within the block each module's ``forward`` is the given function (an instance attribute, removed on exit).

    Module hooks still run around a patched forward; anything the module had as an instance ``forward`` before is
    put back, also when the block raises.
    """
    missing = object()
    saved = {module: module.__dict__.get("forward", missing) for module in replacements}
    try:
        for module, forward in replacements.items():
            module.forward = forward  # type: ignore[method-assign]
        yield
    finally:
        for module, previous in saved.items():
            if previous is missing:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous  # type: ignore[method-assign]


def completed_prefix(model: nn.Module, module: nn.Module, inputs: Tensor) -> list[tuple[nn.Module, Tensor]]:
    """The outermost submodules whose only call ends before ``module`` starts, with a copy of their output.

    During a bottleneck optimisation these outputs do not change (the inputs and weights are fixed), so a forward
    can replay them instead of recomputing the layers before the bottleneck at every step. Modules called more
    than once (a shared ReLU) and modules around ``module`` (its parents) are left to run. One probe forward.
    """
    clock = iter(range(1 << 62))
    started: dict[nn.Module, int] = {}
    ended: dict[nn.Module, int] = {}
    calls: dict[nn.Module, int] = {}
    outputs: dict[nn.Module, Tensor] = {}

    def pre_hook(m: nn.Module, _inputs: tuple) -> None:
        started.setdefault(m, next(clock))
        calls[m] = calls.get(m, 0) + 1

    def post_hook(m: nn.Module, _inputs: tuple, output: object) -> None:
        ended.setdefault(m, next(clock))
        if isinstance(output, Tensor):
            outputs.setdefault(m, output.detach().clone())  # a copy: later in-place ops must not change it

    handles = []
    try:
        for m in model.modules():
            if m is not model:
                handles.append(m.register_forward_pre_hook(pre_hook))
                handles.append(m.register_forward_hook(post_hook))
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if module not in started:
        raise AttributionError(f"layer {type(module).__name__} was not called during the forward pass")
    boundary = started[module]
    done = [m for m in started if calls[m] == 1 and m in outputs and ended.get(m, boundary) < boundary]
    outermost: list[nn.Module] = []
    last_end = -1
    for m in sorted(done, key=started.__getitem__):
        if started[m] > last_end:  # not inside an already kept module
            outermost.append(m)
            last_end = ended[m]
    unread = chained_away(model, set(outermost))
    return [(m, outputs[m].new_empty(0) if m in unread else outputs[m]) for m in outermost]


def chained_away(model: nn.Module, replayed: set[nn.Module]) -> set[nn.Module]:
    """Replayed children of a plain ``nn.Sequential`` whose next sibling is replayed too: nothing reads their output
    (the next one ignores its input), so an empty tensor stands in for it — VGG's conv4_1 prefix would otherwise hold
    and copy 17 full-resolution feature maps per image."""
    unread: set[nn.Module] = set()
    for parent in model.modules():
        if type(parent).forward is not nn.Sequential.forward:
            continue
        children = list(parent.children())
        unread.update(child for child, following in zip(children, children[1:], strict=False)
                      if child in replayed and following in replayed)
    return unread


def replay(output: Tensor) -> Callable[..., Tensor]:
    """A forward that ignores its arguments and returns a fresh copy of ``output`` (safe against in-place ops)."""
    return lambda *_args, **_kwargs: output.clone()


class BottleneckForward:
    """Model output for bottleneck samples ``z`` (``draws`` per input, input-major) placed at ``module``.

    First tries to run the layers before ``module`` once per input and expand at the layer (cheap); with
    ``reuse_prefix`` those layers do not even run again: their outputs are recorded by one probe forward
    (:func:`completed_prefix`) and replayed, and ``module`` itself returns ``z``. If the model cannot take a larger
    batch after the layer (a skip connection across it), it falls back for good to repeating every input
    ``draws`` times through the full network with a hook on ``module``.
    """

    def __init__(
        self, model: nn.Module, module: nn.Module, inputs: Tensor, draws: int, expand_at_layer: bool = True,
        reuse_prefix: bool = True,
    ) -> None:
        self.model, self.module, self.inputs, self.draws = model, module, inputs, draws
        self.expand_at_layer = expand_at_layer
        self.reuse_prefix = reuse_prefix
        self._prefix: list[tuple[nn.Module, Tensor]] | None = None

    def __call__(self, z: Tensor) -> Tensor:
        if self.expand_at_layer:
            try:
                out = self._expanded(z)
                if out.shape[0] == z.shape[0]:
                    return out
            except RuntimeError:
                pass
            self.expand_at_layer = False
        repeated = self.inputs.repeat_interleave(self.draws, 0)
        return run_with_layer_output(self.model, self.module, repeated, z)

    def _expanded(self, z: Tensor) -> Tensor:
        if not self.reuse_prefix:
            return run_with_layer_output(self.model, self.module, self.inputs, z)
        if self._prefix is None:
            self._prefix = completed_prefix(self.model, self.module, self.inputs)
        calls = [0]

        def bottleneck(*_args: object, **_kwargs: object) -> Tensor:
            calls[0] += 1
            return z

        patches = {m: replay(output) for m, output in self._prefix}
        patches[self.module] = bottleneck
        with patched_forwards(patches):
            out = self.model(self.inputs)
        if calls[0] != 1:
            raise AttributionError(
                f"the bottleneck layer {type(self.module).__name__} was called {calls[0]} times in one forward; "
                "choose a module that runs exactly once (e.g. a block or conv, not a shared ReLU)"
            )
        return out


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameterless model)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")
