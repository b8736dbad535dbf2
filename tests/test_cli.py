"""The CLI: help, a fast_dev_run fit from configs/, W&B offline read-back, DDP, one-line config errors."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import lightning as L
import pytest
import torch
import wandb
import wandb_reader
from lightning.pytorch.callbacks import Callback

from lit_xai.attribution.base import AttributionMethod, input_gradient
from lit_xai.cli import main
from lit_xai.data import DigitsDataModule
from lit_xai.models import ClassifierModule

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lit_xai", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield tmp_path
    wandb.finish()


def test_help_lists_trainer_and_project_commands(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("fit", "validate", "test", "predict", "roar", "axioms", "pathways"):
        assert command in result.stdout


def test_fast_dev_run_fit_from_config(tmp_path):
    result = run_cli("fit", "--config", str(REPO / "configs/digits_resnet8.yaml"), "--trainer.fast_dev_run", "true",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_print_config_shows_project_defaults(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--print_config"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "inference_mode: false" in out
    assert "lit_xai.loggers.LitXaiWandbLogger" in out
    assert "lit_xai.data.DigitsDataModule" in out


class _Gradient(AttributionMethod):
    def attribute(self, model, inputs, target):
        return input_gradient(model, inputs, target)[0]


class GradientProbe(Callback):
    """Takes input gradients at validation/test: fails under an un-handled inference mode."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.inference_mode: list[bool] = []

    def _probe(self, pl_module, batch):
        self.inference_mode.append(torch.is_inference_mode_enabled())
        grad = _Gradient()(pl_module, batch["image"][:4], batch["label"][:4])
        self.norms.append(float(grad.abs().sum()))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._probe(pl_module, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._probe(pl_module, batch)


@pytest.mark.parametrize("inference_mode", [False, True])
def test_standalone_validate_and_test_take_input_gradients(inference_mode):
    probe = GradientProbe()
    trainer = L.Trainer(
        inference_mode=inference_mode, logger=False, enable_checkpointing=False, callbacks=[probe],
        limit_val_batches=2, limit_test_batches=2, enable_progress_bar=False,
    )
    model, data = ClassifierModule(), DigitsDataModule()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.validate(model, datamodule=data)
    trainer.test(model, datamodule=data)
    assert len(probe.norms) == 4 and all(n > 0 for n in probe.norms)
    assert all(flag == inference_mode for flag in probe.inference_mode)
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())


PROBE_LOG: list[tuple[bool, float]] = []


class LoggingGradientProbe(GradientProbe):
    """The probe LightningCLI instantiates from YAML; it reports through ``PROBE_LOG``."""

    def _probe(self, pl_module, batch):
        super()._probe(pl_module, batch)
        PROBE_LOG.append((self.inference_mode[-1], self.norms[-1]))


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_cli_standalone_run_is_not_in_inference_mode(in_tmp, subcommand):
    """The project default (inference_mode=false) reaches a standalone `validate`/`test` from the CLI."""
    config = in_tmp / "probe.yaml"
    config.write_text(
        "trainer:\n  limit_val_batches: 1\n  limit_test_batches: 1\n  logger: false\n  callbacks:\n"
        "    - class_path: test_cli.LoggingGradientProbe\n"
    )
    PROBE_LOG.clear()
    main([subcommand, "--config", str(REPO / "lit_xai/default.yaml"), "--config", str(config)])
    assert PROBE_LOG and all(not mode and norm > 0 for mode, norm in PROBE_LOG), PROBE_LOG


