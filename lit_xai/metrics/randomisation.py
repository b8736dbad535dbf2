"""Model-parameter randomisation sanity check (Adebayo et al. 2018), cascading from the last layer to the first.

Step s randomises the last s layers of the protocol (cascading, ``model.modules()`` order reversed); after each step
the method's map is recomputed on the randomised model and compared with the original map: Spearman rank
correlation of the raw and of the absolute maps and SSIM, maps reduced over channels and normalised by max-abs
first. Lower similarity = the method depends on the parameters = better.

Randomisation protocols differ between codebases, so they are selectable; each does exactly what its source does:

- ``normal`` (seed 000 §4.4: "all learnable parameters ... reinitialize[d] ... with a normal distribution with zero
  mean and a standard deviation of 0.01"): every parameter (weights, biases, BatchNorm affine) of every module that
  owns parameters ~ N(0, ``normal_std`` = 0.01); buffers (BatchNorm running statistics) kept;
- ``normal_all`` (PathwayGrad code; seed 001 App. C.1 "mean=0 and variance=0.01"): the same on the same modules
  with N(0, ``normal_all_std`` = 0.1);
- ``xavier`` (InputIBA code, ``iba/evaluation/vision/sanity_check.py::weights_init``): only ``nn.Conv2d`` and
  ``nn.Linear`` count; conv weights Xavier-uniform, linear weights ~ N(0, ``linear_std`` = 0.05), biases zeroed;
- ``reset`` (Quantus 0.6 ``MPRT`` / ``PyTorchModel.get_random_layer_generator``): every module that has a
  ``reset_parameters`` method, in the cascade; everything that method writes is taken, incl. the BatchNorm running
  statistics it resets (mean 0, variance 1).

Seeds: the draws are made once per evaluation (on a CPU copy under a forked, seeded generator, so every DDP rank and
device draws the same) and shared by all images and batches. ``seeding="per_layer"`` (ours): layer i (forward order)
draws with ``seed + i``, independent layers; ``seeding="quantus"``: every layer draws with ``seed + 1`` as Quantus'
``torch.manual_seed(seed + 1)`` before each ``reset_parameters()`` (so ``protocol="reset", seeding="quantus",
seed=42`` reproduces ``quantus.MPRT(seed=42)`` on CPU models exactly; Quantus draws on the model's device).

Cost: the maps are computed on one deep copy of the model (the real model is never modified; the copy is dropped at
``reset()``), reloaded from the model at each batch and randomised in place step by step; the original map's ranks
are computed once per batch; the ranks of each new map take one sort. The floor is one method call per recorded step
(prefix activations cannot be shared with a black-box ``method``). The method sees ``max_batch`` images per call
(``None``: the methods' memory-budget rule, :func:`lit_xai.attribution.batching.rows_per_chunk`); the similarities do
not depend on it. Peer test against Quantus:
``tests/conformance/test_conformance_randomisation.py``.

The method is needed to recompute maps: ``update(..., method=explainer)`` (see :mod:`lit_xai.metrics.base`).
"""

from __future__ import annotations

import copy
import itertools
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.attribution.batching import check_max_batch, row_chunks, rows_per_chunk
from lit_xai.attribution.postprocess import reduce_channels
from lit_xai.metrics.base import Explainer, check_finite
from lit_xai.metrics.image_scores import PerImageMetric
from lit_xai.metrics.similarity import (
    check_data_range,
    normalize_max_abs,
    spearman_against,
    spearman_reference,
    ssim_against,
    ssim_reference,
)

PROTOCOLS = ("normal", "normal_all", "xavier", "reset")
EXPLAIN = ("label", "prediction")
SEEDINGS = ("per_layer", "quantus")
SIMILARITIES = ("spearman", "spearman_abs", "ssim")
SSIM_LAYOUTS = ("2d", "flat")


