"""The shared contract: input/target validation, registry errors, model-state guard, ReLU interception."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.attribution import AttributionError, AttributionMethod, available_methods, build_method
from lit_xai.attribution.activations import ReLUInterceptor, forward_with_activations
from lit_xai.attribution.base import input_gradient, preserved_model_state
from lit_xai.models import build_backbone


def seeded_randn(*shape: int, seed: int) -> torch.Tensor:
    """Standard-normal test inputs from their own seeded generator (never the global one)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class FunctionalNet(nn.Module):
    """ReLUs as functional calls, in-place calls and one module reused twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = self.relu(x * 2 - 0.1)
        x = self.relu(x - 0.05)
        x = torch.relu_(x + 0.0)
        return self.fc(x.mean((2, 3)))


class Leaky(AttributionMethod):
    """A method that leaks a hook, flips flags and then fails midway."""

    def attribute(self, model, inputs, target):
        model.conv.register_forward_hook(lambda *a: None)
        model.train()
        for p in model.parameters():
            p.requires_grad_(False)
        input_gradient(model, inputs, target)
        raise RuntimeError("midway")


def test_registry_lists_and_rejects_unknown_names_and_kwargs():
    assert "gradient" in available_methods() and available_methods() == sorted(available_methods())
    with pytest.raises(AttributionError, match=r"unknown attribution method 'gradcamm'.*'gradcam'.*Available:"):
        build_method("gradcamm")
    with pytest.raises(AttributionError, match=r"integrated_gradients: unknown argument\(s\) stepz; accepted:.*steps"):
        build_method("integrated_gradients", stepz=3)


@pytest.mark.parametrize(
    ("inputs", "target", "message"),
    [
        (seeded_randn(2, 1, 8, seed=1), None, r"shape \[B, C, H, W\]"),
        (torch.full((2, 1, 8, 8), float("nan")), None, "NaN or inf"),
        (seeded_randn(2, 1, 8, 8, seed=2), torch.tensor([0, 1, 2]), r"shape \[2\]"),
        (seeded_randn(2, 1, 8, 8, seed=3), torch.tensor([0, 3]), r"out of range.*3 outputs"),
        (seeded_randn(2, 1, 8, 8, seed=4), torch.tensor([0.0, 1.0]), "integer class indices"),
        (seeded_randn(2, 1, 8, 8, seed=5), -1, "negative"),
    ],
)
def test_bad_inputs_and_targets_are_named(inputs, target, message):
    with pytest.raises(AttributionError, match=message):
        build_method("gradient")(FunctionalNet(), inputs, target)


def test_model_state_is_restored_even_when_the_method_raises():
    model = FunctionalNet().eval()
    model.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="midway"):
        Leaky()(model, seeded_randn(2, 1, 8, 8, seed=6), 0)
    assert not model.training and all(not m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model.conv._forward_hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_guard_restores_train_mode_and_existing_hooks():
    model = FunctionalNet().train()
    handle = model.conv.register_forward_hook(lambda *a: None)
    with preserved_model_state(model):
        assert not model.training
        model.fc.register_forward_pre_hook(lambda *a: None)
    assert model.training and len(model.conv._forward_hooks) == 1 and not model.fc._forward_pre_hooks
    handle.remove()


def test_methods_work_inside_inference_mode():
    model = FunctionalNet().eval()
    with torch.inference_mode():
        x = seeded_randn(2, 1, 8, 8, seed=7)
        grad = build_method("gradient")(model, x, 1)
    assert grad.abs().sum() > 0


def test_relu_interceptor_sees_functional_inplace_and_reused_calls_in_order():
    model = FunctionalNet().eval()
    logits, activations = forward_with_activations(model, seeded_randn(2, 1, 8, 8, seed=8), "test")
    assert len(activations) == 4
    assert all(a.shape == (2, 4, 8, 8) and bool((a >= 0).all()) for a in activations)
    seen = []
    with ReLUInterceptor(lambda i, a: seen.append(i) or a * 0):
        zeroed = model(seeded_randn(2, 1, 8, 8, seed=9))
    assert seen == [0, 1, 2, 3]
    assert torch.allclose(zeroed, model.fc.bias.expand(2, 3))


@pytest.mark.parametrize(("name", "reuses_modules"), [("resnet8", True), ("torchvision/resnet18", True),
                                                      ("timm/resnet18", False)])
def test_relu_calls_of_resnets_are_counted_per_call(name, reuses_modules):
    model = build_backbone(name, num_classes=10, in_chans=3).eval()
    relu_modules = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    counts = []
    hooks = [m.register_forward_hook(lambda *a: counts.append(1)) for m in relu_modules]
    try:
        _, activations = forward_with_activations(model, seeded_randn(1, 3, 32, 32, seed=10), "test")
    finally:
        for h in hooks:
            h.remove()
    assert len(activations) == len(counts)
    assert (len(counts) > len(relu_modules)) == reuses_modules


def test_model_without_relus_gets_a_clear_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(3))
    model(seeded_randn(1, 1, 8, 8, seed=11))
    with pytest.raises(AttributionError, match="needs a network with ReLU activations"):
        forward_with_activations(model, seeded_randn(1, 1, 8, 8, seed=12), "guided_backprop")
