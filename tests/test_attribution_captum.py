"""Cross-check every method Captum also implements, on seeded random-init resnet8 and timm resnet18 (64×64)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import (
    GuidedBackprop as CaptumGuidedBackprop,
)
from captum.attr import (
    InputXGradient as CaptumInputXGradient,
)
from captum.attr import (
    IntegratedGradients as CaptumIntegratedGradients,
)
from captum.attr import (
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from captum.attr import (
    Occlusion as CaptumOcclusion,
)

from lit_xai.attribution import build_method
from lit_xai.attribution.postprocess import upsample
from lit_xai.models.backbones import build_backbone

torch.set_num_threads(1)

CASES = {
    # name: (backbone, input size, GradCAM layer that the automatic choice must find)
    "resnet8": ("resnet8", 32, "layer3"),
    "timm_resnet18": ("timm/resnet18", 64, "layer4"),
}


def randomise_batchnorm(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics, so eval-mode BatchNorm is not the identity."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.bias.data.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    backbone, size, layer = CASES[request.param]
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=10).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        randomise_batchnorm(model, generator)
    inputs = torch.randn(2, 3, size, size, generator=generator)
    target = torch.tensor([1, 7])
    return model, inputs, target, layer


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-4, scale: float | None = None) -> None:
    """Equal up to float32 rounding, relative to the map's scale (by default the largest |value| of ``theirs``)."""
    scale = theirs.abs().max().item() if scale is None else scale
    assert scale > 0
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=0, atol=rtol * scale)


def test_gradient_matches_saliency(case):
    model, x, t, _ = case
    assert_close(build_method("gradient")(model, x, t), Saliency(model).attribute(x, target=t, abs=False))


def test_input_x_gradient_matches(case):
    model, x, t, _ = case
    assert_close(build_method("input_x_gradient")(model, x, t), CaptumInputXGradient(model).attribute(x, target=t))


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
                                  "gausslegendre"])
def test_integrated_gradients_matches(case, rule):
    model, x, t, _ = case
    ours = build_method("integrated_gradients", steps=5, rule=rule, max_batch=4)(model, x, t)
    theirs = CaptumIntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps=5, method=rule)
    if rule == "riemann_trapezoid":
        # Captum's trapezoid weights are [½, 1, …, 1, ½]/n (they sum to (n−1)/n); the trapezoid rule's are
        # [½, 1, …, 1, ½]/(n−1) (they sum to 1, so IG keeps completeness). Same points, weights differ by (n−1)/n.
        ours = ours * 4 / 5
    assert_close(ours, theirs)


def test_integrated_gradients_tensor_baseline_matches(case):
    model, x, t, _ = case
    baseline = torch.full_like(x[:1], 0.3)
    ours = build_method("integrated_gradients", steps=4, rule="riemann_middle", baseline=baseline)(model, x, t)
    theirs = CaptumIntegratedGradients(model).attribute(x, baselines=baseline.expand_as(x), target=t, n_steps=4,
                                                        method="riemann_middle")
    assert_close(ours, theirs)


@pytest.mark.parametrize("squared", [False, True])
def test_smoothgrad_matches_noise_tunnel_with_the_same_noise(case, monkeypatch, squared):
    """Captum draws its noise with ``torch.normal``; we hand it our seeded noise, reordered to its layout."""
    model, x, t, _ = case
    samples = 3
    method = build_method("smoothgrad", samples=samples, noise_level=0.15, squared=squared, seed=3, max_batch=5)
    ours = method(model, x, t)
    stream = method.noise_stream(x)
    noise = stream.rows(0, samples * x.shape[0])  # row n·B + b
    captum_layout = noise.view(samples, *x.shape).transpose(0, 1).flatten(0, 1)  # row b·N + n
    monkeypatch.setattr(torch, "normal", lambda mean, std: captum_layout.clone())
    tunnel = NoiseTunnel(Saliency(model))
    theirs = tunnel.attribute(x, nt_type="smoothgrad_sq" if squared else "smoothgrad", nt_samples=samples,
                              stdevs=1.0, target=t, abs=False)
    assert_close(ours, theirs)


def test_guided_backprop_matches(case):
    model, x, t, _ = case
    assert_close(build_method("guided_backprop")(model, x, t), CaptumGuidedBackprop(model).attribute(x, target=t))


def test_gradcam_matches_layer_gradcam_upsampled(case):
    model, x, t, layer = case
    captum_cam = LayerGradCam(model, model.get_submodule(layer))
    signed = captum_cam.attribute(x, target=t, relu_attributions=False)
    scale = signed.abs().max().item()  # the ReLU'd map can be all zero on a random net
    assert_close(build_method("gradcam", relu=False)(model, x, t), signed)
    ours = build_method("gradcam")(model, x, t)  # automatic layer
    theirs = captum_cam.attribute(x, target=t, relu_attributions=True)
    assert ours.shape == theirs.shape == (x.shape[0], 1, *signed.shape[-2:])
    assert_close(ours, theirs, scale=scale)
    upsampled = LayerAttribution.interpolate(theirs, x.shape[-2:], "bilinear")
    assert_close(upsample(ours, x), upsampled, scale=scale)
    assert_close(build_method("gradcam", layer=layer, upsample=True)(model, x, t), upsampled, scale=scale)


@pytest.mark.parametrize("patch,stride", [(8, 4), (6, 5)])
def test_occlusion_matches(case, patch, stride):
    model, x, t, _ = case
    x = x[:, :, :16, :16]
    ours = build_method("occlusion", patch=patch, stride=stride, baseline=0.0, max_batch=40)(model, x, t)
    theirs = CaptumOcclusion(model).attribute(x, sliding_window_shapes=(3, patch, patch), strides=stride,
                                              baselines=0.0, target=t)
    assert_close(ours, theirs)
