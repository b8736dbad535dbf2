"""Method specs from a config → explainers: an attribution method plus its post-processing, under a display label.

A method spec is a dict (YAML-friendly)::

    {name: integrated_gradients, kwargs: {steps: 16}, label: IG-16,
     postprocess: [{name: reduce_channels, kwargs: {how: abs_sum}}, upsample, {name: normalize}]}

``postprocess`` steps are the functions of :mod:`lit_xai.attribution.postprocess`, applied left to right; a step
given as a plain string takes its defaults; ``upsample`` without a size resizes to the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from lit_xai.attribution import AttributionMethod, build_method
from lit_xai.attribution import postprocess as post

POSTPROCESS_STEPS: dict[str, Callable[..., Tensor]] = {
    "reduce_channels": post.reduce_channels,
    "absolute": post.absolute,
    "upsample": post.upsample,
    "normalize": post.normalize,
    "gaussian_smooth": post.gaussian_smooth,
    "morphological_opening": post.morphological_opening,
}
SPEC_KEYS = {"name", "kwargs", "postprocess", "label"}


@dataclass
class PostprocessStep:
    """One named post-processing function with its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, maps: Tensor, inputs: Tensor) -> Tensor:
        kwargs = dict(self.kwargs)
        if self.name == "upsample":
            kwargs.setdefault("size", tuple(inputs.shape[-2:]))
        return POSTPROCESS_STEPS[self.name](maps, **kwargs)


def parse_postprocess(spec: list[Any] | None) -> list[PostprocessStep]:
    """``[name | {name, kwargs}]`` → steps; unknown names are an error that lists the valid ones."""
    steps = []
    for item in spec or []:
        name, kwargs = (item, {}) if isinstance(item, str) else (item.get("name"), item.get("kwargs") or {})
        if name not in POSTPROCESS_STEPS:
            raise ValueError(f"unknown postprocess step {name!r}; expected one of {sorted(POSTPROCESS_STEPS)}")
        steps.append(PostprocessStep(name, dict(kwargs)))
    return steps


@dataclass
class Explainer:
    """``explainer(model, inputs, target)`` = the method's raw map followed by the post-processing steps."""

    label: str
    method: AttributionMethod
    postprocess: list[PostprocessStep] = field(default_factory=list)

    def __call__(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        maps = self.method(model, inputs, target)
        for step in self.postprocess:
            maps = step(maps, inputs)
        return maps

    def reset(self) -> None:
        """Restart a seeded method's random sequence (e.g. the random control) so every evaluation is identical."""
        reset = getattr(self.method, "reset", None)
        if callable(reset):
            reset()


def build_explainer(spec: dict[str, Any] | str) -> Explainer:
    """Build an :class:`Explainer` from a method spec (a dict, or just the registered name)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown or "name" not in spec:
        raise ValueError(f"a method spec needs 'name' and may have {sorted(SPEC_KEYS - {'name'})}; got {spec}")
    method = build_method(spec["name"], **(spec.get("kwargs") or {}))
    return Explainer(spec.get("label") or spec["name"], method, parse_postprocess(spec.get("postprocess")))
