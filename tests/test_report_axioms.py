"""The report's axiom family (issue 16): methods scored on a scene store's scenes, per-scene statistics, cache, shards,
and the check that the scenes were generated for the report's model."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from lit_xai.attribution import build_method
from lit_xai.axioms.evaluation import make_metric, scene_maps, update_metric
from lit_xai.axioms.generation import DecoderConfig, GenerationConfig
from lit_xai.axioms.scenarios import SCENARIOS
from lit_xai.axioms.store import SceneStore
from lit_xai.cli import main as cli_main
from lit_xai.models.backbones import build_backbone
from lit_xai.report import axioms as report_axioms
from lit_xai.report.axioms import jackknife_pseudo_values, plan_axioms, scene_scores
from lit_xai.report.command import run
from lit_xai.report.config import MethodSpec, build_parser

SCENES = 6
#: a tiny generation budget where every scene verifies (thresholds 0 / 1), as tests/test_axioms.py's command test
CONFIG = GenerationConfig(
    image_size=16, patch_size=6, mean=(0.5,), std=(0.5,), iterations=12, warmup_iterations=4, min_iterations=10,
    lr=0.02, drive_threshold=0.0, independence_threshold=1.0,
    decoder=DecoderConfig(noise_channels=4, channels=(4, 8), skip_channels=(0, 2), down_kernel_sizes=(5, 3),
                          up_kernel_sizes=(5, 3)),
)


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone("digits_cnn", num_classes=10, in_chans=1).eval()


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Weights of a digits CNN, a scene store of every scenario generated for them, and other weights."""
    root = tmp_path_factory.mktemp("report_axioms")
    model = _model(0)
    torch.save(model.state_dict(), root / "weights.pt")
    torch.save(_model(1).state_dict(), root / "other.pt")
    for scenario in SCENARIOS:
        SceneStore(root / "scenes", scenario, model, 10, CONFIG, seed=0, chunk_size=SCENES).ensure(SCENES)
    return {"weights": root / "weights.pt", "other": root / "other.pt", "scenes": root / "scenes"}


def _args(setting: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--model.weights", str(setting["weights"]), "--output_dir", str(out), "--num_images", "4",
            "--chunk_size", "4", "--methods", "[{name: gradient}, {name: input_x_gradient}]",
            "--families", "[complexity, axioms]", "--axioms_scenes", str(setting["scenes"]), "--progress", "false",
            "--wandb.enabled", "false", "--num_examples", "1", *extra]


def _run(setting: dict[str, Path], out: Path, *extra: str) -> dict:
    return run(build_parser().parse_args(_args(setting, out, *extra)))


def _samples(out: Path, metric: str, method: str) -> dict[int, float]:
    with (out / "samples.csv").open() as handle:
        return {int(r["index"]): float(r["score"]) for r in csv.DictReader(handle)
                if r["metric"] == metric and r["method"] == method}


def _table(out: Path) -> list[dict[str, str]]:
    with (out / "report.csv").open() as handle:
        return list(csv.DictReader(handle))


def _framework_maps(setting: dict[str, Path], scenario: str) -> tuple[object, torch.Tensor]:
    """The axioms command's own path: the store's scenes and the Gradient maps of :func:`scene_maps`."""
    model = _model(0)
    store = SceneStore(setting["scenes"], scenario, model, 10, CONFIG, seed=0, chunk_size=SCENES)
    scenes = store.load()
    return scenes, scene_maps(build_method("gradient"), model, scenes, CONFIG, "abs", SCENES)


