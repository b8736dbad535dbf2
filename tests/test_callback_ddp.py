"""Under DDP (2 CPU processes, gloo) every metric equals its single-process value: states reduce correctly and the
odd-sized test split is not padded (a repeated sample would shift every mean)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from lit_xai.callbacks import AttributionEvaluation
from lit_xai.data.synthetic import SyntheticShapesDataModule
from lit_xai.models.classifier import ClassifierModule

METRICS = [
    {"name": "deletion", "kwargs": {"num_steps": 4}},
    {"name": "lerf", "kwargs": {"num_steps": 3, "max_fraction": 0.2, "output": "fractional_change"}},
    {"name": "sensitivity_n", "kwargs": {"num_n": 2, "num_masks": 3}},
    {"name": "randomisation", "kwargs": {"max_steps": 2}},
    {"name": "ehr"},
    {"name": "pointing_game"},
]


def _test_run(tmp_path: Path, devices: int) -> dict[str, float]:
    callback = AttributionEvaluation(
        methods=[{"name": "gradient"}], metrics=METRICS, stages=["test"], max_samples=None, random_control=False,
        num_grid_samples=0, progress_bar=False, output_dir=str(tmp_path / f"out{devices}"),
    )
    data = SyntheticShapesDataModule(
        num_train=4, num_val=4, num_test=7, image_size=12, object_size=(3, 4), num_distractors=1, batch_size=2
    )
    torch.manual_seed(0)
    model = ClassifierModule(backbone="digits_cnn", num_classes=4, in_chans=3)
    strategy = (
        DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=60))
        if devices > 1 else "auto"
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback], inference_mode=False,
        default_root_dir=tmp_path,
    )
    return {k: float(v) for k, v in trainer.test(model, data, verbose=False)[0].items() if k.startswith("attr/")}


def test_ddp_metrics_equal_single_process_values(tmp_path: Path) -> None:
    single = _test_run(tmp_path, devices=1)
    assert len(single) == len(METRICS)
    distributed = _test_run(tmp_path, devices=2)
    assert set(distributed) == set(single)
    for key, value in single.items():
        assert distributed[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
