"""Attribution methods: ``build_method(name, **kwargs)(model, inputs, target=None)`` → raw map.

Importing this package registers every method family; ``available_methods()`` lists them.
"""

from lit_xai.attribution import (  # noqa: F401  (importing registers the methods)
    cam,
    deeplift,
    dga,
    excitation,
    extremal,
    fullgrad,
    gradient_shap,
    gradients,
    guided,
    guided_ig,
    information,
    lrp,
    occlusion,
    pathway_grad,
    prune_pgd_dead,
    pruning,
    random_map,
    rise,
    surrogate,
)
from lit_xai.attribution.base import AttributionError, AttributionMethod
from lit_xai.attribution.registry import available_methods, build_method, get_class, register

__all__ = ["AttributionError", "AttributionMethod", "available_methods", "build_method", "get_class", "register"]
