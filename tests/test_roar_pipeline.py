"""End to end on tiny grids: the `roar` command, killed midway and rerun; grid shards and their merge."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lit_xai.roar.command import main
from lit_xai.roar.manifest import find_manifests, merge_manifests, read_manifest

TINY_CONFIG = """
seeds: [0]
percentiles: [30, 70]
methods: [{{name: {method}}}]
wandb: false
source_max_epochs: 1
map_shard_size: 400
data:
  class_path: lit_xai.data.DigitsDataModule
  init_args: {{batch_size: 32, image_size: 8}}
model: {{backbone: digits_cnn, num_classes: 10, in_chans: 1, lr: 0.003}}
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  limit_train_batches: 3
  limit_val_batches: 2
  limit_test_batches: 2
  enable_progress_bar: false
  enable_model_summary: false
"""


def write_config(directory: Path, method: str) -> Path:
    path = directory / "roar_tiny.yaml"
    path.write_text(TINY_CONFIG.format(method=method))
    return path


def wait_for_finished_cells(manifest: Path, process: subprocess.Popen, timeout: float = 240.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the grid process ended (rc {process.returncode}) before it could be killed")
        if manifest.exists() and read_manifest(manifest):
            return len(read_manifest(manifest))
        time.sleep(0.05)
    raise AssertionError("no cell finished in time")


def test_killed_grid_resumes_without_retraining_finished_cells(tmp_path, caplog) -> None:
    config = write_config(tmp_path, "gradient")
    output = tmp_path / "out"
    command = [sys.executable, "-m", "lit_xai", "roar", "--config", str(config), "--output_dir", str(output)]
    manifest = output / "manifest-shard0of1.json"
    env = {**os.environ, "LIT_XAI_WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        wait_for_finished_cells(manifest, process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # a hard crash: no handler gets to clean up
        process.wait()
    before = read_manifest(manifest)
    assert 1 <= len(before) < 5, "the kill must land midway through the 5-cell grid"
    stamps = {key: Path(result["checkpoint"]).stat().st_mtime_ns for key, result in before.items()}

    with caplog.at_level(logging.INFO):
        main(["--config", str(config), "--output_dir", str(output)])
    assert f"5 cells, {len(before)} already finished (skipped), {5 - len(before)} to train" in caplog.text
    after = read_manifest(manifest)
    assert sorted(after) == sorted(["baseline/p0/seed0", "gradient/p30/seed0", "gradient/p70/seed0",
                                    "random/p30/seed0", "random/p70/seed0"])
    for key, result in before.items():
        assert after[key] == result  # same record: not retrained, not lost
        assert Path(result["checkpoint"]).stat().st_mtime_ns == stamps[key]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["finished"] == summary["cells"] == 5 and summary["missing"] == []
    assert {a["method"] for a in summary["auc"]} == {"gradient", "random"}
    assert (output / "roar_curves.png").stat().st_size > 0
    rows = (output / "roar_auc.csv").read_text().splitlines()
    assert rows[0] == "method,auc_mean,auc_std,seeds" and len(rows) == 3


def test_grid_shards_write_their_own_manifests_and_merge(tmp_path, caplog) -> None:
    config = write_config(tmp_path, "random")
    common = ["--config", str(config), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="--stage source"):
        main([*common, "--shard", "0/2"])  # shards must share one source model
    main([*common, "--stage", "source"])
    main([*common, "--stage", "maps"])
    main([*common, "--stage", "train", "--shard", "1/2"])
    main([*common, "--stage", "train", "--shard", "0/2"])
    shard0, shard1 = (read_manifest(p) for p in find_manifests(tmp_path / "out"))
    assert sorted(shard0) == ["baseline/p0/seed0", "random/p70/seed0"]  # cells 0 and 2
    assert sorted(shard1) == ["random/p30/seed0"]
    assert len(merge_manifests(find_manifests(tmp_path / "out"))) == 3
    with caplog.at_level(logging.INFO):
        main([*common, "--stage", "merge"])
    assert "summary of 3/3 cells (complete)" in caplog.text
    curves = (tmp_path / "out" / "roar_curves.csv").read_text().splitlines()
    assert curves[0] == "method,percentile,removed_fraction,acc_mean,acc_std,seeds"
    assert [row.split(",")[:2] for row in curves[1:]] == [["baseline", "0"], ["random", "0"], ["random", "30"],
                                                         ["random", "70"]]


@pytest.mark.slow
def test_grid_under_cpu_ddp_with_two_ranks(tmp_path) -> None:
    """Source, maps (split across ranks) and cells trained with strategy=ddp on 2 CPU processes (gloo)."""
    config = write_config(tmp_path, "random")
    output = tmp_path / "out"
    command = [sys.executable, "-m", "lit_xai", "roar", "--config", str(config), "--output_dir", str(output),
               "--percentiles", "[50]", "--trainer.devices", "2", "--trainer.strategy", "ddp",
               "--map_shard_size", "100"]
    env = {**os.environ, "LIT_XAI_WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (manifest,) = find_manifests(output)
    assert sorted(read_manifest(manifest)) == ["baseline/p0/seed0", "random/p50/seed0"]
    shards = list((output / "maps").rglob("shard-*.pt"))
    assert len(shards) == 13 + 3 + 3  # 1258 train, 270 val, 269 test samples in shards of 100
    summary = json.loads((output / "summary.json").read_text())
    assert summary["missing"] == []
