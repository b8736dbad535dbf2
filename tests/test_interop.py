"""lit_xai methods in Quantus (``explain_func``) and on NumPy arrays."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.attribution import build_method
from lit_xai.attribution.interop import QuantusExplainer, explain_numpy


class PoolNet(nn.Module):
    """Functional ReLU and max-pooling (a net lit_xai does not ship)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_max_pool2d(F.relu(self.conv(x)), 4).flatten(1))


@pytest.fixture
def net_and_batch() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    net = PoolNet().eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).numpy()
    return net, x, np.array([0, 1, 2, 3])


def test_quantus_runs_a_lit_xai_method_as_explain_func(net_and_batch) -> None:
    """Quantus' Sparseness computed through ``explain_func=QuantusExplainer(...)`` equals the same metric on the
    maps passed as ``a_batch`` (exact: same maps). Before: ``unexpected keyword argument 'targets'``."""
    net, x, y = net_and_batch
    explainer = QuantusExplainer("input_x_gradient")
    metric = quantus.Sparseness(disable_warnings=True, display_progressbar=False)
    through_quantus = metric(model=net, x_batch=x, y_batch=y, a_batch=None, explain_func=explainer)
    maps = build_method("input_x_gradient")(net, torch.from_numpy(x), torch.from_numpy(y)).numpy()
    direct = quantus.Sparseness(disable_warnings=True, display_progressbar=False)(
        model=net, x_batch=x, y_batch=y, a_batch=maps, explain_func=explainer
    )
    np.testing.assert_array_equal(np.asarray(through_quantus), np.asarray(direct))
    assert len(through_quantus) == 4


def test_numpy_in_and_out_single_image_and_batch(net_and_batch) -> None:
    net, x, y = net_and_batch
    ig = build_method("integrated_gradients", steps=8)
    batch = explain_numpy(ig, net, x, y)
    single = explain_numpy(ig, net, x[1], 1)
    assert isinstance(batch, np.ndarray) and batch.shape == x.shape and single.shape == x.shape[1:]
    np.testing.assert_allclose(single, batch[1], rtol=1e-5, atol=1e-7)  # batch invariance; float32 tolerance
    expected = ig(net, torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_array_equal(batch, expected)


def test_bad_input_names_the_argument(net_and_batch) -> None:
    net, x, y = net_and_batch
    method = build_method("gradient")
    with pytest.raises(ValueError, match=r"inputs must have shape \[B, C, H, W\] or \[C, H, W\], got \(8, 8\)"):
        explain_numpy(method, net, x[0, 0], None)
    with pytest.raises(ValueError, match="targets must have one entry per image"):
        explain_numpy(method, net, x, y[:3])
    with pytest.raises(TypeError, match="unexpected explain_func_kwargs"):
        QuantusExplainer("gradient")(model=net, inputs=x, targets=y, softmax=True)
