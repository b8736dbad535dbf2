"""Every registered method serves a model whose weights are in ``channels_last`` memory layout (a common CPU/GPU
speed setting: convolutions then produce channels-last activations and gradients), returns finite maps of the input's
batch, and leaves the model's layout and parameters as found. InputIBA reshaped such activations with ``view`` and
failed before (issue 18 review)."""

from __future__ import annotations

import warnings

import pytest
import torch
from fast_methods import FAST_KWARGS
from torch import nn

from lit_xai.attribution import AttributionError, available_methods, build_method
from lit_xai.models import build_backbone

#: the support sweep's reduced settings, plus InputIBA's (its GAN is fitted on every call here)
FAST = {**FAST_KWARGS, "input_iba": {"gan_epochs": 1, "gan_target_samples": 8, "feature_steps": 2}}
#: ResNet-only defaults refused by the digits CNN with an AttributionError naming the method
REFUSE = {"prune_grad_mid"}


@pytest.fixture(scope="module")
def channels_last_model() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("digits_cnn", num_classes=10, in_chans=1).eval().to(memory_format=torch.channels_last)


def _is_channels_last(model: nn.Module) -> bool:
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)


@pytest.mark.parametrize("name", available_methods())
def test_every_method_serves_a_channels_last_model(channels_last_model: nn.Module, name: str) -> None:
    model = channels_last_model
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    method = build_method(name, **FAST.get(name, {}))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no feature statistics.*")  # the IBA family's prior warning
        if name in REFUSE:
            with pytest.raises(AttributionError, match=name):
                method(model, x, torch.tensor([0, 3]))
        else:
            maps = method(model, x, torch.tensor([0, 3]))
            assert maps.shape[0] == 2 and bool(torch.isfinite(maps).all())
    assert _is_channels_last(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_gradient_of_a_channels_last_model_equals_the_contiguous_one() -> None:
    """The layout changes only the convolution algorithms: the same input gradient to float rounding."""
    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=10, in_chans=1).double().eval()
    x = torch.randn(3, 1, 32, 32, dtype=torch.float64)
    expected = build_method("gradient")(model, x, torch.tensor([0, 1, 2]))
    got = build_method("gradient")(model.to(memory_format=torch.channels_last), x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
