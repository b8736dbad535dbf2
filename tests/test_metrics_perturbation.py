"""Pixel perturbation (MoRF/LeRF) and Insertion/Deletion: hand-computed linear cases, invariances, Quantus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lit_xai.attribution.batching import rows_per_chunk
from lit_xai.metrics import Deletion, Insertion, PixelPerturbation, build_metric
from lit_xai.metrics.baselines import baseline_images, gaussian_blur
from lit_xai.metrics.perturbation import pixel_ranks, step_counts


class PixelLinear(nn.Module):
    """logit_0 = Σ_p w_p · x_p (channels summed), logit_1 = 0: the answer of every perturbation is known."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = nn.Parameter(weights.flatten().clone())
        self.calls = 0
        self.largest_batch = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.largest_batch = max(self.largest_batch, x.shape[0])
        logit = (x.sum(1).flatten(1) * self.weights).sum(1)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def _case() -> tuple[PixelLinear, torch.Tensor, torch.Tensor, torch.Tensor]:
    weights = torch.tensor([[4.0, 3.0], [2.0, 1.0]])  # pixel contributions with x = 1
    model = PixelLinear(weights)
    inputs = torch.ones(1, 1, 2, 2)
    return model, inputs, torch.tensor([0]), weights.view(1, 1, 2, 2)


def test_morf_and_lerf_logit_curves_match_hand_computation() -> None:
    model, inputs, target, maps = _case()
    fractions = torch.tensor([0, 0.25, 0.5, 0.75, 1.0])
    morf = PixelPerturbation("morf", output="logit", pixels_per_step=1)
    morf.update(model, inputs, target, maps)
    result = morf.compute()
    torch.testing.assert_close(result["curve/logit"], torch.tensor([10.0, 6.0, 3.0, 1.0, 0.0]))
    torch.testing.assert_close(morf.curve_axis(), fractions)
    assert float(result["score"]) == pytest.approx(0.25 * (16 + 9 + 4 + 1) / 2)  # trapezoid by hand: 3.75
    lerf = PixelPerturbation("lerf", output="logit", pixels_per_step=1)
    lerf.update(model, inputs, target, maps)
    torch.testing.assert_close(lerf.compute()["curve/logit"], torch.tensor([10.0, 9.0, 7.0, 4.0, 0.0]))
    assert float(lerf.compute()["score"]) == pytest.approx(0.25 * (19 + 16 + 11 + 4) / 2)


def test_deletion_probability_and_fractional_change() -> None:
    model, inputs, target, maps = _case()
    deletion = Deletion(pixels_per_step=2, data_mean=[0.0], data_std=[1.0])  # black = 0: raw pixel data
    deletion.update(model, inputs, target, maps)
    expected = torch.sigmoid(torch.tensor([10.0, 3.0, 0.0]))  # softmax of (logit, 0) = sigmoid(logit)
    torch.testing.assert_close(deletion.compute()["curve/probability"], expected)
    assert deletion.higher_is_better is False
    change = PixelPerturbation("lerf", output="fractional_change", pixels_per_step=1, max_fraction=0.5)
    change.update(model, inputs, target, maps)
    p = torch.sigmoid(torch.tensor([10.0, 9.0, 7.0]))
    torch.testing.assert_close(change.compute()["curve/fractional_change"], (p - p[0]).abs() / p[0])
    assert change.higher_is_better is False  # LeRF change: small is good


def test_insertion_starts_from_the_blurred_canvas() -> None:
    torch.manual_seed(0)
    model = PixelLinear(torch.randn(6, 6))
    inputs = torch.randn(2, 3, 6, 6)
    maps = torch.randn(2, 3, 6, 6)
    insertion = Insertion(pixels_per_step=36, blur_kernel_size=5, blur_sigma=2.0)
    insertion.update(model, inputs, torch.tensor([0, 1]), maps)
    canvas = gaussian_blur(inputs, 5, 2.0)
    expected = torch.stack([model(canvas).softmax(1)[[0, 1], [0, 1]], model(inputs).softmax(1)[[0, 1], [0, 1]]])
    torch.testing.assert_close(insertion.compute()["curve/probability"], expected.mean(1))
    assert insertion.higher_is_better is True


def test_gaussian_blur_preserves_constants_and_matches_scipy() -> None:
    from scipy.ndimage import convolve1d

    image = torch.rand(1, 2, 9, 9, dtype=torch.float64)
    ours = gaussian_blur(image, 7, 1.5)
    kernel = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
    kernel /= kernel.sum()
    reference = convolve1d(convolve1d(image.numpy(), kernel, axis=2, mode="nearest"), kernel, axis=3, mode="nearest")
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-10)
    torch.testing.assert_close(gaussian_blur(torch.full((1, 1, 4, 4), 3.0), 29, 15.0), torch.full((1, 1, 4, 4), 3.0))


