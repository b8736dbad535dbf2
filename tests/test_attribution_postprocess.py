"""Post-processing functions against hand-computed values and SciPy."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from scipy import ndimage

from lit_xai.attribution import AttributionError
from lit_xai.attribution.postprocess import (
    absolute,
    gaussian_smooth,
    morphological_opening,
    normalize,
    pipeline,
    reduce_channels,
    upsample,
)


@pytest.fixture
def maps():
    return torch.tensor([[[[1.0, -2.0], [0.5, 0.0]], [[-3.0, 1.0], [0.5, 2.0]]]])  # [1, 2, 2, 2]


def test_channel_reductions(maps):
    torch.testing.assert_close(reduce_channels(maps, "sum"), torch.tensor([[[[-2.0, -1.0], [1.0, 2.0]]]]))
    torch.testing.assert_close(reduce_channels(maps, "abs_sum"), torch.tensor([[[[4.0, 3.0], [1.0, 2.0]]]]))
    torch.testing.assert_close(reduce_channels(maps, "max_abs"), torch.tensor([[[[3.0, 2.0], [0.5, 2.0]]]]))
    torch.testing.assert_close(reduce_channels(maps, "mean"), reduce_channels(maps, "sum") / 2)
    with pytest.raises(AttributionError, match="unknown channel reduction 'median'"):
        reduce_channels(maps, "median")
    with pytest.raises(AttributionError, match=r"\[B, C, H, W\]"):
        reduce_channels(maps[0], "sum")


def test_normalisations(maps):
    torch.testing.assert_close(normalize(maps, "max_abs"), maps / 3.0)
    torch.testing.assert_close(normalize(maps, "min_max"), (maps + 3.0) / 5.0)
    assert normalize(torch.zeros(2, 1, 3, 3), "min_max").abs().max() == 0  # constant map: no NaN
    two = torch.stack([maps[0], 2 * maps[0]])  # per-sample
    torch.testing.assert_close(normalize(two, "max_abs")[1], maps[0] / 3.0)
    torch.testing.assert_close(absolute(maps), maps.abs())


def test_upsample_matches_bilinear_align_corners_false():
    small = torch.arange(4.0).view(1, 1, 2, 2)
    big = upsample(small, (4, 4))
    # align_corners=False: output pixel centres map to (i + 0.5)/2 − 0.5 in the input
    torch.testing.assert_close(big[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert upsample(small, torch.zeros(3, 3, 7, 5)).shape == (1, 1, 7, 5)


def test_gaussian_smooth_matches_scipy():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 3, 17, 20)).astype(np.float32)
    ours = gaussian_smooth(torch.from_numpy(image), sigma=1.5, truncate=3.0).numpy()
    theirs = ndimage.gaussian_filter(image, sigma=(0, 0, 1.5, 1.5), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_morphological_opening_matches_scipy():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 1, 12, 12)).astype(np.float32)
    ours = morphological_opening(torch.from_numpy(image), kernel_size=3).numpy()
    theirs = ndimage.grey_opening(image[0, 0], size=(3, 3), mode="nearest")
    np.testing.assert_allclose(ours[0, 0], theirs, atol=1e-6)
    speck = torch.zeros(1, 1, 7, 7)
    speck[0, 0, 3, 3] = 1.0  # smaller than the window: removed
    assert morphological_opening(speck, 3).abs().max() == 0


def test_pipeline_composes_left_to_right(maps):
    process = pipeline(partial(reduce_channels, how="max_abs"), partial(normalize, how="max_abs"))
    torch.testing.assert_close(process(maps), torch.tensor([[[[1.0, 2 / 3], [1 / 6, 2 / 3]]]]))
