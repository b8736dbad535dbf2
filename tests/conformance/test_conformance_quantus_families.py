"""Complexity, faithfulness, robustness and Random Logit metrics against Quantus 0.6 on the same inputs and maps.

Where Quantus draws from NumPy's global generator, the test feeds it our draws by replacing the NumPy function it
calls (``np.random.choice``/``np.random.uniform``) for the duration of the call, so both sides perturb identically.
Nets: the foreign nets of ``conftest.py`` (not shipped by lit_xai). Tolerances are stated per case.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from lit_xai.metrics.complexity import Complexity, Sparseness
from lit_xai.metrics.faithfulness import (
    IROF,
    ROAD,
    FaithfulnessCorrelation,
    Infidelity,
    Monotonicity,
    MonotonicityCorrelation,
)
from lit_xai.metrics.random_logit import RandomLogit
from lit_xai.metrics.robustness import AvgSensitivity, LocalLipschitzEstimate, MaxSensitivity

quantus = pytest.importorskip("quantus")

#: float32 forwards of the same model in different batch compositions, and float32 vs float64 reductions
FORWARD_TOL = {"rtol": 1e-5, "atol": 1e-6}
#: correlations of float32 outputs computed in float64 (ours) vs scipy (Quantus)
CORR_TOL = {"rtol": 1e-5, "atol": 1e-5}


def _maps(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded signed maps with distinct values, so every ranking is tie-free."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _common(model: nn.Module, images: torch.Tensor, target: torch.Tensor, maps: torch.Tensor) -> dict:
    return {"model": model, "x_batch": images.numpy(), "y_batch": target.numpy(), "a_batch": maps.numpy().copy(),
            "device": "cpu"}


@pytest.mark.parametrize("channels", [1, 3])
def test_sparseness_and_complexity_equal_quantus(channels: int, images: torch.Tensor) -> None:
    """Gini index and entropy over the map's entries: equal to Quantus on one-image batches (Quantus normalises by
    the batch's max, ours by the image's; Gini sees it only through its 1e-7 offset). Tolerance: 1e-6."""
    maps = _maps((images.shape[0], channels, 16, 16), seed=1)
    target = torch.zeros(images.shape[0], dtype=torch.long)
    for ours, peer in ((Sparseness(), quantus.Sparseness), (Complexity(), quantus.Complexity)):
        reference = np.concatenate([
            peer(disable_warnings=True)(**_common(None, images[i:i + 1], target[i:i + 1], maps[i:i + 1]))
            for i in range(images.shape[0])])
        ours.update(nn.Identity(), images, target, maps)
        np.testing.assert_allclose(ours.image_scores(nn.Identity(), images, target, maps).numpy(), reference,
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(float(ours.compute()["score"]), reference.mean(), rtol=1e-6)


def _feed(values: Iterator[np.ndarray]):  # noqa: ANN202 - a stand-in for a NumPy sampler
    def draw(*args: object, **kwargs: object) -> np.ndarray:
        return next(values)
    return draw


def test_faithfulness_correlation_equals_quantus_on_our_subsets(
    foreign_net: nn.Module, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quantus' loop (run-major, one ``np.random.choice`` per image) fed our seeded subsets: equal per-image
    Pearson correlations. Tolerance: 1e-5 (float32 logits; float64 vs scipy correlation)."""
    target = foreign_net(images).argmax(1)
    maps = _maps((images.shape[0], 1, 16, 16), seed=2)
    ours = FaithfulnessCorrelation(num_runs=12, subset_size=64)
    subsets = ours.subsets(images).numpy()
    monkeypatch.setattr(np.random, "choice", _feed(subsets[b, r] for r in range(12) for b in range(len(images))))
    reference = quantus.FaithfulnessCorrelation(nr_runs=12, subset_size=64, return_aggregate=False,
                                                disable_warnings=True)(**_common(foreign_net, images, target, maps))
    monkeypatch.undo()
    np.testing.assert_allclose(ours.image_scores(foreign_net, images, target, maps).numpy(), reference, **CORR_TOL)


def _inserting(x_flat: np.ndarray):  # noqa: ANN202 - a Quantus perturb_func
    """Quantus perturb_func that puts the input's own values back at ``indices`` (AIX360's ``x_copy[ind] = x[ind]``)."""
    def perturb(arr: np.ndarray, indices: np.ndarray, **kwargs: object) -> np.ndarray:
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = x_flat[rows, indices]
        return out
    return perturb


