"""Model-parameter randomisation sanity check (Adebayo et al. 2018), cascading from the last layer to the first.

A *layer* is a module that owns parameters (conv, linear, BatchNorm, ...), in ``model.modules()`` order. Step s
randomises the last s layers (cascading); after each step the method's map is recomputed on the randomised model
and compared with the original map: Spearman rank correlation of the raw and of the absolute maps and SSIM
(window 5), maps reduced over channels and normalised by max-abs first. Lower similarity = the method depends on
the parameters = better.

Randomisation protocols (they differ between codebases, so they are selectable):

- ``normal``: weights ~ N(0, ``normal_std`` = 0.01) on every layer (seed 000's text); biases kept;
- ``normal_all``: every parameter of every layer incl. BatchNorm ~ N(0, ``normal_all_std`` = 0.1) (PathwayGrad code);
- ``xavier``: conv weights Xavier-uniform, linear weights ~ N(0, ``linear_std`` = 0.05); only conv/linear layers
  count (InputIBA code);
- ``reset``: ``module.reset_parameters()`` on every layer that has it (Quantus).

The randomised parameters are drawn once per evaluation (seeded per layer, on the CPU, so every DDP rank and device
draws the same) and shared by all images; the maps are computed on one deep copy of the model whose parameters are
re-set from the original and cascaded per batch. The real model is never modified.

The method is needed to recompute maps: ``update(..., method=explainer)`` (see :mod:`lit_xai.metrics.base`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.metrics.base import AttributionMetric, Explainer, reduce_channels
from lit_xai.metrics.similarity import normalize_max_abs, spearman, ssim

PROTOCOLS = ("normal", "normal_all", "xavier", "reset")
EXPLAIN = ("label", "prediction")
SIMILARITIES = ("spearman", "spearman_abs", "ssim")


def randomisable_layers(model: nn.Module, protocol: str) -> list[tuple[str, nn.Module]]:
    """The layers a protocol randomises, first to last (``model.modules()`` order)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown randomisation protocol {protocol!r}; expected one of {PROTOCOLS}")
    layers = []
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if protocol == "xavier" and not isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            continue
        if protocol == "reset" and not callable(getattr(module, "reset_parameters", None)):
            continue
        layers.append((name, module))
    if not layers:
        raise ValueError(f"the model has no layer that protocol {protocol!r} can randomise")
    return layers


