"""PruneGrad, PruneGrad-Mid, PrunePGD and κ calibration (seed 000), checked against hand-written references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_xai.attribution import AttributionError, build_method
from lit_xai.attribution.pruning import calibrate_sparsity, output_change_curve
from lit_xai.models.backbones import build_backbone
from lit_xai.pathways.selection import select_pathway

torch.set_num_threads(1)


class TinyMLP(nn.Module):
    """Two hidden ReLU layers; small enough to prune by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(2 * 4 * 4, 12), nn.Linear(12, 10), nn.Linear(10, 3)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x.flatten(1))))))


def manual_prune_grad(model: TinyMLP, x: torch.Tensor, target: int, sparsity: float) -> torch.Tensor:
    """One image: score neurons with retain_grad, prune the round(κN) lowest, differentiate the masked net."""
    h1 = torch.relu(model.fc1(x.flatten(1)))
    h2 = torch.relu(model.fc2(h1))
    h1.retain_grad(), h2.retain_grad()
    model.fc3(h2)[0, target].backward()
    scores = torch.cat([(h1 * h1.grad).abs().flatten(), (h2 * h2.grad).abs().flatten()])
    model.zero_grad()
    order = scores.argsort()
    keep = torch.ones_like(scores)
    keep[order[: int(round(sparsity * scores.numel()))]] = 0
    m1, m2 = keep[:12], keep[12:]
    xg = x.clone().requires_grad_(True)
    out = model.fc3(torch.relu(model.fc2(torch.relu(model.fc1(xg.flatten(1))) * m1)) * m2)
    out[0, target].backward()
    model.zero_grad()
    return xg.grad


@pytest.fixture
def mlp() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP().eval()


def snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict, training: bool = False) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
        assert module.training == training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_prune_grad_matches_hand_pruned_network(mlp: TinyMLP) -> None:
    x = torch.randn(4, 2, 4, 4)
    target = torch.tensor([0, 1, 2, 1])
    maps = build_method("prune_grad", sparsity=0.4)(mlp, x, target)
    for b in range(4):
        expected = manual_prune_grad(mlp, x[b : b + 1], int(target[b]), 0.4)
        torch.testing.assert_close(maps[b : b + 1], expected)


def test_zero_sparsity_is_the_plain_gradient(mlp: TinyMLP) -> None:
    x = torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(build_method("prune_grad", sparsity=0.0)(mlp, x), build_method("gradient")(mlp, x))


def test_pruning_removes_the_lowest_fraction_network_wide() -> None:
    scores = [torch.rand(2, 5, 3, 3), torch.rand(2, 7)]  # distinct values almost surely
    keep = select_pathway(scores, 0.3)
    n = 5 * 9 + 7
    flat = torch.cat([s.flatten(1) for s in scores], 1)
    kept = torch.cat([k.flatten(1) for k in keep], 1)
    assert kept.sum(1).tolist() == [n - round(0.3 * n)] * 2
    for b in range(2):  # every kept score beats every removed one: a single network-wide threshold
        assert flat[b][kept[b]].min() > flat[b][~kept[b]].max()


@pytest.mark.parametrize("backbone", ["resnet8", "torchvision/resnet18"])
def test_batched_masks_are_per_sample_with_reused_relus(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=5, in_chans=3).eval()
    x = torch.randn(2, 3, 32, 32)
    method = build_method("prune_grad", sparsity=0.6)
    batched = method(model, x)
    singles = torch.cat([method(model, x[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(batched, build_method("gradient")(model, x))


def test_model_is_unchanged_also_after_an_error(mlp: TinyMLP) -> None:
    mlp.train()
    before = snapshot(mlp)
    x = torch.randn(2, 2, 4, 4)
    for name in ("prune_grad", "prune_pgd"):
        build_method(name)(mlp, x)
        assert_unchanged(mlp, before, training=True)
    with pytest.raises(AttributionError, match="out of range"):
        build_method("prune_grad")(mlp, x, torch.tensor([0, 7]))
    assert_unchanged(mlp, before, training=True)


def test_model_without_relu_is_rejected() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.GELU(), nn.Linear(8, 3))
    with pytest.raises(AttributionError, match="ReLU"):
        build_method("prune_grad")(model, torch.randn(2, 1, 4, 4))


def test_prune_grad_mid_matches_hooked_layer_gradient() -> None:
    torch.manual_seed(0)
    model = build_backbone("resnet8", num_classes=4, in_chans=1).eval()
    x = torch.randn(2, 1, 16, 16)
    saliency = build_method("prune_grad_mid", sparsity=0.0, upsample=False)(model, x)
    captured = []
    handle = model.layer2.register_forward_hook(lambda _m, _i, out: captured.append(out))
    logits = model(x.requires_grad_(True))
    handle.remove()
    (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), captured[0])
    torch.testing.assert_close(saliency, grad.abs().sum(1, keepdim=True))
    upsampled = build_method("prune_grad_mid", sparsity=0.5)(model, x)
    assert upsampled.shape == (2, 1, 16, 16)
    with pytest.raises(AttributionError, match="no layer named"):
        build_method("prune_grad_mid", layer="layer9")(model, x)


def test_prune_pgd_stays_in_the_ball_and_follows_the_pruned_gradient(mlp: TinyMLP) -> None:
    x = torch.randn(3, 2, 4, 4)
    delta = build_method("prune_pgd", sparsity=0.3)(mlp, x)
    assert (delta.flatten(1).norm(dim=1) <= 0.1 + 1e-6).all()
    one_step = build_method("prune_pgd", sparsity=0.3, steps=1)(mlp, x)
    grad = build_method("prune_grad", sparsity=0.3)(mlp, x)
    expected = 0.01 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(one_step, expected)


def test_calibration_hits_the_target_output_change() -> None:
    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=10, in_chans=1, ).eval()
    loader = [{"image": torch.randn(4, 1, 16, 16)} for _ in range(2)]
    grid = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95]
    curve = output_change_curve(model, loader, grid)
    assert curve[0] == 0.0 and curve[-1] > 0.0
    i = next(i for i, change in enumerate(curve) if change > 0)  # the first interval where the output moves
    target = (curve[i - 1] + curve[i]) / 2
    calibration = calibrate_sparsity(model, loader, target, grid)
    assert grid[i - 1] < calibration.sparsity < grid[i] and calibration.mean_change == curve
    method = build_method("prune_grad", calibration_loader=loader, target_output_change=target)
    method(model, loader[0]["image"][:2])
    assert method.sparsity == pytest.approx(calibrate_sparsity(model, loader, target).sparsity)