def _wandb_run_dir(root: Path) -> Path:
    runs = sorted(root.glob("runs/fit/digits_default/wandb/offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def _write_run_file(path: Path, records: list) -> None:
    """A ``run-*.wandb`` file in the layout :mod:`wandb_reader` documents (header, then FULL records)."""
    data = b":W&B" + bytes(wandb_reader.HEADER - 4)
    for record in records:
        payload = record.SerializeToString()
        data += struct.pack("<IHB", 0, len(payload), wandb_reader.FULL) + payload
    path.write_bytes(data)


def test_wandb_reader_waits_for_the_run_to_be_written(tmp_path):
    """Issue 19 item 15: ``wandb.finish()`` may return before W&B's service has written the run file (the fit test
    below then read ``set()``). Simulated: the file holds only a history row until its exit record lands 0.5 s
    later; the old reader returned what was there, this one waits for the exit record (or times out clearly)."""
    from wandb.proto import wandb_internal_pb2 as pb

    row = pb.Record(history=pb.HistoryRecord(item=[pb.HistoryItem(key="probe", value_json="1.0")]))
    done = pb.Record(summary=pb.SummaryRecord(update=[pb.SummaryItem(key="final", value_json="2.0")]))
    path = tmp_path / "run-test.wandb"
    _write_run_file(path, [row])
    with pytest.raises(TimeoutError, match="no exit record"):
        wandb_reader.finished_records(tmp_path, timeout=0.2)
    timer = threading.Timer(0.5, lambda: _write_run_file(path, [row, done, pb.Record(exit=pb.RunExitRecord())]))
    timer.start()
    try:
        assert wandb_reader.logged_keys(tmp_path) == {"probe", "final"}
    finally:
        timer.join()


def test_fit_logs_metrics_heatmap_and_config_to_offline_wandb(in_tmp):
    main(["fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
          "--trainer.limit_test_batches", "2", "--trainer.log_every_n_steps", "1"])
    wandb.finish()
    run_dir = _wandb_run_dir(in_tmp)
    keys = wandb_reader.logged_keys(run_dir)
    assert {"train/loss_step", "val/acc", "val/top5", "test/acc"} <= keys
    assert {"attr/test/gradient/deletion", "attr/test/random/deletion"} <= keys, sorted(keys)
    images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert images, "no heatmap grid image was logged"
    assert (run_dir / "files" / "lit_xai_config.yaml").is_file()
    assert "lit_xai_config" in wandb_reader.config(run_dir)
    checkpoints = list(in_tmp.glob("runs/fit/digits_default/*/checkpoints/*.ckpt"))
    assert len(checkpoints) == 1


def test_ddp_two_processes_sync_validation_accuracy(tmp_path):
    result = run_cli(
        "fit", "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--test_after_fit", "false",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    synced = float(re.search(r"val/acc=([0-9.]+)", result.stdout).group(1))
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    data = DigitsDataModule()
    data.setup()
    assert len(data.val_dataset) % 2 == 1, "an odd validation set makes DistributedSampler padding visible"
    model = ClassifierModule.load_from_checkpoint(checkpoint)
    trainer = L.Trainer(devices=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    single = trainer.validate(model, datamodule=data, verbose=False)[0]["val/acc"]
    assert abs(synced - single) < 1e-4, (synced, single)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.backbone", "resnet9"], r"unknown backbone 'resnet9'.*resnet8"),
        (["--model.backbone", "timm/resnet181"], r"unknown timm backbone 'resnet181'.*resnet18"),
        (["--data", "lit_xai.data.CIFAR10DataModule", "--data.root", "/nonexistent/cifar"],
         r"CIFAR-10 not found under /nonexistent/cifar.*data_batch_1"),
        (["--model.num_classes", "7", "--trainer.fast_dev_run", "true"],
         r"model.num_classes=7 does not match the data's num_classes=10"),
    ],
)
def test_bad_configuration_is_one_clear_line(in_tmp, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("lit_xai: error:")]
    assert len(error_lines) == 1 and re.search(message, error_lines[0]), err[-2000:]


@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        ("synthetic_resnet8.yaml", ["backbone: resnet8", "num_classes: 4", "max_epochs: 20"]),
        ("synthetic_hard_resnet8.yaml", ["backbone: resnet8", "num_classes: 5", "num_distractors: 4"]),
    ],
)
def test_synthetic_overlays_merge_onto_the_base_config(in_tmp, capsys, overlay, expected):
    base, extra = REPO / "configs/synthetic_fit.yaml", REPO / "configs" / overlay
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(base), "--config", str(extra), "--print_config"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for line in expected:
        assert line in out, f"{line!r} missing from the merged config of {overlay}"
    assert "lit_xai.callbacks.AttributionEvaluation" in out  # the base config's callbacks survive the overlay
