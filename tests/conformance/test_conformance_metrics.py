"""Metrics against independent implementations, on nets lit_xai does not ship (see ``conftest.py``).

Peers: Quantus 0.6 (PixelFlipping, PointingGame, SensitivityN), TorchRay (pointing game), the RISE and InputIBA
evaluation loops written out here from their published code (per-image Python loops: test-only references), and
closed forms on a linear model. Each case states its tolerance; where lit_xai differs by design the test pins it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lit_xai.metrics import Deletion, Insertion, PixelPerturbation, PointingGame, SensitivityN

quantus = pytest.importorskip("quantus")

#: float32 forwards of the same model in different batch compositions
FORWARD_TOL = {"rtol": 1e-5, "atol": 1e-6}


def _distinct_maps(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded maps with distinct values (a random permutation), so every ranking is tie-free."""
    count = int(np.prod(shape))
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed)).float().view(shape) / count


def test_pixel_flipping_equals_quantus_with_its_conventions(foreign_net: nn.Module, images: torch.Tensor) -> None:
    """Quantus ranks C×H×W features, fills with the image minimum ("black"), records no clean point and integrates
    ``np.trapz(dx=1)``: ``rank_by="feature", baseline="image_min", auc="quantus"`` gives its curves and areas."""
    target = foreign_net(images).argmax(1)
    maps = _distinct_maps(tuple(images.shape), seed=3)
    ours = PixelPerturbation("morf", pixels_per_step=32, rank_by="feature", baseline="image_min", auc="quantus")
    kwargs = {"features_in_step": 32, "perturb_baseline": "black", "normalise": False, "abs": False,
              "disable_warnings": True}
    common = {"model": foreign_net, "x_batch": images.numpy(), "y_batch": target.numpy(), "a_batch": maps.numpy(),
              "device": "cpu", "softmax": True}
    curves = np.asarray(quantus.PixelFlipping(**kwargs)(**common))
    areas = np.asarray(quantus.PixelFlipping(return_auc_per_sample=True, **kwargs)(**common))
    ours.update(foreign_net, images, target, maps)
    np.testing.assert_allclose(ours.compute()["curve/probability"][1:].numpy(), curves.mean(0), **FORWARD_TOL)
    np.testing.assert_allclose(ours.image_scores(foreign_net, images, target, maps).numpy(), areas, **FORWARD_TOL)
    np.testing.assert_allclose(float(ours.compute()["score"]), areas.mean(), **FORWARD_TOL)
    default = PixelPerturbation("morf", pixels_per_step=32)  # per-pixel ranking, dataset-mean fill, fraction AUC
    assert not np.allclose(default.image_scores(foreign_net, images, target, maps).numpy(), areas, rtol=0.05)


def _rise_deletion(model: nn.Module, image: torch.Tensor, saliency: np.ndarray, step: int, target: int) -> float:
    """RISE's ``CausalMetric('del', step, torch.zeros_like)`` for one image, written out from the RISE code."""
    _, height, width = image.shape
    pixels = height * width
    steps = (pixels + step - 1) // step
    order = np.flip(np.argsort(saliency.reshape(-1)), axis=-1).copy()
    start, finish = image.clone()[None], torch.zeros_like(image)[None]
    scores = np.empty(steps + 1)
    for i in range(steps + 1):
        scores[i] = float(model(start).softmax(1)[0, target])
        coords = order[step * i: step * (i + 1)]
        start.view(1, 3, pixels)[0, :, coords] = finish.view(1, 3, pixels)[0, :, coords]
    return float((scores.sum() - scores[0] / 2 - scores[-1] / 2) / (scores.shape[0] - 1))


def test_deletion_equals_the_rise_code_with_rise_conventions(foreign_net: nn.Module, images: torch.Tensor) -> None:
    """RISE: zeros of the normalised tensor, ``step`` pixels per step, AUC ``(Σ − y0/2 − yK/2)/K``."""
    target = foreign_net(images).argmax(1)
    maps = _distinct_maps((6, 1, 16, 16), seed=4)
    ours = Deletion(baseline="zero", pixels_per_step=24, auc="rise").image_scores(foreign_net, images, target, maps)
    with torch.no_grad():
        rise = [_rise_deletion(foreign_net, images[i], maps[i, 0].numpy(), 24, int(target[i])) for i in range(6)]
    np.testing.assert_allclose(ours.numpy(), rise, **FORWARD_TOL)


