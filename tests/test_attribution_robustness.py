"""Every baseline method leaves the model exactly as it found it, handles awkward ReLU usage, and fails clearly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lit_xai.attribution import AttributionError, build_method
from lit_xai.models.backbones import build_backbone

torch.set_num_threads(1)

#: cheap settings for every baseline method of this module
FAST = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {"steps": 3, "max_batch": 4},
    "smoothgrad": {"samples": 2},
    "smoothgrad_sq": {"samples": 2},
    "guided_backprop": {},
    "rectgrad": {},
    "gradcam": {},
    "gradcam_pp": {},
    "fullgrad": {},
    "occlusion": {"patch": 8, "stride": 8},
    "extremal_perturbation": {"iterations": 2},
    "random": {},
}
HOOK_REGISTRIES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class Tripwire(nn.Module):
    """Identity until armed; then raises on the ``fuse``-th call (to fail a method midway through a forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.fuse: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fuse is not None:
            self.fuse -= 1
            if self.fuse <= 0:
                raise RuntimeError("tripwire")
        return x


def snapshot(model: nn.Module) -> dict:
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in model.modules()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    for key, value in before["params"].items():
        assert torch.equal(after["params"][key], value), f"{key} changed"
    assert after["requires_grad"] == before["requires_grad"]
    assert after["training"] == before["training"]
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for name, module in model.named_modules():
        for registry in HOOK_REGISTRIES:
            assert len(getattr(module, registry)) == 0, f"hook left on {name or 'model'}.{registry}"


@pytest.fixture
def tripwired_resnet8():
    torch.manual_seed(0)
    model = build_backbone("resnet8", num_classes=10)
    model.layer2 = nn.Sequential(Tripwire(), model.layer2)
    model.train()  # the method must switch to eval and back
    model.stem[0].weight.requires_grad_(False)  # a mixed pattern of flags must come back as it was
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    return model


@pytest.mark.parametrize("name", list(FAST))
def test_model_unchanged_after_call(tripwired_resnet8, name):
    model = tripwired_resnet8
    before = snapshot(model)
    maps = build_method(name, **FAST[name])(model, torch.randn(2, 3, 16, 16), torch.tensor([0, 3]))
    assert maps.shape[0] == 2 and torch.isfinite(maps).all()
    assert not maps.requires_grad
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", [n for n in FAST if n != "random"])
def test_model_unchanged_after_a_call_that_raises_midway(tripwired_resnet8, name):
    model = tripwired_resnet8
    before = snapshot(model)
    # raise inside a forward, after the method froze parameters / registered hooks; for multi-pass methods
    # in a later pass (IG's second chunk, Extremal Perturbation's second iteration)
    model.layer2[0].fuse = {"integrated_gradients": 2, "extremal_perturbation": 2}.get(name, 1)
    kwargs = dict(FAST[name])
    with pytest.raises(RuntimeError, match="tripwire"):
        build_method(name, **kwargs)(model, torch.randn(2, 3, 16, 16), torch.tensor([0, 3]))
    model.layer2[0].fuse = None
    assert_unchanged(model, before)


class FunctionalReLUNet(nn.Module):
    """ReLUs only as F.relu / torch.relu_ / Tensor.relu calls, no nn.ReLU module."""

    def __init__(self, functional: bool = True) -> None:
        super().__init__()
        self.functional = functional
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.functional:
            x = torch.relu_(self.conv2(F.relu(self.conv1(x))))
        else:
            x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)).relu())


@pytest.mark.parametrize("name", ["guided_backprop", "rectgrad"])
def test_relu_interception_sees_functional_relus(name):
    torch.manual_seed(0)
    functional = FunctionalReLUNet(functional=True)
    modular = FunctionalReLUNet(functional=False)
    modular.load_state_dict(functional.state_dict())
    x = torch.randn(3, 3, 8, 8)
    ours = build_method(name)(functional, x, 1)
    reference = build_method(name)(modular, x, 1)
    torch.testing.assert_close(ours, reference)
    assert not torch.allclose(ours, build_method("gradient")(functional, x, 1))  # the backward was really modified


