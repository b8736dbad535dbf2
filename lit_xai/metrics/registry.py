"""Name → metric factory, so configs name metrics by string (``{name: deletion, kwargs: {...}}``)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from lit_xai.metrics.base import AttributionMetric
from lit_xai.metrics.complexity import Complexity, Sparseness
from lit_xai.metrics.faithfulness import (
    IROF,
    ROAD,
    FaithfulnessCorrelation,
    Infidelity,
    Monotonicity,
    MonotonicityCorrelation,
)
from lit_xai.metrics.localisation import EffectiveHeatRatio, PointingGame
from lit_xai.metrics.perturbation import Deletion, Insertion, PixelPerturbation
from lit_xai.metrics.random_logit import RandomLogit
from lit_xai.metrics.randomisation import ParameterRandomisation
from lit_xai.metrics.robustness import AvgSensitivity, LocalLipschitzEstimate, MaxSensitivity
from lit_xai.metrics.sensitivity_n import SensitivityN
from lit_xai.metrics.task_gt import LocalisationIoU, SeverityCorrelation

METRICS: dict[str, Callable[..., AttributionMetric]] = {
    "morf": partial(PixelPerturbation, order="morf"),
    "lerf": partial(PixelPerturbation, order="lerf"),
    "deletion": Deletion,
    "insertion": Insertion,
    "sensitivity_n": SensitivityN,
    "randomisation": ParameterRandomisation,
    "ehr": EffectiveHeatRatio,
    "pointing_game": PointingGame,
    "sparseness": Sparseness,
    "complexity": Complexity,
    "faithfulness_correlation": FaithfulnessCorrelation,
    "monotonicity": Monotonicity,
    "monotonicity_correlation": MonotonicityCorrelation,
    "infidelity": Infidelity,
    "road": ROAD,
    "irof": IROF,
    "max_sensitivity": MaxSensitivity,
    "avg_sensitivity": AvgSensitivity,
    "local_lipschitz": LocalLipschitzEstimate,
    "random_logit": RandomLogit,
    "localisation_iou": LocalisationIoU,
    "severity_correlation": SeverityCorrelation,
}


def available_metrics() -> list[str]:
    """The registered metric names, sorted."""
    return sorted(METRICS)


def build_metric(name: str, **kwargs: Any) -> AttributionMetric:
    """Instantiate the metric registered as ``name``; unknown names and keyword arguments are errors."""
    if name not in METRICS:
        close = difflib.get_close_matches(name, METRICS, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown metric {name!r}.{hint} Available: {', '.join(available_metrics())}")
    factory = METRICS[name]
    cls = factory.func if isinstance(factory, partial) else factory
    accepted: set[str] = set()
    for klass in inspect.getmro(cls):  # type: ignore[arg-type]  # up to AttributionMetric (its ``result``)
        accepted |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")}
        if klass is AttributionMetric:
            break
    fixed = set(factory.keywords) if isinstance(factory, partial) else set()
    unknown = sorted(set(kwargs) - (accepted - fixed))
    if unknown:
        raise ValueError(
            f"metric {name!r}: unknown argument(s) {', '.join(unknown)}; accepted: {sorted(accepted - fixed)}"
        )
    return factory(**kwargs)
