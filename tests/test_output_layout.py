"""Issue 20 item 8: one output layout for every command, and caches as W&B artifacts (type ``cache``).

Every command writes into its run folder ``runs/<command>/<name>/`` (README "Where outputs go"): the W&B run
folders under ``wandb/``, checkpoints, tables, figures and caches. Before: ``runs/lit_xai/<id>/…`` + ``runs/wandb/``
for the trainer commands, ``runs/roar``, ``runs/pathways`` (its W&B run elsewhere), ``outputs/axioms``,
``runs/report``. Each test runs the command in a fresh working directory with only ``--name`` (no output path), so
the default layout is what is checked, and reads the offline run's artifact manifest back from its run file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import wandb
import wandb_reader
from test_axioms import tiny_command_args
from test_roar_pipeline import write_config

from lit_xai.cli import main as cli_main
from lit_xai.loggers import cache_files, run_folder
from lit_xai.models.backbones import build_backbone
from lit_xai.models.classifier import ConfigurationError

#: a tiny trainer config: the best checkpoint only, no attribution callback (the layout is under test, not scores)
TINY_TRAINER = """
trainer:
  max_epochs: 1
  limit_train_batches: 2
  limit_val_batches: 1
  limit_test_batches: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/acc, mode: max, filename: best}
data:
  class_path: lit_xai.data.DigitsDataModule
  init_args: {batch_size: 16, image_size: 8}
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield tmp_path
    wandb.finish()


def only_child(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, (pattern, found, sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None)
    return found[0]


def wandb_runs(run: Path) -> list[Path]:
    """The W&B run folders of a run folder: all under ``wandb/``, nowhere else."""
    everywhere = sorted(p for p in run.rglob("offline-run-*") if p.is_dir())
    assert everywhere and all(p.parent == run / "wandb" for p in everywhere), everywhere
    return everywhere


def cache_manifests(run_dir: Path) -> dict[str, list[str]]:
    """Artifact name → the file paths its manifest lists, for the ``cache`` artifacts of an offline run."""
    records = wandb_reader.finished_records(run_dir)
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    return {a.name: sorted(entry.path for entry in a.manifest.contents) for a in artifacts if a.type == "cache"}


def relative_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in cache_files(folder))


def test_run_folder_rule() -> None:
    assert run_folder("roar", "digits") == Path("runs/roar/digits")
    assert run_folder("fit", None) == Path("runs/fit/default")
    assert run_folder("report", "x", "elsewhere") == Path("elsewhere/report/x")
    for bad in ("a/b", "..", "."):
        with pytest.raises(ConfigurationError, match="one folder name"):
            run_folder("fit", bad)


def test_trainer_commands_write_into_runs_command_name(in_tmp: Path) -> None:
    """fit: ``runs/fit/<name>/wandb/offline-run-*-<id>`` and ``runs/fit/<name>/<id>/checkpoints/best.ckpt`` (the
    README's path); test on that checkpoint: ``runs/test/<name>/wandb/``. Nothing outside ``runs/<command>/``."""
    (in_tmp / "tiny.yaml").write_text(TINY_TRAINER)
    common = ["--config", str(in_tmp / "tiny.yaml"), "--trainer.logger.init_args.name", "tiny"]
    cli_main(["fit", *common, "--test_after_fit", "false"])
    wandb.finish()
    fit = in_tmp / "runs" / "fit" / "tiny"
    (fit_run,) = wandb_runs(fit)
    run_id = fit_run.name.rsplit("-", 1)[1]
    checkpoint = fit / run_id / "checkpoints" / "best.ckpt"
    assert checkpoint.is_file(), sorted(str(p) for p in fit.rglob("*.ckpt"))
    assert (fit_run / "files" / "lit_xai_config.yaml").is_file()

    cli_main(["test", *common, "--ckpt_path", str(checkpoint)])
    wandb.finish()
    (test_run,) = wandb_runs(in_tmp / "runs" / "test" / "tiny")
    assert "test/acc" in wandb_reader.logged_keys(test_run)
    assert sorted(p.name for p in (in_tmp / "runs").iterdir()) == ["fit", "test"]
    assert sorted(p.name for p in in_tmp.iterdir()) == ["runs", "tiny.yaml"]


def test_roar_writes_into_its_run_folder_and_logs_the_map_cache(in_tmp: Path) -> None:
    config = write_config(in_tmp, "gradient")
    config.write_text(config.read_text().replace("wandb: false", "wandb: true"))
    from lit_xai.roar.command import main

    main(["--config", str(config), "--name", "tiny", "--stage", "maps"])
    run = in_tmp / "runs" / "roar" / "tiny"
    assert (run / "source" / "weights.pt").is_file()
    shards = sorted(run.glob("maps/*/*/*/*/shard-*.pt"))
    assert len(shards) == 2 * (4 + 1 + 1), shards  # (gradient, random) × shards of ≤ 400: 4 train, 1 val, 1 test
    runs = wandb_runs(run)  # the source model's training run and the caches run
    assert len(runs) == 2
    (cache_dir,) = {shard.parents[2] for shard in shards}  # maps/<model fingerprint>/<data key>
    manifests = {name: files for r in runs for name, files in cache_manifests(r).items()}
    key = f"{cache_dir.parent.name}-{cache_dir.name}"
    assert manifests == {f"roar-maps-{key}": relative_files(cache_dir)}
    assert sorted(p.name for p in in_tmp.iterdir()) == ["roar_tiny.yaml", "runs"]


