"""Matplotlib figures of an attribution evaluation: heatmap grids, metric curves, the summary table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from lit_xai.metrics.base import reduce_channels  # noqa: E402


def display_maps(maps: Tensor, size: tuple[int, int], channel_reduction: str = "abs_sum") -> Tensor:
    """Maps ``[K, C, h, w]`` → ``[K, H, W]`` for display: channels reduced, upsampled, divided by max |·| per map."""
    reduced = reduce_channels(maps.float(), channel_reduction)[:, None]
    if tuple(reduced.shape[-2:]) != tuple(size):
        reduced = F.interpolate(reduced, size=size, mode="bilinear", align_corners=False)
    scale = reduced.flatten(1).abs().amax(1).clamp_min(1e-12)
    return reduced[:, 0] / scale[:, None, None]


def heatmap_grid(
    images: Tensor,
    maps: Mapping[str, Tensor],
    captions: Sequence[str] | None = None,
    channel_reduction: str = "abs_sum",
    cell_size: float = 1.6,
) -> Figure:
    """One row per sample: the input (pixel space, ``[K, C, H, W]`` in [0, 1]) next to each method's map.

    Non-negative maps use ``inferno`` on [0, 1]; signed maps ``bwr`` on [−1, 1].
    """
    count, channels, height, width = images.shape
    columns = 1 + len(maps)
    fig, axes = plt.subplots(count, columns, figsize=(cell_size * columns, cell_size * count), squeeze=False)
    shown = images.detach().float().cpu().clamp(0, 1)
    for row in range(count):
        picture = shown[row, 0] if channels == 1 else shown[row, :3].permute(1, 2, 0)
        axes[row, 0].imshow(picture.numpy(), cmap="gray" if channels == 1 else None, vmin=0, vmax=1)
        if captions is not None:
            axes[row, 0].set_ylabel(captions[row], fontsize=7)
    for column, (label, batch_maps) in enumerate(maps.items(), start=1):
        heat = display_maps(batch_maps.detach().cpu(), (height, width), channel_reduction)
        signed = bool((heat < 0).any())
        for row in range(count):
            axes[row, column].imshow(
                heat[row].numpy(), cmap="bwr" if signed else "inferno", vmin=-1 if signed else 0, vmax=1
            )
        axes[0, column].set_title(label, fontsize=8)
    axes[0, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def curves_figure(
    title: str, x: Tensor, curves: Mapping[str, Tensor], xlabel: str, ticks: Sequence[str] | None = None
) -> Figure:
    """One line per method (``curves``: label → ``[K]``) over the shared x values ``[K]``."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, y in curves.items():
        ax.plot(x.cpu().numpy(), y.detach().float().cpu().numpy(), marker=".", label=label)
    if ticks is not None:
        ax.set_xticks(x.cpu().numpy(), list(ticks), rotation=90, fontsize=6)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    """Release a figure's memory (pyplot keeps every open figure alive)."""
    plt.close(fig)

