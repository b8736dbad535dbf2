"""``python -m lit_xai dissect`` end to end on tiny data with two checkpoints (lit_xai.concepts.command)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning
import pytest
import torch

from lit_xai.cli import main
from lit_xai.concepts.command import build_parser, run
from lit_xai.models.classifier import ClassifierModule


def save_checkpoint(module: ClassifierModule, path: Path) -> str:
    """What Lightning's ModelCheckpoint writes that ``load_from_checkpoint`` reads."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, path)
    return str(path)


@pytest.fixture
def checkpoints(tmp_path):
    torch.manual_seed(1)  # not the initial model's seed 0: three different models
    module = ClassifierModule(backbone="digits_cnn", num_classes=6, in_chans=1, task="regions",
                              backbone_kwargs={"pooled_size": 4})
    first = save_checkpoint(module, tmp_path / "epoch0.ckpt")
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return [first, save_checkpoint(module, tmp_path / "epoch1.ckpt")]


def tiny_args(tmp_path, checkpoints, *extra):
    return ["--checkpoints", str(checkpoints), "--data.class_path", "lit_xai.data.SyntheticChestDataModule",
            "--data.init_args.task", "regions", "--data.init_args.num_train", "4", "--data.init_args.num_val", "12",
            "--data.init_args.num_test", "4", "--data.init_args.image_size", "32", "--data.init_args.batch_size", "6",
            "--layers", "[features.2, features.8]", "--semantic.num_images", "2", "--semantic.top", "2",
            "--semantic.steps", "4", "--examples.units", "2", "--examples.images", "2",
            "--output_dir", str(tmp_path / "out"), "--progress", "false", *extra]


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_dissect_end_to_end_and_resume(tmp_path, checkpoints, monkeypatch):
    # W&B's logging code runs on a disabled run here (an offline run costs ~12 s to start on a loaded machine; the
    # slow test below checks the offline run folder)
    monkeypatch.setenv("LIT_XAI_WANDB_MODE", "disabled")
    cfg = build_parser().parse_args(tiny_args(tmp_path, checkpoints))
    written = run(cfg)
    out = tmp_path / "out"
    assert written["names"] == ["initial", "epoch0", "epoch1"]
    units = read(out / "dissection_units.csv")
    # 3 models × (16 + 64 units)
    assert len(units) == 3 * (16 + 64)
    detectors = read(out / "dissection_detectors.csv")
    assert {r["concept"] for r in detectors} >= {"consolidation", "region_A"}  # 5 lesion + 6 region concepts
    assert len({r["concept"] for r in detectors}) == 11
    for name in ("detectors", "evolution", "semantic_attribution"):
        assert (out / f"{name}.png").stat().st_size > 0
    semantic = read(out / "semantic_units.csv")
    assert len(semantic) == 2 * 2 and {r["rank"] for r in semantic} == {"1", "2"}
    caches = sorted((out / "cache").glob("*.pt"))
    assert len(caches) == 3 * 2 * 2  # thresholds + IoU sums per model and layer
    # a rerun reads the cache: the same results without a pass over the data (the command's per-model step)
    from lit_xai.concepts import command

    def no_pass(*args, **kwargs):
        raise AssertionError("a cached layer was recomputed")

    monkeypatch.setattr(command, "layer_thresholds", no_pass)
    monkeypatch.setattr(command, "layer_iou", no_pass)
    names, modules = command.load_models(cfg)
    for name, module in zip(names, modules):
        again = command.dissect_model(module.net, [], cfg, written["results"][name]["features.8"].concepts, 12,
                                      out / "cache", None)
        for layer, result in written["results"][name].items():
            torch.testing.assert_close(again[layer].iou, result.iou)
            torch.testing.assert_close(again[layer].thresholds, result.thresholds)


@pytest.mark.slow
def test_dissect_writes_an_offline_wandb_run(tmp_path, checkpoints, monkeypatch):
    monkeypatch.setenv("LIT_XAI_WANDB_MODE", "offline")
    run(build_parser().parse_args(tiny_args(tmp_path, checkpoints, "--initial", "false")))
    (folder,) = (tmp_path / "out" / "wandb").glob("offline-run-*")
    assert list(folder.glob("run-*.wandb"))


@pytest.mark.parametrize("change, message", [
    (["--layers", "[features.80]"], "unknown layer 'features.80'"),
    (["--semantic.layer", "features.5"], "--semantic.layer 'features.5' must be one of"),
    (["--concept_keys", "[lesion_masks]"], "the data has no 'lesion_masks'"),
    (["--layers", "[fc]"], "Network Dissection needs feature maps"),
])
def test_bad_config_is_one_line_before_any_work(tmp_path, checkpoints, capsys, change, message):
    with pytest.raises(SystemExit) as stop:
        main(["dissect", *tiny_args(tmp_path, checkpoints, "--wandb.enabled", "false"), *change])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lit_xai: error: ") and message in err[0], err
    assert not (tmp_path / "out" / "cache").exists()


def test_missing_checkpoint_is_one_line(tmp_path, checkpoints, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["dissect", *tiny_args(tmp_path, [checkpoints[0], str(tmp_path / "nope.ckpt")])])
    assert stop.value.code == 2
    assert "nope.ckpt: no such file" in capsys.readouterr().err


def test_not_a_classifier_checkpoint_is_one_line(tmp_path, checkpoints, capsys):
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(1)}, plain)
    with pytest.raises(SystemExit) as stop:
        main(["dissect", *tiny_args(tmp_path, [str(plain)])])
    assert stop.value.code == 2
    assert "is not a ClassifierModule checkpoint" in capsys.readouterr().err


def test_regions_target_outside_the_task_is_one_line(tmp_path, checkpoints, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["dissect", *tiny_args(tmp_path, checkpoints, "--semantic.target", "6")])
    assert stop.value.code == 2
    assert "--semantic.target=6: the regions model has 6 explained outputs" in capsys.readouterr().err
