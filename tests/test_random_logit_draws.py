"""Random Logit's other class of image b: ``randint(0, K − 1)`` of a fresh generator seeded with image b's seed
(:func:`lit_xai.attribution.noise.sample_seeds`), shifted past the target: the definition, written out."""

from __future__ import annotations

import pytest
import torch

from lit_xai.attribution.noise import sample_seeds
from lit_xai.metrics.random_logit import RandomLogit


@pytest.mark.parametrize("num_classes", [2, 3, 10, 1000])
def test_other_classes_equal_one_fresh_generator_per_image(num_classes: int) -> None:
    inputs = torch.randn(7, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.arange(7) % num_classes
    metric = RandomLogit(seed=5)
    expected = []
    for seed, label in zip(sample_seeds(inputs, 5, "random_logit"), target.tolist()):
        draw = int(torch.randint(0, num_classes - 1, (1,), generator=torch.Generator().manual_seed(seed)))
        expected.append(draw + int(draw >= label))
    assert metric.other_classes(inputs, target, num_classes).tolist() == expected
