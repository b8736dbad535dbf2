"""Figures of the concept analysis (seed 002 Fig. 2-5), as plain :class:`matplotlib.figure.Figure` objects (no pyplot
state, no backend switch): save them with ``fig.savefig``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import Tensor


def detectors_figure(counts: dict[str, dict[str, dict[str, int]]], concepts: Sequence[str]) -> Figure:
    """Fig. 2: detectors per concept for every model (bars), one panel per layer. ``counts[layer][model][concept]``."""
    layers = list(counts)
    fig = Figure(figsize=(max(6.0, 0.9 * len(concepts) + 2), 3.2 * len(layers)))
    axes = np.atleast_1d(fig.subplots(len(layers), 1, squeeze=False)[:, 0])
    for ax, layer in zip(axes, layers):
        models = list(counts[layer])
        width = 0.8 / max(1, len(models))
        for m, model in enumerate(models):
            values = [counts[layer][model][c] for c in concepts]
            total = sum(values)
            ax.bar(np.arange(len(concepts)) + m * width, values, width, label=f"{model} ({total})")
        ax.set_xticks(np.arange(len(concepts)) + 0.4 - width / 2, concepts, rotation=30, ha="right")
        ax.set_ylabel("detectors")
        ax.set_title(f"Concept detectors, layer {layer} (total in the legend)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def evolution_figure(counts: dict[str, dict[str, int]], concepts: Sequence[str], layer: str) -> Figure:
    """Fig. 4: detectors per concept (left) and in total (right) over the models in order (initial, epochs, …)."""
    models = list(counts)
    fig = Figure(figsize=(11, 3.6))
    left, right = fig.subplots(1, 2)
    x = np.arange(len(models))
    colours = colormaps["tab20"]  # 20 distinct colours: the chest set has 11 concepts (tab10 would repeat)
    for i, c in enumerate(concepts):
        left.plot(x, [counts[m][c] for m in models], marker="o", label=c, color=colours(i % 20))
    left.set_xticks(x, models, rotation=30, ha="right")
    left.set_ylabel("detectors")
    left.set_title(f"Detectors per concept, layer {layer}")
    left.legend(fontsize=7, ncol=2)
    right.bar(x, [sum(counts[m].values()) for m in models], color="tab:gray")
    right.set_xticks(x, models, rotation=30, ha="right")
    right.set_ylabel("detectors (all concepts)")
    right.set_title("Total detectors")
    fig.tight_layout()
    return fig


def examples_figure(images: Tensor, unit_masks: Tensor, concept_masks: Tensor, titles: Sequence[str]) -> Figure:
    """Fig. 3: rows of detector units; per row up to four images with the unit's mask ``M_k`` (red) and the concept
    mask ``L_c`` (green outline). ``images`` ``[U, E, H, W]``, masks ``[U, E, H, W]`` bool; ``titles`` per row."""
    rows, cols = images.shape[0], images.shape[1]
    fig = Figure(figsize=(2.2 * cols, 2.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(images[r, c].numpy(), cmap="gray")
            overlay = np.zeros((*unit_masks.shape[-2:], 4))
            overlay[unit_masks[r, c].numpy()] = (1.0, 0.1, 0.1, 0.45)
            ax.imshow(overlay)
            if concept_masks[r, c].any():
                ax.contour(concept_masks[r, c].numpy().astype(float), levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_axis_off()
        axes[r, 0].set_title(titles[r], fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def semantic_figure(images: Tensor, maps: Tensor, image_titles: Sequence[str], map_titles: Sequence[Sequence[str]]
                    ) -> Figure:
    """Fig. 5: per image (row) the image and the normalised, upsampled ``s_k`` maps of its top contributing units
    (red positive, blue negative, §3.5). ``images`` ``[B, H, W]``, ``maps`` ``[B, T, H, W]``."""
    rows, top = maps.shape[0], maps.shape[1]
    fig = Figure(figsize=(2.3 * (top + 1), 2.4 * rows))
    axes = fig.subplots(rows, top + 1, squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(images[r].numpy(), cmap="gray")
        axes[r, 0].set_title(image_titles[r], fontsize=8)
        for t in range(top):
            ax = axes[r, t + 1]
            ax.imshow(images[r].numpy(), cmap="gray")
            ax.imshow(maps[r, t].numpy(), cmap="bwr", vmin=-1, vmax=1, alpha=0.55)
            ax.set_title(map_titles[r][t], fontsize=8)
        for ax in axes[r]:
            ax.set_axis_off()
    fig.tight_layout()
    return fig