def _inputiba_curves(model: nn.Module, image: torch.Tensor, heatmap: torch.Tensor, target: int, sigma: float,
                     per_step: int) -> tuple[float, float]:
    """InputIBA's ``VisionInsertionDeletion.evaluate`` for one image, written out from its code (scores after every
    step, no clean point; ``trapezoid(dx=1/len)``; canvas ``GaussianBlur(int(2σ − 1), σ)``)."""
    from scipy.integrate import trapezoid
    from torchvision.transforms.functional import gaussian_blur

    pixels = heatmap.numel()
    order = np.unravel_index(torch.topk(heatmap.flatten(), pixels).indices.numpy(), heatmap.shape)
    blurred = gaussian_blur(image[None], [int(2 * sigma - 1)] * 2, [sigma, sigma])[0]
    areas = []
    for current, replacement in ((image.clone(), torch.zeros_like(image)), (blurred.clone(), image)):
        scores = []
        for begin in range(0, pixels, per_step):
            rows, cols = order[0][begin: begin + per_step], order[1][begin: begin + per_step]
            current[:, rows, cols] = replacement[:, rows, cols]
            scores.append(float(model(current[None]).softmax(-1)[0, target]))
        areas.append(float(trapezoid(scores, dx=1.0 / len(scores))))
    return areas[0], areas[1]


def test_deletion_and_insertion_equal_the_inputiba_code(foreign_net: nn.Module, images: torch.Tensor) -> None:
    """InputIBA: deletion to zeros, insertion onto a reflect-padded blur, 0% point dropped, dx = 1/len."""
    target = foreign_net(images).argmax(1)
    maps = _distinct_maps((6, 1, 16, 16), seed=5)
    sigma = 3.0
    deletion = Deletion(baseline="zero", pixels_per_step=32, auc="inputiba")
    insertion = Insertion(pixels_per_step=32, auc="inputiba", blur_kernel_size=5, blur_sigma=sigma,
                          blur_padding="reflect")
    with torch.no_grad():
        reference = np.array([_inputiba_curves(foreign_net, images[i], maps[i, 0], int(target[i]), sigma, 32)
                              for i in range(6)])
    np.testing.assert_allclose(deletion.image_scores(foreign_net, images, target, maps).numpy(), reference[:, 0],
                               **FORWARD_TOL)
    np.testing.assert_allclose(insertion.image_scores(foreign_net, images, target, maps).numpy(), reference[:, 1],
                               **FORWARD_TOL)


def _pointing_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantised maps (many tied maxima) and small or one-pixel objects on 32² images."""
    generator = torch.Generator().manual_seed(seed)
    maps = (torch.rand(40, 1, 32, 32, generator=generator) * 4).floor()
    masks = torch.zeros(40, 1, 32, 32)
    corners = torch.randint(0, 28, (40, 2), generator=generator)
    for i, (y, x) in enumerate(corners.tolist()):
        size = 1 if i % 2 else 4
        masks[i, 0, y:y + size, x:x + size] = 1
    return maps, masks


def _ours(maps: torch.Tensor, masks: torch.Tensor, **kwargs: float | str) -> np.ndarray:
    hits = []
    for i in range(len(maps)):  # per-image hits from the metric's own counter
        metric = PointingGame(**kwargs)
        metric.update(nn.Identity(), torch.zeros(1, 1, 32, 32), torch.zeros(1, dtype=torch.long), maps[i:i + 1],
                      masks=masks[i:i + 1])
        hits.append(float(metric.compute()["score"]))
    return np.array(hits)


@pytest.mark.parametrize("tolerance", [1, 3, 5, 15])
def test_pointing_game_equals_torchray(tolerance: int) -> None:
    """TorchRay accepts the argmax point when ``(u − x)² + (v − y)² < t²`` for some object pixel (exact)."""
    torchray_pg = pytest.importorskip("torchray.benchmark.pointing_game")
    maps, masks = _pointing_case(0)
    game = torchray_pg.PointingGame(num_classes=1, tolerance=tolerance)
    reference = []
    for i in range(len(maps)):
        v, u = np.unravel_index(int(np.argmax(maps[i, 0].numpy())), (32, 32))
        reference.append(float(game.evaluate(masks[i, 0].bool(), (u, v)) == 1))
    np.testing.assert_array_equal(_ours(maps, masks, tolerance=tolerance), reference)
    square = torch.nn.functional.max_pool2d(masks, 2 * tolerance + 1, stride=1, padding=tolerance).flatten(1)
    square_hits = square.gather(1, maps.flatten(1).argmax(1, keepdim=True)).squeeze(1).numpy()
    assert (square_hits >= reference).all()  # the former (2t+1)² square accepted at least as much …
    assert tolerance < 3 or (square_hits > reference).any()  # … and more (here from t = 3 on)


def test_pointing_game_equals_quantus_with_any_tied_maximum() -> None:
    """Quantus counts a hit when any tied maximum is on the object (exact); the default ``first`` is TorchRay's."""
    maps, masks = _pointing_case(1)
    reference = np.asarray(quantus.PointingGame(disable_warnings=True, normalise=False, abs=False)(
        model=None, x_batch=np.zeros((40, 1, 32, 32), np.float32), y_batch=np.zeros(40, int), a_batch=maps.numpy(),
        s_batch=masks.numpy(), device="cpu"), dtype=float)
    np.testing.assert_array_equal(_ours(maps, masks, ties="any"), reference)
    assert (_ours(maps, masks) < reference).any()  # ties="first" misses where only a later tied maximum hits


