"""Network Dissection and semantic attribution (lit_xai.concepts; seed 002 §2.2-2.3, Eq. 5-6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.concepts import (
    IOU_THRESHOLD,
    TAIL,
    DissectionIoU,
    UnitThresholds,
    dissect,
    layer_integrated_gradients,
    normalised_maps,
    recording,
    semantic_attribution,
)
from lit_xai.concepts.dissection import top_count
from lit_xai.models.classifier import ConfigurationError


def test_defaults_are_the_papers():
    assert TAIL == 0.005  # seed 002 §2.2: P(f_k > T_k) = 0.005
    assert IOU_THRESHOLD == 0.04  # seed 002 §2.2: detector threshold 0.04 as Bau et al.


@pytest.mark.parametrize("count", [1, 7, 200, 999, 5000])
def test_top_count_covers_the_quantile_positions(count):
    q = 1 - TAIL
    needed = count - math.floor(q * (count - 1))
    assert needed <= top_count(count, TAIL) <= count


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_threshold_is_the_exact_numpy_percentile(batch_size):
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(23, 4, 5, 6, generator=g) * torch.tensor([1.0, 3.0, 0.1, 10.0]).view(1, 4, 1, 1)
    metric = UnitThresholds(num_units=4, max_count=23 * 30)
    for start in range(0, 23, batch_size):
        metric.update(acts[start:start + batch_size])
    pooled = acts.transpose(0, 1).reshape(4, -1).numpy().astype(np.float64)
    expected = np.percentile(pooled, 99.5, axis=1)
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12, atol=1e-12)
    # P(f_k > T_k) is the tail share, up to one value
    above = (pooled > metric.compute().numpy()[:, None]).mean(1)
    assert np.all(np.abs(above - TAIL) <= 1 / pooled.shape[1])


def test_threshold_merge_of_two_ranks_equals_one_pass():
    """The DDP reduction (``merge_state`` applies the same function as the gather) keeps the thresholds exact."""
    acts = torch.randn(40, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    whole = UnitThresholds(3, 40 * 16)
    whole.update(acts)
    first, second = UnitThresholds(3, 40 * 16), UnitThresholds(3, 40 * 16)
    first.update(acts[:25])
    second.update(acts[25:])
    first.merge_state(second)
    torch.testing.assert_close(first.compute(), whole.compute())


def test_threshold_refuses_more_values_than_declared():
    metric = UnitThresholds(2, max_count=10)
    with pytest.raises(ValueError, match="max_count"):
        metric.update(torch.zeros(1, 2, 4, 4))


def test_hand_computed_iou_on_a_tiny_case():
    """Two 2×2 images, one unit, one concept, threshold 0.5 at mask resolution (no upsampling)."""
    acts = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[1.0, 1.0], [0.0, 0.0]]]])  # [2, 1, 2, 2]
    masks = torch.tensor([[[[1, 1], [0, 0]]], [[[0, 0], [0, 0]]]], dtype=torch.bool)  # concept only in image 0
    metric = DissectionIoU(torch.tensor([0.5]), num_concepts=1)
    metric.update(acts, masks)
    # image 0: M = left column, L = top row → |∩| = 1, |∪| = 3; image 1 lacks the concept and is not summed
    assert float(metric.intersection) == 1 and float(metric.union) == 3
    assert float(metric.compute()) == pytest.approx(1 / 3)


def test_iou_upsamples_bilinearly_before_thresholding():
    acts = torch.zeros(1, 1, 2, 2)
    acts[0, 0, 0, 0] = 1.0
    masks = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks[0, 0, :4, :4] = True
    metric = DissectionIoU(torch.tensor([0.5]), 1)
    up = F.interpolate(acts, size=(8, 8), mode="bilinear", align_corners=False) >= 0.5
    metric.update(acts, masks)
    inter = (up[0, 0] & masks[0, 0]).sum()
    union = (up[0, 0] | masks[0, 0]).sum()
    assert float(metric.compute()) == pytest.approx(float(inter) / float(union))


def test_iou_unit_chunks_do_not_change_the_sums():
    g = torch.Generator().manual_seed(5)
    acts = torch.randn(4, 7, 3, 3, generator=g)
    masks = torch.rand(4, 3, 9, 9, generator=g) < 0.3
    thresholds = torch.full((7,), 0.5)
    whole, chunked = DissectionIoU(thresholds, 3), DissectionIoU(thresholds, 3, max_elements=4 * 81 * 2)
    whole.update(acts, masks)
    chunked.update(acts, masks)  # 2 units per product
    torch.testing.assert_close(chunked.intersection, whole.intersection)
    torch.testing.assert_close(chunked.union, whole.union)


class Planted(nn.Module):
    """Unit 0 of ``features`` copies concept 1's mask (the mask travels as a second input channel), unit 1 is noise,
    unit 2 is a constant: the planted unit must be labelled with concept 1 at IoU ≈ 1."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = x[:, :1]
        plant = x[:, 1:2]
        feats = self.features(torch.cat([plant, noise, torch.ones_like(plant)], 1))
        return self.fc(feats.mean((2, 3)))


