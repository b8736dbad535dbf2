"""AttributionEvaluation in real Lightning runs: fit/validate/test, inference mode, files, W&B offline media."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from lit_xai.callbacks import AttributionEvaluation
from lit_xai.data.digits import DigitsDataModule
from lit_xai.data.synthetic import SyntheticShapesDataModule
from lit_xai.models.classifier import ClassifierModule

REPO = Path(__file__).resolve().parents[1]


def _trainer(tmp_path: Path, callback: AttributionEvaluation, inference_mode: bool = False, **kwargs) -> L.Trainer:
    settings = {
        "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1, "logger": False,
        "accelerator": "cpu", "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "num_sanity_val_steps": 0,
    }
    settings.update(kwargs)
    return L.Trainer(callbacks=[callback], inference_mode=inference_mode, default_root_dir=tmp_path, **settings)


def test_fit_and_standalone_test_under_inference_mode_log_scores_and_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    callback = AttributionEvaluation(
        methods=[{"name": "gradient", "postprocess": [{"name": "reduce_channels", "kwargs": {"how": "max_abs"}}]}],
        metrics=[{"name": "deletion", "kwargs": {"num_steps": 8}}, {"name": "insertion", "kwargs": {"num_steps": 8}}],
        max_samples=12, num_grid_samples=3, output_dir=str(tmp_path / "out"),
    )
    data = DigitsDataModule(batch_size=16, image_size=16)
    model = ClassifierModule(backbone="digits_cnn")
    trainer = _trainer(tmp_path, callback, inference_mode=True)
    trainer.fit(model, data)
    assert {"attr/val/gradient/deletion", "attr/val/random/insertion"} <= set(trainer.callback_metrics)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = trainer.test(model, data, verbose=False)[0]  # Lightning runs test under torch.inference_mode here
    assert {f"attr/test/{m}/{k}" for m in ("gradient", "random") for k in ("deletion", "insertion")} <= set(results)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    gradient_metric = callback.metrics["gradient"]["deletion"]
    assert float(gradient_metric.count) == 12  # max_samples honoured, across batches of 16
    folders = sorted((tmp_path / "out" / "attribution").iterdir())
    assert [f.name.split("_")[0] for f in folders] == ["test", "val"]
    test_folder = folders[0]
    assert (test_folder / "heatmaps.png").stat().st_size > 0
    summary = json.loads((test_folder / "summary.json").read_text())
    assert [row["method"] for row in summary] == ["gradient", "random"]
    assert summary[0]["deletion"] == pytest.approx(results["attr/test/gradient/deletion"], rel=1e-5)
    curve = json.loads((test_folder / "curve_deletion_probability.json").read_text())
    assert len(curve["x"]) == 9 and set(curve["curves"]) == {"gradient", "random"}


def test_every_metric_runs_on_ground_truth_data_with_wandb_offline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    from lit_xai.loggers import LitXaiWandbLogger

    callback = AttributionEvaluation(
        methods=[{"name": "gradient"}, {"name": "gradcam", "label": "GradCAM", "kwargs": {"upsample": True}}],
        metrics=[
            {"name": "morf", "kwargs": {"num_steps": 4}},
            {"name": "lerf", "kwargs": {"num_steps": 4, "max_fraction": 0.1, "output": "fractional_change"}},
            {"name": "deletion", "kwargs": {"num_steps": 4}},
            {"name": "insertion", "kwargs": {"num_steps": 4}},
            {"name": "sensitivity_n", "kwargs": {"num_n": 3, "num_masks": 4}},
            {"name": "randomisation", "kwargs": {"max_steps": 2}},
            {"name": "ehr"},
            {"name": "pointing_game"},
        ],
        stages=["test"], max_samples=6, num_grid_samples=2,
    )
    data = SyntheticShapesDataModule(
        num_train=8, num_val=8, num_test=9, image_size=16, object_size=(4, 6), batch_size=4
    )
    model = ClassifierModule(backbone="digits_cnn", num_classes=4, in_chans=3)
    logger = LitXaiWandbLogger(save_dir=str(tmp_path), name="callback-test", offline=True)
    trainer = _trainer(tmp_path, callback, logger=logger, limit_test_batches=1.0)
    results = trainer.test(model, data, verbose=False)[0]
    logger.experiment.finish()
    names = ("morf", "lerf", "deletion", "insertion", "sensitivity_n", "randomisation", "ehr", "pointing_game")
    assert {f"attr/test/{m}/{k}" for m in ("gradient", "GradCAM", "random") for k in names} <= set(results)
    media = list(tmp_path.rglob("media/**/*"))
    names_on_disk = " ".join(str(p) for p in media)
    assert "heatmaps" in names_on_disk and "summary" in names_on_disk and "curves" in names_on_disk


def test_validation_runs_only_every_n_epochs_and_not_in_sanity_check(tmp_path: Path) -> None:
    callback = AttributionEvaluation(
        metrics=[{"name": "deletion", "kwargs": {"num_steps": 2}}], every_n_epochs=2, max_samples=4,
        num_grid_samples=0, output_dir=str(tmp_path),
    )
    data = DigitsDataModule(batch_size=8, image_size=8)
    trainer = _trainer(tmp_path, callback, max_epochs=2, num_sanity_val_steps=1)
    counts = []
    original = callback.evaluate_batch
    callback.evaluate_batch = lambda module, batch: counts.append(trainer.current_epoch) or original(module, batch)
    trainer.fit(ClassifierModule(backbone="digits_cnn"), data)
    assert counts == [1]  # epoch index 1 = the second epoch; no sanity-check run


def test_specs_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        AttributionEvaluation(metrics=[{"name": "nope"}])
    with pytest.raises(ValueError, match="labels must be unique"):
        AttributionEvaluation(methods=[{"name": "gradient"}, {"name": "gradient"}])
    with pytest.raises(ValueError, match="unknown postprocess"):
        AttributionEvaluation(methods=[{"name": "gradient", "postprocess": ["blurry"]}])
    with pytest.raises(ValueError, match="stages"):
        AttributionEvaluation(stages=["train"])
    callback = AttributionEvaluation(methods=[{"name": "random", "kwargs": {"seed": 3}}], random_control=True)
    assert [e.label for e in callback.explainers] == ["random"]  # the control is not added twice


@pytest.mark.parametrize("preset", sorted((REPO / "callbacks").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_build(preset: Path) -> None:
    entries = yaml.safe_load(preset.read_text())
    assert isinstance(entries, list) and entries
    for entry in entries:
        assert entry["class_path"] == "lit_xai.callbacks.AttributionEvaluation"
        callback = AttributionEvaluation(**entry.get("init_args", {}))
        assert "random" in callback.metrics
