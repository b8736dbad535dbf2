"""(being written)"""

from lit_xai.callbacks.attribution_eval import AttributionEvaluation  # noqa: E402,F401
