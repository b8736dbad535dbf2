"""The seeds' remaining baselines (issue 15): closed forms, completeness, seeding, the contract, YAML building."""

from __future__ import annotations

import copy
import inspect
import pickle
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lit_xai.attribution import AttributionError, build_method, get_class
from lit_xai.attribution.activations import forward_with_activations
from lit_xai.attribution.base import target_scores
from lit_xai.attribution.lrp import LRPMode
from lit_xai.attribution.pruning import PrunePGD
from lit_xai.attribution.rise import mirror_bilinear_matrix

NEW_METHODS = {
    "deeplift": {},
    "deepshap": {"background": "zero"},
    "gradient_shap": {"n_samples": 3},
    "guided_ig": {"steps": 3},
    "rise": {"num_masks": 8, "mask_resolution": 3},
    "lime": {"n_samples": 20, "grid": 2},
    "kernel_shap": {"n_samples": 20, "grid": 2},
    "lrp": {},
    "excitation_backprop": {},
    "prune_pgd_dead": {"steps": 2},
}


class MixedReLUNet(nn.Module):
    """Conv/BN/linear with a functional ReLU, an in-place module reused twice and a residual add; no max pooling."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4).eval()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)
        self.bn.running_mean.uniform_(-0.3, 0.3)
        self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv1(x)))
        out = self.relu(self.conv2(x))
        out = self.relu(out + x)
        return self.fc(out.mean((2, 3)))


class Failing(nn.Module):
    """Wraps a net; its ``fail_at``-th forward raises after a ReLU call (a failure injected midway)."""

    def __init__(self, net: MixedReLUNet, fail_at: int) -> None:
        super().__init__()
        self.net, self.fail_at, self.calls = net, fail_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            self.net.relu(self.net.conv1(x))
            raise RuntimeError("injected failure")
        return self.net(x)


def kwargs_of(name: str) -> list[str]:
    return list(inspect.signature(get_class(name).__init__).parameters)


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


def model_state(model: nn.Module) -> tuple:
    return (
        [m.training for m in model.modules()],
        [(p.requires_grad, p.grad) for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
        [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
    )


def assert_same_state(before: tuple, after: tuple) -> None:
    assert before[0] == after[0] and before[1] == after[1] and before[3] == after[3]
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])


# ---------------------------------------------------------------- DeepLIFT / DeepSHAP


def test_deeplift_rescale_on_a_hand_derived_case():
    """y = relu(x₁ − x₂), x = (3, 1), x̄ = (0, 2): z = 2, z̄ = −2, m = Δa/Δz = 2/4, so the map is
    m·(Δx₁, −Δx₂) = (1.5, 0.5) and sums to Δy = 2 (Input×Gradient-style (3, 1)·1 would give 4)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[3].weight.fill_(1.0)
    x = torch.tensor([3.0, 1.0]).view(1, 2, 1, 1)
    ref = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)
    got = build_method("deeplift", baseline=ref)(net, x, 0)
    torch.testing.assert_close(got.flatten(), torch.tensor([1.5, 0.5]))


def test_deeplift_and_deepshap_are_complete():
    """Summation-to-delta: Σ map = f(x) − f(x̄) (DeepSHAP: − mean_k f(x̄_k)) on affine layers + ReLUs, to 1e-4."""
    net, x, target = MixedReLUNet().eval(), images(), torch.tensor([0, 1, 2])
    ref = 0.5 * images(1, seed=1)
    background = images(4, seed=2)
    with torch.no_grad():
        scores = net(x)[torch.arange(3), target]
        gap = scores - net(ref)[0, target]
        shap_gap = scores - net(background)[:, target].mean(0)
    dl = build_method("deeplift", baseline=ref)(net, x, target)
    ds = build_method("deepshap", background=background, max_batch=5)(net, x, target)
    torch.testing.assert_close(dl.sum((1, 2, 3)), gap, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ds.sum((1, 2, 3)), shap_gap, rtol=1e-4, atol=1e-4)


