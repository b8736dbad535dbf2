"""The report's attribution methods: the IBA family is fitted on the training data before it explains anything.

Schulz et al. 2020 §3.1 estimate the bottleneck's prior N(μ_R, σ_R²) on training data (the reference's
``IBA.estimate(model, train_loader, n_samples)``); the report does the same from its DataModule's
``train_dataloader()``, as the evaluation callback and the ``axioms`` command do.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from lit_xai.attribution import AttributionMethod, build_method
from lit_xai.attribution.base import AttributionError
from lit_xai.attribution.information.iba import FeatureBottleneckMethod
from lit_xai.models.classifier import ConfigurationError
from lit_xai.report.config import MethodSpec


class ReportMethods:
    """``methods(spec)`` → the method of ``spec``: a fresh one, except the IBA family
    (:class:`~lit_xai.attribution.information.iba.FeatureBottleneckMethod`), which is fitted on ``model`` from
    ``datamodule.train_dataloader()`` at its first use and then reused (its maps depend on its arguments and the
    statistics only: the noise comes from a generator seeded per call). The fit runs in a forked RNG seeded from
    ``seed`` and the spec, so a training loader's augmentation gives the same statistics in every run and shard.
    """

    def __init__(self, model: nn.Module, datamodule: Any, seed: int) -> None:
        self.model, self.datamodule, self.seed = model, datamodule, seed
        self._fitted: dict[str, AttributionMethod] = {}

    def __call__(self, spec: MethodSpec) -> AttributionMethod:
        if spec.display in self._fitted:
            return self._fitted[spec.display]
        method = build_method(spec.name, **spec.kwargs)
        if not isinstance(method, FeatureBottleneckMethod):
            return method
        text = json.dumps([spec.name, spec.kwargs, self.seed], sort_keys=True, default=str)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(hashlib.sha256(f"{text}|statistics".encode()).digest()[:8], "little") >> 1)
            try:
                method.fit(self.model, self.datamodule.train_dataloader())
            except AttributionError as error:
                raise ConfigurationError(
                    f"report: method {spec.display!r}: fitting its feature statistics on the training data of "
                    f"{type(self.datamodule).__name__}: {error}"
                ) from error
        self._fitted[spec.display] = method
        return method
