"""The report fits the IBA family's feature statistics on its DataModule's training split (Schulz et al. 2020 §3.1)
before any map: once per method spec, equal to ``estimate_feature_statistics`` on ``train_dataloader()``, no
per-batch fallback warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from lit_xai.attribution.information.statistics import estimate_feature_statistics
from lit_xai.cli import main as cli_main
from lit_xai.data.digits import DigitsDataModule
from lit_xai.models.backbones import build_backbone
from lit_xai.report import methods as report_methods

LAYER = "features.6"
IBA = f"{{name: iba, kwargs: {{layer: {LAYER}, steps: 2, noise_draws: 2, stats_samples: 20}}}}"


def test_report_fits_iba_statistics_on_the_training_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=10, in_chans=1)
    weights = tmp_path / "digits_cnn.pt"
    torch.save(model.state_dict(), weights)
    fits: list[object] = []
    original = report_methods.ReportMethods.__call__

    def counting(self, spec):  # type: ignore[no-untyped-def]
        method = original(self, spec)
        if spec.name == "iba" and method not in fits:
            fits.append(method)
        return method

    monkeypatch.setattr(report_methods.ReportMethods, "__call__", counting)
    args = ["report", "--model.weights", str(weights), "--output_dir", str(tmp_path / "out"), "--num_images", "4",
            "--chunk_size", "2", "--num_examples", "2", "--methods", f"[{IBA}]", "--families", "[complexity]",
            "--family_metrics", "{complexity: [sparseness]}", "--progress", "false", "--wandb.enabled", "false"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli_main(args)
    assert not [w for w in caught if "no feature statistics" in str(w.message)]
    assert len(fits) == 1  # one fit serves both chunks and the example figure
    fitted = fits[0]._fitted  # type: ignore[attr-defined]
    expected = estimate_feature_statistics(model.eval(), LAYER, DigitsDataModule().train_dataloader(), 20)
    assert set(fitted) == {LAYER} and fitted[LAYER].num_samples == 20
    for field in ("mean", "std", "active"):
        assert torch.equal(getattr(fitted[LAYER], field), getattr(expected, field)), field
    assert (tmp_path / "out" / "report.csv").read_text().count("iba") == 1
