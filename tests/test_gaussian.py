import math

import pytest
import torch

from lit_xai.gaussian import gaussian_kernel1d


def test_kernel_is_the_normalised_sampled_gaussian() -> None:
    tail = math.exp(-0.5 / 4.0)  # k = ±1, σ = 2
    expected = torch.tensor([tail, 1.0, tail], dtype=torch.float64) / (1 + 2 * tail)
    kernel = gaussian_kernel1d(2.0, 1, dtype=torch.float64)
    torch.testing.assert_close(kernel, expected, rtol=0, atol=1e-15)
    assert gaussian_kernel1d(0.5, 0).tolist() == [1.0]


@pytest.mark.parametrize(("sigma", "radius", "message"), [(0.0, 1, "sigma"), (1.0, -1, "radius")])
def test_bad_arguments_are_named(sigma: float, radius: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gaussian_kernel1d(sigma, radius)


def test_truncated_radius_reaches_truncate_sigmas_and_at_least_one_tap() -> None:
    from lit_xai.gaussian import truncated_radius

    assert truncated_radius(2.0, 3.0) == 6
    assert truncated_radius(1.1, 3.0) == 4  # ⌈3.3⌉
    assert truncated_radius(0.1, 3.0) == 1
