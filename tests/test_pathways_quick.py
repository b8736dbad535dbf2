"""The quick pathway preset (issue 18): configs/pathways_digits.yaml is the full run's first batch, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import lit_xai.pathways.command as command
from lit_xai.models.backbones import build_backbone

REPO = Path(__file__).resolve().parents[1]


def _settings(name: str) -> dict:
    return yaml.safe_load((REPO / "configs" / name).read_text())


def test_quick_preset_differs_from_the_full_one_only_in_the_number_of_images() -> None:
    quick, full = _settings("pathways_digits.yaml"), _settings("pathways_digits_full.yaml")
    quick_samples, full_samples = quick["data"].pop("num_samples"), full["data"].pop("num_samples")
    assert quick.pop("name") != full.pop("name")  # separate run folders
    assert quick == full  # every method setting at the full (protocol) value
    batch = quick["data"]["batch_size"]
    # whole batches of the same loader: the quick run's batches are the full run's first ones (same DGR init draws)
    assert quick_samples % batch == 0 and 0 < quick_samples < full_samples


def test_cutting_num_samples_at_a_batch_boundary_keeps_the_first_batches_pathways(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "digits_cnn.pt"
    torch.save(build_backbone("digits_cnn", num_classes=10, in_chans=1).state_dict(), weights)
    calls: list[dict] = []

    def recording(*args, **kwargs):
        selection = select(*args, **kwargs)
        calls.append({name: [t.clone() for t in path] for name, path in selection.pathways.items()})
        return selection

    select = command.select_pathways
    monkeypatch.setattr(command, "select_pathways", recording)
    base = [
        "--model.weights", str(weights), "--data.batch_size", "2", "--data.image_size", "16",
        "--methods", "[greedy_pruning, dgr_init_r]", "--greedy_step_fraction", "0.05",
        "--routing_steps", "3", "--routing_max_rounds", "1",
    ]
    with pytest.warns(UserWarning, match="kept the prediction"):  # 3 DGR steps, no retry: expected here
        command.main([*base, "--data.num_samples", "4", "--output_dir", str(tmp_path / "full")])
        command.main([*base, "--data.num_samples", "2", "--output_dir", str(tmp_path / "quick")])
    assert len(calls) == 3  # 2 batches, then 1
    full_first, quick = calls[0], calls[2]
    for name in ("greedy_pruning", "dgr_init_r"):
        assert all(torch.equal(a, b) for a, b in zip(full_first[name], quick[name], strict=True)), name
