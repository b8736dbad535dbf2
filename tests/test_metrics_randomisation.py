"""Parameter-randomisation sanity check: similarities vs scipy/skimage, each protocol against a step-by-step
re-implementation of its source, build-once, ranks once, torchmetrics forward, model untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import rankdata, spearmanr
from skimage.metrics import structural_similarity
from torch import nn

import lit_xai.metrics.similarity as similarity
from lit_xai.attribution import build_method
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
    gradient = build_method("gradient")
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
    gradient = build_method("gradient")
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
        method = build_method(name)
        metric = ParameterRandomisation(protocol="normal_all", score="spearman_abs")
        metric.update(model, inputs, target, method(model, inputs, target), method=method)
        scores[name] = float(metric.compute()["score"])
    assert scores["guided_backprop"] > scores["gradient"] + 0.2


def test_explaining_the_prediction_and_max_steps() -> None:
    model = _cnn(2)
    inputs, target = torch.randn(2, 1, 10, 10), torch.tensor([0, 1])
    gradient = build_method("gradient")
    metric = ParameterRandomisation(explain="prediction", max_steps=2)
    metric.update(model, inputs, target, gradient(model, inputs, target), method=gradient)
    assert metric.compute()["curve/spearman_abs"].shape == (2,)
    assert metric.curve_ticks() == ["6", "0"]  # the top layer first, the input layer last
    with pytest.raises(ValueError, match="needs method"):
        metric.update(model, inputs, target, torch.zeros(2, 1, 10, 10))
    with pytest.raises(ValueError, match="protocol"):
        ParameterRandomisation(protocol="shuffle")


def test_average_ranks_equal_scipy_with_ties() -> None:
    """One sort + tie groups gives scipy's average ranks exactly: heavy ties, constant rows, single elements."""
    generator = torch.Generator().manual_seed(0)
    for shape in [(3, 1), (4, 2), (5, 40), (2, 1000)]:
        values = torch.randint(0, 4, shape, generator=generator).float()
        values[0] = 7.0  # a constant row: one tie group
        expected = np.stack([rankdata(row) - 1 for row in values.numpy()])
        np.testing.assert_array_equal(average_ranks(values).numpy(), expected)
    a = torch.randint(0, 6, (3, 500), generator=generator).float()
    b = a + torch.randint(0, 3, (3, 500), generator=generator).float()
    expected = [spearmanr(a[i], b[i])[0] for i in range(3)]
    np.testing.assert_allclose(spearman(a, b).numpy(), expected, rtol=0, atol=1e-6)


def test_tie_free_ranks_and_the_sorted_order_spearman_equal_scipy() -> None:
    """Rows without ties take the positions as ranks; the Spearman of prepared references is computed in sorted order
    (no scatter): both equal scipy, and a constant row still scores 0 (scipy: NaN)."""
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 300, generator=generator), torch.randn(4, 300, generator=generator)
    b[1] = a[1] + 0.1 * b[1]
    np.testing.assert_array_equal(average_ranks(b).numpy(), np.stack([rankdata(row) - 1 for row in b.numpy()]))
    expected = [spearmanr(a[i], b[i])[0] for i in range(4)]
    np.testing.assert_allclose(spearman(a, b).numpy(), expected, rtol=0, atol=1e-6)
    b[2] = 3.0
    assert spearman(a, b)[2] == 0


def test_ssim_box_filter_equals_average_pooling() -> None:
    """The integral-image box mean equals ``avg_pool2d`` (2-D windows and the 1-D ``flat`` layout)."""
    generator = torch.Generator().manual_seed(2)
    maps = torch.randn(3, 2, 17, 23, generator=generator, dtype=torch.float64)
    for window in [(5, 5), (3, 7), (1, 5)]:
        torch.testing.assert_close(similarity._box(maps, window), F.avg_pool2d(maps, window, stride=1),
                                   rtol=0, atol=1e-12)


