"""The contract every attribution metric follows.

One uniform update signature for all metrics::

    metric.update(model, inputs, target, maps, *, method=None, masks=None, boxes=None)

- ``model``: the classifier (eval mode; the metric never changes it), ``inputs``: ``[B, C, H, W]`` in the model's
  input space, ``target``: long ``[B]`` (the explained class), ``maps``: the attribution ``[B, C', h, w]`` with
  ``C'`` = ``C`` or 1 (layer maps are upsampled bilinearly to ``H×W`` where a metric needs pixel ranks). Maps must be
  finite: a NaN or infinite value is an error naming the method.
- ``method``: a callable ``(model, inputs, target) -> maps`` (needed by the randomisation check, which recomputes
  maps on randomised copies of the model), ``masks``: ``[B, 1, H, W]`` ground-truth object masks, ``boxes``:
  ``[B, 4]`` ground-truth boxes ``(x0, y0, x1, y1)`` with exclusive ends (localisation metrics).

A metric declares what it needs beyond the first four arguments in :attr:`AttributionMetric.requires`; the
callback passes everything it has and each metric ignores the rest.

``compute()`` returns a dict of tensors: ``"score"`` (the scalar reported per method × metric) and any curves
under ``"curve/<name>"`` whose x-axis is :meth:`AttributionMetric.curve_axis`; with ``result="score"`` it returns the
scalar score alone (what torchmetrics' ``MetricTracker`` needs), and :meth:`AttributionMetric.results` still gives
the dict. States are sums over samples (``dist_reduce_fx="sum"``), so DDP ranks that see disjoint samples reduce to
the single-process value. Shape-dependent states are allocated on the first update (or by :meth:`prepare`), and a
batch state merges into an empty global state, so ``metric(...)`` (torchmetrics' ``forward``) works.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn
from torchmetrics import Metric

from lit_xai.attribution.postprocess import reduce_channels

Explainer = Callable[[nn.Module, Tensor, Tensor | None], Tensor]
RESULTS = ("dict", "score")


def pixel_scores(maps: Tensor, size: tuple[int, int], reduction: str) -> Tensor:
    """Per-pixel relevance ``[B, H*W]``: channels reduced first, layer maps upsampled (bilinear) to ``size``."""
    reduced = reduce_channels(maps.float(), reduction)
    if tuple(reduced.shape[-2:]) != tuple(size):
        reduced = F.interpolate(reduced, size=size, mode="bilinear", align_corners=False)
    return reduced.flatten(1)


def trapezoid_auc(y: Tensor, x: Tensor) -> Tensor:
    """Area under ``y`` (``[..., K]``) over the increasing grid ``x`` (``[K]``) by the trapezoid rule."""
    return torch.trapezoid(y, x.to(y), dim=-1)


def method_name(method: Explainer | None) -> str:
    """How errors name the maps' source: the method's ``label``/``name``/``__name__`` when given, else "maps"."""
    for attribute in ("label", "name", "__name__"):
        name = getattr(method, attribute, None)
        if isinstance(name, str):
            return f"method {name!r}"
    return "maps"


def check_batch(inputs: Tensor, target: Tensor, maps: Tensor) -> None:
    """A ``ValueError`` naming the argument unless inputs ``[B, C, H, W]``, target ``[B]``, maps ``[B, C, h, w]``."""
    if inputs.dim() != 4:
        raise ValueError(f"inputs must have shape [B, C, H, W], got {tuple(inputs.shape)}")
    if maps.dim() != 4 or maps.shape[0] != inputs.shape[0]:
        raise ValueError(f"maps must have shape [B, C, h, w] with B={inputs.shape[0]}, got {tuple(maps.shape)}")
    if target.dim() != 1 or target.shape[0] != inputs.shape[0]:
        raise ValueError(f"target must have shape [{inputs.shape[0]}], got {tuple(target.shape)}")


def check_finite(maps: Tensor, method: Explainer | None = None) -> None:
    """A ``ValueError`` naming the method (or "maps") when a map holds NaN or ±inf: a metric must not score it."""
    finite = torch.isfinite(maps).flatten(1).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[:, 0].tolist()
        raise ValueError(f"{method_name(method)} returned non-finite attributions (NaN or inf) for batch item(s) "
                         f"{bad[:8]}{' …' if len(bad) > 8 else ''}; a metric cannot score them")


class AttributionMetric(Metric):
    """Base class of lit_xai metrics: uniform :meth:`update` signature, dict result, curve plot.

    Args:
        result: what :meth:`compute` returns: ``dict`` (score, curves, counts) or ``score`` (the scalar alone, for
            torchmetrics' ``MetricTracker``); :meth:`results` always returns the dict.
    """

    full_state_update: bool = False
    is_differentiable: bool = False
    #: extra update arguments the metric needs, a subset of {"method", "masks", "boxes"}
    requires: ClassVar[frozenset[str]] = frozenset()
    #: axis label of the curves
    curve_label: ClassVar[str] = "step"

    def __init__(self, result: str = "dict", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if result not in RESULTS:
            raise ValueError(f"result={result!r}: expected one of {RESULTS}")
        self.result = result

    def _wrap_compute(self, compute: Callable) -> Callable:
        """torchmetrics' caching/syncing compute, keeping the full dict for :meth:`results`."""
        wrapped = super()._wrap_compute(compute)
        self._results = wrapped

        @functools.wraps(compute)
        def score_or_dict(*args: Any, **kwargs: Any) -> Any:
            value = wrapped(*args, **kwargs)
            return value["score"] if self.result == "score" and isinstance(value, dict) else value

        return score_or_dict

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_results", None)  # a closure over this instance; __setstate__ wraps compute again
        return state

    def results(self) -> dict[str, Tensor]:
        """The full result dict (score, curves, counts) whatever ``result`` is."""
        return self._results()

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """Merge a global state into the batch state (``forward``): an empty global state (not yet allocated
        because its shape depends on the images) counts as zeros of the batch state's shape."""
        for name in self._defaults:
            local, incoming = getattr(self, name), incoming_state.get(name)
            if isinstance(local, Tensor) and isinstance(incoming, Tensor) and incoming.numel() == 0 < local.numel():
                incoming_state[name] = torch.zeros_like(local)
        super()._reduce_states(incoming_state)

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
        check_finite(maps, method)
        with torch.no_grad():
            self._update(model, inputs, target.long(), maps.detach(), **extras)

    def prepare(self, model: nn.Module, image_size: tuple[int, int]) -> None:
        """Allocate shape-dependent states before the first update. The callback calls it on every DDP rank for
        every batch, also where a rank evaluates no sample, so that all ranks sync states of one shape."""

    def set_data_normalisation(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """The data's per-channel normalisation ``(x − mean)/std`` (the DataModules' ``mean``/``std``), for fills
        defined in pixel space (``black``). The callback passes its DataModule's; metrics without such fills ignore
        it, and arguments given to the metric itself win."""

    def _update(self, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, **extras: Any) -> None:
        raise NotImplementedError

    def curve_axis(self) -> Tensor:
        """The x values of the curves in :meth:`compute` (override where there are curves)."""
        raise NotImplementedError

    def curve_ticks(self) -> list[str] | None:
        """Tick labels for the curve x values (e.g. layer names), or ``None`` for a numeric axis."""
        return None

    def plot(self, val: dict[str, Tensor] | Tensor | None = None, ax: Any = None) -> tuple[Any, Any]:  # type: ignore[override]
        """Plot the curves of ``val`` (default: :meth:`results`) on ``ax``; returns (figure, axes).

        Without ``ax`` the figure is a ``matplotlib.figure.Figure`` outside pyplot's state: no backend is touched, so
        inline notebook figures and ``plt.show()`` keep working.
        """
        val = self.results() if val is None else val
        if isinstance(val, Tensor):
            val = {"score": val}
        if ax is None:
            fig = Figure(figsize=(5, 3.5))
            ax = fig.add_subplot()
        else:
            fig = ax.figure
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