def test_calibration_warns_when_the_target_is_unreachable() -> None:
    """Issue 19 item 13: an unreachable target used to return κ = 0.95 silently; the warning names the target,
    the reachable range of the curve and the κ chosen."""
    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=10, in_chans=1).eval()
    loader = [{"image": torch.randn(4, 1, 16, 16)}]
    grid = [0.0, 0.5, 0.9]
    curve = output_change_curve(model, loader, grid)
    target = 2 * max(curve) + 1.0
    with pytest.warns(UserWarning, match=rf"target output change {target:g} is not reachable .*largest κ.* 0\.9"):
        calibration = calibrate_sparsity(model, loader, target, grid)
    assert calibration.sparsity == 0.9
    assert curve[-1] > 0
    with pytest.warns(UserWarning, match=r"below the first grid point .* smallest κ of the grid, 0\.9"):
        assert calibrate_sparsity(model, loader, curve[-1] / 2, grid[-1:]).sparsity == 0.9


def _pruned_gradient_written_out(
    model: nn.Module, x: torch.Tensor, sparsity: float, replacement: str
) -> torch.Tensor:
    """The maps as computed before the selection was sped up: scores concatenated network-wide, the threshold by
    ``kthvalue``, bool masks, the gated network's input gradient."""
    from lit_xai.attribution.base import target_scores
    from lit_xai.pathways.contributions import mct_contributions
    from lit_xai.pathways.neurons import NeuronGate, expand_per_sample, flatten_neurons, gated

    for p in model.parameters():
        p.requires_grad_(False)
    contrib = mct_contributions(model, x, None, "t")
    flat = flatten_neurons(contrib.contributions)
    threshold = flat.kthvalue(int(round(sparsity * flat.shape[1])), dim=1).values
    keep = [c > expand_per_sample(threshold, c) for c in contrib.contributions]
    xg = x.detach().requires_grad_(True)
    with gated(NeuronGate(keep, replacement, contrib.activations), "t"):
        logits = model(xg)
    scores, _ = target_scores(logits, contrib.target)
    (grad,) = torch.autograd.grad(scores.sum(), xg)
    for p in model.parameters():
        p.requires_grad_(True)
    return grad


@pytest.mark.parametrize("net", ["reused_relu", "functional_relu", "resnet8"])
def test_prune_grad_and_neuron_mct_equal_the_concatenated_kthvalue_selection(net: str) -> None:
    """The sampled network-wide selection (tie block at zero for κ = 0.3, the band for κ = 0.7 / 0.9 on ResNet-8's
    294 912 neurons) and the 0/1 float masks give exactly the maps of the plain concatenate-and-kthvalue selection
    with bool masks (float64, so no rounding can hide a flipped neuron)."""
    from tests.conformance.conftest import FunctionalReLUNet, ReusedInplaceReLUNet, _randomised_eval

    torch.manual_seed(0)
    if net == "resnet8":
        model, x = build_backbone("resnet8", num_classes=10, in_chans=3).eval().double(), torch.randn(2, 3, 32, 32)
    else:
        model = _randomised_eval(ReusedInplaceReLUNet() if net == "reused_relu" else FunctionalReLUNet(), seed=1)
        x = torch.randn(4, 3, 16, 16)
    model, x = model.double(), x.double()
    for sparsity in (0.3, 0.7, 0.9):
        expected = _pruned_gradient_written_out(model, x, sparsity, "zero")
        assert torch.equal(build_method("prune_grad", sparsity=sparsity)(model, x), expected), sparsity
        expected = _pruned_gradient_written_out(model, x, sparsity, "constant")
        assert torch.equal(build_method("neuron_mct", sparsity=sparsity)(model, x), expected), sparsity