def _source_init(protocol: str, module: nn.Module) -> None:
    """Each protocol as its source writes it (re-implemented here, independently of the metric)."""
    if protocol in ("normal", "normal_all"):  # seed 000 text (0.01) / PathwayGrad code (0.1): every parameter
        for param in module.parameters(recurse=False):
            param.normal_(0.0, 0.01 if protocol == "normal" else 0.1)
    elif isinstance(module, nn.Conv2d):  # InputIBA sanity_check.weights_init
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0, std=0.05)
        nn.init.zeros_(module.bias)


@pytest.mark.parametrize("protocol", ["normal", "normal_all", "xavier"])
def test_protocols_equal_a_step_by_step_cascade_of_their_source(protocol: str) -> None:
    """Randomise a copy layer by layer from the top (layer i under seed + i), recompute the map, compare with
    scipy / skimage: the metric's three curves are equal (tolerance 1e-5). The old ``normal`` and ``xavier`` kept
    the biases."""
    model = _cnn(3)
    inputs, target = torch.randn(3, 1, 10, 10), torch.tensor([0, 1, 2])
    gradient = build_method("gradient")
    maps = gradient(model, inputs, target)
    metric = ParameterRandomisation(protocol=protocol, seed=11)
    metric.update(model, inputs, target, maps, method=gradient)
    result = metric.compute()

    randomised = copy.deepcopy(model)
    selected = {"xavier": lambda m: isinstance(m, nn.Conv2d | nn.Linear)}.get(
        protocol, lambda m: any(True for _ in m.parameters(recurse=False)))
    layers = [m for m in randomised.modules() if selected(m)]
    before = maps.sum(1) / maps.sum(1).flatten(1).abs().amax(1).view(-1, 1, 1)
    expected = {"spearman": [], "spearman_abs": [], "ssim": []}
    for index in reversed(range(len(layers))):
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(11 + index)
            _source_init(protocol, layers[index])
        new = gradient(randomised, inputs, target).sum(1)
        after = new / new.flatten(1).abs().amax(1).view(-1, 1, 1)
        expected["spearman"].append(np.mean([spearmanr(before[i].flatten(), after[i].flatten())[0] for i in range(3)]))
        expected["spearman_abs"].append(
            np.mean([spearmanr(before[i].abs().flatten(), after[i].abs().flatten())[0] for i in range(3)]))
        expected["ssim"].append(np.mean([structural_similarity(before[i].numpy(), after[i].numpy(), win_size=5,
                                                               data_range=2.0) for i in range(3)]))
    for name, values in expected.items():
        np.testing.assert_allclose(result[f"curve/{name}"].numpy(), values, rtol=0, atol=1e-5, err_msg=name)
    if protocol == "xavier":
        assert len(layers) == 3  # Conv2d, Conv2d, Linear: BatchNorm is not a layer of InputIBA's protocol


def test_original_map_is_ranked_once_per_batch(monkeypatch) -> None:
    """Two ranks per batch for the original map (raw, absolute), two per recorded step for the new map (the old
    code ranked both maps at every step: 4 per step)."""
    calls = []
    original = similarity._sorted_average_ranks  # every ranking goes through it (the new maps' without a scatter)
    monkeypatch.setattr(similarity, "_sorted_average_ranks", lambda values: calls.append(1) or original(values))
    model = _cnn()
    inputs, target = torch.randn(2, 1, 10, 10), torch.tensor([0, 1])
    gradient = build_method("gradient")
    metric = ParameterRandomisation(max_steps=3)
    metric.update(model, inputs, target, gradient(model, inputs, target), method=gradient)
    assert len(calls) == 2 + 2 * 3


