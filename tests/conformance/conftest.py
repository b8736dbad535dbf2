"""Shared pieces of the peer-conformance suite: nets lit_xai does not ship, and test-only peer shims.

Every conformance case runs lit_xai next to an independent implementation (Captum, Quantus, pytorch-grad-cam,
zennit, TorchRay, a closed form) on these nets, which exercise what real models do and our built-ins may not:
one in-place ``nn.ReLU`` module reused several times inside a residual block, and functional ``F.relu`` with
max-pooling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

# Quantus 0.6 calls numpy.trapz, which NumPy 2 removed: a test-only shim, never in the package.
if not hasattr(np, "trapz"):
    np.trapz = np.trapezoid


class ReusedInplaceReLUNet(nn.Module):
    """A residual net whose one in-place ReLU module is called three times per block (torchvision-style)."""

    def __init__(self, num_classes: int = 5, width: int = 8, in_chans: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.stem(x)))
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.relu(out + identity)
        return self.head(out.mean((2, 3)))


class FunctionalReLUNet(nn.Module):
    """Functional ``F.relu`` and max-pooling, no ReLU modules at all."""

    def __init__(self, num_classes: int = 5, width: int = 8, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        x = F.adaptive_max_pool2d(x, 4)
        return self.fc(x.flatten(1))


def _randomised_eval(net: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return net.eval()


@pytest.fixture
def reused_relu_net() -> nn.Module:
    """:class:`ReusedInplaceReLUNet` in eval mode with non-trivial BatchNorm statistics (seed 0)."""
    torch.manual_seed(0)
    return _randomised_eval(ReusedInplaceReLUNet(), seed=1)


@pytest.fixture
def functional_relu_net() -> nn.Module:
    """:class:`FunctionalReLUNet` in eval mode (seed 0)."""
    torch.manual_seed(0)
    return FunctionalReLUNet().eval()


@pytest.fixture(params=["reused_relu", "functional_relu"])
def foreign_net(request: pytest.FixtureRequest) -> nn.Module:
    """Both foreign nets, one after the other."""
    torch.manual_seed(0)
    net = ReusedInplaceReLUNet() if request.param == "reused_relu" else FunctionalReLUNet()
    return _randomised_eval(net, seed=1)


@pytest.fixture
def images() -> torch.Tensor:
    """Six seeded 3×16×16 images."""
    return torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
