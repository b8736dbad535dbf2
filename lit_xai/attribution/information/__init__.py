"""Information-bottleneck attribution: IBA, Inverse IBA, Multi-layer IBA, Regression IBA and InputIBA.

Importing this package registers ``iba``, ``inverse_iba``, ``multilayer_iba``, ``regression_iba`` and
``input_iba``. See ``docs/information.md``.
"""

from lit_xai.attribution.information.bottleneck import capacity_per_input_pixel
from lit_xai.attribution.information.iba import IBA, BottleneckResult, InverseIBA, MultiLayerIBA, MultiLayerResult
from lit_xai.attribution.information.input_iba import InputIBA, InputIBAResult
from lit_xai.attribution.information.regression import RegressionIBA
from lit_xai.attribution.information.statistics import FeatureStatistics, estimate_feature_statistics

__all__ = [
    "IBA",
    "BottleneckResult",
    "FeatureStatistics",
    "InputIBA",
    "InputIBAResult",
    "InverseIBA",
    "MultiLayerIBA",
    "MultiLayerResult",
    "RegressionIBA",
    "capacity_per_input_pixel",
    "estimate_feature_statistics",
]