def test_deeplift_per_image_baselines_and_chunking_agree():
    net, x = MixedReLUNet().eval(), images()
    refs = images(3, seed=5)
    paired = build_method("deeplift", baseline=refs, max_batch=1)(net, x, 1)
    one_by_one = torch.cat([build_method("deeplift", baseline=refs[i])(net, x[i : i + 1], 1) for i in range(3)])
    torch.testing.assert_close(paired, one_by_one, rtol=1e-5, atol=1e-6)
    with pytest.raises(AttributionError, match="2 baselines for 3 inputs"):
        build_method("deeplift", baseline=refs[:2])(net, x, 1)


def test_deepshap_reads_a_saved_background(tmp_path):
    net, x = MixedReLUNet().eval(), images()
    background = images(2, seed=3)
    torch.save(background, tmp_path / "background.pt")
    from_file = build_method("deepshap", background=str(tmp_path / "background.pt"))(net, x, 2)
    torch.testing.assert_close(from_file, build_method("deepshap", background=background)(net, x, 2))
    with pytest.raises(AttributionError, match="neither 'zero' nor an existing tensor file"):
        build_method("deepshap", background=str(tmp_path / "missing.pt"))


# ---------------------------------------------------------------- GradientSHAP


def test_gradient_shap_samples_do_not_depend_on_batch_or_chunking():
    """Per-image generators: an image's map is the same alone, in a batch and for any ``max_batch``."""
    net, x = MixedReLUNet().eval(), images(4)
    method = build_method("gradient_shap", background=images(3, seed=4), n_samples=6, stdevs=0.1, max_batch=5)
    batch = method(net, x, 1)
    alone = build_method("gradient_shap", background=images(3, seed=4), n_samples=6, stdevs=0.1, max_batch=64)(
        net, x[2:3], 1
    )
    torch.testing.assert_close(batch[2:3], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batch, method(net, x, 1))


def test_gradient_shap_with_one_sample_is_input_baseline_x_gradient_at_alpha():
    """n_samples = 1, zero background: φ = x ⊙ ∇f(α x) with the drawn α (closed form of the estimator)."""
    net, x = MixedReLUNet().eval(), images(2)
    method = build_method("gradient_shap", n_samples=1)
    _, alpha, _ = method.draw(x, 1)
    point = (alpha[0].view(-1, 1, 1, 1) * x).requires_grad_(True)
    (grad,) = torch.autograd.grad(net(point)[:, 0].sum(), point)
    torch.testing.assert_close(method(net, x, 0), x * grad)


# ---------------------------------------------------------------- RISE


def test_rise_mirror_resize_matches_skimage_and_chunking_is_invisible():
    from skimage.transform import resize

    grid = torch.rand(5, 5, generator=torch.Generator().manual_seed(0)).double()
    ours = mirror_bilinear_matrix(5, 18) @ grid @ mirror_bilinear_matrix(5, 18).T
    theirs = resize(grid.numpy(), (18, 18), order=1, mode="reflect", anti_aliasing=False)
    torch.testing.assert_close(ours, torch.as_tensor(theirs))
    net, x = MixedReLUNet().eval(), images()
    a = build_method("rise", num_masks=30, mask_resolution=3, max_batch=7)(net, x, 0)
    b = build_method("rise", num_masks=30, mask_resolution=3, max_batch=90)(net, x, 0)
    torch.testing.assert_close(a, b)
    assert a.shape == (3, 1, 8, 8)
    defaults = build_method("rise")  # eclique/RISE Saliency.py: generate_masks(N=6000, s=8, p1=0.1), softmax head
    assert (defaults.num_masks, defaults.mask_resolution, defaults.p, defaults.output) == (6000, 8, 0.1, "softmax")


# ---------------------------------------------------------------- LIME / KernelSHAP