def test_chunking_bounds_memory_and_does_not_change_results() -> None:
    torch.manual_seed(1)
    weights = torch.randn(8, 8)
    inputs, maps, target = torch.randn(5, 3, 8, 8), torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 0, 1, 1])
    results = []
    for chunk in (1, 7, 10_000, None):
        model = PixelLinear(weights)
        metric = Deletion(baseline="zero", pixels_per_step=8, max_batch=chunk)
        metric.update(model, inputs, target, maps)
        results.append(metric.compute()["curve/probability"])
        steps, size = 9, chunk or rows_per_chunk(PixelLinear(weights), inputs)  # None: the memory-budget rule
        assert model.largest_batch <= size
        # one forward per chunk of (images × steps), and with None the budget rule's one-row probe
        assert model.calls == -(-5 * steps // size) + (chunk is None)
    with pytest.raises(ValueError, match="max_batch"):
        Deletion(max_batch=0)
    for other in results[1:]:
        torch.testing.assert_close(other, results[0])


def test_ranks_break_ties_by_pixel_index_and_schedules_end_at_the_last_pixel() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    assert pixel_ranks(scores, "morf").tolist() == [[2, 0, 1, 3]]
    assert pixel_ranks(scores, "lerf").tolist() == [[1, 2, 3, 0]]
    assert step_counts(10, 4, None, 1.0).tolist() == [0, 4, 8, 10]
    assert step_counts(100, None, 4, 0.1).tolist() == [0, 2, 5, 8, 10]
    with pytest.raises(ValueError, match="exactly one"):
        step_counts(10, None, None, 1.0)


def test_layer_maps_are_upsampled_and_state_sums_over_batches() -> None:
    model, inputs, target, _ = _case()
    coarse = torch.tensor([[[[1.0]]]])  # one value: every pixel ties → index order
    metric = PixelPerturbation("morf", output="logit", pixels_per_step=1)
    metric.update(model, inputs, target, coarse)
    metric.update(model, inputs, target, coarse)
    torch.testing.assert_close(metric.compute()["curve/logit"], torch.tensor([10.0, 6.0, 3.0, 1.0, 0.0]))
    assert float(metric.compute()["count"]) == 2


def test_min_probability_skips_unconfident_images() -> None:
    model = PixelLinear(torch.ones(2, 2))
    inputs = torch.stack([torch.ones(1, 2, 2), -torch.ones(1, 2, 2)])  # p(class 0) ≈ 0.98 and ≈ 0.02
    metric = Deletion(baseline="zero", pixels_per_step=4, min_probability=0.6)
    metric.update(model, inputs, torch.tensor([0, 0]), torch.rand(2, 1, 2, 2))
    result = metric.compute()
    assert float(result["count"]) == 1 and float(metric.skipped) == 1


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="order"):
        PixelPerturbation("sideways")
    with pytest.raises(ValueError, match="removal only|mode='remove'"):
        build_metric("insertion", output="fractional_change")
    with pytest.raises(ValueError, match="unknown metric 'deletoin'.*deletion"):
        build_metric("deletoin")
    with pytest.raises(ValueError, match="unknown argument"):
        build_metric("deletion", steps=3)
    model, inputs, target, maps = _case()
    with pytest.raises(ValueError, match="maps must have shape"):
        Deletion().update(model, inputs, target, maps[0])


def test_model_is_left_untouched_and_works_in_inference_mode() -> None:
    model, inputs, target, maps = _case()
    before = model.weights.detach().clone()
    metric = Deletion(baseline="zero", pixels_per_step=1)
    with torch.inference_mode():
        metric.update(model, inputs.clone(), target.clone(), maps.clone())
    assert torch.equal(model.weights, before) and model.weights.grad is None
    assert metric.compute()["curve/probability"].shape == (5,)


