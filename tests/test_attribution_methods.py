"""Method-specific properties and hand-derived cases for methods without (or beyond) a Captum counterpart."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.attribution import AttributionError, build_method
from lit_xai.attribution.extremal import BlurPerturbation, SmoothMask
from lit_xai.attribution.gradients import integration_rule
from lit_xai.attribution.guided import percentile_per_sample
from lit_xai.models.backbones import build_backbone


def seeded_randn(*shape: int, seed: int) -> torch.Tensor:
    """Standard-normal test inputs from their own seeded generator (never the global one)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def resnet8():
    torch.manual_seed(0)
    return build_backbone("resnet8", num_classes=10).eval()


# ---------------------------------------------------------------- Integrated Gradients


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
                                  "gausslegendre"])
def test_integration_rules_integrate_polynomials(rule):
    """Each rule's (α, w) integrates 1 exactly and x² to its order (Gauss-Legendre exactly up to degree 2n−1)."""
    alphas, weights = integration_rule(rule, 20)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    exact_tol = {"gausslegendre": 1e-12, "riemann_middle": 1e-3, "riemann_trapezoid": 1e-3}.get(rule, 3e-2)
    assert (weights * alphas**2).sum().item() == pytest.approx(1 / 3, abs=exact_tol)
    if rule == "gausslegendre":
        assert (weights * alphas**39).sum().item() == pytest.approx(1 / 40, abs=1e-12)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle"])
def test_integrated_gradients_completeness(rule):
    """Σ IG ≈ y_t(x) − y_t(x̄) (Sundararajan Prop. 1), float64. BN shifts make the net non-homogeneous, so the
    gradient really varies along the path (a bias-free ReLU net would make this exact with one step)."""
    torch.manual_seed(0)
    model = build_backbone("resnet8", num_classes=10).double().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator, dtype=torch.float64))
                module.running_mean.copy_(0.3 * torch.randn(module.bias.shape, generator=generator,
                                                            dtype=torch.float64))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=generator)
    target = torch.tensor([2, 6])
    with torch.no_grad():
        gap = model(x)[torch.arange(2), target] - model(torch.zeros_like(x))[torch.arange(2), target]
    one_step = build_method("integrated_gradients", steps=1, rule="riemann_right")(model, x, target)
    one_step_error = (one_step.flatten(1).sum(1) - gap).abs()
    error = (build_method("integrated_gradients", steps=64, rule=rule)(model, x, target).flatten(1).sum(1) - gap).abs()
    assert (one_step_error / gap.abs()).min() > 0.5  # the path matters: one gradient does not explain the gap
    # a piecewise-constant integrand (ReLU kinks) limits the quadrature to ~1/steps: a few % of the gap
    assert (error / gap.abs()).max() < 5e-2 and (error / one_step_error).max() < 2e-2


def test_integrated_gradients_independent_of_max_batch(resnet8):
    x = seeded_randn(3, 3, 8, 8, seed=1)
    maps = [build_method("integrated_gradients", steps=7, max_batch=m)(resnet8, x, 1) for m in (1, 5, 21, 1000)]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-5, atol=1e-7)


def test_integrated_gradients_baselines(resnet8):
    x = seeded_randn(2, 3, 8, 8, seed=2)
    zero = build_method("integrated_gradients", steps=4)(resnet8, x, 0)
    torch.testing.assert_close(build_method("integrated_gradients", steps=4, baseline=0.0)(resnet8, x, 0), zero)
    torch.testing.assert_close(
        build_method("integrated_gradients", steps=4, baseline=torch.zeros(3, 1, 1))(resnet8, x, 0), zero
    )
    blur = build_method("integrated_gradients", steps=4, baseline="blur", blur_sigma=1.0)
    from lit_xai.attribution.postprocess import gaussian_smooth

    torch.testing.assert_close(blur.baseline_for(x), gaussian_smooth(x, 1.0))
    # at x = x̄ IG is zero
    flat = torch.full((1, 3, 8, 8), 0.7)
    assert build_method("integrated_gradients", steps=3, baseline=0.7)(resnet8, flat, 0).abs().max() == 0
    with pytest.raises(AttributionError, match="does not broadcast"):
        build_method("integrated_gradients", baseline=torch.zeros(5, 5))(resnet8, x, 0)
    with pytest.raises(AttributionError, match="unknown rule 'simpson'"):
        build_method("integrated_gradients", rule="simpson")


def test_target_none_explains_the_predicted_class(resnet8):
    x = seeded_randn(3, 3, 8, 8, seed=3)
    predicted = resnet8(x).argmax(1)
    for name, kwargs in [("gradient", {}), ("integrated_gradients", {"steps": 3}), ("gradcam", {}),
                         ("smoothgrad", {"samples": 2}), ("occlusion", {"patch": 4, "stride": 4})]:
        method = build_method(name, **kwargs)
        torch.testing.assert_close(method(resnet8, x), method(resnet8, x, predicted))


# ---------------------------------------------------------------- SmoothGrad