def test_monotonicity_equals_quantus_loop_with_arya_insertion(foreign_net: nn.Module, images: torch.Tensor) -> None:
    """Quantus' Monotonicity loop with a perturb_func that inserts the input's values gives our curves' verdicts;
    Quantus' own perturb_func re-fills with the baseline, so it scores every image True (pinned difference).
    Tie-free 3-channel maps (Quantus' unstable argsort and our stable sort agree); exact."""
    target = foreign_net(images).argmax(1)
    maps = _maps((images.shape[0], 3, 16, 16), seed=3)
    ours = Monotonicity(features_in_step=16)
    scores = ours.image_scores(foreign_net, images, target, maps).numpy()
    common = _common(foreign_net, images, target, maps)
    arya = quantus.Monotonicity(features_in_step=16, perturb_func=_inserting(images.flatten(1).numpy()),
                                disable_warnings=True)(**common)
    np.testing.assert_array_equal(scores, np.asarray(arya, dtype=float))
    as_shipped = quantus.Monotonicity(features_in_step=16, disable_warnings=True)(**common)
    assert all(as_shipped)
    curves = ours.curves(foreign_net, images, target, maps)  # a falling curve exists: ours can say False
    assert (curves.diff(dim=1) < 0).any()


def test_monotonicity_correlation_equals_quantus_on_our_fills(
    foreign_net: nn.Module, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quantus fed our uniform fills (one ``np.random.uniform(size=B)`` per step and sample): equal Spearman ρ.
    Tolerance: 1e-5."""
    target = foreign_net(images).argmax(1)
    maps = _maps((images.shape[0], 3, 16, 16), seed=4)
    ours = MonotonicityCorrelation(features_in_step=64, num_samples=3)
    steps = 3 * 16 * 16 // 64
    fills = ours.fills(images, steps).numpy().astype(np.float64)
    monkeypatch.setattr(np.random, "uniform", _feed(fills[:, s, n] for s in range(steps) for n in range(3)))
    reference = quantus.MonotonicityCorrelation(features_in_step=64, nr_samples=3, disable_warnings=True)(
        **_common(foreign_net, images, target, maps))
    monkeypatch.undo()
    np.testing.assert_allclose(ours.image_scores(foreign_net, images, target, maps).numpy(), reference, **CORR_TOL)


@pytest.mark.parametrize("patch_sizes", [(4,), (4, 8)])
def test_infidelity_equals_quantus(foreign_net: nn.Module, images: torch.Tensor, patch_sizes: tuple[int, ...]) -> None:
    """Cumulative raster-order patch removal to the image minimum, logits, MSE: equal to Quantus (its 10 identical
    repetitions averaged). Tolerance: rel. 1e-5 (float32 logits)."""
    target = foreign_net(images).argmax(1)
    maps = _maps((images.shape[0], 1, 16, 16), seed=5) * 0.1
    reference = quantus.Infidelity(perturb_patch_sizes=list(patch_sizes), n_perturb_samples=2,
                                   disable_warnings=True)(**_common(foreign_net, images, target, maps))
    ours = Infidelity(patch_sizes=patch_sizes)
    np.testing.assert_allclose(ours.image_scores(foreign_net, images, target, maps).numpy(), reference, rtol=1e-5,
                               atol=1e-7)


def test_linear_imputation_equals_quantus_sparse_solve() -> None:
    """Our batched conjugate-gradient solve of ROAD's system equals Quantus' ``noisy_linear_imputation`` (scipy
    ``spsolve``) with noise 0, per image and removal set, 3 channels. Tolerance: 1e-8 (float64 both)."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    from lit_xai.metrics.faithfulness import linear_imputation

    generator = torch.Generator().manual_seed(6)
    images = torch.randn(3, 3, 12, 10, generator=generator, dtype=torch.float64)
    removed = torch.rand(3, 1, 12, 10, generator=generator) < torch.tensor([0.1, 0.5, 0.95]).view(3, 1, 1, 1)
    ours = linear_imputation(images, removed)
    for i in range(3):
        indices = removed[i, 0].flatten().nonzero()[:, 0].numpy()
        reference = noisy_linear_imputation(images[i].numpy(), indices, noise=0.0)
        np.testing.assert_allclose(ours[i].numpy(), reference, rtol=1e-8, atol=1e-8)


def test_road_equals_quantus_on_grey_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quantus' ROAD (1-channel images: it fails on more, see ROAD's docstring) fed our noise (one
    ``np.random.randn`` per image and percentage): equal accuracy curves. Exact (0/1 decisions away from ties)."""
    from tests.conformance.conftest import FunctionalReLUNet

    torch.manual_seed(0)
    net = FunctionalReLUNet(in_chans=1).eval()
    images = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    target = net(images).argmax(1)
    maps = _maps((6, 1, 16, 16), seed=8)
    percentages = (5, 25, 50, 75, 95)
    ours = ROAD(percentages=percentages, noise=0.05)
    rows = torch.arange(len(percentages) * 6)
    noise = (ours.noise_draws(images, rows) / 0.05).numpy()
    counts = [int(256 * p / 100) for p in percentages]
    draws = (noise[r, 0, :counts[r // 6]] for r in range(len(rows)))
    monkeypatch.setattr(np.random, "randn", lambda *shape: next(draws).reshape(shape))
    reference = quantus.ROAD(percentages=list(percentages), noise=0.05, disable_warnings=True)(
        model=net, x_batch=images.numpy(), y_batch=target.numpy(), a_batch=maps.numpy(), device="cpu")
    monkeypatch.undo()
    ours.update(net, images, target, maps)
    curve = ours.compute()["curve/accuracy"].numpy()
    np.testing.assert_allclose(curve, [reference[p] for p in percentages], atol=1e-12)
    assert 0 < curve.min() < curve.max() <= 1  # the decisions change along the curve: the comparison can fail


def _fill_zero(arr: np.ndarray, mask: np.ndarray, **kwargs: object) -> np.ndarray:
    """Quantus' ``baseline_replacement_by_mask`` with the mask broadcast over the channels (Quantus' own asserts
    ``arr.shape == mask.shape`` and so fails on multi-channel images) and the constant fill 0."""
    return np.where(mask, 0.0, arr)


def test_irof_equals_quantus_on_single_images_with_a_constant_fill(foreign_net: nn.Module,
                                                                    images: torch.Tensor) -> None:
    """Same SLIC call, superpixels ordered by mean relevance, cumulative removal to 0, softmax ratio, Quantus' area
    ``n − trapz``: equal per image (one-image batches: Quantus pads shorter images inside its trapezoid). Quantus'
    shipped perturb_func fails on 3-channel images (pinned). Tolerance: rel. 1e-5."""
    target = foreign_net(images).argmax(1)
    maps = _maps((images.shape[0], 1, 16, 16), seed=9)
    metric = quantus.IROF(perturb_func=_fill_zero, return_aggregate=False, disable_warnings=True)
    reference = np.concatenate([metric(**_common(foreign_net, images[i:i + 1], target[i:i + 1], maps[i:i + 1]))
                                for i in range(len(images))])
    ours = IROF(baseline=0.0).image_scores(foreign_net, images, target, maps)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-5)
    with pytest.raises(AssertionError, match="shape of arr must be the same as the mask"):
        quantus.IROF(disable_warnings=True)(**_common(foreign_net, images[:1], target[:1], maps[:1]))


def _input_x_gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Input × Gradient written out here (an explainer both sides call), leaving the model as found."""
    with torch.enable_grad():
        x = inputs.detach().clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return (x * gradient).detach()