def test_roar_log_caches_false_logs_no_artifact(in_tmp: Path) -> None:
    config = write_config(in_tmp, "random")
    config.write_text(config.read_text().replace("wandb: false", "wandb: true"))
    from lit_xai.roar.command import main

    main(["--config", str(config), "--name", "off", "--stage", "maps", "--log_caches", "false"])
    runs = wandb_runs(in_tmp / "runs" / "roar" / "off")
    assert len(runs) == 1 and cache_manifests(runs[0]) == {}  # only the source model's run


def test_axioms_writes_into_its_run_folder_and_logs_scene_stores_and_statistics(in_tmp: Path) -> None:
    from lit_xai.axioms.command import main

    weights = in_tmp / "net.pt"
    torch.save(build_backbone("digits_cnn", num_classes=4, in_chans=1).state_dict(), weights)
    main([
        *tiny_command_args(weights), "--name", "tiny", "--scenarios", "[null_feature]", "--num_scenes", "2",
        "--chunk_size", "2", "--methods", "[iba, random]", "--progress", "false", "--threads", "1",
        "--method_kwargs", '{"iba": {"steps": 2, "noise_draws": 2, "stats_samples": 48}}',
        "--data.class_path", "lit_xai.data.DigitsDataModule",
        "--data.init_args", '{"image_size": 16, "batch_size": 16, "mean": [0.5], "std": [0.5]}',
    ])
    run = in_tmp / "runs" / "axioms" / "tiny"
    assert (run / "axioms_table.csv").is_file() and (run / "generation.csv").is_file()
    store = only_child(run / "scenes", "null_feature-*")
    (wandb_run,) = wandb_runs(run)
    manifests = cache_manifests(wandb_run)
    iba = [name for name in manifests if name.startswith("iba-stats-")]
    assert len(iba) == 1 and manifests[iba[0]] == relative_files(run / "iba_stats") != []
    assert manifests[f"axioms-scenes-{store.name}"] == relative_files(store) != []
    assert len(manifests) == 2
    assert sorted(p.name for p in in_tmp.iterdir()) == ["net.pt", "runs"]


def test_pathways_writes_into_its_run_folder(in_tmp: Path) -> None:
    from lit_xai.pathways.command import main

    weights = in_tmp / "net.pt"
    torch.save(build_backbone("digits_cnn", num_classes=10, in_chans=1).state_dict(), weights)
    main(["--model.weights", str(weights), "--name", "tiny", "--data.batch_size", "2", "--data.image_size", "16",
          "--data.num_samples", "2", "--methods", "[neuron_mct]", "--wandb", "true"])
    run = in_tmp / "runs" / "pathways" / "tiny"
    assert (run / "summary.json").is_file() and (run / "dead_share.png").is_file()
    (wandb_run,) = wandb_runs(run)
    assert any(key.startswith("pathways/dead_share/") for key in wandb_reader.logged_keys(wandb_run))
    assert sorted(p.name for p in in_tmp.iterdir()) == ["net.pt", "runs"]


def test_report_writes_into_its_run_folder_and_logs_its_cells(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """Also the resume rule: a rerun with the same name finds its cells (nothing computed)."""
    weights = in_tmp / "net.pt"
    torch.save(build_backbone("digits_cnn", num_classes=10, in_chans=1).state_dict(), weights)
    args = [
        "report", "--model.weights", str(weights), "--name", "tiny", "--num_images", "4", "--chunk_size", "4",
        "--methods", "[{name: gradient}]", "--families", "[perturbation]", "--family_metrics",
        "{perturbation: [deletion]}", "--metric_kwargs", "{deletion: {num_steps: 4}}", "--num_examples", "1",
        "--progress", "false",
    ]
    cli_main(args)
    assert "cached 0, to compute 2" in capsys.readouterr().out
    cli_main([*args, "--wandb.enabled", "false"])
    assert "cached 2, to compute 0" in capsys.readouterr().out
    run = in_tmp / "runs" / "report" / "tiny"
    assert (run / "report.csv").is_file()
    (wandb_run,) = wandb_runs(run)
    manifests = cache_manifests(wandb_run)
    (name,) = manifests
    assert name.startswith("report-cells-") and manifests[name] == relative_files(run / "cells")
    assert len(manifests[name]) == 2  # (gradient, random) × deletion × one chunk
    assert sorted(p.name for p in in_tmp.iterdir()) == ["net.pt", "runs"]


@pytest.mark.parametrize("command", [["fit", "--trainer.logger.init_args.name"],
                                     ["roar", "--stage", "merge", "--name"]])
def test_a_name_that_is_not_one_folder_is_one_line(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                   command: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main([*command, "../elsewhere"])
    assert exit_.value.code == 2
    assert "lit_xai: error: run name '../elsewhere' must be one folder name" in capsys.readouterr().err
    assert not (in_tmp / "elsewhere").exists()