def planted_data(n: int = 24, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 3, size, size, dtype=torch.bool)
    for i in range(n):
        for c in range(3):
            if torch.rand(1, generator=g) < 0.6:
                y, x = torch.randint(0, size - 4, (2,), generator=g)
                h, w = torch.randint(2, 5, (2,), generator=g)
                masks[i, c, y:y + h, x:x + w] = True
    # concept 1 present in a fraction of pixels ≤ the tail, so the top 0.5% are inside the mask
    images = torch.cat([torch.rand(n, 1, size, size, generator=g), masks[:, 1:2].float()], 1)
    return [{"image": images[i:i + 8], "masks": masks[i:i + 8]} for i in range(0, n, 8)], masks


def test_planted_unit_gets_iou_one_and_its_concept():
    batches, masks = planted_data()
    model = Planted()
    result = dissect(model, batches, ["features"], lambda b: b["masks"], ["a", "b", "c"], num_images=24)["features"]
    # the mask fills more than 0.5% of the pixels, so T_0 = 1 and M_0 is exactly the mask
    assert float(result.thresholds[0]) == 1.0
    assert float(result.iou[0, 1]) == pytest.approx(1.0)
    assert result.label(0) == "b" and bool(result.detectors[0])
    assert result.counts()["b"] >= 1
    rows = result.rows()
    assert rows[0]["concept"] == "b" and rows[0]["detector"]


def test_dissect_leaves_the_model_as_found():
    batches, _ = planted_data()
    model = Planted().train()
    hooks = [dict(m._forward_hooks) for m in model.modules()]
    dissect(model, batches, ["features"], lambda b: b["masks"], ["a", "b", "c"], num_images=24)
    assert model.training and all(m.training for m in model.modules())
    assert [dict(m._forward_hooks) for m in model.modules()] == hooks
    assert all(p.grad is None for p in model.parameters())


def test_unknown_layer_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="unknown layer 'featurs'.*Did you mean features"):
        with recording(Planted(), ["featurs"]):
            pass


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.act2 = nn.ReLU()
        self.head = nn.Sequential(nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                  nn.Linear(20, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act2(self.conv2(self.act1(self.conv1(x)))))


def test_layer_ig_completeness():
    """Σ_k Σ_i s_k^i ≈ f(x) − f(0 at the layer) (Eq. 6 is IG at the layer); the midpoint rule's gap shrinks with the
    steps (ReLU kinks: O(1/S)); float64 so that only the quadrature error remains."""
    model = SmallNet().eval().double()
    x = 10 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)).double()
    gaps = {}
    for steps in (16, 256):
        scores, act, full, zero = layer_integrated_gradients(model, "act2", x, lambda out: out[:, 1], steps=steps,
                                                             max_rows=100)
        gaps[steps] = (scores.flatten(1).sum(1) - (full - zero)).abs()
    assert scores.shape == act.shape == (3, 6, 8, 8)
    torch.testing.assert_close(full, model(x)[:, 1].detach())
    assert torch.all(gaps[256] <= 0.02 * (full - zero).abs() + 1e-5), gaps
    assert gaps[256].max() < gaps[16].max()


def test_layer_ig_chunking_does_not_change_the_result():
    model = SmallNet()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    a = layer_integrated_gradients(model, "act1", x, lambda out: out[:, 0], steps=8, max_rows=2)[0]
    b = layer_integrated_gradients(model, "act1", x, lambda out: out[:, 0], steps=8, max_rows=100)[0]
    torch.testing.assert_close(a, b)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_planted_driving_unit_is_the_top_contributor():
    """Unit 0 carries the input into a large output weight; the others into small ones."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[4].weight.copy_(torch.tensor([[5.0, 0.1, -0.2, 0.3]]))
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(4)) + 0.1
    result = semantic_attribution(model, "1", x, lambda out: out[:, 0], top=2, steps=16)
    assert torch.all(result.top_units[:, 0] == 0)
    assert result.contributions.shape == (4, 4)
    assert result.top_maps.shape == (4, 2, 6, 6)
    # the suffix is linear, so completeness is exact
    torch.testing.assert_close(result.scores.flatten(1).sum(1), result.outputs - result.baseline_outputs,
                               rtol=1e-5, atol=1e-5)


def test_normalised_maps_peak_at_one():
    s = torch.tensor([[[[0.5, -0.25], [0.0, 0.1]], [[-2.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    maps = normalised_maps(s, (2, 2))
    assert float(maps[0, 0].max()) == pytest.approx(1.0)
    assert float(maps[0, 1].min()) == pytest.approx(-1.0)  # negative peak: sign kept (docs/concepts.md)
    assert torch.all(maps[0, 2] == 0)
    assert normalised_maps(s, (8, 8)).shape == (1, 3, 8, 8)