def test_smoothgrad_is_seeded_and_uses_the_relative_noise_level(resnet8):
    """Issue 19 item 15: this test once compared float32 maps of unseeded inputs at max_batch 1 vs 256 and failed
    when a ReLU pre-activation fell within float32 rounding of 0 (its batch-size-dependent rounding flipped the
    ReLU). Now the inputs are seeded and the chunking comparison runs in float64, where a flip needs a
    pre-activation within ~1e-15 of 0."""
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x[1] *= 3  # a wider range → proportionally larger noise
    model64, x64 = copy.deepcopy(resnet8).double(), x.double()
    first = build_method("smoothgrad", samples=3, seed=5)(model64, x64, 0)
    for max_batch in (1, 4):
        chunked = build_method("smoothgrad", samples=3, seed=5, max_batch=max_batch)(model64, x64, 0)
        torch.testing.assert_close(chunked, first, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(build_method("smoothgrad", samples=3, seed=6)(model64, x64, 0), first)
    method = build_method("smoothgrad", samples=200, noise_level=0.1)
    noise = method.noise_stream(x).rows(0, 400).view(200, 2, -1)
    ranges = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    torch.testing.assert_close(noise.std(dim=(0, 2)), 0.1 * ranges, rtol=0.02, atol=0)
    # zero noise: SmoothGrad = Gradient, SmoothGrad² = Gradient²
    gradient = build_method("gradient")(resnet8, x, 0)
    torch.testing.assert_close(build_method("smoothgrad", samples=2, noise_level=0.0)(resnet8, x, 0), gradient)
    torch.testing.assert_close(build_method("smoothgrad_sq", samples=2, noise_level=0.0)(resnet8, x, 0), gradient**2)


def test_smoothgrad_sq_is_the_mean_square_of_smoothgrads_noisy_gradients(resnet8):
    """SmoothGrad and SmoothGrad² share one noise stream: with one sample, SmoothGrad² = SmoothGrad²(elementwise)."""
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    plain = build_method("smoothgrad", samples=1, seed=3)(resnet8, x, 0)
    torch.testing.assert_close(build_method("smoothgrad_sq", samples=1, seed=3)(resnet8, x, 0), plain**2)


# ---------------------------------------------------------------- RectGrad


class TinyReLUNet(nn.Module):
    """x → W1 x → ReLU → w2 · h: a hand-checkable one-hidden-layer net on a 1×1×4 "image"."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, -1.0, 0], [1.0, 1.0, 1.0, 1.0]]))
        self.w2 = nn.Parameter(torch.tensor([[3.0, -1.0, 2.0, 0.5]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.relu(F.linear(x.flatten(1), self.w1)), self.w2)


def test_rectgrad_hand_derived():
    """h = [1, 4, 0, 4.5] for x = [1, 2, 3, −1.5]; g = w2; a·g = [3, −4, 0, 2.25]. With the 75th percentile
    (nearest rank of 4 values: the 3rd smallest = 2.25) only unit 0 (3 > 2.25) passes: ∂ = w2[0]·W1[0]."""
    net = TinyReLUNet()
    x = torch.tensor([1.0, 2.0, 3.0, -1.5]).view(1, 1, 1, 4)
    rect = build_method("rectgrad", percentile=75)(net, x, 0)
    torch.testing.assert_close(rect.flatten(), torch.tensor([3.0, 0, 0, 0]))
    # percentile 0: threshold = min(a·g) = −4 → units 0, 2(a=0, masked by ReLU), 3 pass
    rect0 = build_method("rectgrad", percentile=0)(net, x, 0)
    torch.testing.assert_close(rect0.flatten(), 3.0 * torch.tensor([1.0, 0, 0, 0]) + 0.5 * torch.ones(4))
    # guided backprop: negative upstream gradient (unit 1) blocked, inactive unit 2 blocked
    guided = build_method("guided_backprop")(net, x, 0)
    torch.testing.assert_close(guided.flatten(), torch.tensor([3.5, 0.5, 0.5, 0.5]))


def test_percentile_per_sample_is_nearest_rank():
    values = torch.arange(10.0).view(1, 10).repeat(2, 1)
    values[1] *= -1
    # k = round(0.5·9) + 1 = 5 → the 5th smallest value
    torch.testing.assert_close(percentile_per_sample(values, 50), torch.tensor([4.0, -5.0]))
    torch.testing.assert_close(percentile_per_sample(values, 100), torch.tensor([9.0, 0.0]))


# ---------------------------------------------------------------- GradCAM++


class GapHead(nn.Module):
    """conv → ReLU → (layer "act") → global average pool → linear; ∂y/∂A_k = w_k / (h·w) everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_gradcam_and_gradcam_pp_hand_derived():
    torch.manual_seed(0)
    net = GapHead()
    x = seeded_randn(2, 1, 4, 4, seed=4)
    activation = net.act(net.conv(x)).detach()
    g = net.fc.weight[1].detach() / 16  # ∂y_1/∂A_kij, constant over positions
    cam = build_method("gradcam", layer="act", relu=False)(net, x, 1)
    torch.testing.assert_close(cam, (g.view(1, 3, 1, 1) * activation).sum(1, keepdim=True))
    # GradCAM++: α = g²/(2g² + ΣA·g³), w_k = Σ_ij α ReLU(g) = 16·α_k·ReLU(g_k)
    alpha = g**2 / (2 * g**2 + activation.sum((2, 3)) * g**3 + 1e-7)
    weights = 16 * alpha * g.clamp_min(0)
    expected = (weights[:, :, None, None] * activation).sum(1, keepdim=True).clamp_min(0)
    torch.testing.assert_close(build_method("gradcam_pp", layer="act")(net, x, 1), expected)
    # automatic layer: the last spatial output is the ReLU's
    torch.testing.assert_close(build_method("gradcam", relu=False)(net, x, 1), cam)


# ---------------------------------------------------------------- Occlusion


def test_occlusion_on_a_linear_model_is_the_mean_patch_contribution():
    """For y = Σ w·x, occluding patch P to 0 drops y by Σ_P w·x; each pixel averages the drops of its patches."""
    torch.manual_seed(0)
    weight = seeded_randn(1, 2 * 6 * 6, seed=5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(72, 1, bias=False))
    net[1].weight.data.copy_(weight)
    x = seeded_randn(1, 2, 6, 6, seed=6)
    maps = build_method("occlusion", patch=3, stride=3)(net, x, 0)  # non-overlapping 3×3 patches
    contribution = (weight.view(2, 6, 6) * x[0]).sum(0)
    per_patch = F.avg_pool2d(contribution[None, None], 3) * 9
    expected = F.interpolate(per_patch, scale_factor=3, mode="nearest")[0, 0]
    torch.testing.assert_close(maps[0, 0], expected)
    torch.testing.assert_close(maps[0, 1], expected)


# ---------------------------------------------------------------- Extremal Perturbation


def test_blur_perturbation_endpoints():
    x = seeded_randn(2, 3, 16, 16, seed=7)
    perturbation = BlurPerturbation(x, levels=4, max_blur=3.0)
    torch.testing.assert_close(perturbation.apply(torch.ones(2, 1, 16, 16)), x)
    torch.testing.assert_close(perturbation.apply(torch.zeros(2, 1, 16, 16)), perturbation.pyramid[:, 0])
    half = perturbation.apply(torch.full((2, 1, 16, 16), 0.5))  # halfway between levels 1 and 2
    torch.testing.assert_close(half, 0.5 * (perturbation.pyramid[:, 1] + perturbation.pyramid[:, 2]))


def test_smooth_mask_is_bounded_and_smooth():
    generator = SmoothMask(20, 20, step=4, sigma=6.0, coldness=20.0, device=torch.device("cpu"))
    params = torch.zeros(1, 1, *generator.grid_shape)
    params[0, 0, 2, 2] = 1.0
    mask = generator(params)[0, 0]
    assert mask.shape == (20, 20) and mask.min() >= 0 and mask.max() <= 1
    assert mask[8, 8] == mask.max() > 0.9  # grid point (2, 2) sits at pixel (8, 8)
    assert mask[0, 19] < 0.05  # far away
    assert (mask[8, 9:] - mask[8, 8:-1]).max() <= 0  # decays monotonically away from the bump


def test_extremal_perturbation_sums_areas():
    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=3, in_chans=1)
    x = seeded_randn(2, 1, 12, 12, seed=8)
    both = build_method("extremal_perturbation", areas=[0.1, 0.3], iterations=2)(model, x, 1)
    first = build_method("extremal_perturbation", areas=[0.1], iterations=2)(model, x, 1)
    second = build_method("extremal_perturbation", areas=[0.3], iterations=2)(model, x, 1)
    torch.testing.assert_close(both, first + second)
    with pytest.raises(AttributionError, match="areas must lie in"):
        build_method("extremal_perturbation", areas=[1.5])


# ---------------------------------------------------------------- Random


def test_random_map_is_seeded_per_image_and_shaped():
    """Issue 19 item 16: each image's map is a function of (seed, image), not of the call sequence."""
    x = torch.randn(3, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    model = nn.Identity()  # the random control never calls the model
    method = build_method("random", seed=4)
    first, second = method(model, x), method(model, x)
    assert first.shape == (3, 1, 5, 7) and 0 <= first.min() and first.max() < 1
    torch.testing.assert_close(second, first, rtol=0, atol=0)  # calling again gives the same maps
    assert not torch.equal(first[0], first[1])  # different images, different maps
    torch.testing.assert_close(build_method("random", seed=4)(model, x[[2, 0]]), first[[2, 0]], rtol=0, atol=0)
    assert not torch.equal(build_method("random", seed=5)(model, x), first)
    # one value per pixel: its ranks are a uniformly random permutation (mean rank position ≈ centre)
    big = build_method("random")(model, torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1)))
    assert abs(float(big.mean()) - 0.5) < 0.01 and abs(float(big.var()) - 1 / 12) < 0.005
