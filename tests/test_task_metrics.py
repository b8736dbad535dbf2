"""Metrics for the multi-label, regression and six-region tasks (issue 17, docs/tasks.md): the recorded ``output``
(sigmoid, identity), localisation IoU over the data set and the attribution–severity correlation, each against a
hand-computed small case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lit_xai.metrics import build_metric
from lit_xai.metrics.outputs import target_output
from lit_xai.metrics.task_gt import percentiles


class Sum(nn.Module):
    """f(x) = [Σ x, −Σ x]: a linear 'regressor' whose drop on removing pixels to 0 is their sum (closed form)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.flatten(1).sum(1)
        return torch.stack([total, -total], 1)


def test_target_output_closed_forms() -> None:
    outputs = torch.tensor([[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]])
    target = torch.tensor([2, 0])
    z = torch.tensor([2.0, 1.5])
    torch.testing.assert_close(target_output(outputs, target, "identity"), z)
    torch.testing.assert_close(target_output(outputs, target, "logit"), z)
    torch.testing.assert_close(target_output(outputs, target, "sigmoid"), 1 / (1 + torch.exp(-z)))
    softmax = torch.exp(z) / torch.exp(outputs).sum(1)
    torch.testing.assert_close(target_output(outputs, target, "probability"), softmax)
    with pytest.raises(ValueError, match=r"target indices must lie in \[0, 3\)"):
        target_output(outputs, torch.tensor([0, 3]), "identity")
    with pytest.raises(ValueError, match="output='softmax'"):
        build_metric("sensitivity_n", output="softmax")


@pytest.mark.parametrize("output", ["identity", "sigmoid"])
def test_deletion_curve_on_a_sum_model(output: str) -> None:
    """Removing n of 16 ones to 0 leaves Σ = 16 − n: the curve is g(16 − n_k) with g = id or σ."""
    inputs = torch.ones(2, 1, 4, 4)
    maps = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    metric = build_metric("deletion", baseline=0.0, pixels_per_step=4, output=output)
    metric.update(Sum(), inputs, torch.zeros(2, dtype=torch.long), maps)
    result = metric.compute()
    remaining = 16.0 - torch.arange(0, 17, 4, dtype=torch.float32)
    expected = remaining if output == "identity" else remaining.sigmoid()
    torch.testing.assert_close(result[f"curve/{output}"], expected)
    torch.testing.assert_close(result["score"], torch.trapezoid(expected, remaining.flip(0) / 16))


def test_insertion_identity_and_min_probability_rules() -> None:
    inputs = torch.ones(1, 1, 4, 4)
    maps = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    metric = build_metric("insertion", baseline=0.0, pixels_per_step=8, num_steps=None, output="identity")
    metric.update(Sum(), inputs, torch.zeros(1, dtype=torch.long), maps)
    torch.testing.assert_close(metric.compute()["curve/identity"], torch.tensor([0.0, 8.0, 16.0]))
    with pytest.raises(ValueError, match="min_probability"):
        build_metric("deletion", output="identity", min_probability=0.5)


def test_sensitivity_n_identity_on_a_linear_regressor() -> None:
    """Ancona et al.: gradient × input of a linear model is exactly the output drop of every removed set (baseline
    0), so Sensitivity-n = 1 at every n; a random map correlates less. Output 1 = −Σ x: the map −x scores 1."""
    generator = torch.Generator().manual_seed(2)
    inputs = torch.rand(3, 1, 6, 6, generator=generator) + 0.5
    exact = build_metric("sensitivity_n", n_values=[2, 5, 9], num_masks=20, baseline=0.0, output="identity")
    exact.update(Sum(), inputs, torch.zeros(3, dtype=torch.long), inputs)
    torch.testing.assert_close(exact.compute()["curve/correlation"], torch.ones(3))
    negative = build_metric("sensitivity_n", n_values=[2, 5, 9], num_masks=20, baseline=0.0, output="identity")
    negative.update(Sum(), inputs, torch.ones(3, dtype=torch.long), -inputs)
    torch.testing.assert_close(negative.compute()["score"], torch.tensor(1.0))
    random = build_metric("sensitivity_n", n_values=[2, 5, 9], num_masks=20, baseline=0.0, output="identity")
    random.update(Sum(), inputs, torch.zeros(3, dtype=torch.long), torch.rand(3, 1, 6, 6, generator=generator))
    assert float(random.compute()["score"]) < 0.9


def test_percentiles_match_torch_quantile() -> None:
    scores = torch.rand(4, 37, generator=torch.Generator().manual_seed(3))
    q = torch.tensor([0.0, 0.3, 0.77, 1.0])
    expected = torch.stack([torch.quantile(scores[i], q[i]) for i in range(4)])
    torch.testing.assert_close(percentiles(scores, q), expected)


