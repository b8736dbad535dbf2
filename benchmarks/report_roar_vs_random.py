"""Which methods' removal hurts retrained accuracy more than random removal? Seed-paired differences with SEs.

``python -m lit_xai roar`` reports mean ± std over seeds per (method, percentile) and the AUC per method; whether
a method's gap to the ``random`` control is more than seed noise needs the pairing by training seed (every cell of a
seed starts from the same initialisation and shuffling, seed 004's "fixed between attribution methods"), which this
report adds. It reads the manifests of a finished (or partial) grid:

    .venv/bin/python benchmarks/report_roar_vs_random.py runs/roar/digits
    .venv/bin/python benchmarks/report_roar_vs_random.py runs/roar/digits_full --seeds 0 1 2 3 4   # a subset

Per method and percentile p: d_s = acc(method, p, s) − acc(random, p, s) over the seeds s both have, printed as
mean ± SE (SE = sample std / √n); the same for the per-seed AUC (seed 001's trapezoid over the removed fraction,
baseline at 0, as ``lit_xai.roar.summary``). A marker says where the two-sided 95 % t interval (n − 1 degrees of
freedom) lies entirely below 0 (``<``: removal hurts more than random) or above 0 (``>``: less than random).
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import t as student_t

from lit_xai.roar.grid import BASELINE
from lit_xai.roar.manifest import find_manifests, merge_manifests
from lit_xai.roar.summary import trapezoid_auc

#: test accuracy per method, percentile and training seed
Table = dict[str, dict[float, dict[int, float]]]
#: two-sided confidence level of the interval behind the ``<`` / ``>`` markers
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """Mean over ``n`` seeds of (method − control), its standard error and the marker of its t interval."""

    mean: float
    se: float
    n: int
    marker: str


def paired_difference(values: list[float], confidence: float = CONFIDENCE) -> PairedDifference:
    """Mean ± SE of seed-paired differences; marker ``<``/``>`` when the two-sided t interval excludes 0."""
    if not values:
        raise ValueError("no seed has both the method's and the control's result")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return PairedDifference(mean, math.nan, 1, "")
    se = statistics.stdev(values) / math.sqrt(len(values))
    half = student_t.ppf(0.5 + confidence / 2, len(values) - 1) * se
    marker = "<" if mean + half < 0 else ">" if mean - half > 0 else "~"
    return PairedDifference(mean, se, len(values), marker)


def accuracies(results: dict[str, dict[str, Any]], seeds: list[int] | None = None) -> Table:
    """``{method: {percentile: {seed: test_acc}}}`` from manifest results, optionally only ``seeds``."""
    table: Table = defaultdict(lambda: defaultdict(dict))
    for result in results.values():
        seed = int(result["seed"])
        if seeds is None or seed in seeds:
            table[result["method"]][float(result["percentile"])][seed] = float(result["test_acc"])
    return table


def seed_auc(table: Table, method: str, seed: int) -> float | None:
    """One seed's AUC of ``method`` (baseline at x = 0), or None when the seed's curve is incomplete."""
    curve = {0.0: table[BASELINE][0.0], **table[method]}
    if any(seed not in by_seed for by_seed in curve.values()):
        return None
    percentiles = sorted(curve)
    return trapezoid_auc([p / 100 for p in percentiles], [curve[p][seed] for p in percentiles])


def compare(table: Table, control: str = "random") -> dict[str, dict[str, PairedDifference]]:
    """``{method: {"p10": diff, …, "auc": diff}}``: every method against ``control``, paired by seed."""
    if control not in table:
        raise ValueError(f"no {control!r} cells in the grid (methods: {sorted(table)})")
    if BASELINE not in table:
        raise ValueError("no baseline cells (p = 0) in the grid: the AUC needs them")
    report: dict[str, dict[str, PairedDifference]] = {}
    for method in sorted(set(table) - {BASELINE, control}):
        row: dict[str, PairedDifference] = {}
        for p in sorted(table[method]):
            shared = sorted(set(table[method][p]) & set(table[control].get(p, {})))
            if shared:
                row[f"p{p:g}"] = paired_difference([table[method][p][s] - table[control][p][s] for s in shared])
        aucs = [(seed_auc(table, method, s), seed_auc(table, control, s)) for s in sorted(table[BASELINE][0.0])]
        deltas = [a - b for a, b in aucs if a is not None and b is not None]
        if deltas:
            row["auc"] = paired_difference(deltas)
        report[method] = row
    return report


def markdown(report: dict[str, dict[str, PairedDifference]], control: str = "random") -> str:
    """The report as a markdown table: mean ± SE (n) and the marker per column."""
    columns = sorted({key for row in report.values() for key in row} - {"auc"}, key=lambda k: float(k[1:])) + ["auc"]
    lines = [f"| method − {control} | " + " | ".join(f"{c[1:]} %" if c != "auc" else "AUC" for c in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for method, row in report.items():
        cells = [f"{row[c].mean:+.3f} ± {row[c].se:.3f} {row[c].marker}" if c in row else "" for c in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    n = {d.n for row in report.values() for d in row.values()}
    lines.append(f"\nmean ± SE over n = {', '.join(map(str, sorted(n)))} seed-paired runs; '<' / '>': the two-sided "
                 f"{CONFIDENCE:.0%} t interval lies below / above 0 (removal hurts accuracy more / less than "
                 f"{control}), '~': it contains 0")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a ROAR run folder (runs/roar/<name> or the output_dir)")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="only these training seeds")
    parser.add_argument("--control", default="random")
    args = parser.parse_args()
    manifests = find_manifests(args.run_dir)
    if not manifests:
        raise SystemExit(f"no manifest-shard*.json in {args.run_dir}: not a ROAR run folder")
    table = accuracies(merge_manifests(manifests), args.seeds)
    print(markdown(compare(table, args.control), args.control))


if __name__ == "__main__":
    main()
