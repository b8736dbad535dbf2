"""FullGrad: the completeness property of the raw bias-gradient decomposition, and the reference post-processing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.attribution import AttributionError, build_method
from lit_xai.attribution.base import preserved_model_state
from lit_xai.attribution.fullgrad import bias_gradient_terms, effective_bias
from lit_xai.models.backbones import build_backbone

torch.set_num_threads(1)


def with_random_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and shifts, so that folding the BN bias matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return model


@pytest.mark.parametrize("backbone,size", [("resnet8", 16), ("cnn6", 16), ("timm/resnet18", 32)])
def test_completeness_of_raw_terms(backbone, size):
    """y_t = Σ x·∂y_t/∂x + Σ_l Σ b_l·∂y_t/∂z_l (FullGrad Eq. 2) in float64, on the raw, unprocessed terms."""
    torch.manual_seed(0)
    model = with_random_batchnorm(build_backbone(backbone, num_classes=10)).double()
    x = torch.randn(3, 3, size, size, dtype=torch.float64)  # small: float64 on CPU
    with preserved_model_state(model):
        terms = bias_gradient_terms(model, x, torch.tensor([0, 5, 9]))
    y = model.eval()(x)[torch.arange(3), torch.tensor([0, 5, 9])]
    torch.testing.assert_close(terms.logits.gather(1, terms.target[:, None]).squeeze(1), y)
    explained = (terms.input_grad * x).flatten(1).sum(1) + sum(t.flatten(1).sum(1) for t in terms.bias_terms)
    torch.testing.assert_close(explained, y, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(terms.completeness_residual(x), torch.zeros(3, dtype=torch.float64), atol=1e-9,
                               rtol=0)
    # the terms really are needed: the input term alone does not explain y (biases and BN shifts are non-zero)
    assert not torch.allclose((terms.input_grad * x).flatten(1).sum(1), y, atol=1e-3)
    names = set(terms.layer_names)
    assert "fc" in names or "classifier.4" in names  # the linear head's bias is included


def test_batchnorm_folding_is_what_makes_resnet8_complete():
    """ResNet-8 convs have no bias: without the folded BN biases the decomposition misses most of y."""
    torch.manual_seed(1)
    model = with_random_batchnorm(build_backbone("resnet8", num_classes=10)).double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    terms = bias_gradient_terms(model, x, None)
    bn_terms = [t for t, name in zip(terms.bias_terms, terms.layer_names) if "bn" in name or "stem.1" in name
                or "shortcut.1" in name]
    assert bn_terms and len(bn_terms) == len(terms.bias_terms) - 1  # every other term comes from a BatchNorm
    assert bn_terms[0].shape == (2, 64, 16, 16)  # the stem BN term, broadcast to the layer output
    bn_total = sum(t.flatten(1).sum(1) for t in bn_terms)
    assert bn_total.abs().min() > 1e-3
    assert terms.completeness_residual(x).abs().max() < 1e-9


def test_effective_batchnorm_bias_matches_the_affine_map():
    bn = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.25, 2.0]))
        bn.weight.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    # BN(0) is exactly the folded bias
    torch.testing.assert_close(effective_bias(bn), bn(torch.zeros(1, 4, 1, 1)).flatten())
    with pytest.raises(AttributionError, match="track_running_stats=False"):
        effective_bias(nn.BatchNorm2d(4, track_running_stats=False))


def test_fullgrad_map_is_the_reference_post_processing_of_the_terms():
    """map = Σ_terms channel-sum(upsample(minmax(|term|))) over the input term and every spatial bias term."""
    torch.manual_seed(2)
    model = with_random_batchnorm(build_backbone("cnn6", num_classes=10))
    x = torch.randn(2, 3, 16, 16)
    maps = build_method("fullgrad")(model, x, torch.tensor([3, 4]))
    with preserved_model_state(model):
        terms = bias_gradient_terms(model, x, torch.tensor([3, 4]))

    def process(term: torch.Tensor) -> torch.Tensor:
        flat = term.abs().flatten(1)
        low, high = flat.min(1).values, flat.max(1).values
        scaled = (term.abs() - low.view(-1, 1, 1, 1)) / (high - low + 1e-6).view(-1, 1, 1, 1)
        return F.interpolate(scaled, size=(16, 16), mode="bilinear", align_corners=True).sum(1, keepdim=True)

    expected = process(terms.input_grad * x) + sum(process(t) for t in terms.bias_terms if t.dim() == 4)
    assert maps.shape == (2, 1, 16, 16)
    torch.testing.assert_close(maps, expected)
    assert sum(t.dim() == 2 for t in terms.bias_terms) == 3  # cnn6's three linear layers: completeness only


def reference_fullgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference code's order (idiap/fullgrad-saliency ``FullGrad.saliency``): every term abs → per-sample
    ``(t − min)/(max − min + 1e-6)`` → every channel upsampled → channel sum."""
    with preserved_model_state(model):
        terms = bias_gradient_terms(model, x, target)

    def process(term: torch.Tensor) -> torch.Tensor:
        flat = term.abs().flatten(1)
        low, high = flat.min(1).values, flat.max(1).values
        scaled = (term.abs() - low.view(-1, 1, 1, 1)) / (high - low + 1e-6).view(-1, 1, 1, 1)
        return F.interpolate(scaled, size=x.shape[-2:], mode="bilinear", align_corners=True).sum(1, keepdim=True)

    return process(terms.input_grad * x) + sum(process(t) for t in terms.bias_terms if t.dim() == 4)


