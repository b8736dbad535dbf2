"""The contract every attribution method follows.

``method(model, inputs, target=None)`` returns a raw, signed map with the batch size of ``inputs``
(``[B, C, H, W]`` for input-space methods, ``[B, 1, h, w]`` for layer methods), on ``inputs``' device.
``target`` is an int, an int tensor ``[B]`` or ``None`` (the model's predicted class), as in Captum.

The base class validates the call, switches gradients on (also inside ``torch.inference_mode``, which
``Trainer.validate``/``test`` use by default), puts the model in eval mode and restores every
``requires_grad`` flag, train/eval flag, parameter gradient and hook registry afterwards — also when the
method raises midway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import Tensor, nn

TargetLike = int | Tensor | None
R = TypeVar("R")


class AttributionError(ValueError):
    """A call the method cannot serve: bad input, bad target, unsupported model."""


def check_inputs(inputs: Tensor, name: str = "inputs") -> Tensor:
    """Reject anything that is not a finite float ``[B, C, H, W]`` tensor."""
    if not isinstance(inputs, Tensor):
        raise AttributionError(f"{name} must be a torch.Tensor of shape [B, C, H, W], got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise AttributionError(f"{name} must have shape [B, C, H, W], got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise AttributionError(f"{name} must be a floating-point tensor, got dtype {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise AttributionError(f"{name} is an empty batch")
    if not bool(torch.isfinite(inputs).all()):
        raise AttributionError(f"{name} contains NaN or inf values")
    return inputs


def normalize_target(target: TargetLike, batch_size: int, device: torch.device) -> Tensor | None:
    """Turn an int / ``[B]`` tensor / ``None`` into a long tensor ``[B]`` (or ``None``); check shape and sign."""
    if target is None:
        return None
    if isinstance(target, bool):
        raise AttributionError(f"target must be an int or an int tensor of shape [{batch_size}], got a bool")
    if isinstance(target, int):
        target = torch.full((batch_size,), target, dtype=torch.long, device=device)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise AttributionError(f"target must hold integer class indices, got dtype {target.dtype}")
        if target.dim() == 0:
            target = target.expand(batch_size)
        if target.dim() != 1 or target.shape[0] != batch_size:
            raise AttributionError(
                f"target must have shape [{batch_size}] (one class per input), got shape {tuple(target.shape)}"
            )
        target = target.to(device=device, dtype=torch.long)
    else:
        raise AttributionError(f"target must be None, an int or an int tensor, got {type(target).__name__}")
    if bool((target < 0).any()):
        raise AttributionError(f"target contains negative class indices: {target.tolist()}")
    return target


def check_target_range(target: Tensor, num_classes: int) -> None:
    """Raise if a class index is not below the model's number of outputs."""
    if bool((target >= num_classes).any()):
        bad = sorted(set(target[target >= num_classes].tolist()))
        raise AttributionError(f"target class(es) {bad} out of range: the model has {num_classes} outputs")


def target_scores(logits: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
    """Select ``logits[b, target[b]]``; ``None`` selects the predicted class. Returns (scores, target)."""
    if logits.dim() != 2:
        raise AttributionError(f"the model must return logits of shape [B, num_classes], got {tuple(logits.shape)}")
    if target is None:
        target = logits.detach().argmax(dim=1)
    else:
        check_target_range(target, logits.shape[1])
    return logits.gather(1, target[:, None]).squeeze(1), target


def resolve_target(model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
    """The explained class per sample: ``target`` itself, or the model's prediction (one extra forward)."""
    if target is not None:
        return target
    with torch.no_grad():
        return model(inputs).argmax(dim=1)


#: the hook registries of a module that a guarded block may add to (entries added inside the block are removed)
HOOK_REGISTRIES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                   "_state_dict_hooks", "_load_state_dict_pre_hooks")


@contextlib.contextmanager
def preserved_model_state(model: nn.Module, freeze: bool = False) -> Iterator[None]:
    """Put ``model`` in eval mode for the block; restore flags, grads and hooks afterwards, even on error.

    Hooks registered inside the block are removed on exit: a method that forgets one cannot leak it.
    ``freeze`` switches ``requires_grad`` off on every parameter for the block, so attribution passes never form
    weight gradients (the flags are restored on exit).
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    # the keys of the non-empty registries only (most are empty): this guard runs on every attribution call
    hooks = [{name: set(registry) for name in HOOK_REGISTRIES if (registry := getattr(m, name, None))}
             for m in modules]
    if any(training):
        model.eval()
    if freeze:
        for p in params:
            p.requires_grad_(False)
    try:
        yield
    finally:
        for m, flag in zip(modules, training):
            if m.training != flag:
                m.training = flag
        for p, flag, grad in zip(params, requires_grad, grads):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
            if p.grad is not grad:
                p.grad = grad
        for m, saved in zip(modules, hooks):
            for name in HOOK_REGISTRIES:
                current = getattr(m, name, None)
                if current:
                    kept = saved.get(name, ())
                    for key in [k for k in current if k not in kept]:
                        del current[key]


class AttributionMethod:
    """Base class. Subclasses implement :meth:`attribute` on validated inputs and a normalised target.

    ``attribute`` receives ``target`` as a long tensor ``[B]`` or ``None`` (meaning: explain the predicted
    class — use :func:`target_scores` on the logits of the clean input, or :func:`resolve_target`).
    """

    #: registry name, set by :func:`lit_xai.attribution.register`
    name: str = ""

    def __call__(self, model: nn.Module, inputs: Tensor, target: TargetLike = None) -> Tensor:
        return self.guarded(self.attribute, model, inputs, target).detach()

    def guarded(
        self, fn: Callable[[nn.Module, Tensor, Tensor | None], R], model: nn.Module, inputs: Tensor,
        target: TargetLike = None,
    ) -> R:
        """Run ``fn(model, inputs, target)`` under the contract: validated inputs, normalised target, gradients on
        (also inside inference mode), parameters frozen (no weight gradients are ever formed), model in eval mode
        and restored afterwards, even on error."""
        check_inputs(inputs)
        target_t = normalize_target(target, inputs.shape[0], inputs.device)
        with torch.inference_mode(False), torch.enable_grad(), preserved_model_state(model, freeze=True):
            if inputs.is_inference():
                inputs = inputs.clone()
            if target_t is not None and target_t.is_inference():
                target_t = target_t.clone()
            return fn(model, inputs.detach(), target_t)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def input_gradient(model: nn.Module, inputs: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One forward + backward: returns (∂y_t/∂x, logits, target). ``inputs`` must be detached."""
    x = inputs.detach().requires_grad_(True)
    logits = model(x)
    scores, target = target_scores(logits, target)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad, logits.detach(), target