def test_axiom_columns_are_the_framework_metrics_per_scene(setting: dict[str, Path], tmp_path: Path) -> None:
    """Every scenario is a column over the store's scenes. Ratio scenarios: the per-scene scores average to the
    scenario metric's own value (:mod:`lit_xai.metrics.axioms`); correlation scenarios: the per-scene scores are the
    jackknife pseudo-values of the metric's correlation, recomputed here with SciPy leave-one-out."""
    stats = pytest.importorskip("scipy.stats")
    result = _run(setting, tmp_path)
    rows = {(r["metric"], r["method"]): r for r in _table(tmp_path)}
    assert {m for m, _ in rows} == {"sparseness", "complexity", *SCENARIOS}
    assert {r["family"] for r in rows.values() if r["metric"] in SCENARIOS} == {"axioms"}
    directions = {m: rows[(m, "gradient")]["direction"] for m in SCENARIOS}
    assert directions == {"null_feature": "↓", "class_sensitivity_double": "↓", "class_sensitivity_single": "↓",
                          "saturation": "↑"}  # Eq. 8-11's higher_is_better
    for scenario in SCENARIOS:
        scenes, maps = _framework_maps(setting, scenario)
        scores = _samples(tmp_path, scenario, "gradient")
        assert sorted(scores) == scenes.scene_ids.tolist()  # one score per stored scene, indexed by scene id
        assert len(_samples(tmp_path, scenario, "random")) == SCENES  # the control scored on the same scenes
        metric = make_metric(scenario, "spearman")
        update_metric(metric, scenes, maps, CONFIG)
        values = torch.tensor([scores[int(i)] for i in scenes.scene_ids], dtype=torch.float64)
        if scenario in ("null_feature", "class_sensitivity_double"):
            assert math.isclose(float(values.mean()), float(metric.compute()), rel_tol=1e-4, abs_tol=1e-6)
        else:
            x, y = torch.cat(metric.x).numpy(), torch.cat(metric.y).numpy()  # the metric's own pairs
            n = len(x)
            full = stats.spearmanr(x, y).statistic
            loo = [stats.spearmanr(x[[j for j in range(n) if j != i]], y[[j for j in range(n) if j != i]]).statistic
                   for i in range(n)]
            expected = torch.tensor([n * full - (n - 1) * r for r in loo], dtype=torch.float64)
            torch.testing.assert_close(values, expected, atol=1e-6, rtol=1e-6)
            assert math.isclose(full, float(metric.compute()), abs_tol=1e-6)
        row = rows[(scenario, "gradient")]
        assert int(row["n"]) == SCENES and math.isclose(float(row["mean"]), float(values.mean()), rel_tol=1e-9)
    page = (tmp_path / "report.html").read_text()
    assert "<h2>axioms</h2>" in page and str(setting["scenes"]) in page  # the stores the family was scored on
    assert "jackknife pseudo-value" in page
    assert result["computed"] == 3 * 2 + 3 * 4 * 2  # 3 methods × (2 complexity metrics + 4 scenarios × 2 chunks)


