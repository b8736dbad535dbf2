"""The axiom framework "Model knows best" (dissertation ch. 7): deep-image-prior patches generated with the
model in the loop so that their effect on the output is known, and metrics that check attributions against it.

Entry point: ``python -m lit_xai axioms --config configs/axioms_<...>.yaml`` (:mod:`lit_xai.axioms.command`).
"""

from lit_xai.axioms.decoder import BatchedDeepImagePrior
from lit_xai.axioms.evaluation import make_metric, reduce_maps, scene_maps, update_metric
from lit_xai.axioms.generation import DecoderConfig, GenerationConfig, GenerationResult, SceneBatch, SceneGenerator
from lit_xai.axioms.scenarios import SCENARIOS, Scenario, get_scenario
from lit_xai.axioms.store import SceneStore

__all__ = [
    "SCENARIOS",
    "BatchedDeepImagePrior",
    "DecoderConfig",
    "GenerationConfig",
    "GenerationResult",
    "SceneBatch",
    "SceneGenerator",
    "SceneStore",
    "Scenario",
    "get_scenario",
    "make_metric",
    "reduce_maps",
    "scene_maps",
    "update_metric",
]
