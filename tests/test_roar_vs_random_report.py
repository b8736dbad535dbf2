"""benchmarks/report_roar_vs_random.py: seed-paired differences to the random control, from shard manifests."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import t as student_t

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import report_roar_vs_random as report  # noqa: E402

from lit_xai.roar.manifest import Manifest, find_manifests, merge_manifests  # noqa: E402

PERCENTILES = (10.0, 50.0, 90.0)


def _write_grid(directory: Path, acc: dict[str, dict[int, float]], baseline: dict[int, float]) -> None:
    """Two shard manifests: a method's accuracy is the same at every percentile (per seed), so AUCs are easy."""
    shards = [Manifest(directory, i, 2, fingerprint="f") for i in range(2)]
    number = 0
    for seed, value in baseline.items():
        shards[number % 2].record(f"baseline/p0/seed{seed}", {"method": "baseline", "percentile": 0.0, "seed": seed,
                                                              "test_acc": value})
        number += 1
    for method, by_seed in acc.items():
        for seed, value in by_seed.items():
            for p in PERCENTILES:
                shards[number % 2].record(f"{method}/p{p:g}/seed{seed}", {"method": method, "percentile": p,
                                                                         "seed": seed, "test_acc": value})
                number += 1


def _constant_auc(baseline: float, value: float) -> float:
    """Trapezoid over x = 0, .1, .5, .9: first segment from the baseline, then a constant."""
    return 0.1 * (baseline + value) / 2 + 0.8 * value


GRID = {"random": {0: 0.80, 1: 0.70, 2: 0.75}, "sharp": {0: 0.60, 1: 0.52, 2: 0.57},
        "same": {0: 0.82, 1: 0.69, 2: 0.71}}
BASE = {0: 0.98, 1: 0.97, 2: 0.99}


def test_pairs_by_seed_with_the_standard_error_and_t_interval(tmp_path):
    _write_grid(tmp_path, GRID, BASE)
    table = report.accuracies(merge_manifests(find_manifests(tmp_path)))
    result = report.compare(table)
    assert set(result) == {"sharp", "same"}
    for method in ("sharp", "same"):
        deltas = [GRID[method][s] - GRID["random"][s] for s in (0, 1, 2)]
        se = statistics.stdev(deltas) / math.sqrt(3)
        half = student_t.ppf(0.975, 2) * se
        for p in PERCENTILES:
            got = result[method][f"p{p:g}"]
            assert got.n == 3
            assert got.mean == pytest.approx(statistics.fmean(deltas))
            assert got.se == pytest.approx(se)
            expected = "<" if got.mean + half < 0 else ">" if got.mean - half > 0 else "~"
            assert got.marker == expected
        auc = [_constant_auc(BASE[s], GRID[method][s]) - _constant_auc(BASE[s], GRID["random"][s]) for s in (0, 1, 2)]
        assert result[method]["auc"].mean == pytest.approx(statistics.fmean(auc))
        assert result[method]["auc"].se == pytest.approx(statistics.stdev(auc) / math.sqrt(3))
    assert result["sharp"]["p50"].marker == "<"  # −0.20, −0.18, −0.18: clearly below random
    assert result["same"]["p50"].marker == "~"  # +0.02, −0.01, −0.04: noise


def test_a_seed_subset_and_incomplete_seeds(tmp_path):
    grid = {method: dict(by_seed) for method, by_seed in GRID.items()}
    del grid["sharp"][2]  # seed 2 of "sharp" not trained yet
    _write_grid(tmp_path, grid, BASE)
    results = merge_manifests(find_manifests(tmp_path))
    assert report.compare(report.accuracies(results))["sharp"]["auc"].n == 2
    subset = report.compare(report.accuracies(results, seeds=[0]))
    assert subset["same"]["p10"].n == 1 and math.isnan(subset["same"]["p10"].se) and subset["same"]["p10"].marker == ""


def test_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="no 'random' cells"):
        report.compare({"baseline": {0.0: {0: 1.0}}, "gradient": {10.0: {0: 0.5}}})
    with pytest.raises(ValueError, match="no baseline cells"):
        report.compare({"random": {10.0: {0: 0.5}}, "gradient": {10.0: {0: 0.5}}})
    run = subprocess.run([sys.executable, str(BENCHMARKS / "report_roar_vs_random.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "no manifest-shard*.json" in run.stderr


def test_markdown_has_one_row_per_method_and_the_auc_column(tmp_path):
    _write_grid(tmp_path, GRID, BASE)
    run = subprocess.run([sys.executable, str(BENCHMARKS / "report_roar_vs_random.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    assert lines[0] == "| method − random | 10 % | 50 % | 90 % | AUC |"
    assert [line.split("|")[1].strip() for line in lines[2:4]] == ["same", "sharp"]
    assert "n = 3 seed-paired runs" in run.stdout