def randomisable_layers(model: nn.Module, protocol: str) -> list[tuple[str, nn.Module]]:
    """The layers a protocol randomises, first to last (``model.named_modules()`` order)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown randomisation protocol {protocol!r}; expected one of {PROTOCOLS}")
    layers = []
    for name, module in model.named_modules():
        if protocol == "xavier":  # InputIBA's weights_init: Conv2d and Linear only
            selected = isinstance(module, nn.Conv2d | nn.Linear)
        elif protocol == "reset":  # Quantus: hasattr(module, "reset_parameters")
            selected = callable(getattr(module, "reset_parameters", None))
        else:  # every module that owns parameters
            selected = any(True for _ in module.parameters(recurse=False))
        if selected:
            layers.append((name, module))
    if not layers:
        raise ValueError(f"the model has no layer that protocol {protocol!r} can randomise")
    return layers


@dataclass
class _Cascade:
    """The randomised model copy of one architecture: per cascade step, (tensor of the copy, randomised value)."""

    model: weakref.ReferenceType
    signature: tuple
    work: nn.Module
    layer_names: list[str]  # cascade order: last layer first
    steps: list[list[tuple[Tensor, Tensor]]]


def _signature(model: nn.Module) -> tuple:
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    return tuple((name, tuple(t.shape), t.dtype, t.device) for name, t in tensors)


class ParameterRandomisation(PerImageMetric):
    """Cascading parameter randomisation: similarity of the maps before/after randomising the last s layers.

    Args:
        protocol: ``normal`` (default, seed 000's text), ``normal_all``, ``xavier`` or ``reset`` (module docstring).
        explain: ``label`` (default): explain the update's ``target`` (the class explained on the original model) on
            every randomised model, as Quantus' MPRT (it passes ``y_batch``) and InputIBA's sanity check (the image's
            class) do; ``prediction``: the randomised model's own top class.
        seed: base seed of the draws (ours; Quantus' MPRT default is 42).
        seeding: ``per_layer`` (layer i draws with ``seed + i``) or ``quantus`` (``seed + 1`` for every layer).
        normal_std: ``normal``'s standard deviation, 0.01 (seed 000 §4.4).
        normal_all_std: ``normal_all``'s standard deviation, 0.1 (PathwayGrad code; seed 001 App. C.1).
        linear_std: ``xavier``'s linear-weight standard deviation, 0.05 (InputIBA ``weights_init``).
        max_steps: record the similarity at this many cascade steps (evenly spaced, always incl. the last); the
            randomisation still cascades through every layer. ``None`` (default): every step, as Adebayo and Quantus.
        channel_reduction: how maps are reduced over channels before comparing (``sum``, ours: keeps the sign).
        ssim_window: SSIM window, 5 (InputIBA ``structural_similarity(win_size=5)``; Quantus: skimage's default 7).
        ssim_data_range: SSIM data range, 2.0 (ours: the value range [−1, 1] of the max-abs-normalised maps, as
            InputIBA uses its masks' full range 255) or ``"pair"``: max − min of each pair (Quantus' ``ssim``).
        ssim_layout: ``2d`` (default: SSIM over the map's rows and columns, Wang et al.) or ``flat``: over the
            flattened map as one 1-D signal, as Quantus' MPRT computes it (it reshapes maps to vectors before its
            similarity function).
        score: the similarity whose mean over the curve is the scalar score, ``spearman_abs`` (Quantus' MPRT
            default: Spearman with ``abs=True``; seed 000 Fig. 3 reports it beside the raw one).
        include_original: ``False`` (Adebayo's curve starts at the first randomised layer); ``True``: Quantus'
            ``return_average_correlation`` convention, whose mean also counts the similarity of the given map with
            the map recomputed on the unrandomised model (Quantus 0.6 skips a key ``"orig"`` but stores it as
            ``"original"``): the curve gets that point first, labelled ``original``.
        max_batch: images per method call on the randomised model; ``None`` (default): the methods' memory-budget
            rule (docs/performance.md "Chunk size"; the methods chunk their own rows inside). Does not change the
            similarities.
    """

    requires = frozenset({"method"})
    higher_is_better = False
    curve_label = "randomised from the top down to layer"

    def __init__(
        self,
        protocol: str = "normal",
        explain: str = "label",
        seed: int = 0,
        seeding: str = "per_layer",
        normal_std: float = 0.01,
        normal_all_std: float = 0.1,
        linear_std: float = 0.05,
        max_steps: int | None = None,
        channel_reduction: str = "sum",
        ssim_window: int = 5,
        ssim_data_range: float | str = 2.0,
        ssim_layout: str = "2d",
        score: str = "spearman_abs",
        include_original: bool = False,
        max_batch: int | None = None,  # None: lit_xai.attribution.batching's memory budget
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        choices = {"protocol": (protocol, PROTOCOLS), "explain": (explain, EXPLAIN), "seeding": (seeding, SEEDINGS),
                   "score": (score, SIMILARITIES), "ssim_layout": (ssim_layout, SSIM_LAYOUTS)}
        for argument, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"ParameterRandomisation: {argument}={value!r}; expected one of {allowed}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be ≥ 1 or None, got {max_steps}")
        if min(normal_std, normal_all_std, linear_std) <= 0:
            raise ValueError(f"standard deviations must be > 0, got {normal_std}, {normal_all_std}, {linear_std}")
        if ssim_window < 2:
            raise ValueError(f"ssim_window must be ≥ 2, got {ssim_window}")
        check_data_range(ssim_data_range)
        self.protocol, self.explain, self.seed, self.seeding = protocol, explain, seed, seeding
        self.normal_std, self.normal_all_std, self.linear_std = normal_std, normal_all_std, linear_std
        self.max_steps, self.channel_reduction = max_steps, channel_reduction
        self.ssim_window, self.ssim_data_range, self.score_name = ssim_window, ssim_data_range, score
        self.ssim_layout, self.include_original = ssim_layout, include_original
        self.max_batch = check_max_batch(max_batch)
        self._cascades: list[_Cascade] = []  # at most one (a list: not registered as a submodule)
        self._recorded: list[int] = []
        for name in SIMILARITIES:
            self.add_state(f"{name}_sum", torch.zeros(0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    # ---------------------------------------------------------------- randomised parameters, built once per model
    def _draw(self, module: nn.Module, seed: int) -> dict[str, Tensor]:
        """The randomised tensors of one layer (names relative to it), drawn on the CPU under a forked, seeded RNG."""
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            if self.protocol == "reset":
                # on a CPU copy, take whatever reset_parameters() writes (parameters, running statistics, children's)
                fresh = copy.deepcopy(module).cpu()
                tensors = dict(itertools.chain(fresh.named_parameters(), fresh.named_buffers()))
                floating = {name: t for name, t in tensors.items() if t.is_floating_point()}
                for t in floating.values():
                    t.fill_(float("nan"))
                fresh.reset_parameters()  # type: ignore[operator]
                return {name: t.detach().clone() for name, t in floating.items() if not t.isnan().all()}
            drawn = {}
            for name, param in module.named_parameters(recurse=False):
                value = torch.empty(param.shape, dtype=param.dtype)
                if self.protocol in ("normal", "normal_all"):
                    nn.init.normal_(value, 0.0, self.normal_std if self.protocol == "normal" else self.normal_all_std)
                elif name == "bias":
                    nn.init.zeros_(value)
                elif isinstance(module, nn.Linear):
                    nn.init.normal_(value, 0.0, self.linear_std)
                else:
                    nn.init.xavier_uniform_(value)
                drawn[name] = value
            return drawn

    def _cascade(self, model: nn.Module) -> _Cascade:
        """The model copy and its randomised tensors, built on the first call of an evaluation for this model."""
        signature = _signature(model)
        if self._cascades and self._cascades[0].model() is model and self._cascades[0].signature == signature:
            return self._cascades[0]
        with torch.inference_mode(False), torch.no_grad():
            layers = randomisable_layers(model, self.protocol)
            work = copy.deepcopy(model)
            modules = dict(work.named_modules())
            steps = []
            for index in reversed(range(len(layers))):  # last layer first
                name, module = layers[index]
                seed = self.seed + 1 if self.seeding == "quantus" else self.seed + index
                tensors = dict(itertools.chain(modules[name].named_parameters(), modules[name].named_buffers()))
                steps.append([(tensors[key], value.to(tensors[key].device))
                              for key, value in self._draw(module, seed).items()])
        self._cascades = [_Cascade(weakref.ref(model), signature, work, [n for n, _ in reversed(layers)], steps)]
        count = len(steps) if self.max_steps is None else min(self.max_steps, len(steps))
        self._recorded = sorted({round(x) for x in torch.linspace(len(steps) - 1, 0, count).tolist()})
        return self._cascades[0]

    def prepare(self, model: nn.Module, image_size: tuple[int, int] | None = None) -> None:
        """Build (once per evaluation) the copy and every layer's randomised tensors; allocate the curve states."""
        self._cascade(model)
        points = len(self._recorded) + int(self.include_original)
        for name in SIMILARITIES:
            if getattr(self, f"{name}_sum").numel() != points:
                setattr(self, f"{name}_sum", torch.zeros(points, device=self.count.device))

    def reset(self) -> None:
        """Clear the states and drop the copy and the draws (no model-sized memory held between evaluations)."""
        super().reset()
        self._cascades = []

    # ---------------------------------------------------------------- evaluation
    def _ssim_layout(self, maps: Tensor) -> Tensor:
        return maps.flatten(2)[:, :, None] if self.ssim_layout == "flat" else maps

    def _reference(self, maps: Tensor) -> dict[str, Any]:
        """What every step compares with, prepared once per batch: the original map's ranks and SSIM statistics."""
        a = normalize_max_abs(reduce_channels(maps.float(), self.channel_reduction)[:, 0])[:, None]
        return {"shape": a.shape, "spearman": spearman_reference(a.flatten(1)),
                "spearman_abs": spearman_reference(a.abs().flatten(1)),
                "ssim": ssim_reference(self._ssim_layout(a), self.ssim_window)}

    def _similarities(self, reference: dict[str, Any], new_maps: Tensor, method: Explainer) -> dict[str, Tensor]:
        reduced = reduce_channels(new_maps.float(), self.channel_reduction)
        scale = reduced.flatten(1).abs().amax(1)  # NaN or inf wherever a map holds one (amax propagates NaN)
        if not bool(torch.isfinite(scale).all()):  # e.g. a method dividing by a vanishing score of the randomised net
            check_finite(new_maps, method)  # raises, naming the method and the images
        b = normalize_max_abs(reduced, scale=scale)
        if b.shape != reference["shape"]:
            raise ValueError(f"ParameterRandomisation: on the randomised model the method returned maps of shape "
                             f"{tuple(new_maps.shape)}, not comparable with the maps passed to update")
        return {
            "spearman": spearman_against(reference["spearman"], b.flatten(1)),
            "spearman_abs": spearman_against(reference["spearman_abs"], b.abs().flatten(1)),
            "ssim": ssim_against(reference["ssim"], self._ssim_layout(b), self.ssim_data_range),
        }

    def similarity_curves(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                          method: Explainer) -> dict[str, Tensor]:
        """Every similarity of every image at every recorded step, ``{name: [B, P]}`` (the real model untouched)."""
        with torch.inference_mode(False):
            cascade = self._cascade(model)
            work = cascade.work
            inputs, target, maps = inputs.clone(), target.clone(), maps.clone()
            work.load_state_dict(model.state_dict())  # the copy starts from the model's current state
            for copied, original in zip(work.modules(), model.modules()):
                copied.training = original.training
            reference = self._reference(maps)
            explained = target if self.explain == "label" else None
            chunks = list(row_chunks(inputs.shape[0], rows_per_chunk(work, inputs, self.max_batch)))
            recorded = set(self._recorded)
            rows: list[dict[str, Tensor]] = []

            def compare() -> None:
                with torch.enable_grad():
                    parts = [method(work, inputs[begin:stop], None if explained is None else explained[begin:stop])
                             for begin, stop in chunks]
                new_maps = parts[0] if len(parts) == 1 else torch.cat(parts)
                rows.append(self._similarities(reference, new_maps, method))

            if self.include_original:
                compare()
            for step, assignments in enumerate(cascade.steps):
                with torch.no_grad():  # inference_mode(False) switches grad mode on
                    for tensor, value in assignments:
                        tensor.copy_(value)
                if step in recorded:
                    compare()
        return {name: torch.stack([row[name] for row in rows], 1) for name in SIMILARITIES}

    def _image_results(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                       **extras: Any) -> dict[str, Tensor]:
        curves = self.similarity_curves(model, inputs, target, maps, extras["method"])
        return {"score": curves[self.score_name].mean(1), **{f"curve/{name}": c for name, c in curves.items()}}

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        self.prepare(model)
        curves = self.similarity_curves(model, inputs, target, maps, extras["method"])
        for name in SIMILARITIES:
            state = getattr(self, f"{name}_sum")
            state += curves[name].sum(0).to(state)
        self.count += inputs.shape[0]
        self.last_image_scores = curves[self.score_name].mean(1)  # this update's (not a state), as ImageScoreMean

    def curve_axis(self) -> Tensor:
        return torch.arange(1, len(self._recorded) + int(self.include_original) + 1, dtype=torch.float32)

    def curve_ticks(self) -> list[str] | None:
        names = [self._cascades[0].layer_names[step] or "<root>" for step in self._recorded] if self._cascades else []
        return ["original"] * int(self.include_original) + names

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError("ParameterRandomisation.compute() called before any image was evaluated")
        curves = {name: getattr(self, f"{name}_sum") / self.count for name in SIMILARITIES}
        result = {"score": curves[self.score_name].mean(), "count": self.count}
        result.update({f"curve/{name}": curve for name, curve in curves.items()})
        return result
