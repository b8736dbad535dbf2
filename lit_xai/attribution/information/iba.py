"""Information Bottleneck Attribution at a hidden layer: IBA, Inverse IBA and Multi-layer IBA.

IBA (Schulz et al. 2020; dissertation ch. 6 §3.1): Z = λ·R + (1−λ)·ε with ε ~ N(μ_R, σ_R²) from feature
statistics; minimise CE(target) + β·mean D_KL[P(Z|R) ‖ Q(Z)] over λ = smooth(sigmoid(α)). The map is the
per-position KL (capacity) summed over channels, in bits, at the layer's resolution ``[B, 1, h, w]``;
:func:`capacity_per_input_pixel` turns it into bits per input pixel.

Inverse IBA (ch. 8 §2.1): the deletion game Z_inv = λ·ε + (1−λ)·R, maximise CE — finds *all* predictive
regions, not only a sufficient one. Multi-layer IBA (ch. 8 §2.3, Eq. 5): intersection of thresholded IBA maps.

Feature statistics: pass them in (``statistics=``), estimate them with :meth:`fit` / :meth:`setup` (cached on
disk with ``cache_dir``), or — if neither happened — the method estimates them from the batch being explained
and warns (``missing_statistics="warn"``, the default) or refuses (``"error"``). Batch statistics are a poor
prior (one image gives σ = min_std everywhere), so fit on training data whenever possible.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.attribution.base import (
    AttributionError,
    AttributionMethod,
    TargetLike,
    check_target_range,
    preserved_model_state,
)
from lit_xai.attribution.information.bottleneck import capacity_bits, capacity_per_input_pixel, iba_kl
from lit_xai.attribution.information.layer_hooks import (
    BottleneckForward,
    layer_output,
    model_device,
    resolve_layer,
)
from lit_xai.attribution.information.optimisation import BottleneckSettings, final_mask, optimise_mask
from lit_xai.attribution.information.statistics import (
    FeatureStatistics,
    batch_images,
    estimate_feature_statistics,
)
from lit_xai.attribution.layers import POOLING_TYPES
from lit_xai.attribution.registry import register

StatisticsLike = FeatureStatistics | Mapping[str, FeatureStatistics] | None


@dataclass
class BottleneckResult:
    """What one bottleneck run found, per image: capacity map (bits), its total, the mask λ and the target."""

    capacity: Tensor  # [B, 1, h, w], bits
    total_bits: Tensor  # [B]
    lam: Tensor  # [B, C, h, w]
    target: Tensor  # [B] class index (or output index for regression)
    features: Tensor  # [B, C, h, w], the clean layer output R
    statistics: FeatureStatistics  # the prior N(μ_R, σ_R²) and active mask used

    @property
    def attribution(self) -> Tensor:
        """The method's map: the capacity in bits."""
        return self.capacity