def test_fullgrad_sums_channels_before_upsampling_and_equals_the_reference_order(monkeypatch):
    """torchvision ResNet-18 (64², terms at 32/16/8/4/2 px): channel-summing before the (linear) upsampling gives the
    reference map to float32 rounding (tolerance 1e-5 relative to the map's maximum; the map sums ~40 terms of
    value ≤ C each), with one bilinear resize per resolution instead of one per term and channel."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    model = with_random_batchnorm(torchvision.models.resnet18(num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([2, 7])
    expected = reference_fullgrad(model, x, target)
    calls = []
    interpolate = F.interpolate
    monkeypatch.setattr(F, "interpolate", lambda t, *args, **kwargs: calls.append(tuple(t.shape)) or interpolate(
        t, *args, **kwargs))
    maps = build_method("fullgrad")(model, x, target)
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-5 * expected.max().item())
    assert sorted(calls) == [(2, 1, s, s) for s in (2, 4, 8, 16, 32)]


def test_fullgrad_min_max_adds_the_reference_eps():
    """The reference ``_postProcess`` divides by ``max − min + 1e-6``: a term whose range is 1e-6 is halved, not
    stretched to [0, 1] (before: a 1e-12 floor, i.e. 2× the reference value on such terms)."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]))
    x = torch.full((1, 1, 2, 2), 1e-6)  # |x ⊙ ∂y/∂x| = 1e-6 · [1, 2, 3, 4]: range 3e-6
    maps = build_method("fullgrad")(model, x, 0)
    expected = (1e-6 * torch.tensor([0.0, 1.0, 2.0, 3.0]) / (3e-6 + 1e-6)).view(1, 1, 2, 2)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=0)


class _InPlaceNet(nn.Module):
    """A bias conv and BatchNorms followed by in-place ops: one ReLU module reused, ``+=`` and functional ``relu_``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(h))
        out += h
        out = self.relu(out)
        return self.fc(F.relu_(self.conv1.weight.new_zeros(()) + out).mean((2, 3)))


@pytest.mark.parametrize("build", [lambda: build_backbone("resnet8", num_classes=10), lambda: _InPlaceNet(),
                                   lambda: build_backbone("timm/resnet18", num_classes=10)],
                         ids=["resnet8", "in_place_net", "timm_resnet18"])
def test_output_gradients_are_taken_before_the_following_in_place_ops(build):
    """The tensor hooks catch ∂y/∂z of each layer's own output (before ``ReLU(inplace)``/``+=``): equal to the
    gradients with respect to *cloned* captured outputs, the unambiguous reference."""
    from lit_xai.attribution.layers import capture_outputs

    torch.manual_seed(0)
    model = with_random_batchnorm(build()).double().eval()
    channels = 2 if isinstance(model, _InPlaceNet) else 3
    x, target = torch.randn(2, channels, 16, 16, dtype=torch.float64), torch.tensor([1, 2])
    with preserved_model_state(model):
        terms = bias_gradient_terms(model, x, target)
        layers = [m for _, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.Linear)
                  and effective_bias(m) is not None]
        xx = x.clone().requires_grad_(True)
        with capture_outputs(layers) as captures:
            logits = model(xx)
        outputs = [out for capture in captures for out in capture.outputs]
        expected = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), [xx, *outputs])
    assert len(terms.output_grads) == len(outputs)
    torch.testing.assert_close(terms.input_grad, expected[0], rtol=0, atol=1e-12)
    for got, want in zip(terms.output_grads, expected[1:], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert all(not m._forward_hooks for m in model.modules())