class ParameterRandomisation(AttributionMetric):
    """Cascading parameter randomisation: similarity of the maps before/after randomising the last s layers.

    Args:
        protocol: ``normal``, ``normal_all``, ``xavier`` or ``reset`` (see the module docstring).
        explain: explain the original ``label`` (the update's target) or the randomised model's ``prediction``.
        seed: base seed; layer i draws with ``seed + i``.
        normal_std, normal_all_std, linear_std: the protocols' standard deviations.
        max_steps: record the similarity at this many cascade steps (evenly spaced, always incl. the last); the
            randomisation still cascades through every layer. ``None``: every step.
        channel_reduction: how maps are reduced over channels before comparing (``sum`` keeps the sign).
        ssim_window, ssim_data_range: SSIM window and the value range of the normalised maps ([−1, 1] → 2).
        score: the similarity whose mean over the steps is the scalar score.
    """

    requires = frozenset({"method"})
    higher_is_better = False
    curve_label = "randomised from the top down to layer"

    def __init__(
        self,
        protocol: str = "normal",
        explain: str = "label",
        seed: int = 0,
        normal_std: float = 0.01,
        normal_all_std: float = 0.1,
        linear_std: float = 0.05,
        max_steps: int | None = None,
        channel_reduction: str = "sum",
        ssim_window: int = 5,
        ssim_data_range: float = 2.0,
        score: str = "spearman_abs",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if protocol not in PROTOCOLS or explain not in EXPLAIN or score not in SIMILARITIES:
            raise ValueError(
                f"protocol={protocol!r}, explain={explain!r}, score={score!r}: expected protocol in {PROTOCOLS}, "
                f"explain in {EXPLAIN}, score in {SIMILARITIES}"
            )
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be ≥ 1 or None, got {max_steps}")
        self.protocol, self.explain, self.seed = protocol, explain, seed
        self.normal_std, self.normal_all_std, self.linear_std = normal_std, normal_all_std, linear_std
        self.max_steps, self.channel_reduction = max_steps, channel_reduction
        self.ssim_window, self.ssim_data_range, self.score_name = ssim_window, ssim_data_range, score
        self._work: list[nn.Module] = []  # the model copy (a list: not registered as a submodule)
        self._layer_names: list[str] = []
        self._randomised: list[dict[str, Tensor]] = []
        self._recorded: list[int] = []
        for name in SIMILARITIES:
            self.add_state(f"{name}_sum", torch.zeros(0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    # ---------------------------------------------------------------- randomised parameters, built once
    def _draw(self, module: nn.Module, seed: int) -> dict[str, Tensor]:
        """The randomised parameters of one layer (a CPU copy re-initialised under a seeded, forked RNG)."""
        fresh = copy.deepcopy(module).cpu()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            if self.protocol == "reset":
                fresh.reset_parameters()  # type: ignore[operator]
            for name, param in fresh.named_parameters(recurse=False):
                if self.protocol == "normal" and name == "weight":
                    nn.init.normal_(param, 0.0, self.normal_std)
                elif self.protocol == "normal_all":
                    nn.init.normal_(param, 0.0, self.normal_all_std)
                elif self.protocol == "xavier" and name == "weight":
                    if isinstance(fresh, nn.Linear):
                        nn.init.normal_(param, 0.0, self.linear_std)
                    else:
                        nn.init.xavier_uniform_(param)
        return {name: param.detach().clone() for name, param in fresh.named_parameters(recurse=False)}

    def prepare(self, model: nn.Module, image_size: tuple[int, int] | None = None) -> None:
        """Build the model copy and every layer's randomised parameters (once per evaluation); allocate states."""
        if not self._work:
            with torch.inference_mode(False):
                layers = randomisable_layers(model, self.protocol)
                self._layer_names = [name for name, _ in layers]
                cascade = [layers[i] for i in reversed(range(len(layers)))]  # last layer first
                self._randomised = [
                    {k: v.to(next(module.parameters()).device) for k, v in self._draw(module, self.seed + i).items()}
                    for i, (_, module) in zip(reversed(range(len(layers))), cascade)
                ]
                self._work = [copy.deepcopy(model)]
            steps = len(cascade)
            count = steps if self.max_steps is None else min(self.max_steps, steps)
            self._recorded = sorted({round(x) for x in torch.linspace(steps - 1, 0, count).tolist()})
        for name in SIMILARITIES:
            if getattr(self, f"{name}_sum").numel() != len(self._recorded):
                setattr(self, f"{name}_sum", torch.zeros(len(self._recorded), device=self.count.device))

    def reset(self) -> None:
        """Clear the states and drop the copies: the next evaluation may see a different (further trained) model."""
        super().reset()
        self._work = []
        self._randomised = []

    # ---------------------------------------------------------------- evaluation
    def _similarities(self, original: Tensor, randomised: Tensor) -> dict[str, Tensor]:
        a = normalize_max_abs(reduce_channels(original.float(), self.channel_reduction))[:, None]
        b = normalize_max_abs(reduce_channels(randomised.float(), self.channel_reduction))[:, None]
        return {
            "spearman": spearman(a.flatten(1), b.flatten(1)),
            "spearman_abs": spearman(a.abs().flatten(1), b.abs().flatten(1)),
            "ssim": ssim(a, b, self.ssim_window, self.ssim_data_range),
        }

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        method: Explainer = extras["method"]
        with torch.inference_mode(False):
            self.prepare(model)
            work = self._work[0]
            inputs, target, maps = inputs.clone(), target.clone(), maps.clone()
            work.load_state_dict(model.state_dict())
            modules = dict(work.named_modules())
            cascade_names = list(reversed(self._layer_names))
            recorded = {step: slot for slot, step in enumerate(self._recorded)}
            sums = {name: torch.zeros(len(self._recorded), device=inputs.device) for name in SIMILARITIES}
            for step, (layer_name, params) in enumerate(zip(cascade_names, self._randomised)):
                layer = modules[layer_name]
                for name, value in params.items():
                    getattr(layer, name).data.copy_(value)
                if step not in recorded:
                    continue
                with torch.enable_grad():
                    new_maps = method(work, inputs, target if self.explain == "label" else None)
                for name, values in self._similarities(maps, new_maps).items():
                    sums[name][recorded[step]] = values.sum()
        for name in SIMILARITIES:
            state = getattr(self, f"{name}_sum")
            state += sums[name].to(state.device)
        self.count += inputs.shape[0]

    def curve_axis(self) -> Tensor:
        return torch.arange(1, len(self._recorded) + 1, dtype=torch.float32)

    def curve_ticks(self) -> list[str] | None:
        cascade_names = list(reversed(self._layer_names))
        return [cascade_names[step] or "<root>" for step in self._recorded]

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError("ParameterRandomisation.compute() called before any image was evaluated")
        curves = {name: getattr(self, f"{name}_sum") / self.count for name in SIMILARITIES}
        result = {"score": curves[self.score_name].mean(), "count": self.count}
        result.update({f"curve/{name}": curve for name, curve in curves.items()})
        return result
