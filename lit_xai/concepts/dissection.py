"""Network Dissection (Bau et al., CVPR 2017, as seed 002 §2.2 uses it, Eq. 5).

For unit ``k`` (feature map) of a layer:

1. Threshold ``T_k`` with ``P(f_k > T_k) = TAIL`` over every activation of unit ``k`` on the annotation set: the
   ``1 − TAIL`` quantile, computed **exactly** (:class:`UnitThresholds`). The quantile is the linear-interpolation one
   of ``numpy.quantile``/``torch.quantile``; only its top ``⌈TAIL·n⌉ + 2`` values per unit can matter, so a running
   top-k buffer over the batches holds them (exact, bounded memory, DDP-safe: the ranks' buffers are gathered and cut
   to the top k again).
2. ``S'_k``: the activation map upsampled bilinearly to the mask size (pixel-centre aligned, ``align_corners=False``,
   as PIL's bilinear resize in the authors' NetDissect code); ``M_k = S'_k ≥ T_k``.
3. ``IoU_{k,c} = Σ_x |M_k(x) ∩ L_c(x)| / Σ_x |M_k(x) ∪ L_c(x)|`` summed over the images ``x`` that contain concept
   ``c`` (Eq. 5); :class:`DissectionIoU` keeps both sums as states.
4. A unit is labelled with its best concept (largest IoU) and is a *detector* when that IoU exceeds
   ``IOU_THRESHOLD`` (:class:`DissectionResult`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from tqdm import tqdm

from lit_xai.concepts.layers import check_spatial, recording

#: P(f_k > T_k) = 0.005: seed 002 §2.2 ("the threshold T_k is chosen such that P(f_k > T_k) = 0.005 [2]"), Bau et al.
#: 2017 §3.1 (the top quantile level 0.005)
TAIL = 0.005
#: a unit is a detector of its best concept when IoU_{k,c} > 0.04: seed 002 §2.2 ("a threshold of 0.04 similar to
#: [2]"), Bau et al. 2017 §3.2
IOU_THRESHOLD = 0.04


def top_count(count: int, tail: float) -> int:
    """How many of the largest of ``count`` values the linear ``1 − tail`` quantile reads: ``count − ⌊q(count−1)⌋``
    with ``q = 1 − tail``, bounded by ``⌈tail·count⌉ + 2`` (since ``⌊q(n−1)⌋ ≥ q(n−1) − 1``)."""
    return min(count, math.ceil(tail * count) + 2)


def _merge_top(stacked: Tensor) -> Tensor:
    """DDP/merge reduction of the top buffers ``[world, k, K]`` → the top ``k`` rows of their union ``[k, K]``."""
    return stacked.flatten(0, 1).topk(stacked.shape[1], dim=0).values


def quantile_from_top(top: Tensor, count: int, q: float) -> Tensor:
    """The linear-interpolation ``q`` quantile (``torch.quantile``'s default) of ``count`` values per column, from
    the column's largest values ``top`` ``[m, K]`` (any order; ``m ≥ count − ⌊q(count−1)⌋``)."""
    position = q * (count - 1)  # ascending index, as torch.quantile computes it
    lower = math.floor(position)
    upper = min(lower + 1, count - 1)
    descending = top.sort(dim=0, descending=True).values.double()
    # ascending index i is descending rank count − 1 − i
    low_value, high_value = descending[count - 1 - lower], descending[count - 1 - upper]
    return torch.lerp(low_value, high_value, torch.tensor(position - lower, dtype=torch.float64))


class UnitThresholds(Metric):
    """Exact per-unit thresholds ``T_k`` with ``P(f_k > T_k) = tail`` (the linear ``1 − tail`` quantile) over all
    activations ``[B, K, h, w]`` seen by :meth:`update`.

    Args:
        num_units: K.
        max_count: an upper bound on the number of values per unit over the whole data set (images × h × w); the
            buffer keeps the top ``⌈tail·max_count⌉ + 2`` values per unit (``-inf`` padded, so every rank's buffer has
            one shape for the gather).
        tail: ``P(f_k > T_k)``; default :data:`TAIL`.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, num_units: int, max_count: int, tail: float = TAIL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 < tail < 1:
            raise ValueError(f"tail must be in (0, 1), got {tail}")
        if num_units < 1 or max_count < 1:
            raise ValueError(f"num_units and max_count must be ≥ 1, got {num_units}, {max_count}")
        self.num_units, self.max_count, self.tail = num_units, max_count, tail
        self.keep = top_count(max_count, tail)
        self.add_state("top", torch.full((self.keep, num_units), -math.inf), dist_reduce_fx=_merge_top)
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, activations: Tensor) -> None:
        if activations.dim() != 4 or activations.shape[1] != self.num_units:
            raise ValueError(f"expected activations [B, {self.num_units}, h, w], got {tuple(activations.shape)}")
        values = activations.detach().transpose(0, 1).flatten(1).T.to(self.top.dtype)  # [B·h·w, K]
        self.top = torch.cat([self.top, values]).topk(self.keep, dim=0).values
        self.count += values.shape[0]
        if int(self.count) > self.max_count:
            raise ValueError(f"UnitThresholds saw {int(self.count)} values per unit, more than max_count="
                             f"{self.max_count}: the top buffer would no longer be exact")

    def compute(self) -> Tensor:
        """``[K]`` thresholds (float64)."""
        count = int(self.count)
        if count == 0:
            raise ValueError("UnitThresholds: no activations seen")
        return quantile_from_top(self.top, count, 1 - self.tail)


#: unit-mask elements (images × units × pixels) per matrix product in :class:`DissectionIoU` (ours: a memory bound of
#: 64 MB in float32; the result does not depend on it)
MAX_ELEMENTS = 2**24


class DissectionIoU(Metric):
    """The sums of Eq. 5 for every (unit, concept): ``intersection`` and ``union`` ``[K, C]`` over the images that
    contain the concept, given the thresholds ``[K]``; :meth:`compute` → ``IoU_{k,c}`` (0 where the union is
    empty, i.e. no image has the concept and no unit fired). The units are processed in chunks of at most
    ``max_elements`` mask elements (a ResNet layer of 512 units at 224² would otherwise need 6.6 GB per 64 images).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, thresholds: Tensor, num_concepts: int, max_elements: int = MAX_ELEMENTS, **kwargs: Any
                 ) -> None:
        super().__init__(**kwargs)
        if max_elements < 1:
            raise ValueError(f"max_elements must be ≥ 1, got {max_elements}")
        self.max_elements = max_elements
        if thresholds.dim() != 1 or num_concepts < 1:
            raise ValueError(f"thresholds must be [K] and num_concepts ≥ 1, got {tuple(thresholds.shape)}, "
                             f"{num_concepts}")
        k = thresholds.shape[0]
        self.register_buffer("thresholds", thresholds.detach().clone())
        self.num_concepts = num_concepts
        self.add_state("intersection", torch.zeros(k, num_concepts, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("union", torch.zeros(k, num_concepts, dtype=torch.float64), dist_reduce_fx="sum")

    def unit_masks(self, activations: Tensor, size: tuple[int, int], units: slice = slice(None)) -> Tensor:
        """``M_k = S'_k ≥ T_k``: ``[B, k, H, W]`` bool for the ``units`` of ``activations`` ``[B, k, h, w]``,
        ``S'_k`` bilinearly upsampled to ``size``."""
        upsampled = F.interpolate(activations.float(), size=size, mode="bilinear", align_corners=False)
        return upsampled >= self.thresholds[units].to(upsampled.dtype).view(1, -1, 1, 1)

    def update(self, activations: Tensor, masks: Tensor) -> None:
        """``activations`` ``[B, K, h, w]``, concept masks ``[B, C, H, W]`` (bool)."""
        if masks.dim() != 4 or masks.shape[1] != self.num_concepts or masks.shape[0] != activations.shape[0]:
            raise ValueError(f"expected masks [B={activations.shape[0]}, C={self.num_concepts}, H, W], got "
                             f"{tuple(masks.shape)}")
        concept = masks.flatten(2).float()  # [B, C, P]
        present = (concept.sum(-1) > 0).float()  # [B, C]
        concept_area = concept.sum((0, 2)).double()  # Σ_x |L_c| (0 for images without c)
        b, p = concept.shape[0], concept.shape[2]
        step = max(1, self.max_elements // max(1, b * p))  # units per chunk: the [B, k, P] masks stay in budget
        for start in range(0, len(self.thresholds), step):
            units = slice(start, start + step)
            unit = self.unit_masks(activations[:, units].detach(), tuple(masks.shape[-2:]), units)
            unit = unit.flatten(2).float()  # [B, k, P]
            inter_sum = (unit @ concept.transpose(1, 2)).sum(0).double()  # [k, C]; 0 where the image lacks c
            # Σ_{x ∋ c} |M_k ∪ L_c| = Σ_{x ∋ c} |M_k| + Σ_x |L_c| − Σ_x |M_k ∩ L_c|
            self.intersection[units] += inter_sum
            self.union[units] += (unit.sum(-1).T @ present).double() + concept_area[None] - inter_sum

    def compute(self) -> Tensor:
        return iou_from_sums(self.intersection, self.union)


@dataclass
class DissectionResult:
    """One layer of one model: thresholds ``[K]``, ``iou`` ``[K, C]`` and the concept names ``[C]``."""

    layer: str
    concepts: list[str]
    thresholds: Tensor
    iou: Tensor
    iou_threshold: float = IOU_THRESHOLD

    @property
    def best_concept(self) -> Tensor:
        """``[K]`` index of each unit's label (its largest IoU)."""
        return self.iou.argmax(1)

    @property
    def best_iou(self) -> Tensor:
        return self.iou.max(1).values

    @property
    def detectors(self) -> Tensor:
        """``[K]`` bool: best IoU > the detector threshold."""
        return self.best_iou > self.iou_threshold

    def label(self, unit: int) -> str | None:
        """The unit's concept if it is a detector, else ``None``."""
        return self.concepts[int(self.best_concept[unit])] if bool(self.detectors[unit]) else None

    def counts(self) -> dict[str, int]:
        """Detectors per concept (every concept listed, 0 included)."""
        chosen = self.best_concept[self.detectors]
        return {name: int((chosen == c).sum()) for c, name in enumerate(self.concepts)}

    def rows(self) -> list[dict[str, Any]]:
        """One row per unit: threshold, best concept and IoU, whether it is a detector."""
        return [{"layer": self.layer, "unit": k, "threshold": float(self.thresholds[k]),
                 "concept": self.concepts[int(self.best_concept[k])], "iou": float(self.best_iou[k]),
                 "detector": bool(self.detectors[k])} for k in range(len(self.thresholds))]


Batches = Iterable[dict[str, Tensor]]
MaskFn = Callable[[dict[str, Tensor]], Tensor]


def _eval(model: nn.Module) -> dict[nn.Module, bool]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    return modes


def _restore(modes: dict[nn.Module, bool]) -> None:
    for module, training in modes.items():
        module.train(training)


def layer_thresholds(model: nn.Module, batches: Batches, layers: Sequence[str], num_images: int,
                     tail: float = TAIL, device: str | torch.device = "cpu", progress: bool = False,
                     ) -> dict[str, Tensor]:
    """Pass 1: ``{layer: T [K]}`` over the ``num_images`` images of ``batches`` (eval mode, no gradients; the
    model's modes are restored). Under DDP each rank passes its own images, ``num_images`` counts all ranks' images
    (every rank's top buffer then has one shape) and every rank gets the thresholds over all of them."""
    metrics: dict[str, UnitThresholds] = {}
    modes = _eval(model)
    try:
        with torch.no_grad(), recording(model, layers) as store:
            for batch in tqdm(batches, desc="dissect: thresholds", disable=not progress, leave=False):
                model(batch["image"].to(device))
                for name in layers:
                    act = store[name]
                    check_spatial(name, act)
                    if name not in metrics:
                        count = num_images * act.shape[2] * act.shape[3]
                        metrics[name] = UnitThresholds(act.shape[1], count, tail).to(act.device)
                    metrics[name].update(act)
    finally:
        _restore(modes)
    return {name: metrics[name].compute().cpu() for name in layers}


def layer_iou(model: nn.Module, batches: Batches, layers: Sequence[str], thresholds: dict[str, Tensor],
              masks: MaskFn, num_concepts: int, device: str | torch.device = "cpu", progress: bool = False,
              ) -> dict[str, tuple[Tensor, Tensor]]:
    """Pass 2: ``{layer: (intersection, union)}`` sums ``[K, C]`` of Eq. 5; ``masks(batch)`` → ``[B, C, H, W]``.
    Under DDP each rank passes its own images and gets the sums over all ranks' images."""
    metrics = {name: DissectionIoU(thresholds[name].to(device), num_concepts).to(device) for name in layers}
    modes = _eval(model)
    try:
        with torch.no_grad(), recording(model, layers) as store:
            for batch in tqdm(batches, desc="dissect: IoU", disable=not progress, leave=False):
                model(batch["image"].to(device))
                concept = masks(batch).to(device)
                for name in layers:
                    metrics[name].update(store[name], concept)
    finally:
        _restore(modes)
    return {name: synced_sums(m) for name, m in metrics.items()}


def synced_sums(metric: DissectionIoU) -> tuple[Tensor, Tensor]:
    """The metric's ``(intersection, union)`` summed over the DDP ranks (its own sums in one process); the metric's
    states are left as they were (torchmetrics' ``sync_context`` restores them)."""
    with metric.sync_context():
        return metric.intersection.cpu().clone(), metric.union.cpu().clone()


def dissect(model: nn.Module, batches: Batches, layers: Sequence[str], masks: MaskFn, concepts: Sequence[str],
            num_images: int, tail: float = TAIL, iou_threshold: float = IOU_THRESHOLD,
            device: str | torch.device = "cpu", progress: bool = False) -> dict[str, DissectionResult]:
    """Both passes over a re-iterable ``batches`` (e.g. a DataLoader) → ``{layer: DissectionResult}``."""
    thresholds = layer_thresholds(model, batches, layers, num_images, tail, device, progress)
    sums = layer_iou(model, batches, layers, thresholds, masks, len(concepts), device, progress)
    return {name: DissectionResult(name, list(concepts), thresholds[name], iou_from_sums(*sums[name]), iou_threshold)
            for name in layers}


def iou_from_sums(intersection: Tensor, union: Tensor) -> Tensor:
    """Eq. 5 from its two sums (0 where the union is empty)."""
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
