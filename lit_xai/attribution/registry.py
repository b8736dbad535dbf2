"""Name → method class registry, so configs and callbacks name methods by string."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from lit_xai.attribution.base import AttributionError, AttributionMethod

_REGISTRY: dict[str, type[AttributionMethod]] = {}


def register(name: str) -> Callable[[type[AttributionMethod]], type[AttributionMethod]]:
    """Class decorator: make ``name`` buildable with :func:`build_method`."""

    def decorator(cls: type[AttributionMethod]) -> type[AttributionMethod]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attribution method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type[AttributionMethod]:
    """The class registered under ``name``; an unknown name lists the close matches and all names."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        names = ", ".join(available_methods())
        raise AttributionError(f"unknown attribution method {name!r}.{hint} Available: {names}")
    return _REGISTRY[name]


def build_method(name: str, **kwargs: Any) -> AttributionMethod:
    """Instantiate the method registered as ``name``; unknown keyword arguments are an error."""
    cls = get_class(name)
    # a method without its own constructor inherits object.__init__(*args, **kwargs), which takes no arguments
    params = {} if cls.__init__ is object.__init__ else inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not accepts_any:
        raise AttributionError(
            f"{name}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}"
        )
    return cls(**kwargs)
