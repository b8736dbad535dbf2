"""The contract every attribution metric follows.

One uniform update signature for all metrics::

    metric.update(model, inputs, target, maps, *, method=None, masks=None, boxes=None)

- ``model``: the classifier (eval mode; the metric never changes it), ``inputs``: ``[B, C, H, W]`` in the model's
  input space, ``target``: long ``[B]`` (the explained class), ``maps``: the attribution ``[B, C', h, w]`` with
  ``C'`` = ``C`` or 1 (layer maps are upsampled bilinearly to ``H×W`` where a metric needs pixel ranks).
- ``method``: a callable ``(model, inputs, target) -> maps`` (needed by the randomisation check, which recomputes
  maps on randomised copies of the model), ``masks``: ``[B, 1, H, W]`` ground-truth object masks, ``boxes``:
  ``[B, 4]`` ground-truth boxes ``(x0, y0, x1, y1)`` with exclusive ends (localisation metrics).

A metric declares what it needs beyond the first four arguments in :attr:`AttributionMetric.requires`; the
callback passes everything it has and each metric ignores the rest.

``compute()`` returns a dict of tensors: ``"score"`` (the scalar reported per method × metric) and any curves
under ``"curve/<name>"`` whose x-axis is :meth:`AttributionMetric.curve_axis`. States are sums over samples
(``dist_reduce_fx="sum"``), so DDP ranks that see disjoint samples reduce to the single-process value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torchmetrics import Metric  # noqa: E402

Explainer = Callable[[nn.Module, Tensor, Tensor | None], Tensor]
CHANNEL_REDUCTIONS = ("sum", "abs_sum", "max_abs", "mean")


def reduce_channels(maps: Tensor, reduction: str) -> Tensor:
    """``[B, C, H, W]`` → ``[B, H, W]``: sum (keeps sign), sum of absolute values, max of absolute values or mean."""
    if maps.dim() != 4:
        raise ValueError(f"maps must have shape [B, C, H, W], got {tuple(maps.shape)}")
    if reduction == "sum":
        return maps.sum(1)
    if reduction == "abs_sum":
        return maps.abs().sum(1)
    if reduction == "max_abs":
        return maps.abs().amax(1)
    if reduction == "mean":
        return maps.mean(1)
    raise ValueError(f"unknown channel reduction {reduction!r}; expected one of {CHANNEL_REDUCTIONS}")


def pixel_scores(maps: Tensor, size: tuple[int, int], reduction: str) -> Tensor:
    """Per-pixel relevance ``[B, H*W]``: channels reduced first, layer maps upsampled (bilinear) to ``size``."""
    reduced = reduce_channels(maps.float(), reduction)
    if tuple(reduced.shape[-2:]) != tuple(size):
        reduced = F.interpolate(reduced[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return reduced.flatten(1)


def resolve_chunk_size(chunk_size: int | None, batch: int) -> int:
    """The perturbed images per forward: ``chunk_size``, or the batch size when ``None`` (one forward per step)."""
    if chunk_size is None:
        return batch
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1 or None, got {chunk_size}")
    return chunk_size


def trapezoid_auc(y: Tensor, x: Tensor) -> Tensor:
    """Area under ``y`` (``[..., K]``) over the increasing grid ``x`` (``[K]``) by the trapezoid rule."""
    return torch.trapezoid(y, x.to(y), dim=-1)


def check_batch(inputs: Tensor, target: Tensor, maps: Tensor) -> None:
    """A ``ValueError`` naming the argument unless inputs ``[B, C, H, W]``, target ``[B]``, maps ``[B, C, h, w]``."""
    if inputs.dim() != 4:
        raise ValueError(f"inputs must have shape [B, C, H, W], got {tuple(inputs.shape)}")
    if maps.dim() != 4 or maps.shape[0] != inputs.shape[0]:
        raise ValueError(f"maps must have shape [B, C, h, w] with B={inputs.shape[0]}, got {tuple(maps.shape)}")
    if target.dim() != 1 or target.shape[0] != inputs.shape[0]:
        raise ValueError(f"target must have shape [{inputs.shape[0]}], got {tuple(target.shape)}")


class AttributionMetric(Metric):
    """Base class of lit_xai metrics: uniform :meth:`update` signature, dict result, curve plot."""

    full_state_update: bool = False
    is_differentiable: bool = False
    #: extra update arguments the metric needs, a subset of {"method", "masks", "boxes"}
    requires: ClassVar[frozenset[str]] = frozenset()
    #: axis label of the curves
    curve_label: ClassVar[str] = "step"

    def update(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: Tensor,
        maps: Tensor,
        *,
        method: Explainer | None = None,
        masks: Tensor | None = None,
        boxes: Tensor | None = None,
    ) -> None:
        extras = {"method": method, "masks": masks, "boxes": boxes}
        missing = sorted(name for name in self.requires if extras[name] is None)
        if missing:
            raise ValueError(f"{type(self).__name__}.update needs {', '.join(missing)} (see AttributionMetric)")
        check_batch(inputs, target, maps)
        with torch.no_grad():
            self._update(model, inputs, target.long(), maps.detach(), **extras)

    def prepare(self, model: nn.Module, image_size: tuple[int, int]) -> None:
        """Allocate shape-dependent states before the first update. The callback calls it on every DDP rank for
        every batch, also where a rank evaluates no sample, so that all ranks sync states of one shape."""

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        raise NotImplementedError

    def curve_axis(self) -> Tensor:
        """The x values of the curves in :meth:`compute` (override where there are curves)."""
        raise NotImplementedError

    def curve_ticks(self) -> list[str] | None:
        """Tick labels for the curve x values (e.g. layer names), or ``None`` for a numeric axis."""
        return None

    def plot(self, val: dict[str, Tensor] | None = None, ax: Any = None) -> tuple[Any, Any]:  # type: ignore[override]
        """Plot the curves of ``val`` (default: :meth:`compute`) on ``ax``; returns (figure, axes)."""
        val = self.compute() if val is None else val
        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 3.5))
        curves = {k.removeprefix("curve/"): v for k, v in val.items() if k.startswith("curve/")}
        if curves:
            x = self.curve_axis().cpu()
            for name, y in curves.items():
                ax.plot(x.numpy(), y.detach().cpu().float().numpy(), marker=".", label=name)
            ticks = self.curve_ticks()
            if ticks is not None:
                ax.set_xticks(x.numpy(), ticks, rotation=90, fontsize=6)
            ax.set_xlabel(self.curve_label)
            ax.legend(fontsize=7)
        ax.set_title(f"{type(self).__name__}: score {float(val['score']):.4f}")
        fig.tight_layout()
        return fig, ax
