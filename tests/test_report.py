"""The report command (issue 16): end to end, resume, cache keys, shards, configuration errors, statistics."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from lit_xai.cli import main as cli_main
from lit_xai.models.backbones import build_backbone
from lit_xai.report import cells as report_cells
from lit_xai.report.cells import Chunk, cell_key
from lit_xai.report.config import FAMILIES, MethodSpec, MetricSpec
from lit_xai.report.statistics import bootstrap_ci, paired, pairwise, ranks

STEPS = "{deletion: {num_steps: 4}, insertion: {num_steps: 4}}"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("report_weights") / "digits_cnn.pt"
    torch.save(build_backbone("digits_cnn", num_classes=10, in_chans=1).state_dict(), path)
    return path


def _args(weights: Path, out: Path, *extra: str, steps: str = STEPS) -> list[str]:
    return [
        "report", "--model.weights", str(weights), "--output_dir", str(out), "--num_images", "8", "--chunk_size", "4",
        "--methods", "[{name: gradient}, {name: input_x_gradient}]", "--families", "[perturbation, complexity]",
        "--family_metrics", "{perturbation: [deletion, insertion]}", "--metric_kwargs", steps,
        "--progress", "false", "--wandb.enabled", "false", *extra,
    ]


def _table(out: Path) -> list[dict[str, str]]:
    with (out / "report.csv").open() as handle:
        return list(csv.DictReader(handle))


def _count_scoring(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    calls: list[tuple[int, ...]] = []
    original = report_cells.image_scores

    def counting(metric, model, inputs, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(tuple(inputs.shape))
        return original(metric, model, inputs, *args, **kwargs)

    monkeypatch.setattr(report_cells, "image_scores", counting)
    return calls


def test_end_to_end_writes_table_page_and_files(weights: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_scoring(monkeypatch)
    cli_main(_args(weights, tmp_path, "--bootstrap", "200"))
    # 3 methods (random added) × 4 metrics × 2 chunks of 4 images
    assert len(calls) == 24 and all(shape[0] == 4 for shape in calls)
    rows = _table(tmp_path)
    assert {r["method"] for r in rows} == {"gradient", "input_x_gradient", "random"}
    assert {r["metric"] for r in rows} == {"deletion", "insertion", "sparseness", "complexity"}
    directions = {r["metric"]: r["direction"] for r in rows}
    assert directions == {"deletion": "↓", "insertion": "↑", "sparseness": "↑", "complexity": "↓"}
    for row in rows:
        assert row["n"] == "8" and row["rank"] in {"1", "2", "3"}
        assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])
    # the samples file holds the per-image scores whose mean is the table's mean
    with (tmp_path / "samples.csv").open() as handle:
        samples = list(csv.DictReader(handle))
    assert len(samples) == 3 * 4 * 8
    gradient_deletion = [float(s["score"]) for s in samples if s["method"] == "gradient" and s["metric"] == "deletion"]
    row = next(r for r in rows if r["method"] == "gradient" and r["metric"] == "deletion")
    assert math.isclose(sum(gradient_deletion) / 8, float(row["mean"]), rel_tol=1e-9)
    # SE and the paired Δ vs the control against SciPy (sem; ttest_rel's statistic = Δ / SE(Δ)), tolerance 1e-9
    stats = pytest.importorskip("scipy.stats")
    random_deletion = [float(s["score"]) for s in samples if s["method"] == "random" and s["metric"] == "deletion"]
    assert math.isclose(float(stats.sem(gradient_deletion)), float(row["se"]), rel_tol=1e-9)
    paired_t = stats.ttest_rel(gradient_deletion, random_deletion).statistic
    assert math.isclose(float(row["diff_vs_control"]) / float(row["diff_se"]), paired_t, rel_tol=1e-9)
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page and "src=\"http" not in page
    assert "Significant differences between methods" in page
    for name in ("rank.png", "examples.png", "family_perturbation.png", "pairwise.csv", "report.json"):
        assert (tmp_path / name).is_file()


def test_rerun_recomputes_nothing_and_a_lost_cell_only(weights: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cli_main(_args(weights, tmp_path))
    first = _table(tmp_path)

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(report_cells, "image_scores", fail)
    cli_main(_args(weights, tmp_path))
    assert _table(tmp_path) == first
    monkeypatch.undo()
    # a run killed midway: one cell never written (deleted), another truncated
    files = sorted((tmp_path / "cells").rglob("*.pt"))
    assert len(files) == 24
    files[3].unlink()
    files[7].write_bytes(files[7].read_bytes()[:40])
    calls = _count_scoring(monkeypatch)
    with pytest.warns(RuntimeWarning, match="corrupt cache file"):
        cli_main(_args(weights, tmp_path))
    assert len(calls) == 2
    assert _table(tmp_path) == first


def test_cache_key_changes_with_weights_data_method_and_metric_arguments() -> None:
    context = {"weights": "a" * 64, "data": {"class_path": "x", "init_args": {"seed": 0}}, "split": "test",
               "target": "label", "seed": 0}
    method, metric = MethodSpec("integrated_gradients", {"steps": 8}), MetricSpec("p", "deletion")
    chunk = Chunk(0, 0, 4)
    key = cell_key(context, method, metric, chunk)
    assert key == cell_key(dict(context), MethodSpec("integrated_gradients", {"steps": 8}), metric, chunk)
    changed = [
        cell_key({**context, "weights": "b" * 64}, method, metric, chunk),
        cell_key({**context, "data": {"class_path": "x", "init_args": {"seed": 1}}}, method, metric, chunk),
        cell_key(context, MethodSpec("integrated_gradients", {"steps": 16}), metric, chunk),
        cell_key(context, method, MetricSpec("p", "deletion", {"num_steps": 4}), chunk),
        cell_key(context, method, metric, Chunk(1, 4, 8)),
        cell_key({**context, "seed": 1}, method, metric, chunk),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


def test_new_weights_are_recomputed(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--families", "[complexity]", "--methods", "[{name: gradient}]"]
    cli_main(_args(weights, tmp_path, *args, steps="{}"))
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(build_backbone("digits_cnn", num_classes=10, in_chans=1).state_dict(), other)
    calls = _count_scoring(monkeypatch)
    cli_main(_args(other, tmp_path, *args, steps="{}"))
    assert len(calls) == 2 * 2 * 2  # 2 methods × 2 metrics × 2 chunks: nothing reused


def test_two_shards_and_merge_equal_one_process(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_main(_args(weights, tmp_path / "one"))
    calls = _count_scoring(monkeypatch)
    cli_main(_args(weights, tmp_path / "two", "--shard", "0/2"))
    assert not (tmp_path / "two" / "report.csv").exists() and len(calls) == 12
    cli_main(_args(weights, tmp_path / "two", "--shard", "1/2"))
    assert len(calls) == 24
    cli_main(_args(weights, tmp_path / "two"))
    assert len(calls) == 24  # the merge computes nothing
    assert _table(tmp_path / "two") == _table(tmp_path / "one")


@pytest.mark.parametrize(("extra", "message"), [
    (["--families", "[perturbaton]"], "unknown family 'perturbaton'"),
    (["--families", "[localisation]"], "family 'localisation' (metric 'ehr') needs ground-truth box"),
    (["--families", "[localisation]", "--family_metrics", "{localisation: [pointing_game]}"],
     "(metric 'pointing_game') needs ground-truth mask or box"),
    (["--methods", "[{name: gradiant}]"], "unknown attribution method 'gradiant'"),
    (["--metric_kwargs", "{deletion: {bogus: 1}}"], "unknown argument(s) bogus"),
    (["--family_metrics", "{perturbation: [iou]}"], "'iou' is not a registered metric of family 'perturbation'"),
    (["--shard", "2/2"], "--shard '2/2'"),
    (["--num_examples", "0"], "num_examples must be ≥ 1"),
])
def test_bad_config_is_one_line_before_any_work(weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(_args(weights, tmp_path, *extra, steps="{}"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lit_xai: error: report: ") and message in err[0]
    assert not (tmp_path / "cells").exists()


def test_missing_weights_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli_main(["report", "--output_dir", str(tmp_path), "--wandb.enabled", "false"])
    assert "model.weights is required" in capsys.readouterr().err


def test_ranks_tie_within_noise_and_follow_direction() -> None:
    """Hand case: a and b differ by less than 2 SE (tie), both beat c by far; flipping the direction flips ranks."""
    base = torch.linspace(0, 1, 10)
    scores = {"a": base + 5 + 0.01 * torch.tensor([1, -1] * 5), "b": base + 5, "c": base}
    assert ranks(list(scores), pairwise("m", scores, higher_is_better=True)) == {"a": 1, "b": 1, "c": 3}
    assert ranks(list(scores), pairwise("m", scores, higher_is_better=False)) == {"a": 2, "b": 2, "c": 1}
    assert ranks(list(scores), pairwise("m", scores, higher_is_better=None)) == {"a": 1, "b": 1, "c": 1}


def test_paired_difference_closed_form() -> None:
    a, b = torch.tensor([1.0, 2.0, 4.0, 7.0]), torch.tensor([0.0, 1.0, 1.0, 1.0])
    d = paired("m", "a", "b", a, b, higher_is_better=True)
    # d = [1, 1, 3, 6]: mean 2.75, sample std = sqrt(((1.75² · 2) + 0.25² + 3.25²) / 3)
    assert math.isclose(d.diff, 2.75)
    assert math.isclose(d.se, math.sqrt((2 * 1.75**2 + 0.25**2 + 3.25**2) / 3) / 2)
    assert d.a_better == (2.75 > 2 * d.se) and not d.b_better


def test_bootstrap_ci_is_seeded_and_matches_a_numpy_percentile_bootstrap() -> None:
    numpy = pytest.importorskip("numpy")
    values = torch.arange(20, dtype=torch.float64) ** 1.5
    low, high = bootstrap_ci(values, 2000, 0.9, seed=3)
    assert (low, high) == bootstrap_ci(values, 2000, 0.9, seed=3)
    assert (low, high) != bootstrap_ci(values, 2000, 0.9, seed=4)
    rng = numpy.random.default_rng(0)  # an independent resampler: the intervals agree to Monte-Carlo error
    means = values.numpy()[rng.integers(0, 20, (20000, 20))].mean(1)
    ref_low, ref_high = numpy.quantile(means, [0.05, 0.95])
    spread = ref_high - ref_low
    assert abs(low - ref_low) < 0.08 * spread and abs(high - ref_high) < 0.08 * spread


def test_wandb_run_logs_samples_and_summary_direction(weights: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ``wandb`` module records the calls: per-sample table rows, define_metric min/max by direction."""
    import sys
    import types

    calls: dict[str, list] = {"define": [], "log": []}

    class Run:
        summary: dict = {}

        def define_metric(self, key: str, summary: str) -> None:
            calls["define"].append((key, summary))

        def log(self, values: dict) -> None:
            calls["log"].append(values)

        def finish(self) -> None:
            calls["finished"] = [True]

        def log_artifact(self, artifact: Artifact) -> None:
            calls.setdefault("artifacts", []).append(artifact)

    class Artifact:
        def __init__(self, name: str, type: str, metadata: dict) -> None:  # noqa: A002  (wandb's argument name)
            self.name, self.type, self.files = name, type, []

        def add_file(self, path: str, name: str, policy: str) -> None:
            self.files.append(name)

    fake = types.SimpleNamespace(init=lambda **kwargs: Run(), Settings=lambda **kwargs: None, Artifact=Artifact,
                                 Table=lambda columns, data: (columns, data), Image=lambda path: path)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cli_main(_args(weights, tmp_path, "--wandb.enabled", "true", "--families", "[complexity]", steps="{}"))
    defined = dict(calls["define"])
    assert defined["report/complexity/sparseness/gradient"] == "max"  # Sparseness ↑ (Chalasani et al. 2020)
    assert defined["report/complexity/complexity/random"] == "min"  # Complexity (entropy) ↓ (Bhatt et al. 2020)
    columns, rows = next(v["report/samples"] for v in calls["log"] if "report/samples" in v)
    assert columns == ["family", "metric", "method", "index", "score"] and len(rows) == 3 * 2 * 8
    images = {k for v in calls["log"] for k in v if k.startswith("report/figures/")}
    assert images == {"report/figures/rank", "report/figures/examples", "report/figures/family_complexity"}
    assert calls["finished"] == [True]
    (artifact,) = calls["artifacts"]  # the cells, as a cache artifact (opt-out: --wandb.log_caches false)
    assert artifact.type == "cache" and artifact.name.startswith("report-cells-") and artifact.files


