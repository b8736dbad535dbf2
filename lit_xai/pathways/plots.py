"""Figures of the pathway analysis (seed 001 Fig. 1 and Fig. 2), drawn from :meth:`PathwayStatistics.summary`.

Plain :class:`matplotlib.figure.Figure` objects (no pyplot state, no backend switch): save them with ``fig.savefig``.
"""

from __future__ import annotations

from matplotlib.figure import Figure


def dead_share_figure(summary: dict) -> Figure:
    """Fig. 1: the percentage of originally dead neurons in each method's pathway."""
    names = summary["methods"]
    values = [100 * summary["dead_share"][n] for n in names]
    fig = Figure(figsize=(1.2 * len(names) + 2, 3.2))
    ax = fig.subplots()
    bars = ax.bar(names, values, color="tab:red")
    ax.bar_label(bars, fmt="%.1f%%")
    ax.set_ylabel("originally dead neurons in pathway (%)")
    ax.set_title(f"Dead neurons selected ({summary['samples']} samples)")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return fig


def overlap_figure(summary: dict) -> Figure:
    """Fig. 2: (a) network-wide Jaccard overlap between methods; (b) per-layer overlap with the reference."""
    names = summary["methods"]
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    image = left.imshow(summary["jaccard"], vmin=0, vmax=1, cmap="viridis")
    left.set_xticks(range(len(names)), names, rotation=35, ha="right")
    left.set_yticks(range(len(names)), names)
    for i, row in enumerate(summary["jaccard"]):
        for j, value in enumerate(row):
            left.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.6 else "k", fontsize=8)
    fig.colorbar(image, ax=left, fraction=0.046)
    left.set_title("(a) Jaccard overlap, whole network")
    reference = summary["jaccard_reference"]
    curves = {name: values for name, values in summary["jaccard_per_layer"].items() if name != reference}
    for name, values in curves.items():
        right.plot(range(1, len(values) + 1), values, marker="o", label=name)
        right.set_xticks(range(1, len(values) + 1))
    right.set_xlabel("ReLU layer (call order)")
    right.set_ylabel(f"Jaccard overlap with {reference}")
    right.set_ylim(0, 1)
    if curves:
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, f"{reference} was not selected", ha="center", transform=right.transAxes)
    right.set_title("(b) layer-wise overlap")
    fig.tight_layout()
    return fig
