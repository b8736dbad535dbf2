"""Metrics that evaluate many rows chunk them like the methods (issue 18): ``max_batch`` rows per forward (per method
call for the metrics that re-run the method: randomisation, robustness, Random Logit), ``None`` sized by the shared
memory budget (:func:`lit_xai.attribution.batching.rows_per_chunk`), and any chunking gives the same scores."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import lit_xai.attribution.batching as batching
from lit_xai.attribution.batching import activation_bytes_per_row
from lit_xai.metrics import (
    IROF,
    ROAD,
    AvgSensitivity,
    Deletion,
    FaithfulnessCorrelation,
    Infidelity,
    Insertion,
    LocalLipschitzEstimate,
    MaxSensitivity,
    Monotonicity,
    MonotonicityCorrelation,
    ParameterRandomisation,
    PixelPerturbation,
    RandomLogit,
    SensitivityN,
)


class Recorder(nn.Module):
    """A float64 CNN that records the rows of every forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
        self.net.double().eval()
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.shape[0])
        return self.net(x)


def _input_x_gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = inputs.detach().clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return (x * gradient).detach()


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    inputs = torch.rand(5, 3, 8, 8, generator=generator, dtype=torch.float64)
    maps = torch.randn(5, 3, 8, 8, generator=generator, dtype=torch.float64)
    return inputs, torch.tensor([0, 1, 2, 0, 1]), maps


#: every metric that evaluates many rows, small settings: name → factory(max_batch)
METRICS: dict[str, Callable[[int | None], nn.Module]] = {
    "morf": lambda b: PixelPerturbation("morf", num_steps=6, max_batch=b),
    "deletion": lambda b: Deletion(baseline="zero", pixels_per_step=8, max_batch=b),
    "insertion": lambda b: Insertion(pixels_per_step=8, blur_kernel_size=5, blur_sigma=1.0, max_batch=b),
    "sensitivity_n": lambda b: SensitivityN(num_n=4, num_masks=6, max_batch=b),
    "faithfulness_correlation": lambda b: FaithfulnessCorrelation(num_runs=6, subset_size=20, max_batch=b),
    "monotonicity": lambda b: Monotonicity(features_in_step=16, max_batch=b),
    "monotonicity_correlation": lambda b: MonotonicityCorrelation(features_in_step=32, num_samples=3, max_batch=b),
    "infidelity": lambda b: Infidelity(patch_sizes=(4,), max_batch=b),
    "road": lambda b: ROAD(percentages=(10, 50, 90), max_batch=b),
    "irof": lambda b: IROF(n_segments=6, max_batch=b),
    "randomisation": lambda b: ParameterRandomisation(max_batch=b),
    "max_sensitivity": lambda b: MaxSensitivity(num_samples=3, max_batch=b),
    "avg_sensitivity": lambda b: AvgSensitivity(num_samples=3, max_batch=b),
    "local_lipschitz": lambda b: LocalLipschitzEstimate(num_samples=3, max_batch=b),
    "random_logit": lambda b: RandomLogit(max_batch=b),
}


def _results(metric: nn.Module, model: Recorder) -> dict[str, torch.Tensor]:
    """The metric's results on :func:`_case`; the method (randomisation, robustness, Random Logit) records its
    images in ``model.rows``."""
    inputs, target, maps = _case()

    def method(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        model.rows.append(x.shape[0])
        return _input_x_gradient(net, x, t)

    metric.update(model, inputs, target, maps, method=method)
    return metric.results()


@pytest.mark.parametrize("name", list(METRICS))
def test_any_max_batch_gives_the_same_scores_and_bounds_the_rows(name: str) -> None:
    """1 row, 4 rows, the budget rule and one chunk for everything: equal scores and curves; no forward of the
    metric exceeds ``max_batch`` rows (the metrics that re-run the method: images per method call)."""
    reference = None
    for max_batch in (1, 4, None, 100_000):
        model = Recorder()
        results = _results(METRICS[name](max_batch), model)
        if max_batch in (1, 4):
            chunked = [rows for rows in model.rows if rows != 5]  # the 5-image clean forward is not chunked
            assert chunked and max(chunked) <= max_batch
        if reference is None:
            reference = results
            continue
        assert reference.keys() == results.keys()
        for key, value in results.items():
            torch.testing.assert_close(value, reference[key], rtol=1e-6, atol=1e-7, msg=f"{name} {key} {max_batch}")


@pytest.mark.parametrize("name", ["deletion", "sensitivity_n", "faithfulness_correlation", "road", "randomisation",
                                  "max_sensitivity", "random_logit"])
def test_none_uses_the_methods_memory_budget_rule(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``max_batch=None`` a chunk holds the rows :func:`~lit_xai.attribution.batching.rows_per_chunk` gives for
    the batch: with a budget of one row's activations (fewer rows than the batch's 5 images) no metric forward (the
    metrics that re-run the method: no method call) sees more rows than the rule, and the largest chunk has them."""
    model = Recorder()
    inputs, _, _ = _case()
    per_row = activation_bytes_per_row(model, inputs)
    monkeypatch.setattr(batching, "CPU_BUDGET_BYTES", per_row)
    expected = batching.rows_per_chunk(model, inputs)
    assert expected < inputs.shape[0]  # told apart from the unchunked clean forward of the 5 images
    model.rows.clear()
    _results(METRICS[name](None), model)
    chunked = [rows for rows in model.rows if rows != 5]  # the 5-image clean forward is not chunked
    assert chunked and max(chunked) == expected


@pytest.mark.parametrize("name", list(METRICS))
@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_max_batch_is_a_clear_error(name: str, bad: object) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        METRICS[name](bad)  # type: ignore[arg-type]
