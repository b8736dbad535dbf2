"""The seed study's aggregation (benchmarks/report_concept_findings.py): mean ± SE, paired differences, verdicts,
detector counts and the semantic-attribution criteria on hand-made per-seed tables with hand-derived answers."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import report_concept_findings as findings  # noqa: E402


def test_mean_se_uses_the_sample_sd_over_root_n() -> None:
    # 10, 12, 17: mean 13, deviations -3, -1, 4 → SD² = (9 + 1 + 16) / 2 = 13, SE = √(13 / 3)
    summary = findings.mean_se([10, 12, 17])
    assert summary.mean == pytest.approx(13.0)
    assert summary.se == pytest.approx(math.sqrt(13 / 3))
    assert summary.n == 3
    one = findings.mean_se([4])
    assert one.mean == 4 and math.isnan(one.se) and one.text() == "4.0 ± –"
    with pytest.raises(ValueError, match="at least one"):
        findings.mean_se([])


def test_paired_difference_is_taken_per_seed_not_between_means() -> None:
    # trained 19, 15, 23 vs initial 11, 12, 10: differences 8, 3, 13 → mean 8, SD² = (0 + 25 + 25) / 2 = 25, SE = 5/√3
    p = findings.paired([19, 15, 23], [11, 12, 10])
    assert p.difference.mean == pytest.approx(8.0)
    assert p.difference.se == pytest.approx(5 / math.sqrt(3))
    assert (p.a.mean, p.b.mean) == (pytest.approx(19.0), pytest.approx(11.0))
    assert p.agreeing == 3 and p.verdict == "holds"
    # an unpaired SE would differ: the pairing removes the seed-to-seed spread the two sides share
    assert p.difference.se != pytest.approx(math.hypot(p.a.se, p.b.se))


def test_verdicts_count_the_seeds_with_the_claimed_sign() -> None:
    assert findings.paired([15, 20, 12], [20, 18, 12]).verdict == "mixed"  # -5, +2, 0: one seed agrees
    assert findings.paired([15, 20, 12], [20, 21, 12]).verdict == "does not hold"  # -5, -1, 0: a tie is no support
    fewer = findings.paired([3, 2, 1], [5, 4, 1], direction=-1)  # claim: a < b; -2, -2, 0
    assert (fewer.agreeing, fewer.verdict) == (2, "mixed")
    with pytest.raises(ValueError, match="pair them"):
        findings.paired([1, 2], [1])


def test_binomial_se_over_images() -> None:
    assert findings.binomial_se(7, 40) == pytest.approx(math.sqrt(0.175 * 0.825 / 40))  # 6.0%, docs/concepts.md
    assert findings.binomial_se(40, 40) == 0.0


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_detector_counts_by_layer_concept_and_variety(tmp_path: Path) -> None:
    rows = [{"model": m, "layer": layer, "concept": c, "detectors": n} for m, layer, c, n in [
        ("initial", "features.2", "apparatus", 4), ("initial", "features.8", "apparatus", 2),
        ("initial", "features.8", "line", 0), ("epoch6", "features.2", "apparatus", 3),
        ("epoch6", "features.8", "consolidation", 5), ("epoch6", "features.8", "line", 1),
        ("epoch6", "features.8", "region_A", 0)]]
    counts = findings.read_counts(_write(tmp_path / "dissection_detectors.csv", rows))
    assert findings.detectors(counts, "epoch6") == 9
    assert findings.detectors(counts, "epoch6", layers=("features.8",)) == 6
    assert findings.detectors(counts, "epoch6", concepts=findings.SEVERITY) == 5
    assert findings.detectors(counts, "initial", concepts=findings.IRRELEVANT) == 6
    assert findings.detectors(counts, "initial", concepts=findings.RARE) == 0
    assert findings.variety(counts, "epoch6") == 3  # apparatus, consolidation, line (region_A has none)
    assert findings.variety(counts, "initial") == 1


def test_semantic_criteria_on_hand_made_images(tmp_path: Path) -> None:
    def unit(image: int, rank: int, concept: str, best: str) -> dict[str, object]:
        return {"image": image, "rank": rank, "unit": 10 * image + rank, "concept": concept, "unit_best_concept": best}

    rows = [
        # image 1: top unit a consolidation detector
        unit(1, 1, "consolidation", "consolidation"), unit(1, 2, "", "line"), unit(1, 3, "", "nodule"),
        # image 2: top unit below the detector threshold but best concept ground glass; consolidation detector 3rd
        unit(2, 2, "", "apparatus"), unit(2, 1, "", "ground_glass"), unit(2, 3, "consolidation", "consolidation"),
        # image 3: top unit a ground-glass detector, no consolidation detector in the top 3
        unit(3, 1, "ground_glass", "ground_glass"), unit(3, 2, "line", "line"), unit(3, 3, "", "consolidation"),
        # image 4: nothing severity-related on top
        unit(4, 1, "apparatus", "apparatus"), unit(4, 2, "", "region_A"), unit(4, 3, "", "region_B"),
    ]
    counts, images = findings.semantic_counts(findings.read_semantic(_write(tmp_path / "semantic_units.csv", rows)))
    assert images == 4
    assert counts == {"top unit: a severity-lesion detector": 2,  # images 1, 3
                      "top unit: a consolidation detector": 1,  # image 1
                      "top unit's best concept: a severity lesion": 3,  # images 1, 2, 3 (rank 1 read, not row order)
                      "top 3: a consolidation detector": 2}  # images 1, 2


def test_chance_levels_draw_units_without_replacement() -> None:
    def unit(index: int, concept: str, detector: bool, model: str = "epoch6") -> dict[str, str]:
        return {"model": model, "layer": "features.8", "unit": str(index), "concept": concept,
                "detector": str(detector)}

    # 4 units: a consolidation detector, a ground-glass unit under the threshold, a line detector, an apparatus unit
    units = [unit(0, "consolidation", True), unit(1, "ground_glass", False), unit(2, "line", True),
             unit(3, "apparatus", False), unit(0, "consolidation", True, model="initial")]
    chance = findings.chance_levels(units, "epoch6", "features.8")
    assert chance["top unit: a severity-lesion detector"] == pytest.approx(1 / 4)  # unit 0
    assert chance["top unit: a consolidation detector"] == pytest.approx(1 / 4)
    assert chance["top unit's best concept: a severity lesion"] == pytest.approx(2 / 4)  # units 0, 1
    # 3 of 4 units drawn: they miss unit 0 in 1 of the C(4, 3) = 4 draws
    assert chance[f"top {findings.TOP}: a consolidation detector"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="no units"):
        findings.chance_levels(units, "epoch6", "features.5")


def test_report_tables_on_two_hand_made_seeds() -> None:
    def counts(model_counts: dict[str, dict[str, int]]) -> findings.Counts:
        return {(m, "features.8", c): n for m, per in model_counts.items() for c, n in per.items()}

    regions = {s: counts({"initial": {"apparatus": 8 - s}, **{f"epoch{e + 1}": {"consolidation": e + s}
                                                              for e in range(findings.EPOCHS)}}) for s in (0, 1)}
    multilabel = {0: counts({"weighted": {"line": 1, "apparatus": 4}, "unweighted": {"apparatus": 6}}),
                  1: counts({"weighted": {"line": 0, "apparatus": 5}, "unweighted": {"apparatus": 5}})}
    semantic_rows = [{"image": str(i), "rank": "1", "concept": "consolidation" if i < 3 else "",
                      "unit_best_concept": "consolidation"} for i in range(4)]
    metrics = {kind: {s: {"epoch": 6, "val/acc": 0.9, "val/mae": 0.1,
                          "val/auroc": 0.8 + 0.01 * s * (kind == "weighted")}
                      for s in (0, 1)} for kind in ("regions", "weighted", "unweighted")}
    chance = {s: dict.fromkeys(findings.SEMANTIC_CRITERIA, 0.25) for s in (0, 1)}
    lines, out = findings.report([0, 1], regions, multilabel, {0: semantic_rows, 1: semantic_rows}, chance, metrics)
    # epoch 6: 5 + s consolidation detectors vs 8 - s apparatus at initialisation: Δ = -3, -1
    total = out["trained_vs_initial"]["all layers"]
    assert total["difference"]["mean"] == pytest.approx(-2.0) and total["verdict"] == "does not hold"
    severity = out["trained_vs_initial"]["severity lesions (consolidation + ground glass), all layers"]
    assert severity["verdict"] == "holds"
    assert out["evolution"]["epoch1"]["total"] == [0, 1]
    # weighted - unweighted in all layers: 5 - 6 = -1 and 5 - 5 = 0; the rare lesions +1 and 0
    assert out["weighted_vs_unweighted"]["all layers"]["verdict"] == "does not hold"
    rare = out["weighted_vs_unweighted"]["rare lesions (line + nodule), all layers"]
    assert rare["difference"]["mean"] == pytest.approx(0.5) and rare["verdict"] == "mixed"
    # 3 of 4 images have a consolidation detector on top in both seeds: a majority in every seed
    assert out["semantic"]["top unit: a consolidation detector"]["verdict"] == "holds"
    assert any("3/4 (± 22%)" in line for line in lines)
    # AUROC Δ weighted − BCE: 0 and 0.01 → mean 0.005, SE = SD/√2 = (0.01/√2)/√2 = 0.005; one seed > 0
    auroc = out["auroc_weighted_minus_bce"]
    assert auroc["difference"]["mean"] == pytest.approx(0.005) and auroc["difference"]["se"] == pytest.approx(0.005)
    assert auroc["agreeing"] == 1
    # per-concept rows that are not rare labels carry no claim, the rare ones do
    assert out["weighted_vs_unweighted"]["apparatus, all layers"]["claim"] == 0
    assert out["weighted_vs_unweighted"]["line, all layers"]["claim"] == 1  # √(0.75 · 0.25 / 4) = 0.2165


def test_record_keeps_the_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "timings.json"
    findings.record(path, "fit_regions_seed1", 185.0)
    findings.record(path, "dissect_regions_seed1", 148.0)
    findings.record(path, "fit_regions_seed1", 190.0)
    assert json.loads(path.read_text()) == {"fit_regions_seed1": 190.0, "dissect_regions_seed1": 148.0}
    assert [p.name for p in tmp_path.iterdir()] == ["timings.json"]  # no temporary file left


def test_an_interrupted_fit_is_not_taken_as_finished(tmp_path: Path) -> None:
    log = tmp_path / "wandb" / "offline-run-1" / "files" / "output.log"
    log.parent.mkdir(parents=True)
    log.write_text("Epoch 2: 100%|...\n")
    assert not findings.finished(tmp_path)
    log.write_text(f"Epoch 5: 100%|...\n`Trainer.fit` stopped: `max_epochs={findings.EPOCHS}` reached.\n")
    assert findings.finished(tmp_path)
