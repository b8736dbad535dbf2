"""Attribution metrics as torchmetrics ``Metric``s with one update signature (see :mod:`lit_xai.metrics.base`).

``build_metric(name, **kwargs)`` builds one by name; ``available_metrics()`` lists the names: ``morf``, ``lerf``,
``deletion``, ``insertion``, ``sensitivity_n``, ``randomisation``, ``ehr``, ``pointing_game``.
"""

from lit_xai.metrics.base import AttributionMetric
from lit_xai.metrics.localisation import EffectiveHeatRatio, PointingGame
from lit_xai.metrics.perturbation import Deletion, Insertion, PerturbationCurve, PixelPerturbation
from lit_xai.metrics.randomisation import ParameterRandomisation
from lit_xai.metrics.registry import available_metrics, build_metric
from lit_xai.metrics.sensitivity_n import SensitivityN

__all__ = [
    "AttributionMetric",
    "Deletion",
    "EffectiveHeatRatio",
    "Insertion",
    "ParameterRandomisation",
    "PerturbationCurve",
    "PixelPerturbation",
    "PointingGame",
    "SensitivityN",
    "available_metrics",
    "build_metric",
]
