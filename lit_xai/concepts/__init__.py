"""Concept analysis (seed 002, "Towards Semantic Interpretation of Thoracic Disease and COVID-19 Diagnosis Models").

- :mod:`~lit_xai.concepts.layers`: the activations of named layers (hooks that never outlive a call).
- :mod:`~lit_xai.concepts.dissection`: Network Dissection (Bau et al. 2017; seed 002 §2.2, Eq. 5): exact per-unit
  thresholds, data-set-wide IoU of unit masks with concept masks, detectors and their labels.
- :mod:`~lit_xai.concepts.semantic`: semantic attribution (§2.3, Eq. 6): Integrated Gradients at a layer, unit
  contributions, the top units and their normalised maps (§3.5).
- ``python -m lit_xai dissect`` (:mod:`~lit_xai.concepts.command`) runs both on checkpoints; docs/concepts.md.
"""

from lit_xai.concepts.dissection import (
    IOU_THRESHOLD,
    TAIL,
    DissectionIoU,
    DissectionResult,
    UnitThresholds,
    dissect,
    layer_iou,
    layer_thresholds,
)
from lit_xai.concepts.layers import recording, resolve_layers
from lit_xai.concepts.semantic import (
    SemanticAttribution,
    layer_integrated_gradients,
    normalised_maps,
    semantic_attribution,
)

__all__ = [
    "IOU_THRESHOLD",
    "TAIL",
    "DissectionIoU",
    "DissectionResult",
    "SemanticAttribution",
    "UnitThresholds",
    "dissect",
    "layer_integrated_gradients",
    "layer_iou",
    "layer_thresholds",
    "normalised_maps",
    "recording",
    "resolve_layers",
    "semantic_attribution",
]
