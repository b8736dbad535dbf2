"""PathwayGrad (seed 001): contributions, pathway network, local linearity (Prop. 5), registry variants."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerConductance, LayerGradientXActivation
from torch import nn
from torch.overrides import TorchFunctionMode

from lit_xai.attribution import AttributionError, build_method
from lit_xai.attribution.pathway_grad import pathway_gradient
from lit_xai.attribution.postprocess import morphological_opening
from lit_xai.models.backbones import build_backbone
from lit_xai.pathways import (
    conductance_contributions,
    input_path_conductance,
    intgrad_contributions,
    mct_contributions,
    select_pathway,
)

torch.set_num_threads(1)


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(2 * 4 * 4, 12), nn.Linear(12, 10), nn.Linear(10, 3)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x.flatten(1))))))


@pytest.fixture
def reused_net() -> nn.Module:
    """A residual net whose one in-place ReLU module is called 3 times (float64, eval, parameters frozen)."""
    from tests.conformance.conftest import ReusedInplaceReLUNet

    torch.manual_seed(0)
    model = ReusedInplaceReLUNet().double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture
def mlp() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP().eval()


def pathway_preactivations(model: TinyMLP, x: torch.Tensor, keep: list, const: list) -> torch.Tensor:
    """Pre-activations of the *kept* neurons of Φ̂(x; e) for one image (off-pathway neurons are constants)."""
    z1 = model.fc1(x.flatten(1))
    h1 = torch.relu(z1) * keep[0] + const[0] * ~keep[0]
    z2 = model.fc2(h1)
    return torch.cat([z1[keep[0]], z2[keep[1]]])


def test_mct_contributions_match_captum(mlp: TinyMLP) -> None:
    x = torch.randn(3, 2, 4, 4)
    target = torch.tensor([2, 0, 1])
    contrib = mct_contributions(mlp, x, target, "test")
    for layer, module in ((0, mlp.act1), (1, mlp.act2)):
        expected = LayerGradientXActivation(mlp, module).attribute(x, target=target).abs()
        torch.testing.assert_close(contrib.contributions[layer], expected)


def test_intgrad_contributions_match_a_hand_written_layer_integral(mlp: TinyMLP) -> None:
    x = torch.randn(2, 2, 4, 4)
    target = torch.tensor([1, 2])
    contrib = intgrad_contributions(mlp, x, target, "test", steps=11, max_batch=5, rule="closed")
    alphas = torch.linspace(0, 1, 11)
    h1 = torch.relu(mlp.fc1(x.flatten(1))).detach()
    h2 = torch.relu(mlp.fc2(h1)).detach()
    tails = (lambda a: mlp.fc3(torch.relu(mlp.fc2(a))), lambda a: mlp.fc3(a))
    for layer, (h, tail) in enumerate(zip((h1, h2), tails, strict=True)):
        grads = []
        for alpha in alphas:
            scaled = (alpha * h).requires_grad_(True)
            (g,) = torch.autograd.grad(tail(scaled).gather(1, target[:, None]).sum(), scaled)
            grads.append(g)
        expected = (h * torch.stack(grads).mean(0)).abs()
        torch.testing.assert_close(contrib.contributions[layer], expected)


@pytest.mark.parametrize(
    ("backbone", "size"),
    [
        ("resnet8", 16),
        ("torchvision/resnet18", 16),
        ("cnn6", 32),
        pytest.param("timm/resnet18", 16, marks=pytest.mark.slow),
        pytest.param("torchvision/vgg11", 32, marks=pytest.mark.slow),
    ],
)
def test_shared_prefix_intgrad_equals_the_full_forward_per_alpha(backbone: str, size: int) -> None:
    """Computing the layers before the scaled ReLU call once per image changes nothing (reused ReLU modules,
    skip connections, max-pools); α values are split over passes (max_batch < steps) and images too.
    In float64, so that batch-size-dependent float32 rounding cannot flip a ReLU near zero."""
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=4, in_chans=3).eval().double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    full = intgrad_contributions(model, x, None, "t", steps=3, share_prefix=False)
    for batch_size in (2, 256):
        shared = intgrad_contributions(model, x, None, "t", steps=3, max_batch=batch_size)
        assert len(shared.contributions) == len(full.contributions)
        for got, expected in zip(shared.contributions, full.contributions, strict=True):
            torch.testing.assert_close(got, expected)


def test_conductance_matches_captum_layer_conductance(mlp: TinyMLP) -> None:
    """Captum takes the gradient at the start of each α interval, we at the end: ours = −Captum(from x to 0)."""
    x = torch.randn(3, 2, 4, 4)
    target = torch.tensor([2, 0, 1])
    signed = input_path_conductance(mlp, x, target, "t", steps=6, max_batch=11)
    for layer, module in ((0, mlp.act1), (1, mlp.act2)):
        reversed_path = LayerConductance(mlp, module).attribute(
            torch.zeros_like(x), baselines=x, target=target, n_steps=5, method="riemann_trapezoid"
        )
        torch.testing.assert_close(signed.contributions[layer], -reversed_path)
    torch.testing.assert_close(signed.activations[0], torch.relu(mlp.fc1(x.flatten(1))))
    torch.testing.assert_close(signed.logits, mlp(x))


def test_conductance_is_complete_per_layer(mlp: TinyMLP) -> None:
    """Σ_j c_j = y(x) − y(0) per layer: exactly for the last hidden layer (y is affine in it), in the limit of many
    α steps for the first one."""
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        logits = mlp(x)
        target = logits.argmax(1)
        expected = (logits - mlp(torch.zeros_like(x))).gather(1, target[:, None])[:, 0]
    coarse = input_path_conductance(mlp, x, None, "t", steps=3)
    torch.testing.assert_close(coarse.target, target)
    torch.testing.assert_close(coarse.contributions[1].sum(1), expected)
    assert not torch.allclose(coarse.contributions[0].sum(1), expected, rtol=1e-3, atol=1e-4)
    fine = input_path_conductance(mlp, x, None, "t", steps=2001)
    torch.testing.assert_close(fine.contributions[0].sum(1), expected, rtol=1e-3, atol=1e-4)


def test_conductance_contributions_ignore_neurons_dead_at_x(mlp: TinyMLP) -> None:
    x = torch.randn(4, 2, 4, 4)
    signed = input_path_conductance(mlp, x, None, "t", steps=4)
    contrib = conductance_contributions(mlp, x, None, "t", steps=4)
    dead = [a <= 0 for a in contrib.activations]
    # with biases, a neuron dead at x can be active at α·x and get a nonzero conductance
    assert any((c[d] != 0).any() for c, d in zip(signed.contributions, dead, strict=True))
    for got, raw, d in zip(contrib.contributions, signed.contributions, dead, strict=True):
        assert (got[d] == 0).all()
        torch.testing.assert_close(got[~d], raw[~d].abs())


def test_contribution_pathways_never_contain_dead_neurons() -> None:
    """Remark 2: NeuronMCT and NeuronIntGrad give dead neurons zero contribution, so they are never selected."""
    torch.manual_seed(0)
    model = build_backbone("resnet8", num_classes=5, in_chans=1).eval()
    x = torch.randn(2, 1, 16, 16)
    for contrib in (mct_contributions(model, x, None, "t"), intgrad_contributions(model, x, None, "t", steps=3)):
        dead = torch.cat([(a <= 0).flatten(1) for a in contrib.activations], 1)
        assert dead.float().mean() > 0.2  # there are plenty of dead neurons to pick from
        for sparsity in (0.0, 0.5, 0.9):
            kept = torch.cat([k.flatten(1) for k in select_pathway(contrib.contributions, sparsity)], 1)
            if sparsity == 0.0:
                assert kept.all()  # κ = 0: the whole network
            else:
                assert kept.any() and not (kept & dead).any()


def test_pathway_network_is_locally_linear_within_the_eq7_radius(mlp: TinyMLP) -> None:
    """Prop. 5: Φ̂(·; e) keeps its gradient and is linear for ‖δ‖ < min |z| / ‖∇z‖ over pathway neurons (Eq. 7)."""
    torch.manual_seed(1)
    x = torch.randn(3, 2, 4, 4)
    contrib = mct_contributions(mlp, x, None, "t")
    keep = select_pathway(contrib.contributions, 0.5)
    grad, logits = pathway_gradient(mlp, x, contrib.target, keep, contrib.activations, "constant", "t")
    torch.testing.assert_close(logits, contrib.logits)  # constants equal to the original values: same output at x
    for b in range(3):
        keep_b = [k[b : b + 1] for k in keep]
        const_b = [a[b : b + 1] for a in contrib.activations]
        assert all((a[k] > 0).all() for a, k in zip(const_b, keep_b, strict=True))  # Prop. 4's condition
        z = pathway_preactivations(mlp, x[b : b + 1], keep_b, const_b).detach()
        jac = torch.autograd.functional.jacobian(
            lambda v, kb=keep_b, cb=const_b: pathway_preactivations(mlp, v, kb, cb), x[b : b + 1]
        ).flatten(1)
        distances = z.abs() / jac.norm(dim=1)
        radius = float(distances.min())
        direction = torch.randn_like(x[b : b + 1])
        inside = x[b : b + 1] + 0.9 * radius * direction / direction.norm()
        grad_inside, logits_inside = pathway_gradient(
            mlp, inside, contrib.target[b : b + 1], keep_b, const_b, "constant", "t"
        )
        torch.testing.assert_close(grad_inside, grad[b : b + 1])
        linear = logits[b, contrib.target[b]] + (grad[b] * (inside[0] - x[b])).sum()
        torch.testing.assert_close(logits_inside[0, contrib.target[b]], linear)
        # just beyond the radius, towards the nearest hyperplane, that neuron switches off and the gradient changes
        nearest = int(distances.argmin())
        towards = -torch.sign(z[nearest]) * jac[nearest] / jac[nearest].norm()
        outside = x[b : b + 1] + 1.5 * radius * towards.view_as(x[b : b + 1])
        grad_outside, _ = pathway_gradient(mlp, outside, contrib.target[b : b + 1], keep_b, const_b, "constant", "t")
        assert not torch.allclose(grad_outside, grad[b : b + 1])


def test_zero_replacement_is_the_masked_network_of_the_reference_code(mlp: TinyMLP) -> None:
    x = torch.randn(2, 2, 4, 4)
    contrib = mct_contributions(mlp, x, None, "t")
    keep = select_pathway(contrib.contributions, 0.6)
    maps = build_method("neuron_mct", sparsity=0.6, replacement="zero")(mlp, x)
    xg = x.clone().requires_grad_(True)
    h1 = torch.relu(mlp.fc1(xg.flatten(1))) * keep[0]
    out = mlp.fc3(torch.relu(mlp.fc2(h1)) * keep[1])
    (expected,) = torch.autograd.grad(out.gather(1, contrib.target[:, None]).sum(), xg)
    torch.testing.assert_close(maps, expected)
    assert not torch.allclose(maps, build_method("neuron_mct", sparsity=0.6)(mlp, x))


@pytest.mark.parametrize(
    ("backbone", "name", "kwargs"),
    [
        ("resnet8", "neuron_intgrad", {"steps": 3}),
        ("torchvision/resnet18", "neuron_mct", {}),
        ("torchvision/resnet18", "neuron_conductance", {"steps": 3}),
    ],
)
def test_batched_pathway_gradients_equal_single_images(backbone: str, name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=4, in_chans=3).eval()
    x = torch.randn(2, 3, 16, 16)
    method = build_method(name, **kwargs)
    batched = method(model, x)
    singles = torch.cat([method(model, x[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6)


def test_star_variants_are_the_opened_absolute_maps(mlp: TinyMLP) -> None:
    x = torch.randn(2, 2, 4, 4)
    plain = build_method("neuron_mct", sparsity=0.5)(mlp, x)
    star = build_method("neuron_mct_star", sparsity=0.5)(mlp, x)
    torch.testing.assert_close(star, morphological_opening(plain.abs(), 3))
    star_ig = build_method("neuron_intgrad_star", sparsity=0.5, steps=3)(mlp, x)
    plain_ig = build_method("neuron_intgrad", sparsity=0.5, steps=3)(mlp, x)
    torch.testing.assert_close(star_ig, morphological_opening(plain_ig.abs(), 3))


def test_input_space_counterparts_are_the_baselines(mlp: TinyMLP) -> None:
    x = torch.randn(2, 2, 4, 4)
    torch.testing.assert_close(build_method("input_mct")(mlp, x), build_method("input_x_gradient")(mlp, x))
    ig = build_method("integrated_gradients", steps=8)
    torch.testing.assert_close(build_method("input_intgrad", steps=8)(mlp, x), ig(mlp, x))


def test_model_unchanged_and_relu_free_models_rejected(mlp: TinyMLP) -> None:
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    x = torch.randn(2, 2, 4, 4)
    for name in ("neuron_mct", "neuron_intgrad", "neuron_conductance"):
        build_method(name)(mlp, x)
    with pytest.raises(AttributionError, match="out of range"):
        build_method("neuron_intgrad")(mlp, x, 5)
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    assert all(p.requires_grad and p.grad is None for p in mlp.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in mlp.modules())
    gelu = nn.Sequential(nn.Flatten(), nn.Linear(32, 8), nn.GELU(), nn.Linear(8, 3))
    with pytest.raises(AttributionError, match="ReLU"):
        build_method("neuron_mct")(gelu, x)
    with pytest.raises(ValueError, match="replacement"):
        build_method("neuron_mct", replacement="mean")
    with pytest.raises(ValueError, match="α steps"):
        build_method("neuron_conductance", steps=1)


@pytest.mark.parametrize(
    "backbone",
    ["cnn6", "timm/resnet18", pytest.param("torchvision/vgg11", marks=pytest.mark.slow)],
)
def test_seed_methods_run_on_the_supported_architectures(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=4, in_chans=3).eval()
    x = torch.randn(2, 3, 32, 32)
    for name, kwargs in (("prune_grad", {}), ("neuron_mct_star", {}), ("dga", {"steps": 1})):
        maps = build_method(name, **kwargs)(model, x)
        assert maps.shape == x.shape and torch.isfinite(maps).all() and maps.abs().sum() > 0, name


def test_whole_network_pathway_gives_the_plain_gradient(mlp: TinyMLP) -> None:
    """κ = 0 keeps every neuron; the constant replacement then changes nothing: PathwayGrad = Gradient."""
    x = torch.randn(3, 2, 4, 4)
    gradient = build_method("gradient")(mlp, x)
    torch.testing.assert_close(build_method("neuron_mct", sparsity=0.0)(mlp, x), gradient)
    torch.testing.assert_close(build_method("neuron_intgrad", sparsity=0.0, steps=3)(mlp, x), gradient)
    torch.testing.assert_close(build_method("neuron_conductance", sparsity=0.0, steps=3)(mlp, x), gradient)


class BiasFreeChain(nn.Module):
    """A plain bias-free ReLU chain: positively homogeneous, and every ReLU layer is a cut of the network."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8 * 8 * 8, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))