def _iou_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 4×4 images; GT 2×2 squares (4 pixels); maps whose top 4 pixels overlap the GT in 2 and 4 pixels."""
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    masks[:, :, :2, :2] = True
    maps = torch.arange(16, dtype=torch.float32).flip(0).view(1, 1, 4, 4).repeat(2, 1, 1, 1) / 16
    maps[0] = 0.0
    maps[0, 0, 0, :] = 1.0  # top 4 = the first row: 2 pixels inside the GT
    maps[1] = 0.0
    maps[1, 0, :2, :2] = 1.0  # top 4 = the GT itself
    return masks, maps


def test_localisation_iou_gt_area_rule_sums_over_the_data_set() -> None:
    masks, maps = _iou_case()
    metric = build_metric("localisation_iou")
    inputs, target = torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    metric.update(nn.Identity(), inputs, target, maps, masks=masks)
    # image 0: |A ∩ G| = 2, |A ∪ G| = 6; image 1: 4 and 4 → Σ I / Σ U = 6 / 10 (the mean of ratios would be 2/3)
    torch.testing.assert_close(metric.compute()["score"], torch.tensor(6 / 10))
    torch.testing.assert_close(metric.image_scores(nn.Identity(), inputs, target, maps, masks=masks),
                               torch.tensor([2 / 6, 1.0]))
    boxes = build_metric("localisation_iou", ground_truth="boxes")
    boxes.update(nn.Identity(), inputs, target, maps, boxes=torch.tensor([[0, 0, 2, 2]] * 2))
    torch.testing.assert_close(boxes.compute()["score"], torch.tensor(6 / 10))


def test_localisation_iou_picks_the_targets_channel_and_skips_empty_ground_truth() -> None:
    masks, maps = _iou_case()
    per_output = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    per_output[:, 2] = masks[:, 0]  # the GT of output 2; output 0 has none in image 1
    per_output[0, 0] = masks[0, 0]
    metric = build_metric("localisation_iou")
    metric.update(nn.Identity(), torch.zeros(2, 1, 4, 4), torch.tensor([0, 0]), maps, masks=per_output)
    result = metric.compute()
    torch.testing.assert_close(result["score"], torch.tensor(2 / 6))
    assert (float(result["count"]), float(result["skipped"])) == (1.0, 1.0)
    second = build_metric("localisation_iou")
    second.update(nn.Identity(), torch.zeros(2, 1, 4, 4), torch.tensor([2, 2]), maps, masks=per_output)
    torch.testing.assert_close(second.compute()["score"], torch.tensor(6 / 10))


def test_localisation_iou_top_fraction_and_value_rules() -> None:
    masks, maps = _iou_case()
    inputs, target = torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    # value 0.5: A = the map's ones, as under gt_area here
    value = build_metric("localisation_iou", threshold="value", value=0.5)
    value.update(nn.Identity(), inputs, target, maps, masks=masks)
    torch.testing.assert_close(value.compute()["score"], torch.tensor(6 / 10))
    # top fraction 1: A = every pixel (≥ the minimum) → IoU = |G| / 16 per image
    everything = build_metric("localisation_iou", threshold="top_fraction", fraction=1.0)
    everything.update(nn.Identity(), inputs, target, maps, masks=masks)
    torch.testing.assert_close(everything.compute()["score"], torch.tensor(8 / 32))
    with pytest.raises(ValueError, match="threshold"):
        build_metric("localisation_iou", threshold="otsu")


def test_localisation_iou_states_sum_like_ddp() -> None:
    """Two 'ranks' with disjoint images: summed states give the one-process score."""
    masks, maps = _iou_case()
    inputs, target = torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    whole, parts = build_metric("localisation_iou"), [build_metric("localisation_iou") for _ in range(2)]
    whole.update(nn.Identity(), inputs, target, maps, masks=masks)
    for i, part in enumerate(parts):
        part.update(nn.Identity(), inputs[i:i + 1], target[i:i + 1], maps[i:i + 1], masks=masks[i:i + 1])
    parts[0].merge_state(parts[1])
    torch.testing.assert_close(parts[0].compute()["score"], whole.compute()["score"])


def test_severity_correlation_closed_forms() -> None:
    generator = torch.Generator().manual_seed(4)
    severity = torch.randint(0, 4, (4, 1, 32, 32), generator=generator).float()
    target = torch.zeros(4, dtype=torch.long)
    same = build_metric("severity_correlation")
    same.update(nn.Identity(), severity, target, 2 * severity + 3, masks=severity)
    torch.testing.assert_close(same.compute()["score"], torch.tensor(1.0))
    random = build_metric("severity_correlation")
    random.update(nn.Identity(), severity, target, torch.rand(4, 1, 32, 32, generator=generator), masks=severity)
    assert abs(float(random.compute()["score"])) < 0.05  # ~ N(0, 1/√(4·1024)) ≈ ±0.016
    small_map, small_severity = torch.tensor([1.0, 2.0, 0.5, 4.0]), torch.tensor([0.0, 1.0, 1.0, 3.0])
    hand = build_metric("severity_correlation")
    hand.update(nn.Identity(), torch.zeros(1, 1, 2, 2), target[:1], small_map.view(1, 1, 2, 2),
                masks=small_severity.view(1, 1, 2, 2))
    expected = np.corrcoef(small_map.numpy(), small_severity.numpy())[0, 1]
    assert math.isclose(float(hand.compute()["score"]), float(expected), rel_tol=1e-5)
