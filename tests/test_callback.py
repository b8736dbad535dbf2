"""AttributionEvaluation in real Lightning runs: fit/validate/test, inference mode, files, W&B offline media."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import wandb_reader
import yaml

from lit_xai.callbacks import AttributionEvaluation
from lit_xai.callbacks.attribution_eval import CallbackConfigError
from lit_xai.callbacks.explainers import Explainer
from lit_xai.data.digits import DigitsDataModule
from lit_xai.data.synthetic import SyntheticShapesDataModule
from lit_xai.models.classifier import ClassifierModule

REPO = Path(__file__).resolve().parents[1]


def _finished_records(run_dir: Path, timeout: float = 60.0) -> list:
    """The run file's records once W&B's service has written the exit record (it writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_reader.read_records(wandb_reader.run_file(run_dir))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


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
    summary = {(row["method"], row["metric"]): row for row in json.loads((test_folder / "summary.json").read_text())}
    assert set(summary) == {(m, k) for m in ("gradient", "random") for k in ("deletion", "insertion")}
    assert summary["gradient", "deletion"]["mean"] == pytest.approx(results["attr/test/gradient/deletion"], rel=1e-5)
    assert summary["gradient", "deletion"]["n"] == 12 and summary["random", "deletion"]["verdict"] == "control"
    assert summary["gradient", "deletion"]["direction"] == "↓" and summary["gradient", "insertion"]["direction"] == "↑"
    curve = json.loads((test_folder / "curves_deletion_probability.json").read_text())
    assert len(curve["x"]) == 9 and set(curve["curves"]) == {"gradient", "random"}
    assert (test_folder / "summary_plot.png").stat().st_size > 0
    assert "Δ vs random" in (test_folder / "summary.txt").read_text()
    samples = json.loads((test_folder / "samples.json").read_text())
    assert len(samples) == 12 and {"prediction", "confidence", "gradient/deletion"} <= set(samples[0])


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
            {"name": "ehr", "kwargs": {"normalize": "max"}},  # raw signed maps: per-image max scale
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
    assert "samples" in names_on_disk and "summary_plot" in names_on_disk
    run_dir = next(tmp_path.rglob("offline-run-*"))
    records = _finished_records(run_dir)
    summaries = {r.metric.name: r.metric.summary for r in records if r.WhichOneof("record_type") == "metric"}
    assert summaries["attr/test/gradient/deletion"].min and not summaries["attr/test/gradient/deletion"].max
    assert summaries["attr/test/GradCAM/ehr"].max and summaries["attr/test/random/randomisation"].min


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
def test_presets_build_and_stack_onto_the_default(preset: Path) -> None:
    entries = yaml.safe_load(preset.read_text())
    assert isinstance(entries, list) and entries
    default = yaml.safe_load((REPO / "lit_xai/default.yaml").read_text())["trainer"]["callbacks"]
    names = [e["init_args"].get("name") for e in default if e["class_path"].endswith("AttributionEvaluation")]
    for entry in entries:
        assert entry["class_path"] == "lit_xai.callbacks.AttributionEvaluation"
        callback = AttributionEvaluation(**entry.get("init_args", {}))
        assert "random" in callback.metrics
        names.append(callback.name)
    assert len(set(names)) == len(names), f"{preset.name} would collide with the default's keys: {names}"


def _digits_test(tmp_path: Path, callbacks: list, **kwargs) -> tuple[L.Trainer, dict]:
    data = DigitsDataModule(batch_size=16, image_size=16)
    trainer = L.Trainer(
        callbacks=callbacks, inference_mode=False, default_root_dir=tmp_path, logger=False, accelerator="cpu",
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )
    torch.manual_seed(0)
    return trainer, trainer.test(ClassifierModule(backbone="digits_cnn"), data, verbose=False)[0]


def test_paired_statistics_are_per_image_and_match_the_metric(tmp_path: Path) -> None:
    """The logged score is the metric's; its SE and the paired Δ to the control come from the same images' per-image
    AUCs (recomputed here with NumPy, tolerance 1e-6)."""
    callback = AttributionEvaluation(
        methods=[{"name": "input_x_gradient"}], metrics=[{"name": "deletion", "kwargs": {"num_steps": 8}}],
        max_samples=20, num_grid_samples=0, num_table_samples=0, output_dir=str(tmp_path), print_summary=False,
    )
    _, results = _digits_test(tmp_path, [callback], limit_test_batches=2)
    per_image = callback.compute_image_scores()
    method, method_index = per_image["input_x_gradient"]["deletion"]
    control, control_index = per_image["random"]["deletion"]
    assert method_index.tolist() == control_index.tolist() == list(range(20))  # paired by dataset index
    key = "attr/test/input_x_gradient/deletion"
    assert results[key] == pytest.approx(float(method.mean()), abs=1e-6)  # mean of per-image AUCs = the metric
    diff = (method - control).numpy()
    assert results[key + "_vs_random"] == pytest.approx(diff.mean(), abs=1e-6)
    assert results[key + "_vs_random_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(20), abs=1e-6)
    assert results[key + "_se"] == pytest.approx(method.numpy().std(ddof=1) / np.sqrt(20), abs=1e-6)
    assert "attr/test/random/deletion_vs_random" not in results


def test_named_callbacks_stack_without_mixing_their_results(tmp_path: Path) -> None:
    """Before: two callbacks logged the same keys and Lightning averaged them. Now each has its own prefix."""
    coarse = AttributionEvaluation(metrics=[{"name": "deletion", "kwargs": {"num_steps": 2}}], max_samples=8,
                                   num_grid_samples=0, num_table_samples=0, output_dir=str(tmp_path))
    fine = AttributionEvaluation(metrics=[{"name": "deletion", "kwargs": {"num_steps": 16}}], max_samples=8,
                                 name="fine", num_grid_samples=0, num_table_samples=0, output_dir=str(tmp_path))
    _, results = _digits_test(tmp_path, [coarse, fine], limit_test_batches=1)
    for callback, key in ((coarse, "attr/test/gradient/deletion"), (fine, "attr/fine/test/gradient/deletion")):
        own = float(callback.metrics["gradient"]["deletion"].results()["score"])
        assert results[key] == pytest.approx(own, rel=1e-6)
    assert results["attr/test/gradient/deletion"] != pytest.approx(results["attr/fine/test/gradient/deletion"])


@pytest.mark.parametrize(
    ("callbacks", "message"),
    [
        ([{}, {}], r"2 AttributionEvaluation callbacks log under the same keys 'attr/<stage>/…'"),
        ([{"name": "q"}, {"name": "q"}], r"same keys 'attr/q/<stage>/…'"),
        ([{"methods": [{"name": "gradcam", "kwargs": {"layer": "conv9"}}]}], r"'gradcam'.*no layer named 'conv9'"),
    ],
)
def test_stacking_and_layer_errors_come_before_any_training(tmp_path: Path, callbacks, message) -> None:
    built = [AttributionEvaluation(num_grid_samples=0, **kwargs) for kwargs in callbacks]
    model = ClassifierModule(backbone="digits_cnn")
    trainer = _trainer(tmp_path, built[0], max_epochs=1)
    trainer.callbacks.extend(built[1:])
    with pytest.raises(CallbackConfigError, match=message):
        trainer.fit(model, DigitsDataModule(batch_size=16, image_size=16))
    assert trainer.global_step == 0


def test_progress_rates_are_per_method(tmp_path: Path) -> None:
    """Each method's rate counts only its own maps and metric updates (before: a bar's rate included the methods
    before it). A method that sleeps 50 ms per batch shows ≥ 50 ms/batch; the plain gradient does not."""
    from lit_xai.attribution import build_method

    class Slow:
        def __call__(self, model, inputs, target):
            time.sleep(0.05)
            return build_method("gradient")(model, inputs, target)

    callback = AttributionEvaluation(methods=[{"name": "gradient"}], random_control=False, max_samples=16,
                                     metrics=[{"name": "deletion", "kwargs": {"num_steps": 2}}], num_grid_samples=0,
                                     num_table_samples=0, output_dir=str(tmp_path), paired_statistics=False)
    callback.explainers.insert(0, Explainer("slow", Slow()))  # type: ignore[arg-type]
    callback.metrics["slow"] = torch.nn.ModuleDict({"deletion": callback.metrics["gradient"]["deletion"]})
    _digits_test(tmp_path, [callback], limit_test_batches=1)
    (slow_seconds, slow_images), (fast_seconds, fast_images) = callback._rates["slow"], callback._rates["gradient"]
    assert slow_images == fast_images == 16 and slow_seconds >= 0.05 and fast_seconds < slow_seconds


def test_best_checkpoint_is_logged_as_an_offline_wandb_artifact(tmp_path: Path, monkeypatch) -> None:
    """Lightning's own log_model=True refuses offline runs; the project logger logs the best checkpoint anyway."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_xai.loggers import LitXaiWandbLogger

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    logger = LitXaiWandbLogger(save_dir=str(tmp_path), name="artifact-test", offline=True)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max", filename="best")
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=logger, callbacks=[checkpoint],
        accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(ClassifierModule(backbone="digits_cnn"), DigitsDataModule(batch_size=16, image_size=8))
    logger.experiment.finish()
    assert (tmp_path / "ckpt" / "best.ckpt").is_file()
    run_dir = next(tmp_path.rglob("offline-run-*"))
    records = _finished_records(run_dir)
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert [a.type for a in artifacts] == ["model"], sorted({r.WhichOneof("record_type") for r in records})
    assert set(artifacts[0].aliases) >= {"best", "latest"}


def test_per_image_scores_of_an_update_equal_a_separate_pass() -> None:
    """The callback reuses the update's per-image areas; they equal ``image_scores`` recomputed (tolerance 1e-6)."""
    from lit_xai.attribution import build_method
    from lit_xai.metrics import build_metric

    torch.manual_seed(0)
    model = ClassifierModule(backbone="digits_cnn").net.eval()
    inputs = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    target = torch.arange(6) % 10
    maps = build_method("input_x_gradient")(model, inputs, target)
    metric = build_metric("deletion", num_steps=6, baseline="zero")
    metric.update(model, inputs, target, maps)
    torch.testing.assert_close(metric.last_image_scores, metric.image_scores(model, inputs, target, maps),
                               rtol=1e-6, atol=1e-6)


def test_resolved_config_reaches_wandb_as_nested_keys(tmp_path: Path, monkeypatch) -> None:
    """Before: one YAML string (runs could not be filtered or grouped by a setting)."""
    from types import SimpleNamespace

    from jsonargparse import ArgumentParser

    from lit_xai.cli import RunConfigSaver
    from lit_xai.loggers import LitXaiWandbLogger

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    parser = ArgumentParser()
    parser.add_argument("--model.backbone", default="digits_cnn")
    parser.add_argument("--data.init_args.batch_size", type=int, default=64)
    logger = LitXaiWandbLogger(save_dir=str(tmp_path), name="config-test", offline=True)
    saver = RunConfigSaver(parser, parser.parse_args([]), config_filename="lit_xai_config.yaml", overwrite=True)
    saver.save_config(SimpleNamespace(logger=logger), None, "fit")  # type: ignore[arg-type]
    config = dict(logger.experiment.config)["lit_xai_config"]
    logger.experiment.finish()
    assert config["model"]["backbone"] == "digits_cnn" and config["data"]["init_args"]["batch_size"] == 64