def _quantus_explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
    return _input_x_gradient(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()


@pytest.mark.parametrize(("ours_cls", "peer_name", "sampler"), [
    (MaxSensitivity, "MaxSensitivity", "uniform"),
    (AvgSensitivity, "AvgSensitivity", "uniform"),
    (LocalLipschitzEstimate, "LocalLipschitzEstimate", "normal"),
])
def test_robustness_equals_quantus_on_our_perturbations(
    ours_cls: type, peer_name: str, sampler: str, foreign_net: nn.Module, images: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Quantus fed our seeded δ (one ``np.random.uniform``/``normal`` of shape [B, C·H·W] per sample) and the same
    explainer: equal per-image scores. One-image batches for the Local Lipschitz estimate (Quantus normalises maps
    by the batch max, ours per image). Tolerance: rel. 1e-4 (float32 maps of float32-rounded perturbed inputs)."""
    target = foreign_net(images).argmax(1)
    maps = _input_x_gradient(foreign_net, images, target)
    ours = ours_cls(num_samples=4)
    scores = ours.image_scores(foreign_net, images, target, maps, method=_input_x_gradient)
    batches = [slice(i, i + 1) for i in range(len(images))] if peer_name == "LocalLipschitzEstimate" else [slice(None)]
    reference = []
    for part in batches:
        count = len(images[part])
        delta = ours.perturbations(images[part]).double().view(4, count, -1).numpy()
        monkeypatch.setattr(np.random, sampler, _feed(iter(delta)))
        peer = getattr(quantus, peer_name)(nr_samples=4, disable_warnings=True)
        reference.append(peer(**_common(foreign_net, images[part], target[part], maps[part]),
                              explain_func=_quantus_explain))
        monkeypatch.undo()
    np.testing.assert_allclose(scores.numpy(), np.concatenate(reference), rtol=1e-4)


def test_random_logit_equals_quantus_on_our_classes(foreign_net: nn.Module, images: torch.Tensor,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Quantus fed our other-class draws (its ``np.random.randint(0, K − 1, B)``), one-image batches (Quantus
    normalises by the batch max): equal SSIM of the flattened maps (skimage, window 7, pair range). Tol. 1e-5."""
    target = foreign_net(images).argmax(1)
    maps = _input_x_gradient(foreign_net, images, target)
    ours = RandomLogit()
    scores = ours.image_scores(foreign_net, images, target, maps, method=_input_x_gradient)
    other = ours.other_classes(images, target, 5)
    assert (other != target).all()
    reference = []
    for i in range(len(images)):
        index = other[i] - (other[i] > target[i]).long()  # the position among the other classes
        monkeypatch.setattr(np.random, "randint", lambda *args, index=index, **kwargs: np.array([int(index)]))
        reference += quantus.RandomLogit(num_classes=5, disable_warnings=True)(
            **_common(foreign_net, images[i:i + 1], target[i:i + 1], maps[i:i + 1]), explain_func=_quantus_explain)
        monkeypatch.undo()
    np.testing.assert_allclose(scores.numpy(), reference, rtol=1e-5, atol=1e-6)