class _Linear(nn.Module):
    """Two logits: ``w·x`` and 0 (softmax-free with ``output="logit"``)."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = nn.Parameter(weights.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = (x * self.weights).flatten(1).sum(1)
        return torch.stack([logit, torch.zeros_like(logit)], 1)


def test_morf_and_lerf_on_a_linear_model_equal_their_closed_form() -> None:
    """f = w·x, fill 0: after removing the n first-ranked pixels y = Σ of the remaining contributions w_i·x_i
    (channels summed); with maps = the contributions, MoRF removes them largest first (tolerance 1e-4 relative)."""
    generator = torch.Generator().manual_seed(2)
    weights, inputs = torch.randn(1, 3, 12, 12, generator=generator), torch.randn(4, 3, 12, 12, generator=generator)
    model, target = _Linear(weights), torch.zeros(4, dtype=torch.long)
    contributions = (weights * inputs).sum(1, keepdim=True)  # [4, 1, 12, 12]: input × gradient
    flat = contributions.flatten(1).double()
    for order, descending in (("morf", True), ("lerf", False)):
        metric = PixelPerturbation(order, output="logit", pixels_per_step=16)
        metric.update(model, inputs, target, contributions)
        counts = (metric.curve_axis() * 144).round().long()
        ranked = flat.sort(1, descending=descending).values
        removed = torch.cat([torch.zeros(4, 1, dtype=torch.float64), ranked.cumsum(1)], 1)[:, counts]
        expected = (flat.sum(1, keepdim=True) - removed).mean(0)
        torch.testing.assert_close(metric.compute()["curve/logit"].double(), expected, rtol=1e-4, atol=1e-4)


def test_sensitivity_n_on_a_linear_model_equals_its_closed_form() -> None:
    """f = w·x, fill 0: the drop on set S is Σ_S w_i·x_i exactly, so Sensitivity-n of a map R is
    Pearson over the sets of (Σ_S R_i, Σ_S w_i·x_i) — 1 for input × gradient, computed here with NumPy for the
    gradient map (tolerance 1e-4)."""
    generator = torch.Generator().manual_seed(3)
    weights, inputs = torch.randn(1, 3, 8, 8, generator=generator), torch.randn(3, 3, 8, 8, generator=generator)
    model, target = _Linear(weights), torch.zeros(3, dtype=torch.long)
    gradient = weights.expand(3, -1, -1, -1)
    metric = SensitivityN(num_n=4, num_masks=30, output="logit")
    metric.update(model, inputs, target, gradient)
    sets = metric._sets.flatten(0, 1).numpy().reshape(4, 30, 64)
    pixel_gradient = gradient.sum(1).flatten(1).numpy()
    pixel_contribution = (weights * inputs).sum(1).flatten(1).numpy()
    expected = [np.mean([np.corrcoef(sets[k] @ pixel_gradient[b], sets[k] @ pixel_contribution[b])[0, 1]
                         for b in range(3)]) for k in range(4)]
    np.testing.assert_allclose(metric.compute()["curve/correlation"].numpy(), expected, rtol=1e-4, atol=1e-4)
    exact = SensitivityN(num_n=4, num_masks=30)
    exact.update(model, inputs, target, weights * inputs)
    np.testing.assert_allclose(exact.compute()["curve/correlation"].numpy(), 1.0, atol=1e-5)


def test_quantus_sensitivity_n_is_a_different_protocol() -> None:
    """Pinned difference: Quantus 0.6 removes features cumulatively in attribution order, sums the attribution of the
    last step only and correlates across the batch; on the linear model input × gradient is exactly 1 under Ancona's
    definition (ours) but not under Quantus' (1.0, 0.945, 0.901, 0.767 here)."""
    generator = torch.Generator().manual_seed(4)
    weights, inputs = torch.randn(1, 1, 6, 6, generator=generator), torch.randn(8, 1, 6, 6, generator=generator)
    model, target = _Linear(weights).eval(), torch.zeros(8, dtype=torch.long)
    maps = weights * inputs
    ours = SensitivityN(num_n=4, num_masks=20)
    ours.update(model, inputs, target, maps)
    assert float(ours.compute()["score"]) == pytest.approx(1.0, abs=1e-5)
    reference = quantus.SensitivityN(features_in_step=4, n_max_percentage=0.5, perturb_baseline=0.0,
                                     normalise=False, abs=False, disable_warnings=True, return_aggregate=False)(
        model=model, x_batch=inputs.numpy(), y_batch=target.numpy(), a_batch=maps.numpy(), device="cpu",
        softmax=False)
    reference = np.asarray(reference, dtype=float)  # one correlation per step n (4 features per step)
    assert reference[0] == pytest.approx(1.0, abs=1e-5)  # one step: the last step is all that was removed
    assert (reference[1:] < 0.999).all()  # later steps: cumulative drop vs the last step's attribution
