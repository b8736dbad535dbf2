"""The robustness metrics raise exactly when the method's maps on perturbed inputs are non-finite: the full check runs
only on chunks whose ``‖a(x + δ) − a(x)‖`` is non-finite, so it must see every non-finite map and never reject a
finite one whose norm overflows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_xai.metrics.robustness import AvgSensitivity, LocalLipschitzEstimate, MaxSensitivity

METRICS = {
    "max_sensitivity": MaxSensitivity,
    "avg_sensitivity": AvgSensitivity,
    "local_lipschitz": LocalLipschitzEstimate,
}


def _case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    inputs = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    maps = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    return model, inputs, torch.tensor([0, 1, 2]), maps


def _one_bad_entry(value: float, at_call: int):  # noqa: ANN202 (a test method)
    """A method returning ``x`` with ``value`` at one entry of one row, only on its ``at_call``-th call."""
    calls = []

    def method(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        maps = x.clone()
        if len(calls) == at_call:
            maps[-1, 1, 2, 3] = value
        return maps

    return method


@pytest.mark.parametrize("name", list(METRICS))
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("absolute, normalise", [(False, False), (True, False), (False, True), (True, True)])
def test_a_single_non_finite_entry_in_any_chunk_is_an_error(name: str, value: float, absolute: bool,
                                                            normalise: bool) -> None:
    model, inputs, target, maps = _case()
    for at_call in (1, 3):  # 4 samples × 3 images in chunks of 4 rows: 3 calls
        metric = METRICS[name](num_samples=4, absolute=absolute, normalise=normalise, max_batch=4)
        with pytest.raises(ValueError, match="non-finite"):
            metric.update(model, inputs, target, maps, method=_one_bad_entry(value, at_call))


@pytest.mark.parametrize("name", list(METRICS))
def test_finite_maps_whose_change_overflows_are_scored_not_rejected(name: str) -> None:
    """float32 maps of size 1e30: ‖a(x + δ) − a(x)‖ overflows to inf although every entry is finite."""
    model, inputs, target, maps = _case()
    metric = METRICS[name](num_samples=2, normalise=False, max_batch=2)
    scores = metric.image_scores(model, inputs, target, maps, method=lambda m, x, t: -x * 1e30)
    assert torch.isinf(scores).all()