@pytest.mark.parametrize(("name", "kwargs"), [
    ("sensitivity_n", {"num_n": 3, "num_masks": 8}),  # float32 sums
    ("ehr", {"normalize": "max", "channel_reduction": "abs_sum"}),  # needs boxes
    ("pointing_game", {}),  # masks or boxes
    ("deletion", {"num_steps": 4}),
])
def test_cell_scores_average_to_the_metrics_own_score(name: str, kwargs: dict) -> None:
    """The report's batched per-image scores have the metric's batch score as their mean
    (these metrics' scores are means over images), to 1e-3 relative (the metrics sum in float32); images the protocol
    skips (EHR: boxes over 33 % of the image) score NaN and are left out of both."""
    from lit_xai.attribution import build_method
    from lit_xai.metrics import build_metric

    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=4, in_chans=3).eval()
    inputs, target = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    boxes = torch.tensor([[4, 4, 20, 20], [0, 0, 32, 32], [10, 12, 14, 30], [2, 5, 9, 9], [16, 16, 32, 32],
                          [8, 0, 24, 8]])
    method = build_method("gradient")
    maps = method(model, inputs, target)
    metric = build_metric(name, **kwargs)
    metric.set_data_normalisation((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    extras = {"masks": None, "boxes": boxes}
    curves: dict = {}
    scores = report_cells.image_scores(metric, model, inputs, target, maps, method, extras, curves)
    assert scores.shape == (6,)
    assert scores.isnan().tolist() == ([False, True] + [False] * 4 if name == "ehr" else [False] * 6)
    metric.update(model, inputs, target, maps, method=method, **extras)
    results = metric.results()
    assert math.isclose(float(scores.nanmean()), float(results["score"]), rel_tol=1e-3, abs_tol=1e-6)
    if name in ("sensitivity_n", "ehr"):  # the per-image path also keeps the curves; their mean is the metric's
        for key, values in curves["values"].items():
            assert values.shape == (6, results["curve/" + key].numel())
            torch.testing.assert_close(values.nanmean(0), results["curve/" + key].double(), rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(curves["axis"], metric.curve_axis().double())


def test_statistics_use_the_images_every_method_scored() -> None:
    from lit_xai.report.statistics import metric_report

    nan = float("nan")
    scores = {"a": torch.tensor([1.0, 2.0, nan, 4.0]), "random": torch.tensor([0.0, 1.0, 5.0, 2.0])}
    report = metric_report("f", "m", scores, True, "random", bootstrap=0, confidence=0.95, seed=0)
    rows = {r.method: r for r in report.rows}
    assert rows["a"].n == rows["random"].n == 3
    assert math.isclose(rows["random"].mean, 1.0) and math.isclose(rows["a"].diff, 4 / 3)


def test_roar_table_is_shown_and_axioms_skipped_with_the_reason(weights: Path, tmp_path: Path) -> None:
    summary = tmp_path / "aucs.csv"
    summary.write_text("method,auc,auc_se\ngradient,0.41,0.02\nrandom,0.55,0.01\n")
    out = tmp_path / "out"
    cli_main(_args(weights, out, "--families", "[complexity, roar, axioms]", "--roar_summary", str(summary),
                   steps="{}"))
    page = (out / "report.html").read_text()
    assert "<h2>roar</h2>" in page and "<td>0.41</td>" in page
    assert "skipped: no finished axioms run given (set axioms_table)" in page


def test_every_family_metric_is_registered() -> None:
    """A family names registered metrics only (an unregistered name once dropped IoU from localisation unseen)."""
    from lit_xai.metrics import available_metrics

    assert {m for members in FAMILIES.values() for m in members} <= set(available_metrics())
    assert "localisation_iou" in FAMILIES["localisation"]