def spatial_candidates(model: nn.Module, inputs: Tensor) -> tuple[list[tuple[str, torch.Size]], set[tuple[int, int]]]:
    """Modules called exactly once with a 4-D output of spatial size ≥ 2, in the order their forward ends, and the
    spatial sizes that convolutions and poolings output (a CNN feature map has one of them; an attention tensor
    ``[B, heads, tokens, dim]`` does not)."""
    calls: dict[str, int] = {}
    order: list[tuple[str, torch.Size]] = []
    conv_sizes: set[tuple[int, int]] = set()
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, _i: tuple, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, Tensor) and output.dim() == 4 and min(output.shape[2:]) >= 2:
                order.append((name, output.shape))
                if isinstance(module, (nn.modules.conv._ConvNd, *POOLING_TYPES)):
                    conv_sizes.add(tuple(output.shape[2:]))

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            model(inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    return [(name, shape) for name, shape in order if calls[name] == 1], conv_sizes


def default_layers(model: nn.Module, inputs: Tensor, count: int = 1, method: str = "iba") -> list[str]:
    """The deepest once-called spatial module at each of the ``count`` deepest resolutions, deepest first.

    As GradCAM's automatic choice (:func:`lit_xai.attribution.layers.last_spatial_layer`), the deepest candidate must
    be a convolutional feature map (its h × w is a convolution's or pooling's output size); a vision transformer's
    deepest 4-D tensor is an attention ``[B, heads, tokens, dim]``, and a bottleneck there would return a token map.
    """
    candidates, conv_sizes = spatial_candidates(model, inputs)
    if not candidates:
        raise AttributionError(
            f"{method}: {type(model).__name__} has no module with a spatial [B, C, h, w] output to hook; pass layer="
        )
    deepest, shape = candidates[-1]
    if tuple(shape[2:]) not in conv_sizes:
        raise AttributionError(
            f"{method}: the automatic layer choice found {deepest!r} with output {list(shape)}, which is not a "
            f"convolutional feature map [B, C, h, w] (no convolution or pooling outputs a {shape[2]}×{shape[3]} "
            "map), so the model is not a CNN (e.g. a vision transformer): the bottleneck needs a spatial feature "
            "map, pass layer=<a conv stage>"
        )
    chosen: list[str] = []
    sizes: list[tuple[int, ...]] = []
    for name, shape in reversed(candidates):
        size = tuple(shape[2:])
        if size not in sizes and size in conv_sizes:
            sizes.append(size)
            chosen.append(name)
        if len(chosen) == count:
            break
    return chosen


#: the task term of the classification bottlenecks: softmax cross-entropy, or the BCE of one sigmoid output
TASK_LOSSES = ("ce", "bce")


def classification_loss(target: Tensor, draws: int, task_loss: str = "ce") -> Callable[[Tensor], Tensor]:
    """Per-sample task loss of the ``[B·n, K]`` logits for ``target`` repeated per noise draw.

    ``ce``: softmax cross-entropy −log softmax(z)_t (Schulz et al., single-label classifiers). ``bce``: the binary
    cross-entropy of the explained sigmoid output with label 1, −log σ(z_t) = softplus(−z_t), for multi-label models
    (seed 002, "Explaining COVID-19…": IBA on the NIH model "with BCE"; the CheXplain-IBA code,
    ``evaluation/gen_attribution_map.py`` ``binary_crossentropy_loss_with_target``, instead averages
    ``BCEWithLogitsLoss`` over all K outputs against the one-hot of the explained label, which also rewards the other
    labels' absence; we explain the one label, as the chapter states).
    """
    if task_loss not in TASK_LOSSES:
        raise ValueError(f"task_loss must be one of {TASK_LOSSES}, got {task_loss!r}")
    repeated = target.repeat_interleave(draws)

    def loss(logits: Tensor) -> Tensor:
        if logits.dim() != 2:
            raise AttributionError(f"the model must return logits [B, num_classes], got {tuple(logits.shape)}")
        if task_loss == "bce":
            return F.softplus(-logits.gather(1, repeated[:, None]).squeeze(1))
        return F.cross_entropy(logits, repeated, reduction="none")

    return loss


class FeatureBottleneckMethod(AttributionMethod):
    """Base class: feature statistics (given, fitted, cached or batch fallback) and the guarded call."""

    def __init__(
        self,
        statistics: StatisticsLike = None,
        stats_samples: int = 5000,
        cache_dir: str | Path | None = None,
        missing_statistics: str = "warn",
        min_std: float = 0.01,
        active_threshold: float = 0.01,
    ) -> None:
        if missing_statistics not in ("warn", "error"):
            raise ValueError(f"missing_statistics must be 'warn' or 'error', got {missing_statistics!r}")
        self.stats_samples = stats_samples
        self.cache_dir = cache_dir
        self.missing_statistics = missing_statistics
        self.min_std = min_std
        self.active_threshold = active_threshold
        self._given_statistics = statistics
        #: run the layers before the bottleneck once per image and expand the noise draws there
        self.expand_at_layer = True
        #: replay the (constant) outputs of the layers before the bottleneck instead of recomputing them every step
        self.reuse_prefix = True
        self._fitted: dict[str, FeatureStatistics] = {}
        self._fitted_model: int | None = None

    # -- which layers -------------------------------------------------------------------------------------
    #: how many layers :func:`default_layers` picks when none are configured
    auto_layer_count = 1

    def configured_layers(self) -> list[str] | None:
        """The layer names given to the constructor, or ``None`` to pick them with :func:`default_layers`."""
        return None

    def layers_for(self, model: nn.Module, inputs: Tensor) -> list[str]:
        """The hooked layer names: the configured ones, else found by a probe forward of ``inputs``."""
        return self.configured_layers() or default_layers(
            model, inputs, self.auto_layer_count, self.name or type(self).__name__
        )

    def _check_spatial(self, layer: str, shape: Sequence[int]) -> None:
        """Refuse a layer whose output is not a spatial map ``[C, h, w]`` per image: the bottleneck smooths its mask
        over (h, w) and the map is a capacity per position. A Linear layer ``[B, C]`` has no positions; a token layer
        ``[B, N, C]`` (ViT) would yield a map over tokens, not pixels."""
        if len(shape) == 3:
            return
        kind = {1: "a vector per image (e.g. a Linear layer)", 2: "a token sequence [B, N, C] (e.g. a ViT block)"}
        raise AttributionError(
            f"{self.name or type(self).__name__}: layer {layer!r} outputs {kind.get(len(shape), 'a tensor')} of shape "
            f"{tuple(shape)} per image, not a spatial map [C, h, w]; the information bottleneck needs a convolutional "
            "feature map (choose a conv stage or block, or omit layer= to pick the deepest spatial one)"
        )

    # -- statistics ---------------------------------------------------------------------------------------
    @property
    def has_given_statistics(self) -> bool:
        """Whether ``statistics=`` was given (then nothing is fitted or estimated)."""
        return self._given_statistics is not None

    def fit(self, model: nn.Module, loader: Iterable[Any]) -> FeatureBottleneckMethod:
        """Estimate (or load from ``cache_dir``) the feature statistics of every hooked layer from ``loader``.

        Without configured layers the first batch is used to find them, so ``loader`` must be re-iterable.
        """
        layers = self.configured_layers()
        if layers is None:
            probe = next((batch_images(batch) for batch in loader), None)
            if probe is None:
                raise AttributionError(f"{self.name or type(self).__name__}: the loader yielded no batches")
            with preserved_model_state(model):
                layers = self.layers_for(model, probe.to(model_device(model)))
        self._fitted = {
            layer: estimate_feature_statistics(
                model, layer, loader, self.stats_samples, self.cache_dir, self.min_std, self.active_threshold
            )
            for layer in layers
        }
        for layer, stats in self._fitted.items():
            self._check_spatial(layer, stats.mean.shape)
        self._fitted_model = id(model)
        return self

    def setup(self, model: nn.Module, datamodule: Any) -> None:
        """Hook for the evaluation callback: statistics from ``datamodule.train_dataloader()`` (cached)."""
        self.fit(model, datamodule.train_dataloader())

    def statistics_for(self, model: nn.Module, layer: str, features: Tensor) -> FeatureStatistics:
        """Given > fitted on this model > estimated from ``features`` of the explained batch (warn or error)."""
        given = self._given_statistics
        if isinstance(given, FeatureStatistics):
            stats = given
        elif isinstance(given, Mapping) and layer in given:
            stats = given[layer]
        elif self._fitted_model == id(model) and layer in self._fitted:
            stats = self._fitted[layer]
        else:
            message = (
                f"{self.name or type(self).__name__}: no feature statistics for layer {layer!r} of this model; "
                "call method.fit(model, train_loader) / method.setup(model, datamodule) or pass statistics=. "
            )
            if self.missing_statistics == "error":
                raise AttributionError(message)
            warnings.warn(message + "Estimating them from the explained batch instead (a poor prior).", stacklevel=3)
            stats = FeatureStatistics.from_features(features, self.min_std, self.active_threshold)
        if stats.mean.shape != features.shape[1:]:
            raise AttributionError(
                f"feature statistics of shape {tuple(stats.mean.shape)} do not match layer {layer!r} output "
                f"{tuple(features.shape[1:])}"
            )
        return stats.to(features.device, features.dtype)

    # -- guarded entry points -----------------------------------------------------------------------------
    def explain(self, model: nn.Module, inputs: Tensor, target: TargetLike = None) -> Any:
        """Like calling the method, but returns the full result object (maps, totals, masks)."""
        return self.guarded(self._explain, model, inputs, target)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        return self._explain(model, inputs, target).attribution

    def _explain(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Any:
        raise NotImplementedError

    def _resolve_class_target(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        with torch.no_grad():
            logits = model(inputs)
        if logits.dim() != 2:
            raise AttributionError(f"{self.name}: the model must return logits [B, K], got {tuple(logits.shape)}")
        if target is None:
            return logits.argmax(1)
        check_target_range(target, logits.shape[1])
        return target

    def _bottleneck_at(
        self,
        model: nn.Module,
        layer: str,
        inputs: Tensor,
        target: Tensor,
        task_loss: Callable[[Tensor], Tensor],
        settings: BottleneckSettings,
    ) -> BottleneckResult:
        """Optimise the feature bottleneck at ``layer`` for the whole batch; capacity in bits."""
        module = resolve_layer(model, layer)
        with torch.no_grad():
            features = layer_output(model, module, inputs)
        self._check_spatial(layer, features.shape[1:])
        stats = self.statistics_for(model, layer, features)
        standardised = (features - stats.mean) / stats.std  # r̂, constant during the optimisation
        kl = lambda lam, one_minus_lam: iba_kl(standardised, lam, one_minus_lam)
        alpha = optimise_mask(
            features,
            stats.mean,
            stats.std,
            kl,
            BottleneckForward(model, module, inputs, settings.noise_draws, self.expand_at_layer, self.reuse_prefix),
            task_loss,
            settings,
            active=stats.active,
        )
        with torch.no_grad():
            lam, one_minus_lam = final_mask(alpha, settings)
            capacity = capacity_bits(kl(lam, one_minus_lam), stats.active)
        return BottleneckResult(capacity, capacity.sum((1, 2, 3)), lam, target, features, stats)


class _SingleLayerBottleneck(FeatureBottleneckMethod):
    """IBA / Inverse IBA at one named layer."""

    inverse = False

    def __init__(
        self,
        layer: str | None = None,
        beta: float = 10.0,
        steps: int = 10,
        lr: float = 1.0,
        initial_alpha: float = 5.0,
        sigma: float = 1.0,
        noise_draws: int = 10,
        smoothing_truncate: float = 2.0,
        smoothing_padding: str = "reflect",
        map_from: str = "last_forward",
        expand_at_layer: bool = True,
        reuse_prefix: bool = True,
        seed: int = 0,
        statistics: StatisticsLike = None,
        stats_samples: int = 5000,
        cache_dir: str | Path | None = None,
        missing_statistics: str = "warn",
        min_std: float = 0.01,
        active_threshold: float = 0.01,
        task_loss: str = "ce",  # Schulz et al.: cross-entropy; "bce" for sigmoid outputs (seed 002)
    ) -> None:
        super().__init__(statistics, stats_samples, cache_dir, missing_statistics, min_std, active_threshold)
        if task_loss not in TASK_LOSSES:
            raise ValueError(f"task_loss must be one of {TASK_LOSSES}, got {task_loss!r}")
        self.layer, self.task_loss = layer, task_loss
        self.expand_at_layer = expand_at_layer
        self.reuse_prefix = reuse_prefix
        self.settings = BottleneckSettings(
            beta, steps, lr, initial_alpha, sigma, noise_draws, smoothing_truncate, self.inverse, seed,
            smoothing_padding, map_from,
        )

    def configured_layers(self) -> list[str] | None:
        return [self.layer] if self.layer is not None else None

    def _explain(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> BottleneckResult:
        (layer,) = self.layers_for(model, inputs)
        target = self._resolve_class_target(model, inputs, target)
        loss = classification_loss(target, self.settings.noise_draws, self.task_loss)
        return self._bottleneck_at(model, layer, inputs, target, loss, self.settings)


@register("iba")
class IBA(_SingleLayerBottleneck):
    """Per-sample Information Bottleneck Attribution (Schulz et al.; dissertation ch. 6 §3.1, Eq. 1-4).

    ``layer`` is a dotted module name (``"layer2"``, ``"features.17"`` = VGG-16 conv4_1); ``None`` picks the
    deepest module with a spatial output. Returns the capacity map in bits, ``[B, 1, h, w]``.
    """


@register("inverse_iba")
class InverseIBA(_SingleLayerBottleneck):
    """Inverse IBA (dissertation ch. 8 §2.1, Eq. 4): Z_inv = λ·ε + (1−λ)·R, minimise β·KL − CE(Z_inv).

    λ → 1 wherever removing the feature destroys predictive information, so *every* predictive region is
    marked, not just one sufficient region. Map: capacity of λ in bits, ``[B, 1, h, w]``.
    """

    inverse = True


@dataclass
class MultiLayerResult:
    """Multi-layer IBA: the combined map, the binary intersection and the per-layer results."""

    capacity: Tensor  # [B, 1, H, W] (input resolution) or [B, 1, h, w] (finest layer), see ``resolution``
    mask: Tensor  # [B, 1, H, W] intersection of the thresholded maps
    layers: dict[str, BottleneckResult]

    @property
    def attribution(self) -> Tensor:
        return self.capacity


#: where Multi-layer IBA combines the layers' maps
MULTILAYER_RESOLUTIONS = ("input", "finest")


def rms_threshold(maps: Tensor, threshold: float) -> Tensor:
    """The thresholding T of Multi-layer IBA: ``map ≥ threshold · RMS(map)`` per image, ``[B, 1, H, W]`` → bool.

    The authors' code divides each map by its L2 norm over the image and keeps values ≥ 0.006 at 224² input
    (CheXplain-IBA ``evaluation/gen_attribution_map.py``, ``filtered_mask``); ``map / ‖map‖₂ ≥ t`` is
    ``map / RMS(map) ≥ t·√(H·W)``, so ``threshold`` = 0.006·224 = 1.344 reproduces their rule at any size. A map
    that is zero everywhere keeps nothing, and with ``threshold > 0`` a zero pixel is never kept.
    """
    rms = maps.pow(2).mean((1, 2, 3), keepdim=True).sqrt()
    return (rms > 0) & (maps >= threshold * rms)


@register("multilayer_iba")
class MultiLayerIBA(FeatureBottleneckMethod):
    """Multi-layer IBA (dissertation ch. 8 §2.3, Eq. 5): T(IBA_L1) ∩ … ∩ T(IBA_Ln).

    As in the authors' code (CheXplain-IBA ``filtered_mask``): every layer's IBA map is taken to the input
    resolution as bits per pixel (``resolution="input"``, their ``_current_heatmap``; ``"finest"`` combines at the
    finest layer's resolution instead), each coarser layer is thresholded with :func:`rms_threshold`
    (``threshold`` 1.344 = their 0.006 on the L2-normalised 224² map), and the finest layer's map, not thresholded,
    is multiplied by the intersection (``weight_by_finest=True``), so the result still ranks pixels.
    ``weight_by_finest=False`` returns Eq. 5 literally: the binary intersection of every layer's thresholded map,
    the finest included. ``layers=None`` takes the deepest module at each of the ``auto_layers`` deepest
    resolutions (the authors insert bottlenecks after DenseNet-121's dense blocks 1, 2 and 3).
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        threshold: float = 1.344,
        weight_by_finest: bool = True,
        resolution: str = "input",
        auto_layers: int = 2,
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
        task_loss: str = "ce",  # Schulz et al.: cross-entropy; "bce" for sigmoid outputs (seed 002)
    ) -> None:
        super().__init__(statistics, stats_samples, cache_dir, missing_statistics, min_std, active_threshold)
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0 (a multiple of the map's RMS), got {threshold}")
        if resolution not in MULTILAYER_RESOLUTIONS:
            raise ValueError(f"resolution must be one of {MULTILAYER_RESOLUTIONS}, got {resolution!r}")
        if task_loss not in TASK_LOSSES:
            raise ValueError(f"task_loss must be one of {TASK_LOSSES}, got {task_loss!r}")
        self.layers = list(layers) if layers is not None else None
        self.threshold, self.task_loss = threshold, task_loss
        self.weight_by_finest = weight_by_finest
        self.resolution = resolution
        self.auto_layer_count = auto_layers
        self.settings = BottleneckSettings(beta, steps, lr, initial_alpha, sigma, noise_draws, smoothing_truncate,
                                           False, seed, smoothing_padding, map_from)

    def configured_layers(self) -> list[str] | None:
        return self.layers

    def _explain(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> MultiLayerResult:
        target = self._resolve_class_target(model, inputs, target)
        loss = classification_loss(target, self.settings.noise_draws, self.task_loss)
        results = {
            layer: self._bottleneck_at(model, layer, inputs, target, loss, self.settings)
            for layer in self.layers_for(model, inputs)
        }
        finest_layer = max(results, key=lambda name: results[name].capacity[0, 0].numel())
        size = tuple(inputs.shape[-2:] if self.resolution == "input" else results[finest_layer].capacity.shape[-2:])
        maps = {name: capacity_per_input_pixel(result.capacity, size) for name, result in results.items()}
        finest = maps[finest_layer]
        mask = torch.ones_like(finest, dtype=torch.bool)
        for name, resized in maps.items():
            if name != finest_layer or not self.weight_by_finest:
                mask &= rms_threshold(resized, self.threshold)
        combined = mask.to(finest.dtype) * finest if self.weight_by_finest else mask.to(finest.dtype)
        return MultiLayerResult(combined, mask, results)
