"""Sensitivity-N: exact answers on a linear model, seeded shared sets, patch variant, chunking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_xai.metrics import SensitivityN
from lit_xai.metrics.sensitivity_n import log_schedule, pearson, random_sets


def _linear_case(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    inputs = torch.randn(5, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 3, 0])
    input_x_gradient = model[1].weight[target].view(5, 3, 8, 8).detach() * inputs
    return model, inputs, target, input_x_gradient


def test_input_x_gradient_of_a_linear_model_has_sensitivity_one_for_every_n() -> None:
    """For f = Wx + b and a zero baseline, f(x) − f(x_S←0) = Σ_{i∈S} w_i x_i exactly: correlation 1."""
    model, inputs, target, maps = _linear_case()
    for patch_size in (1, 3):
        metric = SensitivityN(num_n=6, num_masks=12, patch_size=patch_size)
        metric.update(model, inputs, target, maps)
        result = metric.compute()
        torch.testing.assert_close(result["curve/correlation"], torch.ones_like(result["curve/correlation"]))
        assert float(result["score"]) == pytest.approx(1.0)


def test_a_sign_flipped_map_scores_minus_one_and_random_maps_near_zero() -> None:
    model, inputs, target, maps = _linear_case()
    flipped = SensitivityN(num_n=5, num_masks=10)
    flipped.update(model, inputs, target, -maps)
    assert float(flipped.compute()["score"]) == pytest.approx(-1.0)
    noise = SensitivityN(num_n=5, num_masks=50)
    noise.update(model, inputs, target, torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3)))
    assert abs(float(noise.compute()["score"])) < 0.2


def test_sets_are_seeded_exact_size_and_shared_by_all_images() -> None:
    sizes = torch.tensor([1, 4, 15])
    sets = random_sets(16, sizes, num_masks=7, seed=5)
    assert sets.shape == (3, 7, 16)
    assert sets.sum(-1).tolist() == [[1] * 7, [4] * 7, [15] * 7]
    assert torch.equal(sets, random_sets(16, sizes, 7, seed=5))
    assert not torch.equal(sets, random_sets(16, sizes, 7, seed=6))


def test_default_schedule_is_inputiba_truncated_logspace_with_200_sets() -> None:
    """InputIBA code: ``np.unique(np.logspace(0, 4.5, 45, dtype=int))`` at 224² (truncation, 42 sizes); the
    dissertation (§4.4.1): "We randomly sample 200 index sets for each n". Before: rounded sizes (24 of 42 shared)
    and 100 sets."""
    import numpy as np

    metric = SensitivityN()
    assert (metric.num_masks, metric.num_n, metric.n_rounding) == (200, 45, "truncate")
    inputiba = np.unique(np.logspace(0, 4.5, 45, dtype=int))
    ours = log_schedule(224 * 224, metric.num_n, metric.max_fraction, metric.n_rounding)
    assert ours.tolist() == inputiba.tolist() and len(inputiba) == 42
    rounded = log_schedule(224 * 224, 45, metric.max_fraction, rounding="round")
    assert rounded.tolist() == np.unique(np.round(np.logspace(0, 4.5, 45)).astype(int)).tolist()
    assert len(set(rounded.tolist()) & set(inputiba.tolist())) < 42
    with pytest.raises(ValueError, match="n_rounding"):
        SensitivityN(n_rounding="ceil")


def test_patch_cells_and_sums_are_consistent() -> None:
    """A 2-cell schedule on 4×4 images with 2×2 patches: the drop equals the removed patch's contribution."""
    model, inputs, target, maps = _linear_case(1)
    metric = SensitivityN(n_values=[1, 2], num_masks=4, patch_size=4, max_batch=3)
    metric.update(model, inputs, target, maps)
    torch.testing.assert_close(metric.compute()["curve/correlation"], torch.ones(2))
    with pytest.raises(ValueError, match="n_values must lie in"):
        SensitivityN(n_values=[4], patch_size=4).update(model, inputs, target, maps)


def test_max_batch_does_not_change_the_result() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 4)).eval()
    inputs, maps, target = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2])
    values = []
    for chunk in (5, 1000, None):
        metric = SensitivityN(num_n=4, num_masks=6, max_batch=chunk)
        metric.update(model, inputs, target, maps)
        values.append(metric.compute()["curve/correlation"])
    torch.testing.assert_close(values[0], values[1])
    torch.testing.assert_close(values[0], values[2])
    with pytest.raises(ValueError, match="max_batch"):
        SensitivityN(max_batch=0)


def test_pearson_matches_numpy_and_is_zero_for_constant_rows() -> None:
    import numpy as np

    a, b = torch.randn(3, 20, dtype=torch.float64), torch.randn(3, 20, dtype=torch.float64)
    expected = [np.corrcoef(a[i].numpy(), b[i].numpy())[0, 1] for i in range(3)]
    np.testing.assert_allclose(pearson(a, b).numpy(), expected, rtol=1e-10)
    assert float(pearson(torch.ones(1, 5), torch.randn(1, 5))[0]) == 0.0
