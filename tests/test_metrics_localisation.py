"""EHR (dissertation App. F examples) and the pointing game (cross-checked with Quantus)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lit_xai.metrics import EffectiveHeatRatio, PointingGame
from lit_xai.metrics.localisation import box_masks

MODEL = nn.Sequential(nn.Flatten(), nn.Linear(256, 2))
INPUTS = torch.zeros(1, 1, 16, 16)
TARGET = torch.zeros(1, dtype=torch.long)
BOX = torch.tensor([[4, 4, 12, 12]])  # 64 of 256 pixels: the object covers 25% as in App. F


def _ehr(maps: torch.Tensor, boxes: torch.Tensor = BOX, **kwargs) -> dict[str, torch.Tensor]:
    metric = EffectiveHeatRatio(**kwargs)
    metric.update(MODEL, INPUTS.expand(len(maps), -1, -1, -1), TARGET.expand(len(maps)), maps, boxes=boxes)
    return metric.compute()


def test_app_f_examples() -> None:
    """App. F, Fig. 11, with default arguments: (a) 1 inside, 0 outside → 1; (b) 0.25 outside as well → lower;
    (c) 0.25 inside only → lower. Before: the default divided each map by its max and scored (c) as 1.0."""
    a = box_masks(BOX, (16, 16)).float().view(1, 1, 16, 16)
    b = a + 0.25 * (1 - a)
    c = 0.25 * a
    scores = {name: float(_ehr(m)["score"]) for name, m in (("a", a), ("b", b), ("c", c))}
    assert scores["a"] == pytest.approx(1.0)
    # (b): thresholds below 1 keep every pixel (ratio 64/256) until the 0.8 quantile, where only the box is left
    assert scores["b"] == pytest.approx(0.25 * 0.7 + 0.1 * (0.25 + 1) / 2 + 0.2 * 1.0, abs=1e-6)
    assert scores["c"] == pytest.approx(0.25)
    assert scores["a"] > scores["b"] and scores["a"] > scores["c"]
    assert float(_ehr(c, normalize="max")["score"]) == pytest.approx(1.0)  # per-image max: (c) becomes (a)
    # three channels in [0, 1] stay in [0, 1] under the reference code's channel mean
    assert float(_ehr(c.expand(-1, 3, -1, -1))["score"]) == pytest.approx(0.25)


def test_ehr_refuses_maps_off_the_unit_scale_without_normalisation() -> None:
    raw = 3.0 * box_masks(BOX, (16, 16)).float().view(1, 1, 16, 16)

    def gradient(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return raw

    metric = EffectiveHeatRatio()
    with pytest.raises(ValueError, match=r"method 'gradient' gave values in \[0, 3\].*normalize='max'"):
        metric.update(MODEL, INPUTS, TARGET, raw, boxes=BOX, method=gradient)
    assert float(_ehr(raw, normalize="max")["score"]) == pytest.approx(1.0)


def test_large_boxes_are_skipped_and_low_maps_score_zero() -> None:
    metric = EffectiveHeatRatio()
    maps = torch.rand(2, 1, 16, 16)
    boxes = torch.tensor([[0, 0, 16, 9], [0, 0, 4, 4]])  # the first covers 56% of the image
    metric.update(MODEL, INPUTS.expand(2, -1, -1, -1), TARGET.expand(2), maps, boxes=boxes)
    assert float(metric.skipped) == 1 and float(metric.compute()["count"]) == 1
    assert float(_ehr(torch.full((1, 1, 16, 16), 0.05))["score"]) == 0.0
    with pytest.raises(ValueError, match="needs boxes"):
        EffectiveHeatRatio().update(MODEL, INPUTS, TARGET, maps[:1])


def test_box_masks_use_exclusive_ends() -> None:
    mask = box_masks(torch.tensor([[1, 2, 3, 4]]), (5, 5)).view(5, 5)
    assert mask.sum() == 4 and mask[2, 1] and mask[3, 2] and not mask[4, 2] and not mask[2, 3]


def test_pointing_game_matches_quantus_and_tolerance() -> None:
    quantus = pytest.importorskip("quantus")
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 1, 16, 16, generator=generator)
    masks = torch.zeros(6, 1, 16, 16)
    masks[:, :, 3:9, 5:12] = 1
    ours = PointingGame(ties="any")
    ours.update(MODEL, INPUTS.expand(6, -1, -1, -1), TARGET.expand(6), maps, masks=masks)
    reference = quantus.PointingGame(disable_warnings=True, normalise=False, abs=False)(
        model=MODEL, x_batch=np.zeros((6, 1, 16, 16), np.float32), y_batch=np.zeros(6, int),
        a_batch=maps.numpy(), s_batch=masks.numpy(), device="cpu",
    )
    assert float(ours.compute()["score"]) == pytest.approx(np.mean(reference))
    peak = torch.zeros(1, 1, 16, 16)
    peak[0, 0, 2, 2] = 1
    near, far = PointingGame(tolerance=2), PointingGame(tolerance=0)  # the box corner is √2 away
    for metric in (near, far):
        metric.update(MODEL, INPUTS, TARGET, peak, boxes=torch.tensor([[3, 3, 8, 8]]))
    assert float(near.compute()["score"]) == 1.0 and float(far.compute()["score"]) == 0.0


def _hit(metric: PointingGame, maps: torch.Tensor, box: list[int]) -> float:
    metric.update(MODEL, INPUTS.expand(len(maps), -1, -1, -1), TARGET.expand(len(maps)), maps,
                  boxes=torch.tensor([box] * len(maps)))
    return float(metric.compute()["score"])


def test_pointing_game_tolerance_is_euclidean() -> None:
    """Zhang et al. / TorchRay accept distance < t. Before: a (2t+1)² square, which also accepted (4, 3) at t = 5."""
    peak = torch.zeros(1, 1, 16, 16)
    peak[0, 0, 0, 0] = 1
    assert _hit(PointingGame(tolerance=5), peak, [4, 3, 5, 4]) == 0.0  # one pixel at distance exactly 5
    assert _hit(PointingGame(tolerance=5), peak, [4, 2, 5, 3]) == 1.0  # distance √20 < 5
    assert _hit(PointingGame(tolerance=0), peak, [0, 0, 1, 1]) == 1.0  # on the object
    assert _hit(PointingGame(tolerance=1), peak, [1, 0, 2, 1]) == 0.0  # distance 1 is not < 1


def test_pointing_game_points_at_the_signed_maximum_and_offers_both_tie_rules() -> None:
    signed = torch.zeros(1, 1, 16, 16)
    signed[0, 0, 10, 10] = -5.0  # the largest magnitude is negative: evidence against the class
    signed[0, 0, 1, 1] = 1.0
    assert _hit(PointingGame(), signed, [0, 0, 3, 3]) == 1.0  # default: the map's maximum (Zhang et al.)
    assert _hit(PointingGame(channel_reduction="abs_sum"), signed, [0, 0, 3, 3]) == 0.0  # before: |map| peak
    tied = torch.zeros(1, 1, 16, 16)
    tied[0, 0, 0, 0] = tied[0, 0, 8, 8] = 1.0
    assert _hit(PointingGame(ties="first"), tied, [6, 6, 10, 10]) == 0.0  # argmax: the first maximum (TorchRay)
    assert _hit(PointingGame(ties="any"), tied, [6, 6, 10, 10]) == 1.0  # any tied maximum (Quantus)
    with pytest.raises(ValueError, match="tie rule"):
        PointingGame(ties="random")
