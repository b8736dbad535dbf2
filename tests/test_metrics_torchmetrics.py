"""lit_xai metrics follow torchmetrics' conventions: ``forward``, ``MetricTracker``, ``MetricCollection``, ``plot``,
pickling, and no matplotlib backend switching at import (issue 20 item 6)."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn
from torchmetrics import MetricCollection, MetricTracker

from lit_xai.metrics import available_metrics, build_metric

SMALL = {
    "morf": {"num_steps": 4},
    "lerf": {"num_steps": 4},
    "deletion": {"num_steps": 4, "data_mean": [0.5] * 3, "data_std": [0.25] * 3},
    "insertion": {"num_steps": 4, "blur_kernel_size": 3, "blur_sigma": 1.0},
    "sensitivity_n": {"num_n": 3, "num_masks": 4},
    "randomisation": {"max_steps": 2},
    "ehr": {},
    "pointing_game": {},
    "sparseness": {},
    "complexity": {},
    "faithfulness_correlation": {"num_runs": 4, "subset_size": 16},
    "monotonicity": {"features_in_step": 16},
    "monotonicity_correlation": {"features_in_step": 16, "num_samples": 2},
    "infidelity": {},
    "road": {"percentages": (10, 50, 90)},
    "irof": {"n_segments": 4},
    "max_sensitivity": {"num_samples": 2},
    "avg_sensitivity": {"num_samples": 2},
    "local_lipschitz": {"num_samples": 2},
    "random_logit": {},
    "localisation_iou": {},
    "severity_correlation": {},
}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)).eval()


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(3, 3, 8, 8, generator=generator)
    maps = torch.rand(3, 3, 8, 8, generator=generator)  # in [0, 1]: EHR's absolute scale
    masks = torch.zeros(3, 1, 8, 8)
    masks[:, :, 1:4, 2:5] = 1
    extras = {"masks": masks, "boxes": torch.tensor([[2, 1, 5, 4]] * 3), "method": _gradient}
    return inputs, torch.tensor([0, 1, 2]), maps, extras


def _gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        model(x).gather(1, target[:, None]).sum().backward()
    return x.grad.abs()


def test_every_registered_metric_is_covered() -> None:
    assert sorted(SMALL) == available_metrics()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_returns_the_batch_value_and_accumulates(name: str) -> None:
    """Before: ``metric(...)`` failed for 6 of 8 metrics (states created empty, resized in ``prepare``)."""
    model = _net()
    forwarded, updated = build_metric(name, **SMALL[name]), build_metric(name, **SMALL[name])
    first = _batch(0)
    batch_value = forwarded(model, *first[:3], **first[3])
    alone = build_metric(name, **SMALL[name])
    alone.update(model, *first[:3], **first[3])
    torch.testing.assert_close(batch_value["score"], alone.compute()["score"])
    second = _batch(1)
    forwarded(model, *second[:3], **second[3])
    for inputs, target, maps, extras in (first, second):
        updated.update(model, inputs, target, maps, **extras)
    torch.testing.assert_close(forwarded.compute()["score"], updated.compute()["score"])
    assert isinstance(forwarded.higher_is_better, bool)


def test_metric_tracker_over_two_increments_finds_the_best_epoch() -> None:
    """``result="score"`` makes ``compute()`` the scalar MetricTracker needs; ``results()`` still has the curves."""
    model = _net()
    tracker = MetricTracker(build_metric("deletion", result="score", **SMALL["deletion"]))
    assert tracker.maximize is False  # from higher_is_better
    scores = []
    for seed in (0, 1):
        tracker.increment()
        inputs, target, maps, extras = _batch(seed)
        tracker.update(model, inputs, target, maps, **extras)
        scores.append(float(tracker.compute()))
        assert "curve/probability" in tracker[-1].results()
    torch.testing.assert_close(tracker.compute_all(), torch.tensor(scores))
    best, step = tracker.best_metric(return_step=True)
    assert (best, step) == (pytest.approx(min(scores)), scores.index(min(scores)))


def test_metric_collection_updates_and_computes_each_metric() -> None:
    model = _net()
    collection = MetricCollection(
        {name: build_metric(name, **SMALL[name]) for name in ("deletion", "insertion", "pointing_game")}
    )
    inputs, target, maps, extras = _batch(0)
    batch_values = collection(model, inputs, target, maps, **extras)
    collection.update(model, *_batch(1)[:3], **_batch(1)[3])
    result = collection.compute()
    assert {"deletion_score", "insertion_score", "pointing_game_score"} <= set(result) | set(batch_values)
    reference = build_metric("insertion", **SMALL["insertion"])
    for seed in (0, 1):
        reference.update(model, *_batch(seed)[:3], **_batch(seed)[3])
    torch.testing.assert_close(result["insertion_score"], reference.compute()["score"])


def test_plot_draws_outside_pyplot_and_the_metric_pickles() -> None:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    model = _net()
    metric = build_metric("morf", **SMALL["morf"])
    metric.update(model, *_batch(0)[:3])
    open_before = plt.get_fignums()
    fig, ax = metric.plot()
    assert isinstance(fig, Figure) and plt.get_fignums() == open_before and ax.get_lines()
    clone = pickle.loads(pickle.dumps(metric))
    torch.testing.assert_close(clone.compute()["score"], metric.compute()["score"])
    copied = copy.deepcopy(metric)
    copied.update(model, *_batch(1)[:3])
    assert float(copied.results()["count"]) == 6 and float(metric.results()["count"]) == 3


def test_importing_the_metrics_leaves_the_matplotlib_backend_alone() -> None:
    """Before: ``import lit_xai.metrics`` called ``matplotlib.use("Agg")`` (inline notebook figures broke)."""
    code = (
        "import matplotlib; before = matplotlib.get_backend(); import lit_xai.metrics; "
        "print(before, matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"MPLBACKEND": "svg", "PATH": "", "OMP_NUM_THREADS": "1"})
    before, after = out.stdout.split()
    assert before == after == "svg"
