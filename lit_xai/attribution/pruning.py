"""Input-specific network pruning for attribution (seed 000, Khakzar et al.).

Every hidden neuron (each element of each ReLU call's output, not a channel) is scored by ``|a·∂y_t/∂a|``
from one backward pass (Eq. 3); the lowest fraction κ, ranked network-wide, is masked to zero (Eq. 1-2),
giving the pruned network ``f_p``. Each image gets its own mask.

- ``prune_grad``: ``∂f_p/∂x`` (PruneGrad).
- ``prune_grad_mid``: ``|∂f_p/∂A^l|`` summed over channels at a hidden layer, upsampled (Eq. 5, PruneGrad-Mid).
- ``prune_pgd``: the L2 PGD perturbation that maximises ``f_p`` (Eq. 4, PrunePGD; 20 steps, step 0.01, bound 0.1).

κ is given directly or calibrated with :func:`calibrate_sparsity` so that the mean relative change of the
target's softmax probability on a validation set equals a target (§4.1: 15% ⇒ κ≈70% on ResNet-50).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, AttributionMethod, preserved_model_state, target_scores
from lit_xai.attribution.layers import capture_outputs, resolve_layer
from lit_xai.attribution.pathway_grad import pathway_masks, pruned
from lit_xai.attribution.registry import register
from lit_xai.pathways.contributions import mct_contributions
from lit_xai.pathways.neurons import NeuronGate, NeuronTensors, expand_per_sample, flatten_neurons, gated
from lit_xai.pathways.selection import check_sparsity

DEFAULT_CALIBRATION_GRID = tuple(i / 20 for i in range(20))


@dataclass
class SparsityCalibration:
    """κ chosen on a calibration set, with the measured curve (seed 000 Fig. 2a)."""

    sparsity: float
    target_change: float
    grid: list[float]
    mean_change: list[float]


def _images(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, dict) and "image" in batch:
        return batch["image"]
    raise AttributionError("calibration batches must be dicts with an 'image' tensor (or image tensors)")


def output_change_curve(
    model: nn.Module,
    loader: Iterable[Any],
    grid: Sequence[float] = DEFAULT_CALIBRATION_GRID,
    max_batches: int | None = None,
    method: str = "prune_grad",
) -> list[float]:
    """Mean ``|p_t(f_p) − p_t(f)| / p_t(f)`` (softmax of the predicted class) for each κ in ``grid``."""
    for sparsity in grid:
        check_sparsity(sparsity)
    device = next(model.parameters()).device
    totals = torch.zeros(len(grid), dtype=torch.float64)
    count = 0
    with torch.inference_mode(False), torch.enable_grad(), preserved_model_state(model):
        for batch_index, batch in enumerate(loader):
            if max_batches is not None and batch_index >= max_batches:
                break
            images = _images(batch).to(device).clone()
            contrib = mct_contributions(model, images, None, method)
            p0 = contrib.logits.softmax(1).gather(1, contrib.target[:, None]).squeeze(1)
            ranked = flatten_neurons(contrib.contributions).sort(dim=1).values
            for g, sparsity in enumerate(grid):
                removed = int(round(sparsity * ranked.shape[1]))
                if removed == 0:
                    continue  # the unpruned network: no change
                thresholds = ranked[:, removed - 1]
                keep = [c > expand_per_sample(thresholds, c) for c in contrib.contributions]
                with torch.no_grad(), gated(NeuronGate(keep, "zero"), method):
                    logits = model(images)
                p = logits.softmax(1).gather(1, contrib.target[:, None]).squeeze(1)
                totals[g] += ((p - p0).abs() / p0.clamp_min(1e-12)).sum().item()
            count += images.shape[0]
    if count == 0:
        raise AttributionError("the calibration loader yielded no images")
    return (totals / count).tolist()


def calibrate_sparsity(
    model: nn.Module,
    loader: Iterable[Any],
    target_change: float = 0.15,
    grid: Sequence[float] = DEFAULT_CALIBRATION_GRID,
    max_batches: int | None = None,
) -> SparsityCalibration:
    """Pick κ where the mean relative output change first reaches ``target_change`` (linear interpolation).

    If the curve never reaches the target, the largest κ of the grid is returned with a ``UserWarning`` naming the
    target, the reachable range and the κ chosen (likewise when the first grid point already exceeds it).
    """
    if target_change <= 0:
        raise ValueError(f"target_change must be positive, got {target_change}")
    grid = sorted(grid)
    curve = output_change_curve(model, loader, grid, max_batches)
    sparsity = grid[-1]
    for i, change in enumerate(curve):
        if change >= target_change:
            if i == 0:
                sparsity = grid[0]
            else:
                lo, hi = curve[i - 1], change
                frac = (target_change - lo) / (hi - lo) if hi > lo else 1.0
                sparsity = grid[i - 1] + frac * (grid[i] - grid[i - 1])
            break
    reachable = f"the curve spans {min(curve):.4g}–{max(curve):.4g} over κ ∈ [{grid[0]:g}, {grid[-1]:g}]"
    if max(curve) < target_change:
        warnings.warn(
            f"calibrate_sparsity: target output change {target_change:g} is not reachable ({reachable}); "
            f"using the largest κ of the grid, {sparsity:g}",
            UserWarning,
            stacklevel=2,
        )
    elif curve[0] > target_change:
        warnings.warn(
            f"calibrate_sparsity: target output change {target_change:g} is below the first grid point "
            f"({reachable}); using the smallest κ of the grid, {sparsity:g}",
            UserWarning,
            stacklevel=2,
        )
    return SparsityCalibration(float(sparsity), target_change, list(grid), curve)


class _PrunedNetworkMethod(AttributionMethod):
    """Shared part: per-sample pruning masks of the lowest-contributing fraction κ of neurons."""

    def __init__(
        self,
        sparsity: float = 0.7,
        calibration_loader: Iterable[Any] | None = None,
        target_output_change: float = 0.15,
        calibration_batches: int | None = None,
    ) -> None:
        check_sparsity(sparsity)
        self.sparsity = sparsity
        self.calibration_loader = calibration_loader
        self.target_output_change = target_output_change
        self.calibration_batches = calibration_batches
        self.calibration: SparsityCalibration | None = None

    def prune(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> tuple[NeuronTensors, Tensor]:
        """(keep masks per ReLU call, 0/1 in the scores' dtype; explained target). Calibrates κ on the first call if
        a loader was given."""
        if self.calibration_loader is not None and self.calibration is None:
            self.calibration = calibrate_sparsity(
                model, self.calibration_loader, self.target_output_change, max_batches=self.calibration_batches
            )
            self.sparsity = self.calibration.sparsity
        contrib = mct_contributions(model, inputs, target, self.name)
        return pathway_masks(contrib.contributions, self.sparsity), contrib.target


@register("prune_grad")
class PruneGrad(_PrunedNetworkMethod):
    """PruneGrad: ``∂f_p/∂x`` of the input-specifically pruned network (seed 000 §3.1). Map ``[B, C, H, W]``.

    ``sparsity`` κ is the fraction of neurons removed; with ``calibration_loader`` (dict batches with "image")
    κ is instead calibrated on the first call so the mean relative output change equals ``target_output_change``.
    """

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        keep, target = self.prune(model, inputs, target)
        x = inputs.detach().requires_grad_(True)
        with pruned(keep, self.name):
            logits = model(x)
        scores, _ = target_scores(logits, target)
        (grad,) = torch.autograd.grad(scores.sum(), x)
        return grad


def _default_mid_layer(model: nn.Module) -> str:
    stages = [name for name, _ in model.named_children() if name.startswith("layer") and name[5:].isdigit()]
    if len(stages) < 2:
        raise AttributionError(
            "prune_grad_mid: pass layer=<module name>; the default (the second-to-last residual stage, "
            "'layer<N-1>') only exists for ResNets"
        )
    return sorted(stages, key=lambda n: int(n[5:]))[-2]


@register("prune_grad_mid")
class PruneGradMid(_PrunedNetworkMethod):
    """PruneGrad-Mid (seed 000 Eq. 5): ``Σ_channels |∂f_p/∂A^l|`` at module ``layer``'s output, ``[B, 1, h, w]``.

    ``layer`` defaults to the second-to-last residual stage (the paper's choice); ``upsample`` resizes the map
    bilinearly to the input size.
    """

    def __init__(
        self,
        layer: str | None = None,
        sparsity: float = 0.7,
        upsample: bool = True,
        calibration_loader: Iterable[Any] | None = None,
        target_output_change: float = 0.15,
        calibration_batches: int | None = None,
    ) -> None:
        super().__init__(sparsity, calibration_loader, target_output_change, calibration_batches)
        self.layer = layer
        self.upsample = upsample

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        name = self.layer or _default_mid_layer(model)
        module = resolve_layer(model, name)
        keep, target = self.prune(model, inputs, target)
        with capture_outputs([module]) as (capture,), pruned(keep, self.name):
            logits = model(inputs.detach().requires_grad_(True))
        if len(capture.outputs) != 1 or capture.outputs[0].dim() != 4:
            raise AttributionError(f"prune_grad_mid: layer {name!r} must be called once and return [B, C, h, w]")
        scores, _ = target_scores(logits, target)
        (grad,) = torch.autograd.grad(scores.sum(), capture.outputs[0])
        saliency = grad.abs().sum(1, keepdim=True)
        if self.upsample:
            saliency = F.interpolate(saliency, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
        return saliency


@register("prune_pgd")
class PrunePGD(_PrunedNetworkMethod):
    """PrunePGD (seed 000 Eq. 4, §4.8): L2 PGD ``argmax_δ f_p(x+δ)`` with ``‖δ‖₂ ≤ bound``; the map is δ.

    Each step moves δ by ``step_size`` along the per-sample L2-normalised gradient, then projects onto the ball.
    """

    def __init__(
        self,
        sparsity: float = 0.7,
        steps: int = 20,
        step_size: float = 0.01,
        bound: float = 0.1,
        calibration_loader: Iterable[Any] | None = None,
        target_output_change: float = 0.15,
        calibration_batches: int | None = None,
    ) -> None:
        super().__init__(sparsity, calibration_loader, target_output_change, calibration_batches)
        if steps < 1 or step_size <= 0 or bound <= 0:
            raise ValueError(f"PrunePGD needs steps ≥ 1, step_size > 0, bound > 0; got {steps}, {step_size}, {bound}")
        self.steps = steps
        self.step_size = step_size
        self.bound = bound

    @torch.no_grad()
    def step(self, delta: Tensor, grad: Tensor) -> Tensor:
        """One ℓ2 PGD ascent step: δ + η·g/‖g‖, projected onto the ball ‖δ‖ ≤ ε (per image)."""
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta + self.step_size * grad / expand_per_sample(norm, grad)
        scale = (self.bound / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        return delta * expand_per_sample(scale, delta)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
        keep, target = self.prune(model, inputs, target)
        delta = torch.zeros_like(inputs)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            with pruned(keep, self.name):
                logits = model(inputs + delta)
            scores, _ = target_scores(logits, target)
            (grad,) = torch.autograd.grad(scores.sum(), delta)
            delta = self.step(delta, grad)
        return delta.detach()
