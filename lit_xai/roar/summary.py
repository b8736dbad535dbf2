"""ROAR summary: accuracy-vs-removal curves (mean ± std over seeds) and the AUC per method.

AUC convention (seed 001, Table 1; lower = the method found more important pixels): trapezoid rule over the
*removed fraction* ``x = p/100`` with the unmodified baseline at ``x = 0`` as the first point, i.e. over
``x ∈ [0, 0.1, 0.3, 0.5, 0.7, 0.9]`` for the default grid, of test accuracy in [0, 1], not divided by the
x-range (a constant accuracy ``a`` gives ``0.9·a``). It is computed per seed (each seed's curve starts at that
seed's baseline) and reported as mean ± sample std (ddof=1; 0 for one seed) over the seeds whose curve is complete.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_xai.roar.grid import BASELINE


@dataclass(frozen=True)
class CurvePoint:
    method: str
    percentile: float
    mean: float
    std: float
    seeds: int


@dataclass(frozen=True)
class MethodAUC:
    method: str
    mean: float
    std: float
    seeds: int


def trapezoid_auc(fractions: list[float], values: list[float]) -> float:
    """∫ values d(fraction) by the trapezoid rule; ``fractions`` ascending."""
    if len(fractions) != len(values) or len(fractions) < 2:
        raise ValueError("an AUC needs at least two (fraction, value) points of equal count")
    if any(b <= a for a, b in zip(fractions, fractions[1:], strict=False)):
        raise ValueError(f"fractions must be strictly ascending, got {fractions}")
    return sum((b - a) * (u + v) / 2 for a, b, u, v in zip(fractions, fractions[1:], values, values[1:], strict=False))


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: dict[str, dict[str, Any]]) -> tuple[list[CurvePoint], list[MethodAUC]]:
    """Curves and AUCs from manifest results (each with ``method``, ``percentile``, ``seed``, ``test_acc``).

    Every method's curve starts at the baseline (p=0) point; the baseline also appears as its own row.
    """
    accuracy: dict[str, dict[float, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for result in results.values():
        accuracy[result["method"]][float(result["percentile"])][int(result["seed"])] = float(result["test_acc"])
    baseline = accuracy.get(BASELINE, {}).get(0.0, {})
    curves: list[CurvePoint] = []
    aucs: list[MethodAUC] = []
    for method in sorted(accuracy, key=lambda m: (m != BASELINE, m)):
        by_percentile = dict(accuracy[method])
        if method != BASELINE and baseline:
            by_percentile[0.0] = baseline
        percentiles = sorted(by_percentile)
        for p in percentiles:
            mean, std = _mean_std(list(by_percentile[p].values()))
            curves.append(CurvePoint(method, p, mean, std, len(by_percentile[p])))
        if method == BASELINE or len(percentiles) < 2 or 0.0 not in by_percentile:
            continue
        complete = set.intersection(*(set(by_percentile[p]) for p in percentiles))
        per_seed = [
            trapezoid_auc([p / 100 for p in percentiles], [by_percentile[p][seed] for p in percentiles])
            for seed in sorted(complete)
        ]
        if per_seed:
            mean, std = _mean_std(per_seed)
            aucs.append(MethodAUC(method, mean, std, len(per_seed)))
    return curves, aucs


def write_csv(curves: list[CurvePoint], aucs: list[MethodAUC], directory: Path) -> tuple[Path, Path]:
    """``roar_curves.csv`` (method, percentile, removed_fraction, acc_mean, acc_std, seeds) and ``roar_auc.csv``."""
    directory.mkdir(parents=True, exist_ok=True)
    curves_path, auc_path = directory / "roar_curves.csv", directory / "roar_auc.csv"
    with curves_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "percentile", "removed_fraction", "acc_mean", "acc_std", "seeds"])
        for c in curves:
            writer.writerow([c.method, f"{c.percentile:g}", f"{c.percentile / 100:g}", f"{c.mean:.4f}",
                             f"{c.std:.4f}", c.seeds])
    with auc_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "auc_mean", "auc_std", "seeds"])
        for a in sorted(aucs, key=lambda a: a.mean):
            writer.writerow([a.method, f"{a.mean:.4f}", f"{a.std:.4f}", a.seeds])
    return curves_path, auc_path


def plot_curves(curves: list[CurvePoint], aucs: list[MethodAUC], path: Path, title: str = "ROAR") -> Path:
    """Accuracy vs removed fraction, one line per method with a ±std band; the legend carries the AUC."""
    from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure registry

    auc_of = {a.method: a for a in aucs}
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for method in sorted({c.method for c in curves} - {BASELINE}):
        points = [c for c in curves if c.method == method]
        x = [c.percentile / 100 for c in points]
        mean = [c.mean for c in points]
        std = [c.std for c in points]
        label = f"{method} (AUC {auc_of[method].mean:.3f})" if method in auc_of else method
        (line,) = axes.plot(x, mean, marker="o", label=label)
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("fraction of pixels removed")
    axes.set_ylabel("test accuracy (retrained)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def log_to_wandb(curves: list[CurvePoint], aucs: list[MethodAUC], plot_path: Path, logger: Any) -> None:
    """Log the curve and AUC tables, a line-series plot and the PNG to the W&B run of ``logger``."""
    import wandb

    experiment = logger.experiment
    curve_table = wandb.Table(
        columns=["method", "percentile", "removed_fraction", "acc_mean", "acc_std", "seeds"],
        data=[[c.method, c.percentile, c.percentile / 100, c.mean, c.std, c.seeds] for c in curves],
    )
    auc_table = wandb.Table(columns=["method", "auc_mean", "auc_std", "seeds"],
                            data=[[a.method, a.mean, a.std, a.seeds] for a in aucs])
    methods = sorted({c.method for c in curves} - {BASELINE})
    series = [[c for c in curves if c.method == m] for m in methods]
    experiment.log({
        "roar/curves": curve_table,
        "roar/auc": auc_table,
        "roar/plot": wandb.plot.line_series(
            xs=[[c.percentile / 100 for c in s] for s in series], ys=[[c.mean for c in s] for s in series],
            keys=methods, title="ROAR: test accuracy vs removed fraction", xname="removed fraction",
        ),
        "roar/plot_png": wandb.Image(str(plot_path)),
    })
