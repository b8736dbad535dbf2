"""Regression IBA (dissertation ch. 8 §2.2): the IBA bottleneck for models with a scalar (regression) output.

The task term replaces cross-entropy by one of three losses on the selected output Φ(Z):
- ``"mse"``: (Φ(Z) − y)² towards a given regression target y — finds regions informative for the output being y
  (a small y makes regions with small scores informative);
- ``"maximisation"``: −Φ(Z)², i.e. the squared prediction is *maximised* (the paper's L_RM = Φ(Z)² read as the
  quantity to maximise, since it "favours regions with high scores");
- ``"deviation"`` (default): (Φ(Z) − Φ(X))², the deviation from the clean prediction — like IBA, it keeps
  regions with sufficient information for the prediction.
``inverse=True`` plays Inverse IBA's deletion game with the same loss (maximised on Z_inv).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, TargetLike, check_inputs
from lit_xai.attribution.information.iba import (
    BottleneckResult,
    FeatureBottleneckMethod,
    StatisticsLike,
)
from lit_xai.attribution.information.optimisation import BottleneckSettings
from lit_xai.attribution.registry import register

REGRESSION_LOSSES = ("mse", "maximisation", "deviation")


def regression_outputs(outputs: Tensor, index: Tensor) -> Tensor:
    """The selected scalar output per sample from ``[N]``, ``[N, 1]`` or ``[N, K]`` model outputs."""
    if outputs.dim() == 1:
        return outputs
    if outputs.dim() != 2:
        raise AttributionError(f"a regression model must return [B] or [B, K] outputs, got {tuple(outputs.shape)}")
    return outputs.gather(1, index[:, None]).squeeze(1)


def regression_loss(
    kind: str, index: Tensor, draws: int, clean: Tensor, target_values: Tensor | None
) -> Callable[[Tensor], Tensor]:
    """Per-sample task loss on ``[B·n, ...]`` outputs for the chosen regression objective."""
    repeated_index = index.repeat_interleave(draws)
    if kind == "mse":
        if target_values is None:
            raise AttributionError("regression_iba with loss='mse' needs target values: pass target_values= to "
                                   "explain() or target_value= to the constructor (or use loss='deviation')")
        reference = target_values.repeat_interleave(draws)
    else:
        reference = clean.repeat_interleave(draws)

    def loss(outputs: Tensor) -> Tensor:
        prediction = regression_outputs(outputs, repeated_index)
        if kind == "maximisation":
            return -(prediction**2)
        return (prediction - reference) ** 2

    return loss


@register("regression_iba")
class RegressionIBA(FeatureBottleneckMethod):
    """IBA for regression models (dissertation ch. 8 §2.2); ``target`` selects the output index (default 0).

    Map: capacity in bits at the layer's resolution ``[B, 1, h, w]``.
    """

    def __init__(
        self,
        layer: str | None = None,
        loss: str = "deviation",
        target_value: float | None = None,
        inverse: bool = False,
        beta: float = 10.0,
        steps: int = 10,
        lr: float = 1.0,
        initial_alpha: float = 5.0,
        sigma: float = 1.0,
        noise_draws: int = 10,
        smoothing_truncate: float = 2.0,
        smoothing_padding: str = "reflect",
        map_from: str = "last_forward",
        seed: int = 0,
        statistics: StatisticsLike = None,
        stats_samples: int = 5000,
        cache_dir: str | Path | None = None,
        missing_statistics: str = "warn",
        min_std: float = 0.01,
        active_threshold: float = 0.01,
    ) -> None:
        super().__init__(statistics, stats_samples, cache_dir, missing_statistics, min_std, active_threshold)
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"loss must be one of {REGRESSION_LOSSES}, got {loss!r}")
        self.layer = layer
        self.loss = loss
        self.target_value = target_value
        self._values: Tensor | None = None  # per-call regression targets set by explain()
        self.settings = BottleneckSettings(beta, steps, lr, initial_alpha, sigma, noise_draws, smoothing_truncate,
                                           inverse, seed, smoothing_padding, map_from)

    def configured_layers(self) -> list[str] | None:
        return [self.layer] if self.layer is not None else None

    def explain(
        self, model: nn.Module, inputs: Tensor, target: TargetLike = None, target_values: Tensor | None = None
    ) -> BottleneckResult:
        """Full result; ``target_values`` ``[B]`` are the regression targets y of the ``"mse"`` loss."""
        if target_values is None:
            return super().explain(model, inputs, target)
        check_inputs(inputs)
        values = torch.as_tensor(target_values, dtype=inputs.dtype, device=inputs.device).reshape(-1)
        if values.shape[0] != inputs.shape[0]:
            raise AttributionError(f"target_values must have shape [{inputs.shape[0]}], got {tuple(values.shape)}")
        self._values = values
        try:
            return super().explain(model, inputs, target)
        finally:
            self._values = None

    def _explain(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> BottleneckResult:
        (layer,) = self.layers_for(model, inputs)
        with torch.no_grad():
            outputs = model(inputs)
        if target is None:
            if outputs.dim() == 2 and outputs.shape[1] > 1:
                raise AttributionError(f"regression_iba: the model has {outputs.shape[1]} outputs; pass target= "
                                       "(the output index) to choose one")
            target = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
        elif outputs.dim() == 2 and bool((target >= outputs.shape[1]).any()):
            raise AttributionError(f"output index out of range: the model has {outputs.shape[1]} outputs")
        clean = regression_outputs(outputs, target)
        values = self._values
        if values is None and self.target_value is not None:
            values = torch.full_like(clean, self.target_value)
        loss = regression_loss(self.loss, target, self.settings.noise_draws, clean, values)
        return self._bottleneck_at(model, layer, inputs, target, loss, self.settings)
