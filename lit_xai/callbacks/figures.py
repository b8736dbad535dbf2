"""Figures of an attribution evaluation: the heatmap grid, metric curves and the summary (forest) plot.

Built on :class:`matplotlib.figure.Figure` directly, never ``pyplot``: no backend switch, no global figure registry,
so notebooks keep their inline backend and nothing leaks between runs.

Display conventions follow Captum's ``visualize_image_attr`` (``captum/attr/_utils/visualization.py``): each map is
divided by the value at which the cumulative sum of its sorted ``|a|`` reaches ``100 − outlier_perc`` % of the total
(``_cumulative_sum_threshold``; default ``outlier_perc=2``) and clipped to [−1, 1], so a few outlier pixels do not wash
out gradient-type maps; ``blended_heat_map`` overlays the map with ``alpha_overlay=0.5`` on the grey input.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from lit_xai.attribution.postprocess import reduce_channels

#: Captum ``visualize_image_attr(outlier_perc=2)``: percentage of the total |attribution| treated as outliers
OUTLIER_PERC = 2.0
#: Captum ``visualize_image_attr(alpha_overlay=0.5)`` for ``blended_heat_map``
ALPHA_OVERLAY = 0.5
#: grid views → (channel reduction, colour map, value range)
VIEWS = {"magnitude": ("abs_sum", "inferno", (0.0, 1.0)), "signed": ("sum", "RdBu_r", (-1.0, 1.0))}


def outlier_threshold(maps: Tensor, outlier_perc: float = OUTLIER_PERC) -> Tensor:
    """Per map ``[K, ...]`` → ``[K]``: the smallest sorted ``|a|`` whose cumulative sum reaches ``100 − outlier_perc``
    % of the total (Captum's ``_cumulative_sum_threshold``), batched."""
    if not 0.0 <= outlier_perc <= 100.0:
        raise ValueError(f"outlier_perc must be in [0, 100], got {outlier_perc}")
    values = maps.detach().abs().flatten(1).double().sort(dim=1).values
    cumulative = values.cumsum(1)
    limit = cumulative[:, -1:] * 0.01 * (100.0 - outlier_perc)
    index = (cumulative < limit).sum(1, keepdim=True).clamp_max(values.shape[1] - 1)
    return values.gather(1, index)[:, 0].to(maps.dtype)


def display_maps(
    maps: Tensor, size: tuple[int, int], view: str = "magnitude", channel_reduction: str | None = None,
    outlier_perc: float = OUTLIER_PERC,
) -> Tensor:
    """Maps ``[K, C, h, w]`` → ``[K, H, W]`` in [0, 1] (``magnitude``) or [−1, 1] (``signed``): channels reduced
    (``abs_sum``/``max_abs`` for magnitude, ``sum`` for signed), upsampled bilinearly, outlier-clipped as Captum."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEWS)}")
    how = VIEWS[view][0] if view == "signed" or channel_reduction is None else channel_reduction
    heat = reduce_channels(maps.detach().float(), how)
    if tuple(heat.shape[-2:]) != tuple(size):
        heat = F.interpolate(heat, size=size, mode="bilinear", align_corners=False)
    threshold = outlier_threshold(heat, outlier_perc).clamp_min(1e-12)
    return (heat[:, 0] / threshold[:, None, None]).clamp(-1.0, 1.0)


def _grey(image: Tensor) -> Tensor:
    """``[C, H, W]`` in [0, 1] → ``[H, W]`` luminance (ITU-R BT.601 weights for RGB)."""
    if image.shape[0] >= 3:
        return (torch.tensor([0.299, 0.587, 0.114])[:, None, None] * image[:3]).sum(0)
    return image.mean(0)


def heatmap_grid(
    images: Tensor,
    maps: Mapping[str, Tensor],
    captions: Sequence[str] | None = None,
    view: str = "magnitude",
    channel_reduction: str | None = None,
    outlier_perc: float = OUTLIER_PERC,
    boxes: Tensor | None = None,
    masks: Tensor | None = None,
    cell_size: float = 1.3,
) -> Figure:
    """One row per sample: the input (pixel space ``[K, C, H, W]`` in [0, 1]) and each method's map blended over it.

    One colour bar for the whole grid (every map shares the [0, 1] or [−1, 1] scale after outlier clipping); ground
    truth boxes ``[K, 4]`` (``x0, y0, x1, y1``, exclusive ends) and masks ``[K, 1, H, W]`` are outlined on every cell.
    """
    count, channels, height, width = images.shape
    columns = 1 + len(maps)
    width_in, height_in = cell_size * columns + 1.2, cell_size * count + 0.5
    fig = Figure(figsize=(width_in, height_in))
    # a fixed grid (no constrained layout: its solver dominated the cost of a 48-cell grid)
    right = 1 - 1.0 / width_in
    axes = fig.subplots(count, columns, squeeze=False, gridspec_kw={
        "left": 0.75 / width_in, "right": right, "bottom": 0.1 / height_in, "top": 1 - 0.35 / height_in,
        "wspace": 0.05, "hspace": 0.08,
    })
    shown = images.detach().float().cpu().clamp(0, 1)
    _, cmap, (vmin, vmax) = VIEWS[view]
    for row in range(count):
        picture = shown[row, 0] if channels == 1 else shown[row, :3].permute(1, 2, 0)
        axes[row, 0].imshow(picture.numpy(), cmap="gray" if channels == 1 else None, vmin=0, vmax=1)
        if captions is not None:
            axes[row, 0].set_ylabel(captions[row], fontsize=7)
    for column, (label, batch_maps) in enumerate(maps.items(), start=1):
        heat = display_maps(batch_maps.cpu(), (height, width), view, channel_reduction, outlier_perc)
        for row in range(count):
            axes[row, column].imshow(_grey(shown[row]).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, column].imshow(heat[row].numpy(), cmap=cmap, vmin=vmin, vmax=vmax, alpha=ALPHA_OVERLAY)
        axes[0, column].set_title(label, fontsize=8)
    axes[0, 0].set_title("input", fontsize=8)
    for row in range(count):
        for ax in axes[row]:
            _draw_ground_truth(ax, None if boxes is None else boxes[row], None if masks is None else masks[row])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    scale = "|attribution|" if view == "magnitude" else "attribution (signed)"
    bar_axes = fig.add_axes((right + 0.15 / width_in, 0.25, 0.12 / width_in, 0.5))
    bar = fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), cax=bar_axes)
    bar.set_label(f"{scale} / {100 - outlier_perc:g}% cumulative-mass threshold", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return fig


def _draw_ground_truth(ax: Any, box: Tensor | None, mask: Tensor | None) -> None:
    if mask is not None:
        ax.contour(mask.detach().float().cpu().reshape(mask.shape[-2:]).numpy(), levels=[0.5], colors="cyan",
                   linewidths=0.8)
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box.detach().cpu())
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=0.8))


def curves_figure(
    title: str,
    x: Tensor,
    curves: Mapping[str, Tensor],
    xlabel: str,
    ylabel: str,
    ticks: Sequence[str] | None = None,
    legend_values: Mapping[str, float] | None = None,
    value_name: str = "score",
) -> Figure:
    """One line per method (``curves``: label → ``[K]``) over the shared x values ``[K]``; the legend shows each
    method's ``value_name`` (e.g. the AUC) from ``legend_values``."""
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    for label, y in curves.items():
        text = label
        if legend_values is not None and label in legend_values:
            text = f"{label} ({value_name} {legend_values[label]:.4f})"
        ax.plot(x.cpu().numpy(), y.detach().float().cpu().numpy(), marker=".", label=text)
    if ticks is not None:
        ax.set_xticks(x.cpu().numpy(), list(ticks), rotation=90, fontsize=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


def summary_figure(rows: Sequence[Any], title: str, control: str = "random") -> Figure:
    """Forest plot: per metric, each method's paired difference to the control ± 2 SE (rows: :class:`SummaryRow`)."""
    metrics = list(dict.fromkeys(r.metric for r in rows))
    fig = Figure(figsize=(6.0, 0.5 + 1.6 * max(1, len(metrics))), layout="constrained")
    axes = fig.subplots(max(1, len(metrics)), 1, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics):
        cells = [r for r in rows if r.metric == metric and r.diff is not None]
        for y, row in enumerate(cells):
            colour = {"better": "tab:green", "worse": "tab:red"}.get(row.verdict, "tab:gray")
            ax.errorbar(row.diff, y, xerr=2 * (row.diff_se or 0.0), fmt="o", color=colour, capsize=3)
            ax.annotate(f"{row.diff:+.4f} ± {row.diff_se or 0:.4f} ({row.verdict})", (row.diff, y),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=6)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(cells)), [r.method for r in cells], fontsize=7)
        ax.set_ylim(-0.7, len(cells) - 0.3)
        direction = next((r.direction for r in rows if r.metric == metric), "")
        ax.set_title(f"{metric} {direction}: paired Δ vs {control} (± 2 SE)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes (Agg, through the figure's own canvas)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
