"""benchmarks/report_chest_findings.py: its measures on hand-made cases and its pipeline on tiny data (fast)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import report_chest_findings as report  # noqa: E402

from lit_xai.data import SyntheticChestDataModule  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402


def _two_boxes() -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes A = rows 0-1 × cols 0-1 and B = rows 4-5 × cols 4-5 of an 8×8 image, plus a padding row."""
    boxes = torch.tensor([[[0, 0, 2, 2], [4, 4, 6, 6], [-1, -1, -1, -1]]])
    return boxes, torch.tensor([[True, True, False]])


def _background() -> torch.Tensor:
    """Distinct small values 0.000 … 0.063 (no ties), so the top region is decided by the boxes' values."""
    return (torch.arange(64, dtype=torch.float32) / 1000).view(1, 1, 8, 8)


def test_instance_hits_a_map_marking_both_instances() -> None:
    boxes, valid = _two_boxes()
    maps = _background().clone()
    maps[..., 0:2, 0:2] = 10.0
    maps[..., 4:6, 4:6] = 5.0
    result = report.instance_hits(maps, boxes, valid, (8, 8), coverage=0.25, marked_level=0.5)
    # the union of the boxes is 8 pixels, the 8 top pixels are exactly the two boxes: both fully covered
    assert result["hits"].tolist() == [1.0] and result["all_hit"].tolist() == [1.0]
    # the weakest instance (B, mean 5) over the image mean (4·10 + 4·5 + background) / 64
    background = float(_background().sum() - _background()[..., 0:2, 0:2].sum() - _background()[..., 4:6, 4:6].sum())
    assert math.isclose(float(result["enrichment"]), 5 / ((60 + background) / 64), rel_tol=1e-5)
    assert math.isclose(float(result["area"]), 8 / 64)  # pixels ≥ 0.5 · 10: both boxes


def test_instance_hits_a_map_marking_one_sufficient_instance() -> None:
    boxes, valid = _two_boxes()
    maps = _background().clone()
    maps[..., 0:2, 0:2] = 10.0
    maps[..., 4:6, 4:6] = 0.0  # below every background pixel
    result = report.instance_hits(maps, boxes, valid, (8, 8), coverage=0.25, marked_level=0.5)
    # the 8 top pixels: box A and the 4 largest background pixels (row 7, cols 4-7): B is not covered
    assert result["hits"].tolist() == [0.5] and result["all_hit"].tolist() == [0.0]
    assert float(result["enrichment"]) == 0.0
    assert math.isclose(float(result["area"]), 4 / 64)


def test_mean_se_and_paired_bootstrap() -> None:
    mean, se, n = report.mean_se(torch.tensor([1.0, 3.0, float("nan")]))
    assert (mean, n) == (2.0, 2) and math.isclose(se, math.sqrt(2) / math.sqrt(2))
    inter = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([1.0, 2.0, 3.0])}
    union = {"a": torch.tensor([2.0, 4.0, 6.0]), "b": torch.tensor([4.0, 8.0, 12.0])}
    boot = report.bootstrap_ratio(inter, union, resamples=50, seed=0)
    # every resample of a: Σ I / Σ U = 1/2, of b: 1/4 — the same rows for both keys, so the difference is exact
    assert torch.allclose(boot["a"], torch.full((50,), 0.5, dtype=torch.float64))
    assert torch.allclose(boot["a"] - boot["b"], torch.full((50,), 0.25, dtype=torch.float64))


def test_explained_pairs_need_the_label_present_and_predicted() -> None:
    labels = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    probabilities = torch.tensor([[0.9, 0.9, 0.2], [0.6, 0.7, 0.1]])
    image, label = report.explained_pairs(labels, probabilities, limit=10)
    assert image.tolist() == [0, 1, 1] and label.tolist() == [0, 0, 1]
    assert report.explained_pairs(labels, probabilities, limit=2)[0].tolist() == [0, 1]


def test_cache_computes_once(tmp_path: Path) -> None:
    calls = []
    store = report.Cache(tmp_path, "weights")

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.ones(2)

    assert store.get(["key"], compute).tolist() == [1.0, 1.0]
    assert store.get(["key"], compute).tolist() == [1.0, 1.0]
    assert len(calls) == 1
    assert report.Cache(tmp_path, "other weights").get(["key"], compute) is not None and len(calls) == 2


def test_pipeline_on_tiny_data_and_untrained_models(tmp_path: Path) -> None:
    """Both findings functions run end to end (every method, metric and table) and a rerun reads the cache."""
    args = report.build_parser().parse_args([
        "--pairs", "6", "--images", "4", "--ig-steps", "2", "--sens-num-n", "2", "--sens-masks", "3",
        "--bootstrap", "20", "--chunk", "3", "--cache", str(tmp_path),
    ])
    results = {}
    for task in ("multilabel", "regression"):
        data = SyntheticChestDataModule(task=task, num_train=8, num_val=2, num_test=12, image_size=32, batch_size=4)
        torch.manual_seed(0)
        model = build_backbone("digits_cnn", num_classes=data.num_classes, in_chans=1, pooled_size=4).eval()
        if task == "multilabel":
            torch.nn.init.constant_(model.fc.bias, 5.0)  # every label predicted: the pairs are the present labels
        findings = report.multilabel_findings if task == "multilabel" else report.regression_findings
        results[task] = {"val": {}, **findings(args, 0, tmp_path, model, data)}
    multilabel, regression = results["multilabel"], results["regression"]
    assert multilabel["pairs"] == 6 and set(multilabel["iou"]["masks"]) == {
        "Gradient", "IntegratedGradients", "GradCAM", "IBA", "InverseIBA", "MultiLayerIBA", "random"}
    assert 0 < regression["images"] <= 4
    assert set(regression["sensitivity_n"]) >= {"RegressionIBA_MSE", "RegressionIBA_RM", "RegressionIBA_DV"}
    table = report.markdown(0, results)
    assert "Table 1" in table and "Fig. 3b" in table
    files = sorted(p.name for p in (tmp_path / "maps").iterdir())
    report.regression_findings(args, 0, tmp_path, model, data)  # a rerun adds no file
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == files


def test_exact_k_overlaps_take_exactly_the_ground_truth_area() -> None:
    gt = torch.zeros(1, 16, dtype=torch.bool)
    gt[0, [5, 6, 9, 10]] = True  # |G| = 4
    # distinct values: the top 4 pixels are 5, 10 (in G) and 0, 15 (outside) → |A ∩ G| = 2, |A ∪ G| = 6
    maps = torch.zeros(1, 1, 4, 4)
    maps.view(-1)[[5, 10, 0, 15]] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    maps.view(-1)[[1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14]] = -torch.arange(1.0, 13.0) / 100
    inter, union = report.exact_k_overlaps(maps, gt, (4, 4))
    assert inter.tolist() == [2.0] and union.tolist() == [6.0]
    # an all-zero map: every pixel tied; A still has exactly |G| pixels (|A| = |A ∪ G| + |A ∩ G| − |G|), drawn at
    # random: over many seeds the mean intersection approaches |G|² / P = 1
    flat = torch.zeros(1, 1, 4, 4)
    draws = [report.exact_k_overlaps(flat, gt, (4, 4), seed) for seed in range(400)]
    assert all(float(u + i) - 4 == 4 for i, u in draws)
    assert abs(sum(float(i) for i, _ in draws) / len(draws) - 1.0) < 0.15