def test_pixel_flipping_matches_quantus() -> None:
    """Quantus ranks C×H×W features and starts after the first step; with one channel the definitions coincide."""
    quantus = pytest.importorskip("quantus")
    np.trapz = getattr(np, "trapz", np.trapezoid)  # Quantus 0.6 calls numpy.trapz (removed in NumPy 2); test-only shim
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    inputs = torch.randn(4, 1, 6, 6)
    maps = torch.randn(4, 1, 6, 6)  # distinct values: no ties, so the orders agree
    target = torch.tensor([0, 1, 2, 1])
    ours = PixelPerturbation("morf", pixels_per_step=4)
    ours.update(model, inputs, target, maps)
    reference = quantus.PixelFlipping(
        features_in_step=4, perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True
    )(model=model, x_batch=inputs.numpy(), y_batch=target.numpy(), a_batch=maps.numpy(), device="cpu", softmax=True)
    expected = np.asarray(reference).mean(0)
    np.testing.assert_allclose(ours.compute()["curve/probability"][1:].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_image_scores_are_the_per_image_areas_whose_mean_is_the_score() -> None:
    model, inputs, target, maps = _case()
    inputs, target = inputs.expand(2, -1, -1, -1), target.expand(2)
    maps = torch.cat([maps, -maps])  # the second image ranks its pixels in the reverse order
    metric = PixelPerturbation("morf", output="logit", pixels_per_step=1)
    scores = metric.image_scores(model, inputs, target, maps)
    assert metric.count == 0  # no state touched
    # hand trapezoids: MoRF curve 10, 6, 3, 1, 0 and the reversed order 10, 9, 7, 4, 0
    torch.testing.assert_close(scores, torch.tensor([0.25 * (16 + 9 + 4 + 1) / 2, 0.25 * (19 + 16 + 11 + 4) / 2]))
    metric.update(model, inputs, target, maps)
    torch.testing.assert_close(metric.compute()["score"], scores.mean())
    with pytest.raises(ValueError, match="target must have shape"):
        metric.image_scores(model, inputs, target[:1], maps)


def test_deletion_fills_black_by_default_and_needs_the_data_normalisation() -> None:
    """App. D.3: "we delete pixel by replacing it with black pixel", 10 per step. Black is pixel 0 before
    normalisation, (0 − mean)/std in the model's space; before this fix the registered metric filled 0 (the mean)."""
    deletion = build_metric("deletion")
    assert (deletion.baseline, deletion.pixels_per_step) == ("black", 10)
    model, inputs, target, maps = _case()
    with pytest.raises(ValueError, match="black.*data_mean and data_std"):
        deletion.update(model, inputs, target, maps)
    deletion.set_data_normalisation([0.5], [0.25])  # the callback passes its DataModule's mean/std
    deletion = Deletion(pixels_per_step=4, output="logit", data_mean=[0.5], data_std=[0.25])
    deletion.update(model, inputs, target, maps)
    torch.testing.assert_close(deletion.compute()["curve/logit"], torch.tensor([10.0, -20.0]))  # black = −2 each
    with pytest.raises(ValueError, match="both data_mean and data_std"):
        Deletion(data_mean=[0.5])
    with pytest.raises(ValueError, match="'mean' is ambiguous"):
        Deletion(baseline="mean")


def test_fills_zero_black_image_min_image_mean_and_a_number() -> None:
    inputs = torch.tensor([[[[1.0, -3.0]], [[2.0, 0.0]]]])  # [1, 2, 1, 2]
    expected = {
        "zero": [[0.0, 0.0], [0.0, 0.0]],
        "black": [[-1.0, -1.0], [-4.0, -4.0]],  # (0 − mean)/std with mean (0.5, 2), std (0.5, 0.5)
        "image_min": [[-3.0, -3.0], [-3.0, -3.0]],  # Quantus "black": the image minimum over all channels
        "image_mean": [[-1.0, -1.0], [1.0, 1.0]],
        0.7: [[0.7, 0.7], [0.7, 0.7]],
    }
    for fill, values in expected.items():
        got = baseline_images(inputs, fill, data_mean=(0.5, 2.0), data_std=(0.5, 0.5))
        torch.testing.assert_close(got, torch.tensor(values).view(1, 2, 1, 2))


@pytest.mark.parametrize(
    ("padding", "scipy_mode"), [("replicate", "nearest"), ("reflect", "mirror"), ("zeros", "constant")]
)
def test_blur_canvas_paddings_match_scipy(padding: str, scipy_mode: str) -> None:
    """Insertion canvas: replicate (lit_xai), reflect (torchvision GaussianBlur, InputIBA code), zeros (RISE code)."""
    from scipy.ndimage import convolve1d

    image = torch.rand(1, 2, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernel = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
    kernel /= kernel.sum()
    ref = convolve1d(convolve1d(image.numpy(), kernel, axis=2, mode=scipy_mode), kernel, axis=3, mode=scipy_mode)
    np.testing.assert_allclose(gaussian_blur(image, 7, 1.5, padding).numpy(), ref, atol=1e-10)
    with pytest.raises(ValueError, match="reflect padding needs"):
        gaussian_blur(image, 29, 15.0, "reflect")


@pytest.mark.parametrize("name", ["deletion", "insertion", "morf", "lerf", "sensitivity_n", "ehr", "pointing_game"])
def test_non_finite_maps_are_an_error_naming_the_method(name: str) -> None:
    """Before: a NaN map scored Deletion .1037 next to .1038 for a real map, silently."""
    model, inputs, target, maps = _case()
    bad = maps.clone()
    bad[0, 0, 1, 1] = float("nan")
    metric = build_metric(name)

    def saliency(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return bad

    extras = {"boxes": torch.tensor([[0, 0, 1, 1]]), "masks": torch.ones(1, 1, 2, 2)}
    with pytest.raises(ValueError, match="method 'saliency' returned non-finite"):
        metric.update(model, inputs, target, bad, method=saliency, **extras)
    with pytest.raises(ValueError, match="^maps returned non-finite"):
        metric.update(model, inputs, target, bad.masked_fill(bad.isnan(), float("inf")), **extras)
    assert float(metric.count) == 0


def test_auc_conventions_by_hand() -> None:
    """Logit curve 10, 6, 3, 1, 0 at fractions 0, ¼, ½, ¾, 1 (module docstring: the four conventions)."""
    model, inputs, target, maps = _case()
    areas = {}
    for auc in ("fraction", "rise", "quantus", "inputiba"):
        metric = PixelPerturbation("morf", output="logit", pixels_per_step=1, auc=auc)
        metric.update(model, inputs, target, maps)
        areas[auc] = float(metric.compute()["score"])
        torch.testing.assert_close(metric.image_scores(model, inputs, target, maps)[0], metric.compute()["score"])
    assert areas["fraction"] == pytest.approx(0.25 * (16 + 9 + 4 + 1) / 2)  # 3.75
    assert areas["rise"] == pytest.approx((20 - 10 / 2 - 0 / 2) / 4)  # RISE: (Σ − y0/2 − yK/2)/K = 3.75
    assert areas["quantus"] == pytest.approx((6 + 3) / 2 + (3 + 1) / 2 + (1 + 0) / 2)  # trapz(y1…yK, dx=1) = 7
    assert areas["inputiba"] == pytest.approx(7 / 4)  # trapezoid(y1…yK, dx=1/K)
    # max_fraction ½: "fraction" integrates over [0, ½] (not rescaled); "rise" spreads the K steps over [0, 1]
    half = {}
    for auc in ("fraction", "rise"):
        metric = PixelPerturbation("morf", output="logit", pixels_per_step=1, max_fraction=0.5, auc=auc)
        metric.update(model, inputs, target, maps)
        half[auc] = float(metric.compute()["score"])
    assert half["fraction"] == pytest.approx(0.25 * (16 + 9) / 2) and half["rise"] == pytest.approx(0.5 * (16 + 9) / 2)
    with pytest.raises(ValueError, match="auc="):
        PixelPerturbation(auc="simpson")


def test_feature_ranking_switches_single_channel_values() -> None:
    """rank_by='feature' (Quantus): C×H×W features ranked one by one; a pixel's channels leave at different steps."""
    model = PixelLinear(torch.ones(1, 2))  # logit = Σ over channels and pixels
    inputs = torch.tensor([[[[1.0, 2.0]], [[4.0, 8.0]]]])
    maps = torch.tensor([[[[3.0, 1.0]], [[0.0, 2.0]]]])  # feature order: (c0,p0), (c1,p1), (c0,p1), (c1,p0)
    metric = PixelPerturbation("morf", output="logit", pixels_per_step=1, rank_by="feature")
    metric.update(model, inputs, torch.tensor([0]), maps)
    torch.testing.assert_close(metric.compute()["curve/logit"], torch.tensor([15.0, 14.0, 6.0, 4.0, 0.0]))
    torch.testing.assert_close(metric.curve_axis(), torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    pixel = PixelPerturbation("morf", output="logit", pixels_per_step=1)  # channel sums 3, 3: tie → index order
    pixel.update(model, inputs, torch.tensor([0]), maps)
    torch.testing.assert_close(pixel.compute()["curve/logit"], torch.tensor([15.0, 10.0, 0.0]))


def test_registered_defaults_pin_their_sources() -> None:
    """Insertion: App. D.3 canvas (kernel 29, σ 15), 10 pixels per step; MoRF/LeRF: 0 in normalised space, softmax;
    every curve: the fraction AUC with the clean point, pixel ranking."""
    insertion, morf = build_metric("insertion"), build_metric("morf")
    assert (insertion.baseline, insertion.blur_kernel_size, insertion.blur_sigma, insertion.pixels_per_step) == (
        "blur", 29, 15.0, 10)
    assert (morf.baseline, morf.output, morf.auc, morf.rank_by, morf.blur_padding) == (
        "zero", "probability", "fraction", "pixel", "replicate")
