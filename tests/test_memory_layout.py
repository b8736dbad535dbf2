"""Every registered method serves a model whose weights are in ``channels_last`` memory layout (a common CPU/GPU
speed setting: convolutions then produce channels-last activations and gradients), returns finite maps of the input's
batch, and leaves the model's layout and parameters as found. InputIBA reshaped such activations with ``view`` and
failed before (issue 18 review)."""

from __future__ import annotations

import pytest
import torch
from fast_methods import check_serves
from torch import nn

from lit_xai.attribution import available_methods, build_method
from lit_xai.models import build_backbone


@pytest.fixture(scope="module")
def channels_last_model() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("digits_cnn", num_classes=10, in_chans=1).eval().to(memory_format=torch.channels_last)


def _is_channels_last(model: nn.Module) -> bool:
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)


@pytest.mark.parametrize("name", available_methods())
def test_every_method_serves_a_channels_last_model(channels_last_model: nn.Module, name: str) -> None:
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    check_serves(channels_last_model, name, x, torch.tensor([0, 3]))
    assert _is_channels_last(channels_last_model)


def test_gradient_of_a_channels_last_model_equals_the_contiguous_one() -> None:
    """The layout changes only the convolution algorithms: the same input gradient to float rounding."""
    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=10, in_chans=1).double().eval()
    x = torch.randn(3, 1, 32, 32, dtype=torch.float64)
    expected = build_method("gradient")(model, x, torch.tensor([0, 1, 2]))
    got = build_method("gradient")(model.to(memory_format=torch.channels_last), x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