class BiasFreeResidual(nn.Module):
    """A bias-free residual block: ReLU calls 0 (stem) and 2 (after the sum) are cuts, call 1 (inside) is not."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.c1, self.c2 = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.fc = nn.Linear(6, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(h))) + h).mean((2, 3)))


def _relative_l1(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().sum() / expected.abs().sum())


def test_conductance_equals_eq4_only_where_every_relu_layer_is_a_cut() -> None:
    """Issue 19 item 12. On a bias-free ReLU net a(α·x) = α·a(x) and the gradient is constant along α·x, so input-path
    conductance is exactly NeuronMCT at every layer. Eq. 4 scales one layer with the rest held at x: where that layer
    is a cut, y is homogeneous in it and Eq. 4 is NeuronMCT too — so on a plain chain all three agree (float64
    rounding). Inside a residual block the skip is held at x, Eq. 4 moves the activation pattern after the sum and
    differs from conductance (= NeuronMCT) — the old docs/test claimed equality on every positively homogeneous net."""
    torch.manual_seed(0)
    chain, block = BiasFreeChain().double().eval(), BiasFreeResidual().double().eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    for model, cuts in ((chain, (0, 1)), (block, (0, 2))):
        mct = mct_contributions(model, x, None, "t").contributions
        conductance = conductance_contributions(model, x, None, "t", steps=4).contributions
        eq4 = intgrad_contributions(model, x, None, "t", steps=256).contributions  # fine midpoint integral
        for layer, expected in enumerate(mct):
            assert _relative_l1(conductance[layer], expected) < 1e-12
            if layer in cuts:
                assert _relative_l1(eq4[layer], expected) < 1e-12
                assert _relative_l1(eq4[layer], conductance[layer]) < 1e-12
            else:  # ReLU call 1, inside the block: 5.5% apart here (37–60% inside a bias-free ResNet-8's blocks)
                assert _relative_l1(eq4[layer], conductance[layer]) > 0.02
    # with biases the input path is not a(α·x) = α·a(x) and conductance is not Eq. 4 even on a chain
    torch.manual_seed(1)
    mlp = TinyMLP().double().eval()
    xm = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    conductance = conductance_contributions(mlp, xm, None, "t", steps=501, max_batch=4000).contributions
    eq4 = intgrad_contributions(mlp, xm, None, "t", steps=256, max_batch=4000).contributions
    assert max(_relative_l1(c, e) for c, e in zip(conductance, eq4, strict=True)) > 0.1


def test_intgrad_rules_are_pinned() -> None:
    """Points and weights of every rule, written out; the default is the 5-point midpoint rule."""
    import inspect

    from lit_xai.pathways.contributions import intgrad_alphas

    expected = {
        ("midpoint", 5): ([0.1, 0.3, 0.5, 0.7, 0.9], [0.2] * 5),
        ("closed", 11): ([k / 10 for k in range(11)], [1 / 11] * 11),
        ("trapezoid", 3): ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25]),
        ("reference", 11): ([0, 0.1, 0.3, 0.6, 1.0, 1.5, 2.1, 2.8, 3.6, 4.5, 5.5], [1 / 11] * 11),
        ("gausslegendre", 2): ([0.5 - 0.5 / 3**0.5, 0.5 + 0.5 / 3**0.5], [0.5, 0.5]),
    }
    for (rule, steps), (alphas, weights) in expected.items():
        got_alphas, got_weights = intgrad_alphas(rule, steps)
        torch.testing.assert_close(got_alphas, torch.tensor(alphas, dtype=torch.float64))
        torch.testing.assert_close(got_weights, torch.tensor(weights, dtype=torch.float64))
    defaults = inspect.signature(intgrad_contributions).parameters
    assert (defaults["rule"].default, defaults["steps"].default) == ("midpoint", 5)
    method = build_method("neuron_intgrad")
    assert (method.rule, method.steps) == ("midpoint", 5)
    assert build_method("neuron_conductance").steps == 11
    with pytest.raises(ValueError, match="rule must be one of"):
        build_method("neuron_intgrad", rule="simpson")
    with pytest.raises(ValueError, match="at least 2"):
        build_method("neuron_intgrad", rule="closed", steps=1)


def test_intgrad_reference_rule_reproduces_the_authors_code(mlp: TinyMLP) -> None:
    """PathwayGrad src/Pruner.py `_calc_integrad_scores(iterations=10)`: the layer's mask starts at 0 and, for
    j = 0..10, `mask += j * 0.1` before each gradient; the score is |Σ grads / 11 · a|. Written out here as a loop."""
    x = torch.randn(2, 2, 4, 4)
    target = torch.tensor([1, 2])
    contrib = intgrad_contributions(mlp, x, target, "t", steps=11, rule="reference")
    h1 = torch.relu(mlp.fc1(x.flatten(1))).detach()
    h2 = torch.relu(mlp.fc2(h1)).detach()
    tails = (lambda a: mlp.fc3(torch.relu(mlp.fc2(a))), lambda a: mlp.fc3(a))
    for layer, (h, tail) in enumerate(zip((h1, h2), tails, strict=True)):
        mask, total = torch.zeros_like(h), torch.zeros_like(h)
        for j in range(11):
            mask = mask + j * 0.1
            scaled = (mask * h).requires_grad_(True)
            (g,) = torch.autograd.grad(tail(scaled).gather(1, target[:, None]).sum(), scaled)
            total = total + g
        torch.testing.assert_close(contrib.contributions[layer], (total / 11 * h).abs())


def test_intgrad_default_is_the_midpoint_integral(mlp: TinyMLP) -> None:
    x = torch.randn(2, 2, 4, 4)
    target = torch.tensor([0, 2])
    contrib = intgrad_contributions(mlp, x, target, "t", max_batch=3)
    h2 = torch.relu(mlp.fc2(torch.relu(mlp.fc1(x.flatten(1))))).detach()
    grads = []
    for alpha in (0.1, 0.3, 0.5, 0.7, 0.9):
        scaled = (alpha * h2).requires_grad_(True)
        (g,) = torch.autograd.grad(mlp.fc3(scaled).gather(1, target[:, None]).sum(), scaled)
        grads.append(g)
    torch.testing.assert_close(contrib.contributions[1], (h2 * torch.stack(grads).mean(0)).abs())


class _CountConvolutions(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN202
        self.count += func is torch.conv2d or func is torch.nn.functional.conv2d
        return func(*args, **(kwargs or {}))


def test_intgrad_replays_the_prefix_from_the_clean_pass(reused_net: nn.Module) -> None:
    """The layers before the scaled ReLU call are not recomputed: on a net with 3 convolutions (one in-place ReLU
    module called 3 times) the clean pass runs 3 and the scaled passes only the suffixes 2 + 1 + 0 — 6 in all, where
    computing each prefix again ran 12. The result equals forwarding every (α, image) row through the whole net."""
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    with _CountConvolutions() as counter:  # an explicit chunk: no forward to size the default one
        shared = intgrad_contributions(reused_net, x, None, "t", steps=4, max_batch=64)
    assert counter.count == 6
    full = intgrad_contributions(reused_net, x, None, "t", steps=4, share_prefix=False)
    for got, expected in zip(shared.contributions, full.contributions, strict=True):
        torch.testing.assert_close(got, expected)


def test_prefix_replay_is_refused_where_the_clean_pass_modified_a_prefix_tensor_later() -> None:
    """A tensor of ReLU call 0's prefix modified in place after call 0: its recorded (final) value is not what the
    suffix read, so call 0's prefix is computed; call 1's prefix is replayed. Both equal the whole-net computation."""
    from lit_xai.pathways.layer_scaling import ForwardTrace

    class LateInplace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 2, 3, padding=1)
            self.fc = nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.c1(x)
            out = self.c2(torch.relu(a.clone()))
            a = a[:, :2].add_(1.0)  # in place, after ReLU call 0 used its prefix
            return self.fc(torch.relu(out + a).mean((2, 3)))

    torch.manual_seed(0)
    model = LateInplace().double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    trace = ForwardTrace("t")
    mct_contributions(model, x, None, "t", trace)
    assert [trace.replayable(i) for i in range(2)] == [False, True]
    shared = intgrad_contributions(model, x, None, "t", steps=3, max_batch=3)
    full = intgrad_contributions(model, x, None, "t", steps=3, share_prefix=False)
    for got, expected in zip(shared.contributions, full.contributions, strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(("name", "kwargs"), [("neuron_intgrad", {"steps": 3}), ("neuron_conductance", {"steps": 4})])
def test_pathway_grad_maps_do_not_depend_on_the_chunk_size(reused_net: nn.Module, name: str, kwargs: dict) -> None:
    """``max_batch`` only splits the (α, image) rows over passes: 1 row, a split of the α values, a split of the
    images, everything in one pass and the memory budget (``None``) give the same map (float64)."""
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    reference = build_method(name, max_batch=1000, **kwargs)(reused_net, x)
    for max_batch in (1, 2, 5, None):
        torch.testing.assert_close(build_method(name, max_batch=max_batch, **kwargs)(reused_net, x), reference)


def test_pathway_grad_rows_per_pass_follow_the_shared_budget(
    mlp: TinyMLP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default ``max_batch=None``: rows per pass from ``batching.rows_per_chunk`` (the budget IG uses). A budget below
    one row's activations forwards every (α, image) row of NeuronIntGrad's 2 layers alone: 2 × 3 × 2 scaled passes,
    plus the clean pass and the pathway gradient; ``max_batch`` overrides it."""
    from lit_xai.attribution import batching

    x = torch.randn(2, 2, 4, 4)
    row_bytes = batching.activation_bytes_per_row(mlp, x)  # measured once per model and row shape (cached)
    forwards = []
    handle = mlp.register_forward_pre_hook(lambda module, args: forwards.append(args[0].shape[0]))
    try:
        method = build_method("neuron_intgrad", steps=3)
        assert method.max_batch is None
        reference = method(mlp, x)
        assert forwards == [2, 2, 2, 2]  # budget ≫ 6 rows: one scaled pass per layer
        monkeypatch.setattr(batching, "CPU_BUDGET_BYTES", row_bytes // 5)  # even 4 budgets hold < 1 row: 1 row
        forwards.clear()
        torch.testing.assert_close(method(mlp, x), reference)
        assert forwards == [2] + [1] * 12 + [2]
        forwards.clear()
        build_method("neuron_intgrad", steps=3, max_batch=6)(mlp, x)
        assert forwards == [2, 2, 2, 2]
    finally:
        handle.remove()
    with pytest.raises(AttributionError, match="max_batch"):
        build_method("neuron_conductance", max_batch=0)


def test_contribution_functions_chunk_by_the_shared_budget(
    reused_net: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``intgrad_contributions`` / ``conductance_contributions`` (what the pathways report calls) size their passes
    by ``batching.rows_per_chunk`` when ``max_batch`` is None (they used a fixed 64 rows); any chunking gives the same
    contributions (float64)."""
    from lit_xai.attribution import batching

    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    for contributions, steps in ((intgrad_contributions, 3), (conductance_contributions, 4)):
        reference = contributions(reused_net, x, None, "t", steps=steps, max_batch=1000).contributions
        for max_batch in (1, 5, None):
            got = contributions(reused_net, x, None, "t", steps=steps, max_batch=max_batch).contributions
            for layer, expected in zip(got, reference, strict=True):
                torch.testing.assert_close(layer, expected)
    rows = []
    handle = reused_net.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    try:
        conductance_contributions(reused_net, x, None, "t", steps=4)
        assert rows == [1 + 3 * 3]  # the budget holds every row: one pass (the shared α = 0 row + 3 α × 3 images)
        monkeypatch.setattr(batching, "CPU_BUDGET_BYTES", batching.activation_bytes_per_row(reused_net, x) // 5)
        rows.clear()
        conductance_contributions(reused_net, x, None, "t", steps=4)
        assert rows == [1 + 3] * 3  # a budget below one row: one image per pass
    finally:
        handle.remove()