def test_explaining_the_randomised_models_prediction() -> None:
    """``explain="prediction"``: f = Wx + b randomised to W'x + b' is explained at argmax(W'x + b'), i.e. the map
    is W'[argmax]; ``label`` keeps the given class."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()
    inputs, target = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    gradient = build_method("gradient")
    maps = gradient(model, inputs, target)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)  # the one layer draws weight, then bias, with seed + 0
        weight, bias = torch.empty(3, 36).normal_(0.0, 0.01), torch.empty(3).normal_(0.0, 0.01)
    prediction = (inputs.flatten(1) @ weight.T + bias).argmax(1)
    assert not torch.equal(prediction, target)
    for explain, explained in (("prediction", prediction), ("label", target)):
        metric = ParameterRandomisation(protocol="normal", seed=7, explain=explain)
        metric.update(model, inputs, target, maps, method=gradient)
        expected = np.mean([spearmanr(maps[i].flatten(), weight[explained[i]])[0] for i in range(4)])
        assert float(metric.compute()["curve/spearman"]) == pytest.approx(expected, abs=1e-5)


def test_torchmetrics_forward_and_tracker(monkeypatch) -> None:
    """``forward`` (reset + update + merge per batch) equals two updates (the curve states of the first batch are
    allocated on the fly); MetricTracker works; after ``reset()`` a further-trained model is evaluated afresh."""
    from torchmetrics.wrappers import MetricTracker

    model = _cnn(4)
    gradient = build_method("gradient")
    batches = [(torch.randn(2, 1, 10, 10), torch.tensor([0, 1])), (torch.randn(3, 1, 10, 10), torch.tensor([2, 1, 0]))]
    updated, forwarded = ParameterRandomisation(max_steps=2), ParameterRandomisation(max_steps=2)
    draws = []
    original_draw = forwarded._draw
    monkeypatch.setattr(forwarded, "_draw", lambda module, seed: draws.append(seed) or original_draw(module, seed))
    for inputs, target in batches:
        maps = gradient(model, inputs, target)
        updated.update(model, inputs, target, maps, method=gradient)
        batch_value = forwarded(model, inputs, target, maps, method=gradient)
        assert batch_value["curve/ssim"].shape == (2,)
    assert len(draws) == 2 * len(randomisable_layers(model, "normal"))  # forward resets: drawn per batch
    for key, value in updated.compute().items():
        torch.testing.assert_close(forwarded.compute()[key], value, rtol=0, atol=1e-6)

    tracker = MetricTracker(ParameterRandomisation(max_steps=2), maximize=False)
    for epoch in range(2):
        tracker.increment()
        if epoch:
            with torch.no_grad():
                model[0].weight.mul_(-1.0)  # "training" between evaluations
        inputs, target = batches[0]
        tracker.update(model, inputs, target, gradient(model, inputs, target), method=gradient)
    fresh = ParameterRandomisation(max_steps=2)
    fresh.update(model, inputs, target, gradient(model, inputs, target), method=gradient)
    torch.testing.assert_close(tracker.compute()["score"], fresh.compute()["score"], rtol=0, atol=1e-6)
    forwarded.reset()  # the next evaluation, of the trained model
    forwarded.update(model, inputs, target, gradient(model, inputs, target), method=gradient)
    torch.testing.assert_close(forwarded.compute()["score"], fresh.compute()["score"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs, name", [({"seeding": "numpy"}, "seeding"), ({"ssim_data_range": 0}, "data_range"),
                                          ({"ssim_layout": "3d"}, "ssim_layout"), ({"explain": "target"}, "explain")])
def test_bad_arguments_name_what_is_wrong(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ParameterRandomisation(**kwargs)


def test_non_finite_maps_of_a_randomised_model_are_an_error_naming_the_method() -> None:
    model = _cnn()
    inputs, target = torch.randn(2, 1, 10, 10), torch.tensor([0, 1])
    gradient = build_method("gradient")

    def vanishing(net: nn.Module, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        maps = gradient(net, x, t)
        return maps if net is model else maps / 0.0  # e.g. a map divided by a score the randomisation zeroed

    metric = ParameterRandomisation(max_steps=2)
    with pytest.raises(ValueError, match="vanishing.*non-finite"):
        metric.update(model, inputs, target, gradient(model, inputs, target), method=vanishing)