class SegmentLinear(nn.Module):
    """f_t(x) = Σ_pixels w_t ⊙ x: an additive game over any segmentation (fill 0), φ_j = Σ_{pixels in j} w_t ⊙ x."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(9)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.weight)


@pytest.mark.parametrize(("name", "kwargs"), [("kernel_shap", {}), ("lime", {"alpha": 0.0, "output": "logit"})])
def test_surrogates_recover_an_additive_game_exactly(name, kwargs):
    """On an additive game the unregularised linear surrogate is exact: φ_j = the segment's contribution."""
    net, x = SegmentLinear(), images()
    labels = torch.arange(64).view(8, 8) % 5
    maps = build_method(name, n_samples=200, segmentation=labels, **kwargs)(net, x, 1)
    contribution = torch.zeros(3, 5).index_add_(1, labels.flatten(), (x * net.weight[1]).sum(1).flatten(1).detach())
    torch.testing.assert_close(maps[:, 0], contribution[:, labels], rtol=1e-4, atol=1e-4)


def test_surrogates_take_per_image_segmentations_and_reject_bad_ones():
    net, x = SegmentLinear(), images(2)
    labels = torch.stack([torch.arange(64).view(8, 8) % 4, torch.arange(64).view(8, 8) // 16])
    maps = build_method("kernel_shap", n_samples=64, segmentation=labels)(net, x, 0)
    for b in range(2):
        single = build_method("kernel_shap", n_samples=64, segmentation=labels[b])(net, x[b : b + 1], 0)
        torch.testing.assert_close(maps[b : b + 1], single, rtol=1e-4, atol=1e-5)
    with pytest.raises(AttributionError, match="exactly 0..M−1"):
        build_method("lime", segmentation=labels[0] * 2)(net, x, 0)
    with pytest.raises(AttributionError, match=r"shape \[H, W\]"):
        build_method("lime", segmentation=labels[0, :4])(net, x, 0)


def test_surrogate_defaults_are_pinned():
    """KernelSHAP: shap's nsamples="auto" = 2M + 2048; LIME: the lime package's image defaults; a 6 × 6 grid."""
    assert build_method("kernel_shap").sample_count(36) == 2 * 36 + 2048
    lime = build_method("lime")
    assert (lime.n_samples, lime.kernel_width, lime.ridge, lime.output, lime.grid) == (1000, 0.25, 1.0, "softmax", 6)
    labels = lime.segments(torch.zeros(1, 3, 224, 224))
    assert int(labels.max()) + 1 == 36 and torch.bincount(labels.flatten()).min() >= 37 * 37


# ---------------------------------------------------------------- LRP


def test_lrp_epsilon_is_conservative_on_a_bias_free_relu_net():
    """LRP-ε with ε → 0 on a bias-free ReLU net (no BatchNorm shift): Σ R = y_t (positive homogeneity), to 1e-4;
    the z⁺/flat composite redistributes differently (guard against a test that passes for any rule)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64, 3, bias=False)).eval()
    x = images()
    relevance = build_method("lrp", composite="epsilon", epsilon=1e-9, stabilizer=1e-9)(net, x, 1)
    with torch.no_grad():
        torch.testing.assert_close(relevance.sum((1, 2, 3)), net(x)[:, 1], rtol=1e-4, atol=1e-5)
    plus_flat = build_method("lrp")(net, x, 1)
    assert not torch.allclose(plus_flat, relevance, atol=1e-3)
    with pytest.raises(AttributionError, match="alpha − beta must be 1"):
        build_method("lrp", alpha=1.0, beta=1.0)
    with pytest.raises(AttributionError, match="unknown composite 'zplus'"):
        build_method("lrp", composite="zplus")


class CountOps(TorchDispatchMode):
    """Count the aten operators a block runs (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("composite", "forwards", "transposed"), [
    # MixedReLUNet: conv1 (+ BatchNorm, the first layer) on the image, conv2 on a ReLU output (x ≥ 0), then dense.
    # every conv runs once in the forward; each rule adds modified forwards and transposed passes (docs/protocols.md)
    ("epsilon", 2, 2),                    # ε: the call's own backward, nothing recomputed
    ("epsilon_plus_flat", 2 + 2, 2),      # flat: the all-ones layer; z⁺ on x ≥ 0: W⁺ only (the x⁻ branch is 0)
    ("epsilon_plus", 2 + 3, 3),           # z⁺ on the image (x⁻ ≠ 0): W⁺x⁺ and W⁻x⁻; on conv2 W⁺ only
    ("epsilon_alpha2_beta1_flat", 2 + 3, 3),  # αβ on x ≥ 0: W⁺ and W⁻ on x
    ("epsilon_gamma_box", 2 + 4, 5),      # zB: the layer at l and h besides x; γ on x ≥ 0: W + γW⁺ and W + γW⁻
])
def test_lrp_runs_at_its_pass_floor(composite, forwards, transposed):
    """The pass floor, pinned by counting convolutions: no layer recomputes its own forward (the BatchNorm merged
    into conv1 reuses conv1's output) and the ``x⁻`` branches are skipped where ``x ≥ 0`` is known."""
    net, x = MixedReLUNet().eval(), images()
    with CountOps() as ops:
        build_method("lrp", composite=composite)(net, x, 1)
    assert (ops.counts["convolution"], ops.counts["convolution_backward"]) == (forwards, transposed)


def padded_net(padding: int | str) -> nn.Module:
    """conv (stride 2) → BatchNorm → ReLU → conv 3 × 3 with ``padding`` (1 or ``"same"``) → ReLU → dense."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=padding), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.3, 0.3)
        net[1].running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"])
def test_lrp_transposed_passes_with_and_without_autograd_agree(composite):
    """The rules' transposed passes call the convolution backward kernel directly (numeric padding, F.linear) and
    fall back to autograd for string padding: ``padding="same"`` and ``padding=1`` (3 × 3, stride 1) give one map."""
    x = images()
    numeric = build_method("lrp", composite=composite, low=-3.0, high=3.0)(padded_net(1), x, 1)
    string = build_method("lrp", composite=composite, low=-3.0, high=3.0)(padded_net("same"), x, 1)
    torch.testing.assert_close(string, numeric, rtol=1e-5, atol=1e-7)


class ShiftedNet(nn.Module):
    """conv → ReLU → shift by −0.3 (``inplace``: the ReLU output itself, else a new tensor) → conv → ReLU → dense."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv1, self.conv2, self.fc = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3), nn.Linear(144, 3)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = h.sub_(0.3) if self.inplace else h - 0.3
        return self.fc(F.relu(self.conv2(h)).flatten(1))


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box"])
def test_lrp_skips_the_negative_branch_only_where_inputs_are_nonnegative(composite, monkeypatch):
    """A ReLU output changed in place before the next conv is no longer known to be ≥ 0 (its version changed): the
    x⁻ branch runs and the map equals the one of the same net written out of place. Guard: ``x⁻`` matters here."""
    x = images()
    inplace = build_method("lrp", composite=composite)(ShiftedNet(inplace=True).eval(), x, 1)
    out_of_place = build_method("lrp", composite=composite)(ShiftedNet(inplace=False).eval(), x, 1)
    torch.testing.assert_close(inplace, out_of_place, rtol=1e-6, atol=1e-7)
    monkeypatch.setattr(LRPMode, "nonnegative", lambda self, t: True)  # the bug guarded against: x⁻ skipped
    assert not torch.allclose(build_method("lrp", composite=composite)(ShiftedNet(inplace=True).eval(), x, 1),
                              out_of_place, rtol=1e-3, atol=1e-5)


def test_lrp_reuses_modified_weights_until_the_parameters_change():
    """The modified weights are formed once per parameter state: a second call runs no weight clamp, and in-place
    changes of a weight, a BatchNorm statistic or a loaded state dict, also through ``.data`` (which bypasses the
    version counter), give the map of a fresh method."""
    net, x = MixedReLUNet().eval(), images()
    method = build_method("lrp")
    first = method(net, x, 1)
    with CountOps() as ops:
        again = method(net, x, 1)
    assert ops.counts["clamp"] + ops.counts["clamp_"] == 0
    assert torch.equal(first, again)
    other = MixedReLUNet().eval()
    with torch.no_grad():
        other.conv2.weight.mul_(-0.5)
        other.bn.running_var.mul_(3.0)
    changes = [lambda: net.conv2.weight.mul_(-1.5), lambda: net.bn.running_var.mul_(2.0),
               lambda: net.bn.weight.neg_(), lambda: net.load_state_dict(other.state_dict()),
               lambda: net.conv2.weight.data.normal_(), lambda: net.bn.running_mean.data.add_(0.5)]  # .data: no version
    for change in changes:
        before = method(net, x, 1)
        with torch.no_grad():
            change()
        after = method(net, x, 1)
        torch.testing.assert_close(after, build_method("lrp")(net, x, 1), rtol=0, atol=0)
        assert not torch.allclose(after, before)
    copied = pickle.loads(pickle.dumps(method))
    assert torch.equal(copied(net, x, 1), method(net, x, 1)) and torch.equal(copy.deepcopy(method)(net, x, 1), after)


# ---------------------------------------------------------------- Excitation Backprop


def _eb_down(p: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """One Excitation Backprop step through a dense layer (Zhang et al. 2016 §3.2), written out."""
    wp = w.clamp(min=0)
    return a * ((p / (a @ wp.T + 1e-20)) @ wp)


def test_excitation_backprop_matches_the_equations_on_an_mlp():
    """P(a_j) = Σ_i a_j w⁺_ij / (Σ_k a_k w⁺_ik) P(a_i) layer by layer, ReLU keeping its gradient; the contrastive
    map subtracts the pass with the classifier negated at the classifier's input and keeps the positive part.
    The equations are written out here; TorchRay's implementation is compared in the conformance suite.
    Tolerance 1e-5."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(128, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                        nn.Linear(12, 3)).eval()
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    w1, w2, w3 = net[1].weight, net[3].weight, net[5].weight
    with torch.no_grad():
        z1 = net[1](x.flatten(1))
        a1 = z1.relu()
        z2 = net[3](a1)
        a2 = z2.relu()
        onehot = F.one_hot(torch.tensor([0, 1, 2]), 3).float()
        p2 = _eb_down(onehot, a2, w3)
        contrast = _eb_down(onehot, a2, -w3)

        def to_input(p: torch.Tensor) -> torch.Tensor:
            p1 = _eb_down(p * (z2 > 0), a1, w2)
            return _eb_down(p1 * (z1 > 0), x.flatten(1), w1).view(3, 2, 8, 8).sum(1, keepdim=True)

        expected, expected_contrastive = to_input(p2), to_input(p2 - contrast).clamp(min=0)
    ours = build_method("excitation_backprop")(net, x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.sum((1, 2, 3)), torch.ones(3), rtol=1e-5, atol=1e-5)  # probabilities sum to 1
    contrastive = build_method("excitation_backprop", contrastive=True)(net, x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(contrastive, expected_contrastive, rtol=1e-5, atol=1e-7)


def test_excitation_backprop_reuses_positive_weights_until_the_parameters_change():
    """W⁺ (and the classifier's (−W)⁺) are kept on the method object: a second call clamps no weight, and in-place
    changes (under ``no_grad`` and through ``.data``) give the map of a fresh method; pickling drops the cache."""
    net, x = MixedReLUNet().eval(), images().abs()
    for contrastive in (False, True):
        method = build_method("excitation_backprop", contrastive=contrastive)
        first = method(net, x, 1)
        with CountOps() as ops:
            again = method(net, x, 1)
        assert ops.counts["clamp"] + ops.counts["clamp_"] == (1 if contrastive else 0)  # the map's own clamp(min=0)
        assert torch.equal(first, again)
        for change in (lambda: net.conv2.weight.mul_(-1.5), lambda: net.fc.weight.data.normal_()):
            before = method(net, x, 1)
            with torch.no_grad():
                change()
            after = method(net, x, 1)
            assert torch.equal(after, build_method("excitation_backprop", contrastive=contrastive)(net, x, 1))
            assert not torch.allclose(after, before)
        assert torch.equal(pickle.loads(pickle.dumps(method))(net, x, 1), method(net, x, 1))


def test_excitation_backprop_at_a_layer_and_through_convolutions():
    """At a hidden layer the map has the layer's resolution; on a conv net with positive inputs and no residual
    additions the winning probabilities still sum to one."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(6, 3)).eval()
    x = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    at_input = build_method("excitation_backprop")(net, x, 2)
    torch.testing.assert_close(at_input.sum((1, 2, 3)), torch.ones(2), rtol=1e-4, atol=1e-4)
    assert build_method("excitation_backprop", layer="3")(net, x, 2).shape == (2, 1, 4, 4)


# ---------------------------------------------------------------- PrunePGD_50*


class GatedNet(nn.Module):
    """MixedReLUNet written with explicit per-call neuron masks (None: no gating), for an independent PGD."""

    def __init__(self, net: MixedReLUNet) -> None:
        super().__init__()
        self.net = net
        self.masks: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n, acts = self.net, []

        def gate(a: torch.Tensor) -> torch.Tensor:
            acts.append(a)
            return a if self.masks is None else a * self.masks[len(acts) - 1]

        h = gate(F.relu(n.bn(n.conv1(x))))
        out = gate(F.relu(n.conv2(h)))
        out = gate(F.relu(out + h))
        return n.fc(out.mean((2, 3))), acts


def test_prune_pgd_dead_is_pgd_on_the_originally_active_neurons():
    """Independent PGD (seed 000 Eq. 4: 20 steps of 0.01 along the L2-normalised gradient, projected onto the 0.1
    ball) on the net with the neurons dead at x fixed at zero. Tolerance 1e-5."""
    net, x = MixedReLUNet().eval(), images()
    gated = GatedNet(net)
    with torch.no_grad():
        _, acts = gated(x)
    gated.masks = [(a > 0).float() for a in acts]
    delta = torch.zeros_like(x)
    for _ in range(20):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(gated(x + delta)[0][:, 2].sum(), delta)
        with torch.no_grad():
            delta = delta + 0.01 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            delta = delta * (0.1 / delta.flatten(1).norm(dim=1)).clamp(max=1.0).view(-1, 1, 1, 1)
    ours = build_method("prune_pgd_dead")(net, x, 2)
    torch.testing.assert_close(ours, delta, rtol=1e-5, atol=1e-6)
    unpruned = build_method("prune_pgd", sparsity=0.0)(net, x, 2)
    assert not torch.allclose(ours, unpruned, atol=1e-4)


class SeparateMaskPGD(PrunePGD):
    """The former PrunePGD_50*: the keep mask from a gradient-free forward of its own, then every step on the pruned
    network (steps + 1 forwards)."""

    def prune(self, model, inputs, target):
        with torch.no_grad():
            logits, activations = forward_with_activations(model, inputs, "prune_pgd_dead")
        return [a > 0 for a in activations], target_scores(logits, target)[1]


@pytest.mark.parametrize("target", [None, torch.tensor([2, 0, 1])])
def test_prune_pgd_dead_first_step_doubles_as_the_mask_forward(target):
    """At δ = 0 the pruned net equals the plain one in value and gradient, so the first step's forward gives the mask:
    ``steps`` forward+backward passes (2 convs each here) instead of ``steps`` + 1 forwards, and the same map, bit for
    bit, as the separate mask forward."""
    net, x = MixedReLUNet().eval(), images()
    for steps in (1, 4):
        with CountOps() as ops:
            ours = build_method("prune_pgd_dead", steps=steps)(net, x, target)
        assert (ops.counts["convolution"], ops.counts["convolution_backward"]) == (2 * steps, 2 * steps)
        assert torch.equal(ours, SeparateMaskPGD(sparsity=0.0, steps=steps)(net, x, target))


# ---------------------------------------------------------------- contract and configuration


@pytest.mark.parametrize("name", sorted(NEW_METHODS))
def test_contract_model_untouched_on_success_and_on_failure_midway(name):
    net = MixedReLUNet().train()
    net.fc.weight.requires_grad_(False)
    x = images()
    before = model_state(net)
    out = build_method(name, **NEW_METHODS[name])(net, x, torch.tensor([0, 1, 2]))
    assert out.shape[0] == 3 and out.shape[-2:] == x.shape[-2:] and bool(torch.isfinite(out).all())
    assert not out.requires_grad
    assert_same_state(before, model_state(net))
    assert torch._C._len_torch_function_stack() == 0
    for fail_at in (1, 2):
        failing = Failing(net, fail_at)
        method = build_method(name, **NEW_METHODS[name], **({"max_batch": 2} if "max_batch" in kwargs_of(name) else {}))
        try:
            method(failing, x, torch.tensor([0, 1, 2]))
            assert failing.calls < fail_at  # a single-pass method never reaches a second forward
        except RuntimeError as err:
            assert "injected failure" in str(err)
        assert_same_state(before, model_state(net))
        assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("name", sorted(NEW_METHODS))
def test_methods_run_inside_inference_mode(name):
    """Trainer.validate/test run under torch.inference_mode: the same map comes out."""
    net, x = MixedReLUNet().eval(), images()
    expected = build_method(name, **NEW_METHODS[name])(net, x, 1)
    with torch.inference_mode():
        got = build_method(name, **NEW_METHODS[name])(net, x.clone(), 1)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", sorted(NEW_METHODS))
def test_contract_clear_errors(name):
    net, method = MixedReLUNet().eval(), build_method(name, **NEW_METHODS[name])
    with pytest.raises(AttributionError, match="NaN or inf"):
        method(net, torch.full((1, 2, 8, 8), float("nan")), 0)
    with pytest.raises(AttributionError, match="out of range.*3 outputs"):
        method(net, images(), 3)


@pytest.mark.parametrize("name", ["deeplift", "deepshap", "prune_pgd_dead", "lrp", "excitation_backprop"])
def test_relu_methods_reject_models_without_relus(name):
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.GELU(), nn.Flatten(), nn.Linear(3 * 36, 3))
    with pytest.raises(AttributionError, match=rf"{name} .*ReLU.*the model calls nn\.GELU"):
        build_method(name, **NEW_METHODS[name])(net, images(), 0)
    with pytest.raises(AttributionError, match="needs a network with ReLU activations"):
        build_method(name, **NEW_METHODS[name])(nn.Sequential(nn.Flatten(), nn.Linear(128, 3)), images(), 0)


def test_methods_build_from_yaml():
    config = yaml.safe_load("""
    - {name: deeplift, kwargs: {baseline: 0.5, max_batch: 16}}
    - {name: deepshap, kwargs: {background: zero}}
    - {name: gradient_shap, kwargs: {n_samples: 4, stdevs: 0.1, seed: 3}}
    - {name: rise, kwargs: {num_masks: 16, mask_resolution: 4, p: 0.5, output: logit}}
    - {name: lime, kwargs: {n_samples: 30, grid: 4, kernel_width: 0.25}}
    - {name: kernel_shap, kwargs: {n_samples: 30, grid: 4}}
    - {name: prune_pgd_dead, kwargs: {steps: 3}}
    - {name: lrp, kwargs: {composite: epsilon_gamma_box, low: -3.0, high: 3.0, gamma: 0.25}}
    - {name: excitation_backprop, kwargs: {layer: conv2, contrastive: true}}
    - {name: guided_ig, kwargs: {steps: 4, fraction: 0.25, max_dist: 0.02, baseline: 0.0}}
    """)
    net, x = MixedReLUNet().eval(), images()
    for entry in config:
        assert build_method(entry["name"], **entry["kwargs"])(net, x).shape[0] == 3
    with pytest.raises(AttributionError, match="unknown argument"):
        build_method("rise", masks=3)
