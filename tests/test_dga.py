"""Distilled Gradient Aggregation (seed 004) against a per-image reference built on scipy ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from torch import nn

from lit_xai.attribution import AttributionError, build_method
from lit_xai.attribution.dga import extreme_positive_contributor_mask, rank_fraction_at_most, weak_contributor_mask
from lit_xai.models.backbones import build_backbone

torch.set_num_threads(1)


class TinyConvNet(nn.Module):
    """Conv and linear layers with biases, ReLUs, a max-pool: piecewise linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(4 * 3 * 3, 8), nn.Linear(8, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu(self.conv(x))).flatten(1)
        return self.fc2(self.relu(self.fc1(h)))


@pytest.fixture
def net() -> TinyConvNet:
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.3)  # visible biases
    return model


def reference_local(model: nn.Module, x: torch.Tensor, target: int, kind: str) -> np.ndarray:
    """One image. UFG via completeness: the bias terms sum to ``y − Σ x·∂y/∂x`` for a piecewise-linear net."""
    xg = x.clone().requires_grad_(True)
    y = model(xg)[0, target]
    (grad,) = torch.autograd.grad(y, xg)
    local = (x * grad).detach()
    if kind == "uniform_fullgrad":
        local = local + (y.detach() - local.sum()) / x.numel()
    return local.numpy().ravel()


def reference_dga(model: nn.Module, x: torch.Tensor, target: int, steps: int, q: float, kind: str) -> np.ndarray:
    """Algorithm 1 for one image, written directly from Eq. 6-12 with scipy's 'max' ranks."""
    flat_x = x.numpy().ravel()
    current = flat_x
    total = np.zeros_like(flat_x)
    for n in range(steps + 1):
        phi = reference_local(model, torch.from_numpy(current.reshape(x.shape).copy()), target, kind)
        total += np.maximum(phi, 0)
        wc = (rankdata(np.abs(phi), method="max") / phi.size > n / steps).astype(np.float32)
        epc = (rankdata(phi, method="max") / phi.size <= q).astype(np.float32)
        current = flat_x * (n / steps * wc + (1 - n / steps) * epc)
    return (total / (steps + 1)).reshape(x.shape)


def test_rank_fraction_threshold_matches_scipy_max_ranks_with_ties() -> None:
    values = torch.tensor([[3.0, 1.0, 3.0, 2.0, 0.5, 3.0], [0.0, 0.0, 1.0, -1.0, 5.0, 2.0]])
    ties = torch.randint(0, 5, (3, 40), generator=torch.Generator().manual_seed(0)).float()
    for batch in (values, ties):
        ranks = np.stack([rankdata(v, method="max") / v.size for v in batch.numpy()])
        for fraction in (0.0, 0.1, 1 / 3, 0.5, 0.9, 0.999, 1.0):
            np.testing.assert_array_equal(rank_fraction_at_most(batch, fraction).numpy(), ranks <= fraction)


def test_masks_remove_the_weak_and_the_extreme_positive_features() -> None:
    local = torch.randn(2, 3, 10, 10)
    wc = weak_contributor_mask(local, step=3, steps=10)
    assert wc.mean(dim=(1, 2, 3)).tolist() == pytest.approx([0.7, 0.7])  # the weakest 30% by |φ| are zeroed
    for b in range(2):
        assert local[b].abs()[wc[b] == 1].min() > local[b].abs()[wc[b] == 0].max()
    epc = extreme_positive_contributor_mask(local, 0.9)
    assert epc.mean(dim=(1, 2, 3)).tolist() == pytest.approx([0.9, 0.9])  # the top 10% by signed φ are zeroed
    for b in range(2):
        assert local[b][epc[b] == 0].min() > local[b][epc[b] == 1].max()


def test_uniform_fullgrad_sums_to_the_logit_with_batchnorm() -> None:
    torch.manual_seed(0)
    model = build_backbone("resnet8", num_classes=4, in_chans=3).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2), m.running_var.uniform_(0.5, 2.0), m.bias.normal_(0, 0.2)
    x = torch.randn(2, 3, 16, 16)
    ufg = build_method("uniform_fullgrad")(model, x)
    logits = model(x)
    torch.testing.assert_close(ufg.flatten(1).sum(1), logits.max(1).values, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["uniform_fullgrad", "input_x_gradient"])
def test_dga_matches_the_per_image_reference(net: TinyConvNet, kind: str) -> None:
    x = torch.randn(3, 2, 6, 6)
    target = torch.tensor([0, 2, 1])
    maps = build_method("dga", steps=5, epc_quantile=0.8, local_attribution=kind)(net, x, target)
    assert maps.shape == x.shape and (maps >= 0).all()
    for b in range(3):
        expected = reference_dga(net, x[b : b + 1], int(target[b]), 5, 0.8, kind)
        np.testing.assert_allclose(maps[b : b + 1].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_dga_leaves_the_model_unchanged_and_needs_relus(net: TinyConvNet) -> None:
    before = {k: v.clone() for k, v in net.state_dict().items()}
    build_method("dga", steps=3)(net, torch.randn(2, 2, 6, 6))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    assert not any(m._forward_hooks for m in net.modules())
    gelu = nn.Sequential(nn.Flatten(), nn.Linear(72, 8), nn.GELU(), nn.Linear(8, 3))
    with pytest.raises(AttributionError, match="ReLU"):
        build_method("dga")(gelu, torch.randn(2, 2, 6, 6))
    with pytest.raises(ValueError, match="local_attribution"):
        build_method("dga", local_attribution="gradcam")
