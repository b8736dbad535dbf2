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
from lit_xai.metrics.faithfulness import FaithfulnessCorrelation, Infidelity, Monotonicity, MonotonicityCorrelation

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
