"""Axiom metrics (dissertation ch. 7 Eq. 8-11) against hand-computed values on crafted maps."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from scipy import stats

from lit_xai.metrics.axioms import (
    ClassSensitivityDoubleScore,
    ClassSensitivitySingleScore,
    FeatureSaturationScore,
    NullFeatureScore,
)

matplotlib.use("Agg")


def _mask(rows: slice, cols: slice, size: int = 4) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


TOP_LEFT = _mask(slice(0, 2), slice(0, 2))
BOTTOM_RIGHT = _mask(slice(2, 4), slice(2, 4))


def test_null_feature_score_hand_computed() -> None:
    maps = torch.zeros(2, 4, 4)
    maps[0, :2, :2] = 2.0  # Σ f_a = 8
    maps[0, 2:, 2:] = 1.0  # Σ f_null = 4  -> 0.5
    maps[1, :2, :2] = 1.0  # Σ f_a = 4
    maps[1, 3, 3] = 3.0  # Σ f_null = 3  -> 0.75
    maps[1, 0, 3] = 100.0  # background does not count
    metric = NullFeatureScore()
    metric.update(maps, TOP_LEFT.expand(2, 4, 4), BOTTOM_RIGHT.expand(2, 4, 4))
    assert metric.compute().item() == pytest.approx((0.5 + 0.75) / 2)
    assert metric.higher_is_better is False and metric.full_state_update is False


def test_null_feature_score_skips_zero_denominator_and_merges_like_ddp() -> None:
    maps = torch.rand(6, 4, 4) + 0.1
    maps[5, :2, :2] = 0.0  # undefined sample
    fa, fn = TOP_LEFT.expand(6, 4, 4), BOTTOM_RIGHT.expand(6, 4, 4)
    whole, left, right = NullFeatureScore(), NullFeatureScore(), NullFeatureScore()
    whole.update(maps, fa, fn)
    left.update(maps[:3], fa[:3], fn[:3])
    right.update(maps[3:], fa[3:], fn[3:])
    left.merge_state(right)  # what a DDP sum-reduction does
    expected = np.mean([(maps[i, 2:, 2:].sum() / maps[i, :2, :2].sum()).item() for i in range(5)])
    assert whole.compute().item() == pytest.approx(expected, rel=1e-6)
    assert left.compute().item() == pytest.approx(expected, rel=1e-6)
    assert int(whole.skipped) == 1


def test_class_sensitivity_double_extremes_and_hand_value() -> None:
    a = torch.zeros(3, 4, 4)
    b = torch.zeros(3, 4, 4)
    a[0], b[0] = 1.0, 1.0  # identical maps -> 1
    a[1, :2, :2], b[1, 2:, 2:] = 1.0, 1.0  # each on its own patch -> 0
    a[2, :2, :2], a[2, 2:, 2:] = 2.0, 1.0  # hand case
    b[2, :2, :2], b[2, 2:, 2:] = -1.0, 3.0  # absolute values are used
    # overlap: f_a: 4*min(2,1)=4, f_b: 4*min(1,3)=4 -> 8; denominator Σ_fa|a| + Σ_fb|b| = 8 + 12 = 20
    values = []
    for i in range(3):
        m = ClassSensitivityDoubleScore()
        m.update(a[i : i + 1], b[i : i + 1], TOP_LEFT[None], BOTTOM_RIGHT[None])
        values.append(m.compute().item())
    assert values == pytest.approx([1.0, 0.0, 8 / 20])


def test_class_sensitivity_single_matches_scipy_on_hand_ratios() -> None:
    gen = torch.Generator().manual_seed(0)
    maps_a, maps_b = torch.rand(7, 4, 4, generator=gen), torch.rand(7, 4, 4, generator=gen)
    mask = TOP_LEFT.expand(7, 4, 4)
    eps = 1e-5

    def ratio(m: torch.Tensor) -> np.ndarray:
        inside = m[:, :2, :2].reshape(7, -1).mean(1)
        outside = (m.reshape(7, -1).sum(1) - m[:, :2, :2].reshape(7, -1).sum(1)) / 12
        return ((inside + eps) / (outside + eps)).numpy()

    for kind, reference in (("spearman", stats.spearmanr), ("pearson", stats.pearsonr)):
        metric = ClassSensitivitySingleScore(correlation=kind, eps=eps)
        metric.update(maps_a[:4], maps_b[:4], mask[:4])
        metric.update(maps_a[4:], maps_b[4:], mask[4:])
        expected = reference(ratio(maps_a), ratio(maps_b))[0]
        assert metric.compute().item() == pytest.approx(expected, abs=1e-5)
    # the same map for both targets is perfectly correlated
    same = ClassSensitivitySingleScore()
    same.update(maps_a, maps_a, mask)
    assert same.compute().item() == pytest.approx(1.0)


def test_feature_saturation_correlation_and_one_feature_method() -> None:
    gen = torch.Generator().manual_seed(1)
    maps = torch.rand(8, 4, 4, generator=gen)
    m1, m2 = TOP_LEFT.expand(8, 4, 4), BOTTOM_RIGHT.expand(8, 4, 4)
    metric = FeatureSaturationScore(correlation="pearson")
    metric.update(maps, m1, m2)
    x = maps[:, :2, :2].reshape(8, -1).sum(1).numpy()
    y = maps[:, 2:, 2:].reshape(8, -1).sum(1).numpy()
    assert metric.compute().item() == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-5)
    # a method that picks one feature or the other (extremal-perturbation-like) anti-correlates
    picks = torch.zeros(8, 4, 4)
    for i in range(8):
        if i % 2:
            picks[i, :2, :2] = 1 + i
        else:
            picks[i, 2:, 2:] = 1 + i
    one = FeatureSaturationScore()
    one.update(picks, m1, m2)
    assert one.compute().item() < -0.5
    assert one.higher_is_better is True


def test_metrics_reject_bad_shapes_and_plot() -> None:
    metric = NullFeatureScore()
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        metric.update(torch.rand(2, 1, 4, 4), TOP_LEFT.expand(2, 4, 4), BOTTOM_RIGHT.expand(2, 4, 4))
    with pytest.raises(ValueError, match="bool"):
        metric.update(torch.rand(2, 4, 4), TOP_LEFT.expand(2, 4, 4).float(), BOTTOM_RIGHT.expand(2, 4, 4))
    with pytest.raises(ValueError, match="pearson"):
        FeatureSaturationScore(correlation="kendall")  # type: ignore[arg-type]
    metric.update(torch.rand(2, 4, 4) + 0.1, TOP_LEFT.expand(2, 4, 4), BOTTOM_RIGHT.expand(2, 4, 4))
    fig, ax = metric.plot()
    assert fig is not None and ax is not None
