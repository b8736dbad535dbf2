"""Attribution metrics as torchmetrics ``Metric``s with one update signature (see :mod:`lit_xai.metrics.base`).

``build_metric(name, **kwargs)`` builds one by name; ``available_metrics()`` lists the names:

- perturbation curves: ``morf``, ``lerf``, ``deletion``, ``insertion``; ``sensitivity_n``;
- sanity: ``randomisation`` (parameter cascade), ``random_logit``;
- localisation: ``ehr``, ``pointing_game``;
- complexity: ``sparseness``, ``complexity``;
- faithfulness: ``faithfulness_correlation``, ``monotonicity``, ``monotonicity_correlation``, ``infidelity``,
  ``road``, ``irof``;
- robustness: ``max_sensitivity``, ``avg_sensitivity``, ``local_lipschitz``.
"""

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
from lit_xai.metrics.image_scores import ImageScoreMean
from lit_xai.metrics.localisation import EffectiveHeatRatio, PointingGame
from lit_xai.metrics.perturbation import Deletion, Insertion, PerturbationCurve, PixelPerturbation
from lit_xai.metrics.random_logit import RandomLogit
from lit_xai.metrics.randomisation import ParameterRandomisation
from lit_xai.metrics.registry import available_metrics, build_metric
from lit_xai.metrics.robustness import AvgSensitivity, LocalLipschitzEstimate, MaxSensitivity
from lit_xai.metrics.sensitivity_n import SensitivityN
from lit_xai.metrics.task_gt import LocalisationIoU, SeverityCorrelation

__all__ = [
    "IROF",
    "ROAD",
    "AttributionMetric",
    "AvgSensitivity",
    "Complexity",
    "Deletion",
    "EffectiveHeatRatio",
    "FaithfulnessCorrelation",
    "ImageScoreMean",
    "Infidelity",
    "Insertion",
    "LocalLipschitzEstimate",
    "LocalisationIoU",
    "MaxSensitivity",
    "Monotonicity",
    "MonotonicityCorrelation",
    "ParameterRandomisation",
    "PerturbationCurve",
    "PixelPerturbation",
    "PointingGame",
    "RandomLogit",
    "SensitivityN",
    "SeverityCorrelation",
    "Sparseness",
    "available_metrics",
    "build_metric",
]