def test_two_shards_and_merge_equal_one_process_and_only_a_lost_cell_is_redone(setting: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    """Axiom cells are cached like image cells: 2 shards compute every cell once between them; the merge run
    recomputes only a cell lost in between and gives the one-process table."""
    one = tmp_path / "one"
    first = _run(setting, one, "--families", "[axioms]")  # 6 scenes → chunks of 4 + 2
    assert first["computed"] == 3 * 4 * 2
    split = tmp_path / "split"
    computed = [_run(setting, split, "--families", "[axioms]", "--shard", f"{i}/2")["computed"] for i in range(2)]
    assert sum(computed) == first["computed"] and min(computed) > 0
    sorted((split / "cells" / "gradient" / "saturation").glob("*.pt"))[0].unlink()
    assert _run(setting, split, "--families", "[axioms]")["computed"] == 1
    assert _table(split) == _table(one)


def test_cell_key_changes_with_store_scenes_method_and_arguments(setting: dict[str, Path]) -> None:
    from lit_xai.report.axioms import find_stores, load_scenes

    stores = find_stores(setting["scenes"])
    scenes = {s.scenario: load_scenes(s, None) for s in stores}
    methods = [MethodSpec("gradient")]

    def keys(context: dict, methods: list, scenes: dict, reduction: str = "abs", kind: str = "spearman") -> set:
        return {c.key for c in plan_axioms(context, methods, stores, scenes, 4, reduction, kind)}  # type: ignore[arg-type]

    base = keys({"weights": "a"}, methods, scenes)
    assert len(base) == 4 * 2  # 4 scenarios × 2 chunks
    assert base == keys({"weights": "a"}, methods, scenes)
    assert not base & keys({"weights": "b"}, methods, scenes)
    assert not base & keys({"weights": "a"}, [MethodSpec("gradient", {"absolute": True})], scenes)
    assert not base & keys({"weights": "a"}, methods, scenes, reduction="signed")
    assert not base & keys({"weights": "a"}, methods, scenes, kind="pearson")
    fewer = {s: b.select(slice(1, None)) for s, b in scenes.items()}  # other scene ids in every chunk
    assert not base & keys({"weights": "a"}, methods, fewer)


def test_scenes_of_other_weights_are_refused_before_any_work(setting: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["report", *_args(setting, tmp_path, "--model.weights", str(setting["other"]))])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was generated for weights" in err[0] and "not the report's model.weights" in err[0]
    assert not (tmp_path / "cells").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"families": "[complexity]"}, "axioms_scenes is set but families has no 'axioms'"),
    ({"axioms_table": "TABLE"}, "either axioms_scenes (scored here) or axioms_table"),
    ({"axioms_scenes": "EMPTY"}, "no scene store"),
    ({"axioms_scenes": "DOUBLE"}, "two scene stores of scenario 'saturation'"),
    ({"axioms_num_scenes": "2"}, "axioms_num_scenes must be ≥ 3"),
    ({"axioms_num_scenes": "7"}, "holds 6 intact verified scenes, the report needs 7"),
])
def test_bad_axiom_options_are_one_line_errors(setting: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture, change: dict, message: str) -> None:
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "TABLE").write_text("method,null_feature\ngradient,0.1\n")
    double = tmp_path / "DOUBLE"
    shutil.copytree(setting["scenes"], double)
    original = next(double.glob("saturation-*"))
    shutil.copytree(original, original.with_name("saturation-copy"))
    args = _args(setting, tmp_path / "out")
    for key, value in change.items():
        args += [f"--{key}", str(tmp_path / value) if value in ("TABLE", "EMPTY", "DOUBLE") else value]
    with pytest.raises(SystemExit):
        cli_main(["report", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lit_xai: error: report: ") and message in err[0]
    assert not (tmp_path / "out" / "cells").exists()


def test_a_single_store_directory_is_accepted(setting: dict[str, Path], tmp_path: Path) -> None:
    store = next(setting["scenes"].glob("null_feature-*"))
    _run(setting, tmp_path, "--axioms_scenes", str(store), "--families", "[axioms]")
    assert {r["metric"] for r in _table(tmp_path)} == {"null_feature"}
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["scenario"] == "null_feature"


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_jackknife_pseudo_values_match_a_scipy_leave_one_out(kind: str) -> None:
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(9, generator=generator, dtype=torch.float64)
    y = x + torch.randn(9, generator=generator, dtype=torch.float64)
    y[3] = y[5]  # a tie (Spearman: average ranks)
    corr = stats.pearsonr if kind == "pearson" else stats.spearmanr
    full = corr(x.numpy(), y.numpy()).statistic
    expected = [9 * full - 8 * corr(torch.cat([x[:i], x[i + 1:]]).numpy(),
                                    torch.cat([y[:i], y[i + 1:]]).numpy()).statistic for i in range(9)]
    torch.testing.assert_close(jackknife_pseudo_values(x, y, kind), torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 3"):
        jackknife_pseudo_values(x[:2], y[:2], kind)


def test_scene_scores_leave_out_undefined_scenes() -> None:
    """Ratio scenarios: NaN where the denominator is 0 (the metric skips the scene). Correlations: pseudo-values
    over the scenes where every method's pair is finite, NaN elsewhere."""
    ratio = scene_scores("null_feature", {"a": torch.tensor([[1.0, 2.0], [1.0, 0.0]], dtype=torch.float64)}, "spearman")
    assert ratio["a"][0] == 0.5 and ratio["a"][1].isnan()
    pairs = torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 5.0], [4.0, 3.0], [5.0, 4.0]], dtype=torch.float64)
    broken = pairs.clone()
    broken[1, 0] = float("nan")
    scores = scene_scores("saturation", {"a": pairs, "b": broken}, "pearson")
    assert scores["a"][1].isnan() and scores["b"][1].isnan()
    keep = torch.tensor([0, 2, 3, 4])
    torch.testing.assert_close(scores["a"][keep], jackknife_pseudo_values(pairs[keep, 0], pairs[keep, 1], "pearson"))
    assert report_axioms.CORRELATION_SCENARIOS == ("class_sensitivity_single", "saturation")
