"""Parameter-randomisation sanity check: similarities vs scipy/skimage, protocols, build-once, model untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lit_xai.attribution import build
from lit_xai.metrics import ParameterRandomisation
from lit_xai.metrics.randomisation import randomisable_layers
from lit_xai.metrics.similarity import average_ranks, spearman, ssim


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 3),
    ).eval()


def test_spearman_and_ssim_match_scipy_and_skimage() -> None:
    from scipy.stats import rankdata, spearmanr
    from skimage.metrics import structural_similarity

    a = torch.randn(3, 1, 9, 11)
    b = a + 0.7 * torch.randn(3, 1, 9, 11)
    b[0] = b[0].clamp_min(0)  # ties
    np.testing.assert_allclose(average_ranks(b.flatten(1))[0].numpy(), rankdata(b[0].flatten().numpy()) - 1)
    expected = [spearmanr(a[i].flatten(), b[i].flatten())[0] for i in range(3)]
    np.testing.assert_allclose(spearman(a.flatten(1), b.flatten(1)).numpy(), expected, rtol=1e-5)
    expected = [structural_similarity(a[i, 0].numpy(), b[i, 0].numpy(), win_size=5, data_range=2.0) for i in range(3)]
    np.testing.assert_allclose(ssim(a, b, 5, 2.0).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_linear_model_gradient_after_randomisation_is_the_new_weight_row() -> None:
    """f = Wx: the gradient is W[t]; after randomising the only layer it is the randomised W'[t] (known draw)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3, bias=False)).eval()
    inputs, target = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    gradient = build("gradient")
    maps = gradient(model, inputs, target)
    metric = ParameterRandomisation(protocol="normal", seed=7)
    metric.update(model, inputs, target, maps, method=gradient)
    result = metric.compute()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)  # layer 0 draws with seed + 0
        randomised = torch.empty(3, 36).normal_(0.0, 0.01)
    new_maps = randomised[target].view(4, 1, 6, 6)
    from scipy.stats import spearmanr

    expected = np.mean([spearmanr(maps[i].flatten(), new_maps[i].flatten())[0] for i in range(4)])
    assert float(result["curve/spearman"]) == pytest.approx(expected, abs=1e-5)  # torchmetrics squeezes 1-element
    assert metric.curve_ticks() == ["1"]


@pytest.mark.parametrize("protocol", ["normal", "normal_all", "xavier", "reset"])
def test_protocols_leave_the_model_untouched_and_build_each_layer_once(protocol: str, monkeypatch) -> None:
    model = _cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradient = build("gradient")
    inputs, target = torch.randn(3, 1, 10, 10), torch.tensor([0, 1, 2])
    maps = gradient(model, inputs, target)
    metric = ParameterRandomisation(protocol=protocol)
    draws = []
    original_draw = metric._draw
    monkeypatch.setattr(metric, "_draw", lambda module, seed: draws.append(seed) or original_draw(module, seed))
    with torch.inference_mode():  # as in Trainer.test
        metric.update(model, inputs, target, maps, method=gradient)
        metric.update(model, inputs, target, maps, method=gradient)
    layers = randomisable_layers(model, protocol)
    assert len(draws) == len(layers)  # built once, shared by both batches
    expected_layers = {"normal": 4, "normal_all": 4, "xavier": 3, "reset": 4}[protocol]
    assert len(layers) == expected_layers
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    result = metric.compute()
    assert result["curve/ssim"].shape == (expected_layers,) and float(result["count"]) == 6
    assert float(result["curve/spearman"][-1]) < 0.9  # everything randomised: the map changed


def test_guided_backprop_stays_similar_while_gradient_decorrelates() -> None:
    """Adebayo et al.'s finding, on a small random CNN: GBP maps barely change when the weights are randomised."""
    model = _cnn(1)
    inputs, target = torch.randn(6, 1, 10, 10), torch.tensor([0, 1, 2, 0, 1, 2])
    scores = {}
    for name in ("gradient", "guided_backprop"):
        method = build(name)
        metric = ParameterRandomisation(protocol="normal_all", score="spearman_abs")
        metric.update(model, inputs, target, method(model, inputs, target), method=method)
        scores[name] = float(metric.compute()["score"])
    assert scores["guided_backprop"] > scores["gradient"] + 0.2


def test_explaining_the_prediction_and_max_steps() -> None:
    model = _cnn(2)
    inputs, target = torch.randn(2, 1, 10, 10), torch.tensor([0, 1])
    gradient = build("gradient")
    metric = ParameterRandomisation(explain="prediction", max_steps=2)
    metric.update(model, inputs, target, gradient(model, inputs, target), method=gradient)
    assert metric.compute()["curve/spearman_abs"].shape == (2,)
    assert metric.curve_ticks() == ["6", "0"]  # the top layer first, the input layer last
    with pytest.raises(ValueError, match="needs method"):
        metric.update(model, inputs, target, torch.zeros(2, 1, 10, 10))
    with pytest.raises(ValueError, match="protocol"):
        ParameterRandomisation(protocol="shuffle")
