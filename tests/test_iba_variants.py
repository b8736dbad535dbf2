"""InputIBA (grouped critic, input resolution), Regression IBA, and IBA on the project's backbones."""

from __future__ import annotations

import pytest
import torch
from test_iba import assert_unchanged, loader, snapshot, tiny
from torch import nn

from lit_xai.attribution import AttributionError, build_method
from lit_xai.attribution.information import FeatureStatistics, InputIBA, RegressionIBA
from lit_xai.attribution.information.input_iba import GroupedCritic
from lit_xai.models.backbones import build_backbone

TINY_GAN = dict(gan_epochs=1, gan_target_samples=8, gan_batch_size=4, critic_steps=1, feature_steps=2,
                input_steps=2, noise_draws=2, critic_hidden=(8, 4))


def test_grouped_critic_equals_separate_critics() -> None:
    torch.manual_seed(0)
    features = torch.randn(5, 2 * 3, 8, 8, dtype=torch.float64)  # N=5 samples, G=2 images, C=3 channels
    grouped = GroupedCritic(2, 3, (8, 8), hidden=(7, 5), seed=3).double().train()
    singles = [GroupedCritic(1, 3, (8, 8), hidden=(7, 5), seed=3).double().train() for _ in range(2)]
    expected = torch.stack([critic(features[:, 3 * g : 3 * g + 3]).squeeze(1) for g, critic in enumerate(singles)], 1)
    torch.testing.assert_close(grouped(features), expected)
    # gradients of a summed loss are per critic: the same as each critic's own gradient
    grouped(features).sum().backward()
    for g, critic in enumerate(singles):
        critic(features[:, 3 * g : 3 * g + 3]).sum().backward()
        torch.testing.assert_close(grouped.weights[0].grad[g], critic.weights[0].grad[0])
        torch.testing.assert_close(grouped.convs[1].weight.grad[12 * g : 12 * g + 12], critic.convs[1].weight.grad)


def test_grouped_critic_rejects_tiny_maps() -> None:
    with pytest.raises(AttributionError, match="too small"):
        GroupedCritic(1, 4, (3, 3))


def test_input_iba_map_has_input_resolution_and_model_untouched() -> None:
    model = tiny()
    before = snapshot(model)
    method = build_method("input_iba", layer="stem", **TINY_GAN).fit(model, loader())
    x = loader(1, 2)[0]["image"]
    result = method.explain(model, x)
    assert result.attribution.shape == (2, 1, 16, 16)  # input resolution, no interpolation
    assert result.feature.capacity.shape == (2, 1, 8, 8)  # the feature bottleneck's own resolution
    assert result.prior.shape == x.shape and bool(((result.prior >= 0) & (result.prior <= 1)).all())
    assert bool(((result.attribution >= 0) & (result.attribution <= 1)).all())
    # the reference's map is sigmoid(α) after the last update, unblurred: without a blur it is Λ*'s channel mean
    unblurred_iba = build_method("input_iba", layer="stem", input_sigma=0.0, **TINY_GAN)
    unblurred = unblurred_iba.fit(model, loader()).explain(model, x)
    torch.testing.assert_close(unblurred.attribution, unblurred.lam.mean(1, keepdim=True))
    assert bool((result.capacity >= 0).all())
    torch.testing.assert_close(result.capacity.sum((1, 2, 3)), result.total_bits)
    torch.testing.assert_close(method(model, x), result.attribution)
    assert_unchanged(model, before)


def test_input_iba_batched_equals_one_image_at_a_time() -> None:
    model = tiny(torch.float64)
    method = InputIBA(layer="stem", **TINY_GAN).fit(model, loader(dtype=torch.float64))
    x = loader(1, 2, dtype=torch.float64)[0]["image"]
    target = torch.tensor([1, 0])
    batched = method(model, x, target)
    single = torch.cat([method(model, x[i : i + 1], target[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batched, single, rtol=1e-7, atol=1e-8)


def test_input_iba_checks_input_noise() -> None:
    model = tiny()
    with pytest.raises(AttributionError, match="input_mean needs 1 or 3"):
        InputIBA(layer="stem", input_mean=(0.0, 1.0), **TINY_GAN).fit(model, loader())(model, loader(1, 1)[0]["image"])


class Regressor(nn.Module):
    """Scalar output = mean activation of the left half of a feature map: only the left half informs it."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.features.weight.fill_(0.1)
            self.features.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return 5.0 * f[..., : f.shape[-1] // 2].mean((1, 2, 3))


@pytest.mark.parametrize("loss", ["deviation", "maximisation"])
def test_regression_iba_finds_the_informative_half(loss: str) -> None:
    model = Regressor()
    data = [{"image": torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    method = RegressionIBA(layer="features", loss=loss, beta=1.0, steps=10, noise_draws=4, sigma=0.0).fit(model, data)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9)) + 1.0
    capacity = method(model, x)
    assert capacity.shape == (2, 1, 8, 8)
    left, right = capacity[..., :4].mean((1, 2, 3)), capacity[..., 4:].mean((1, 2, 3))
    assert bool((left > 3 * right).all()), (left, right)


def test_regression_iba_mse_needs_target_values() -> None:
    model = Regressor()
    x = torch.randn(2, 3, 8, 8)
    stats = FeatureStatistics(torch.zeros(4, 8, 8), torch.ones(4, 8, 8), torch.ones(4, 8, 8, dtype=torch.bool), 1)
    method = RegressionIBA(layer="features", loss="mse", steps=1, noise_draws=1, statistics=stats)
    with pytest.raises(AttributionError, match="needs target values"):
        method(model, x)
    assert method.explain(model, x, target_values=torch.tensor([0.0, 1.0])).capacity.shape == (2, 1, 8, 8)
    with pytest.raises(AttributionError, match="output index"):
        RegressionIBA(layer="features", steps=1, statistics=stats)(nn.Sequential(model, nn.Unflatten(0, (2, 1))),
                                                                    x, target=3)


@pytest.mark.parametrize(
    "backbone,layer,size",
    [
        ("resnet8", "layer2", (16, 16)),
        ("cnn6", "features.9", (8, 8)),
        pytest.param("timm/resnet18", "layer3", (2, 2), marks=pytest.mark.slow),
    ],
)
def test_iba_on_project_backbones(backbone: str, layer: str, size: tuple[int, int]) -> None:
    model = build_backbone(backbone, num_classes=10)
    before = snapshot(model)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    method = build_method("iba", layer=layer, steps=1, noise_draws=2).fit(model, [{"image": x.repeat(2, 1, 1, 1)}])
    capacity = method(model, x)
    assert capacity.shape == (1, 1, *size) and bool((capacity >= 0).all())
    assert_unchanged(model, before)


@pytest.mark.slow
def test_iba_on_vgg16_conv4_1() -> None:
    model = build_backbone("torchvision/vgg16", num_classes=10)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    method = build_method("iba", layer="features.17", steps=1, noise_draws=1).fit(model, [{"image": x}])
    assert method(model, x).shape == (1, 1, 4, 4)  # conv4_1 runs at 1/8 of the input resolution
