"""Bad input through the real command line (a subprocess each): one line ``lit_xai: error: …`` naming the file or key
and what exists, exit 2, no traceback, no work started; SIGTERM ends a run promptly with a clear line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# without WANDB_SILENT (tests/conftest.py sets it): the product itself must keep W&B quiet
ENV = {**{k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lit_xai", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("lit_xai: error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr[-3000:]


def _callback_file(tmp_path: Path, spec: str) -> Path:
    """A one-callback list, appended with ``--trainer.callbacks+=<file>`` like the presets in callbacks/."""
    path = tmp_path / "callback.yaml"
    path.write_text(f"- class_path: lit_xai.callbacks.AttributionEvaluation\n  init_args:\n{spec}")
    return path


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (None, r"--ckpt_path .*missing\.ckpt: no such file; checkpoints in .*: other\.ckpt"),
        (b"\x80\x02}q\x00(X\x01\x00\x00\x00a" + b"garbage" * 20, r"not a PyTorch checkpoint .*\d+ bytes"),
        ("truncated", r"not a PyTorch checkpoint \(torch\.save writes a zip archive; this file is truncated"),
    ],
    ids=["missing", "garbage", "truncated"],
)
def test_bad_checkpoint_is_one_line(tmp_path: Path, content, pattern) -> None:
    """Before: a 51-line FileNotFoundError traceback, ``KeyError: 101``, ``OSError``."""
    (tmp_path / "other.ckpt").write_bytes(b"")
    path = tmp_path / "missing.ckpt"
    if content == "truncated":
        import torch

        torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif content is not None:
        path.write_bytes(content)
    result = run_cli("test", "--ckpt_path", str(path), "--trainer.logger", "false", cwd=tmp_path)
    assert_one_line_error(result, pattern)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("    name: x\n    metrics: [{name: deletoin}]\n",
         r"metrics: unknown metric 'deletoin'\. Did you mean 'deletion'\?"),
        ("    name: x\n    methods: [{name: integrated_gradient}]\n",
         r"methods: unknown attribution method 'integrated_gradient'\. Did you mean 'integrated_gradients'"),
        ("    name: x\n    methods: [{name: gradcam, kwargs: {layer: features.conv9}}]\n",
         r"method 'gradcam': model DigitsCNN has no layer named 'features\.conv9'"),
        ("    max_samples: 4\n", r"2 AttributionEvaluation callbacks log under the same keys 'attr/<stage>/…'"),
    ],
    ids=["metric", "method", "layer", "duplicate"],
)
def test_bad_callback_spec_is_one_line_before_training(tmp_path: Path, spec: str, pattern: str) -> None:
    """Before: a 94-line jsonargparse union error that never named the metric; a missing layer after an epoch;
    a second unnamed callback silently averaged into the default's keys."""
    extra = _callback_file(tmp_path, spec)
    result = run_cli("fit", f"--trainer.callbacks+={extra}", cwd=tmp_path)
    assert_one_line_error(result, pattern)
    assert not list(tmp_path.rglob("*.ckpt")), "training started before the configuration was checked"


def test_default_run_with_a_stacked_preset_ends_with_the_summary_and_no_wandb_banners(tmp_path: Path) -> None:
    """The README's advice works (the presets carry their own name, so they stack onto the default's callback); the
    end of the run shows every method against the control with SEs; W&B prints no banners (before: 923 of 1149 log
    lines of a ROAR run were W&B's), the CLI one line with the run's folder."""
    result = run_cli("fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                     "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
                     "--trainer.callbacks+=" + str(REPO / "callbacks/attribution_quick.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "attribution evaluation (test" in out and "attribution evaluation 'quick' (test" in out, out[-3000:]
    for method in ("gradient", "input_x_gradient", "integrated_gradients", "gradcam"):  # the default's 128 images
        assert re.search(rf"deletion\s+↓\s+{method}\s+128\s+[0-9.]+ ± [0-9.]+\s+[-+][0-9.]+ ± [0-9.]+", out), out[:3000]
    assert not [line for line in result.stderr.splitlines() + out.splitlines() if line.startswith("wandb:")]
    assert len([line for line in out.splitlines() if line.startswith("[lit_xai] W&B run")]) == 1
    assert list(tmp_path.glob("runs/fit/digits_default/*/checkpoints/best.ckpt")), "the README names this path"


@pytest.mark.parametrize("layout", ["empty", "no_images"])
def test_imagefolder_without_images_is_one_line(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        if layout == "no_images":
            (root / split / "cat").mkdir()
            (root / split / "cat" / "notes.txt").write_text("not an image")
    pattern = r"has no class folders" if layout == "empty" else r"no image files .* classes found in train/: cat"
    result = run_cli("fit", "--data", "lit_xai.data.ImageFolderDataModule", "--data.root", str(root),
                     "--trainer.logger", "false", cwd=tmp_path)
    assert_one_line_error(result, pattern)


def test_pathways_unknown_method_is_one_line_before_training(tmp_path: Path) -> None:
    """Before: a traceback after 5 training epochs."""
    result = run_cli("pathways", "--methods", "[neuron_mct, neuron_intgrd]", "--model.train_epochs", "5",
                     "--output_dir", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(result, r"pathways --methods: unknown \['neuron_intgrd'\]; available: neuron_mct")


@pytest.mark.parametrize(
    ("methods", "pattern"),
    [
        ("[{name: gradiant}]", r"unknown attribution method 'gradiant'\. Did you mean 'gradient'"),
        ("[{name: integrated_gradients, kwargs: {stepz: 4}}]", r"integrated_gradients: unknown argument\(s\) stepz"),
    ],
    ids=["name", "argument"],
)
def test_roar_bad_method_is_one_line_before_the_source_model_trains(tmp_path: Path, methods: str, pattern: str) -> None:
    """Before: the error came after the source model had trained."""
    result = run_cli("roar", "--config", str(REPO / "configs" / "roar_digits.yaml"), "--methods", methods,
                     "--output_dir", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(result, pattern)
    assert not (tmp_path / "out" / "source").exists()


def test_sigterm_stops_a_fit_promptly_and_cleanly(tmp_path: Path) -> None:
    """Before: ``Received SIGTERM`` was printed and the run went on until SIGKILL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lit_xai", "fit", "--trainer.max_epochs", "1000", "--trainer.logger", "false",
         "--trainer.enable_progress_bar", "false", "--test_after_fit", "false"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.rglob("*.ckpt")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)  # training has run an epoch once a checkpoint exists
        assert process.poll() is None, process.communicate()[1][-3000:]
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "lit_xai: error: stopped by SIGTERM" in err and "Traceback" not in err, err[-3000:]
    assert took < 30, f"took {took:.1f} s to stop"