def test_guided_backprop_rejects_a_net_without_relu():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(3))
    net(torch.randn(1, 3, 8, 8))
    with pytest.raises(AttributionError, match="guided_backprop needs a network with ReLU"):
        build_method("guided_backprop")(net, torch.randn(1, 3, 8, 8))


def small_vgg11() -> nn.Module:
    """torchvision VGG-11 (in-place ReLUs, max-pools, dropout) with a narrow classifier to keep the test light."""
    model = torchvision.models.vgg11(num_classes=4)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(32, 4))
    return model


@pytest.fixture(scope="module", params=["torchvision/resnet18", "torchvision/vgg11", "cnn6", "resnet8"])
def reference_model(request):
    torch.manual_seed(0)
    if request.param == "torchvision/vgg11":
        return small_vgg11()
    return build_backbone(request.param, num_classes=4)


@pytest.mark.parametrize("name", ["guided_backprop", "gradcam", "fullgrad", "rectgrad", "integrated_gradients"])
def test_methods_run_on_reference_architectures(reference_model, name):
    """torchvision ResNet reuses one in-place ReLU module per block; VGG uses in-place ReLUs; cnn6 has no BN."""
    before = snapshot(reference_model)
    x = torch.randn(2, 3, 32, 32)
    maps = build_method(name, **FAST[name])(reference_model, x)
    assert maps.shape[0] == 2 and torch.isfinite(maps).all() and maps.abs().sum() > 0
    assert_unchanged(reference_model, before)


def test_guided_backprop_matches_captum_with_a_reused_relu_module():
    """torchvision's BasicBlock calls one in-place ``self.relu`` twice per forward; Captum hooks every call."""
    from captum.attr import GuidedBackprop as CaptumGuidedBackprop

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    ours = build_method("guided_backprop")(model, x, torch.tensor([2, 0]))
    theirs = CaptumGuidedBackprop(model).attribute(x, target=torch.tensor([2, 0]))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4 * theirs.abs().max().item())


@pytest.mark.parametrize(
    "inputs,target,message",
    [
        (torch.randn(3, 32, 32), None, r"shape \[B, C, H, W\]"),
        (torch.full((1, 3, 8, 8), float("nan")), None, "NaN or inf"),
        (torch.full((1, 3, 8, 8), float("inf")), None, "NaN or inf"),
        (torch.randn(2, 3, 8, 8), torch.tensor([1, 2, 3]), r"shape \[2\]"),
        (torch.randn(2, 3, 8, 8), torch.tensor([1, 10]), r"out of range: the model has 10 outputs"),
        (torch.randn(2, 3, 8, 8), -1, "negative"),
    ],
)
@pytest.mark.parametrize("name", [n for n in FAST if n != "random"])
def test_clear_errors_for_bad_calls(name, inputs, target, message):
    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=10, in_chans=3)
    with pytest.raises(AttributionError, match=message):
        build_method(name, **FAST[name])(model, inputs, target)


def test_unknown_method_and_kwargs_are_reported():
    with pytest.raises(AttributionError, match="Did you mean 'gradcam'.*Available: .*integrated_gradients"):
        build_method("gradcan")
    with pytest.raises(AttributionError, match="unknown argument.*n_steps.*accepted: steps"):
        build_method("integrated_gradients", n_steps=10)


def test_wrong_layer_name_lists_close_matches():
    model = build_backbone("resnet8", num_classes=10)
    with pytest.raises(AttributionError, match="no layer named 'layer3.conv'.*Close matches: .*layer3.conv1"):
        build_method("gradcam", layer="layer3.conv")(model, torch.randn(1, 3, 16, 16))


def test_methods_work_inside_inference_mode():
    model = build_backbone("resnet8", num_classes=10)
    with torch.inference_mode():
        x = torch.randn(2, 3, 16, 16)
        maps = build_method("integrated_gradients", steps=2)(model, x)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
