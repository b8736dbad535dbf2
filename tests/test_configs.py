"""Every YAML in configs/ parses through its command's parser and builds its methods and metrics, without running.

A config belongs to the command its header runs it with (``python -m lit_xai <command> … configs/<file>``), else to
the command whose top-level key it has (``scenarios``: axioms); the rest are LightningCLI trainer configs. Project
commands are parsed by their registered module's ``build_parser`` (``lit_xai.cli.COMMANDS``). Quick presets and their
``*_full.yaml`` protocol counterparts are checked alike, and each ``*_full.yaml`` must state its expected GPU time.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import wandb
import yaml

from lit_xai.attribution import build_method
from lit_xai.callbacks import AttributionEvaluation
from lit_xai.cli import COMMANDS, TRAINER_SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
COMMAND_KEYS = {"families": "report", "percentiles": "roar", "scenarios": "axioms", "routing_steps": "pathways"}


def command_of(path: Path, config: dict[str, Any]) -> str:
    """The command the config's header runs it with, else the one its top-level keys belong to, else ``trainer``."""
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    named = re.search(rf"python -m lit_xai (\w+) [^\n]*configs/{re.escape(path.name)}", header)
    if named:
        return "trainer" if named.group(1) in TRAINER_SUBCOMMANDS else named.group(1)
    commands = {command for key, command in COMMAND_KEYS.items() if key in config}
    assert len(commands) <= 1, f"keys of several commands: {commands}"
    return commands.pop() if commands else "trainer"


def test_configs_exist():
    assert len(CONFIGS) >= 10, CONFIGS


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield tmp_path
    wandb.finish()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_builds(in_tmp, capsys, path):
    config = yaml.safe_load(path.read_text())
    command = command_of(path, config)
    if command == "trainer":
        with pytest.raises(SystemExit) as exit_:
            main(["fit", "--config", str(path), "--print_config"])
        assert exit_.value.code == 0, capsys.readouterr().err[-2000:]
        for callback in config.get("trainer", {}).get("callbacks", []):
            if callback["class_path"] == "lit_xai.callbacks.AttributionEvaluation":
                AttributionEvaluation(**callback["init_args"])  # methods and metrics with their kwargs
        return
    if command == "report":
        from lit_xai.report.config import build_parser, validate

        weights = in_tmp / "weights.pt"  # validate() checks that the file exists; nothing loads it
        weights.touch()
        parser = build_parser()
        args = ["--config", str(path), "--model.weights", str(weights)]
        if config["data"]["class_path"].endswith("CIFAR10DataModule"):  # the pickle layout's files, empty
            from lit_xai.data.cifar10 import TEST_FILES, TRAIN_FILES

            (in_tmp / "cifar").mkdir()
            for name in TRAIN_FILES + TEST_FILES:
                (in_tmp / "cifar" / name).touch()
            args += ["--data.init_args.root", str(in_tmp / "cifar")]
        cfg = parser.parse_args(args)
        validate(parser.instantiate_classes(cfg))  # methods and metrics built with their kwargs
        return
    assert command in COMMANDS, f"{path.name}: unknown command {command!r}"
    cfg = importlib.import_module(COMMANDS[command][0]).build_parser().parse_args(["--config", str(path)])
    if command == "roar":
        for method in cfg.methods:
            build_method(method.name, **method.kwargs)


FULL = [p for p in CONFIGS if p.stem.endswith("_full")]


@pytest.mark.parametrize("path", FULL, ids=lambda p: p.name)
def test_full_presets_state_their_gpu_time(path):
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert "GPU" in header and ("min" in header or " h" in header), f"{path.name}: no expected GPU time in its header"


QUICK_TO_FULL = {"digits_eval.yaml": "digits_eval_full.yaml", "synthetic_eval.yaml": "synthetic_eval_full.yaml",
                 "report_digits.yaml": "report_digits_full.yaml",
                 "report_synthetic.yaml": "report_synthetic_full.yaml", "roar_digits.yaml": "roar_digits_full.yaml",
                 "pathways_digits.yaml": "pathways_digits_full.yaml", "axioms_digits.yaml": "axioms_digits_full.yaml"}


@pytest.mark.parametrize(("quick", "full"), QUICK_TO_FULL.items())
def test_quick_presets_have_a_full_counterpart_that_says_so(quick, full):
    text = (REPO / "configs" / quick).read_text()
    assert (REPO / "configs" / full).exists(), f"{full} missing"
    assert full in text, f"{quick} does not point to {full}"
