"""Peer conformance of the seeds' remaining baselines (issue 15) on nets lit_xai does not ship.

Captum's DeepLift hooks ``nn.ReLU`` *modules*: it cannot follow one in-place module called three times per block,
nor functional ``F.relu``. For those nets Captum runs on an equivalent net with one separate, non-in-place ReLU
module per call carrying the same weights and ``nn.MaxPool2d``/``nn.AdaptiveMaxPool2d`` modules (on these Captum's
DeepLift propagates the max-pool gradient, as we do).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import DeepLiftShap as CaptumDeepLiftShap
from captum.attr import GradientShap as CaptumGradientShap
from torch import nn

from lit_xai.attribution import build_method


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


class SeparateReLUs(nn.Module):
    """The foreign net's forward with one fresh ``nn.ReLU()`` per call (what Captum's module hooks need)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(3))
        self.pool, self.adaptive_pool = nn.MaxPool2d(2), nn.AdaptiveMaxPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, r = self.net, self.relus
        if type(n).__name__ == "ReusedInplaceReLUNet":
            x = r[0](n.bn(n.stem(x)))
            out = r[1](n.bn1(n.conv1(x)))
            out = r[2](n.bn2(n.conv2(out)) + x)
            return n.head(out.mean((2, 3)))
        assert type(n).__name__ == "FunctionalReLUNet"
        x = self.pool(r[0](n.conv1(x)))
        x = self.adaptive_pool(r[1](n.conv2(x)))
        return n.fc(x.flatten(1))


TARGET = torch.tensor([0, 1, 2, 3, 4, 0])


def test_deeplift_matches_captum(foreign_net, images):
    """Tolerance: correlation ≥ 0.9999 and max abs difference ≤ 1e-5 · max |map| (float32 round-off)."""
    baseline = 0.3 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ours = build_method("deeplift", baseline=baseline)(foreign_net, images, TARGET)
    theirs = CaptumDeepLift(SeparateReLUs(foreign_net).eval()).attribute(images, baseline.expand_as(images), TARGET)
    assert foreign_net(images).shape == (6, 5)
    assert correlation(ours, theirs) >= 0.9999
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_deeplift_differs_from_input_x_gradient(reused_relu_net, images):
    """Guard: the Rescale multipliers are not the plain gradient (the test above could otherwise pass trivially)."""
    ours = build_method("deeplift")(reused_relu_net, images, TARGET)
    ixg = build_method("input_x_gradient")(reused_relu_net, images, TARGET)
    assert correlation(ours, ixg) < 0.99


def positive_copy(net: nn.Module) -> nn.Module:
    """``net`` with |weights| in every conv/linear layer (BatchNorm scales are already positive): with ``x ≥ x̄`` no
    unit receives contributions of both signs."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.abs_()
    return net


def test_deeplift_reveal_cancel_matches_captum_where_no_unit_mixes_signs(foreign_net, images):
    """No peer implements RevealCancel (Captum and shap's DeepExplainer have Rescale only; the authors' ``deeplift``
    package is TensorFlow/Keras). Where every contribution has one sign RevealCancel reduces to Rescale
    (Δy⁺ = ½(f(z̄+Δz⁺) − f(z̄)) · 2), so Captum's ``DeepLift`` is its peer there. Tolerance as for DeepLIFT."""
    net = positive_copy(foreign_net)
    baseline = 0.3 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x = baseline + images.abs()
    ours = build_method("deeplift", baseline=baseline, rule="reveal_cancel")(net, x, TARGET)
    theirs = CaptumDeepLift(SeparateReLUs(net).eval()).attribute(x, baseline.expand_as(x), TARGET)
    assert correlation(ours, theirs) >= 0.9999
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_deeplift_reveal_cancel_differs_from_captum_rescale_with_mixed_signs(reused_relu_net, images):
    """Guard for the test above: on the net as it is, the rules part (and the sum still equals f(x) − f(x̄))."""
    baseline = 0.3 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ours = build_method("deeplift", baseline=baseline, rule="reveal_cancel")(reused_relu_net, images, TARGET)
    theirs = CaptumDeepLift(SeparateReLUs(reused_relu_net).eval()).attribute(
        images, baseline.expand_as(images), TARGET)
    assert correlation(ours, theirs) < 0.99
    torch.testing.assert_close(ours.sum((1, 2, 3)), theirs.sum((1, 2, 3)), rtol=1e-4, atol=1e-5)


def test_deepshap_matches_captum(foreign_net, images):
    """Tolerance as for DeepLIFT; 4 background images, every one paired with every input."""
    background = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    ours = build_method("deepshap", background=background, max_batch=5)(foreign_net, images, TARGET)
    theirs = CaptumDeepLiftShap(SeparateReLUs(foreign_net).eval()).attribute(images, background, TARGET)
    assert correlation(ours, theirs) >= 0.9999
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_gradient_shap_matches_captum_on_the_same_samples(foreign_net, images, monkeypatch):
    """Captum draws its references (``np.random.choice``), positions (``np.random.uniform``) and noise
    (``torch.normal``) from global generators, image-major; we feed it our seeded draws, permuted to its layout.
    Tolerance: correlation ≥ 0.9999, max abs difference ≤ 1e-5 · max |map|."""
    background = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    method = build_method("gradient_shap", background=background, n_samples=3, stdevs=0.2, seed=7, max_batch=7)
    ours = method(foreign_net, images, TARGET)
    index, alpha, noise = method.draw(images, 4)
    n, batch = index.shape
    image_major = noise.rows(0, n * batch).view(n, batch, 3, 16, 16).transpose(0, 1).reshape(n * batch, 3, 16, 16)
    monkeypatch.setattr(np.random, "choice", lambda size, count: index.T.flatten().numpy())
    monkeypatch.setattr(np.random, "uniform", lambda low, high, count: alpha.T.flatten().double().numpy())
    monkeypatch.setattr(torch, "normal", lambda mean, std: image_major)
    theirs = CaptumGradientShap(foreign_net).attribute(images, background, n_samples=3, stdevs=0.2, target=TARGET)
    assert correlation(ours, theirs) >= 0.9999
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_gradient_shap_is_complete_in_expectation(reused_relu_net, images):
    """E[Σ φ] = f(x) − E f(x̄). Tolerance: 0.05 absolute + 5% relative (the Monte-Carlo error of 1024 samples)."""
    background = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    maps = build_method("gradient_shap", background=background, n_samples=1024, max_batch=1024)(
        reused_relu_net, images[:2], TARGET[:2]
    )
    with torch.no_grad():
        gap = reused_relu_net(images[:2])[[0, 1], TARGET[:2]] - reused_relu_net(background)[:, TARGET[:2]].mean(0)
    torch.testing.assert_close(maps.sum((1, 2, 3)), gap, rtol=0.05, atol=0.05)


def test_rise_matches_the_reference_code_formula(foreign_net, images):
    """The authors' mask construction (``skimage.transform.resize(order=1, mode='reflect')`` of each grid, crop at
    the shift) and the paper's Monte-Carlo sum computed one mask and one image at a time, fed our seeded grids and
    shifts. Tolerance: 1e-5 relative (float32 sums in another order)."""
    from skimage.transform import resize

    method = build_method("rise", num_masks=40, mask_resolution=5, p=0.5, max_batch=37)
    ours = method(foreign_net, images, TARGET)
    grids, shifts = method.grids_and_shifts((16, 16))
    cell = int(np.ceil(16 / 5))
    expected = torch.zeros(6, 1, 16, 16)
    with torch.no_grad():
        for grid, (dh, dw) in zip(grids.numpy(), shifts.tolist()):
            mask = resize(grid, (6 * cell, 6 * cell), order=1, mode="reflect", anti_aliasing=False)
            mask = torch.as_tensor(mask[dh : dh + 16, dw : dw + 16], dtype=torch.float32)
            for b in range(6):
                prob = foreign_net(images[b : b + 1] * mask).softmax(1)[0, TARGET[b]]
                expected[b, 0] += prob * mask
    expected /= 40 * 0.5
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def _captum_surrogate_per_image(explainer, images, samples, **kwargs):
    """Run a Captum Lime/KernelShap explainer image by image, fed our coalitions in our order."""

    def ours(original, **_):
        for sample in samples:
            yield sample[None].long()

    explainer.perturb_func = ours
    return torch.cat([
        explainer.attribute(images[b : b + 1], target=int(TARGET[b]), n_samples=len(samples), **kwargs)
        for b in range(len(images))
    ])


def test_lime_matches_captum_with_the_same_segments_samples_and_kernel(foreign_net, images):
    """Captum ``Lime`` with the lime package's regressor (sklearn ``Ridge(alpha=1)``), our kernel on the
    interpretable sample, our 4 × 4 patch grid as ``feature_mask`` and our coalitions; probabilities as outputs.
    Tolerance: 1e-4 relative + 1e-5 absolute (float32 model outputs, float64 vs sklearn solver)."""
    from captum._utils.models.linear_model import SkLearnLinearModel
    from captum.attr import Lime as CaptumLime

    method = build_method("lime", n_samples=60, grid=4, max_batch=50)
    ours = method(foreign_net, images, TARGET)
    samples = method.coalitions(16, 60)
    mask = method.segments(images)
    explainer = CaptumLime(lambda x: foreign_net(x).softmax(1),
                           interpretable_model=SkLearnLinearModel("linear_model.Ridge", alpha=1.0),
                           similarity_func=lambda original, perturbed, sample, **_: method.kernel(sample.float()))
    theirs = _captum_surrogate_per_image(explainer, images, samples, feature_mask=mask[None, None])
    torch.testing.assert_close(ours, theirs[:, :1], rtol=1e-4, atol=1e-5)
    assert bool((theirs[:, :1] == theirs).all())


def test_kernel_shap_matches_captum_with_the_same_segments_and_samples(foreign_net, images):
    """Captum ``KernelShap`` (its Shapley weights, ``LinearRegression``) on our 3 × 3 grid and coalitions.
    Tolerance: 1e-3 relative + 1e-4 absolute (the 1e6 weights of the empty/full coalitions amplify round-off)."""
    from captum.attr import KernelShap as CaptumKernelShap

    method = build_method("kernel_shap", n_samples=80, grid=3, max_batch=64)
    ours = method(foreign_net, images, TARGET)
    samples = method.coalitions(9, 80)
    assert samples[0].all() and not samples[1].any()
    theirs = _captum_surrogate_per_image(CaptumKernelShap(foreign_net), images, samples,
                                         feature_mask=method.segments(images)[None, None])
    torch.testing.assert_close(ours, theirs[:, :1], rtol=1e-3, atol=1e-4)


def _guided_ig_reference(grad_fn, x_input: np.ndarray, x_baseline: np.ndarray, steps: int, fraction: float,
                         max_dist: float) -> np.ndarray:
    """Kapishnikov et al. 2021, Algorithm 1, written out for one image in NumPy (as the authors' guided_ig.py)."""
    eps = 1e-9
    x, attr = x_baseline.copy(), np.zeros_like(x_input)
    diff = x_input - x_baseline
    l1_total = np.abs(diff).sum()
    if l1_total == 0:
        return attr
    for step in range(steps):
        grad_actual = grad_fn(x)
        grad = grad_actual.copy()
        alpha = (step + 1.0) / steps
        alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_min, x_max = x_baseline + diff * alpha_min, x_baseline + diff * alpha_max
        l1_target = l1_total * (1 - (step + 1) / steps)
        gamma = np.inf
        while gamma > 1.0:
            x_old = x.copy()
            with np.errstate(divide="ignore", invalid="ignore"):
                x_alpha = np.where(diff != 0, (x - x_baseline) / diff, np.nan)
            x_alpha[np.isnan(x_alpha)] = alpha_max
            x[x_alpha < alpha_min] = x_min[x_alpha < alpha_min]
            l1_current = np.abs(x - x_input).sum()
            if math.isclose(l1_target, l1_current, rel_tol=eps, abs_tol=eps):
                attr += (x - x_old) * grad_actual
                break
            grad[x == x_max] = np.inf
            threshold = np.quantile(np.abs(grad), fraction, method="lower")
            s = np.logical_and(np.abs(grad) <= threshold, grad != np.inf)
            l1_s = (np.abs(x - x_max) * s).sum()
            gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else np.inf
            if gamma > 1.0:
                x[s] = x_max[s]
            else:
                x[s] = (x + (x_max - x) * gamma)[s]
            attr += (x - x_old) * grad_actual
    return attr


def test_guided_ig_matches_the_published_algorithm(foreign_net, images):
    """Per image, float64 on both sides. Tolerance: 1e-9 relative + 1e-12 absolute."""
    net, x = foreign_net.double(), images[:3].double()
    steps, fraction, max_dist = 16, 0.25, 0.05
    ours = build_method("guided_ig", steps=steps, fraction=fraction, max_dist=max_dist)(net, x, TARGET[:3])
    for b in range(3):

        def grad_fn(point: np.ndarray, b: int = b) -> np.ndarray:
            p = torch.from_numpy(point).view(1, 3, 16, 16).requires_grad_(True)
            return torch.autograd.grad(net(p)[0, TARGET[b]], p)[0].flatten().numpy()

        expected = _guided_ig_reference(grad_fn, x[b].flatten().numpy(), np.zeros(3 * 16 * 16), steps, fraction,
                                        max_dist)
        torch.testing.assert_close(ours[b].flatten(), torch.from_numpy(expected), rtol=1e-9, atol=1e-12)


def plain_conv_net() -> nn.Module:
    """A plain conv net (conv-BN-ReLU-maxpool ×2, average pool, two dense layers), BN with non-trivial statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5),
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return net.eval()


def zennit_relevance(net: nn.Module, x: torch.Tensor, composite) -> torch.Tensor:
    """zennit's Gradient attributor with relevance y_t at the target logit (as ours)."""
    from zennit.attribution import Gradient

    onehot = F.one_hot(TARGET[: len(x)], 5).to(x)
    with Gradient(net, composite) as attributor:
        _, relevance = attributor(x, lambda out: onehot * out)
    return relevance


def zennit_composites(canonizers: list) -> dict:
    from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat

    return {
        "epsilon_plus_flat": ({}, EpsilonPlusFlat(canonizers=canonizers)),
        "epsilon_plus": ({}, EpsilonPlus(canonizers=canonizers)),  # z⁺ on the image: the x⁻ branch runs
        "epsilon_gamma_box": ({"low": -3.0, "high": 3.0}, EpsilonGammaBox(low=-3.0, high=3.0, canonizers=canonizers)),
        "epsilon_alpha2_beta1_flat": ({}, EpsilonAlpha2Beta1Flat(canonizers=canonizers)),
    }


def test_lrp_matches_zennit_composites_with_batchnorm_folding(images):
    """zennit with ``SequentialMergeBatchNorm`` on a plain conv net. Tolerance: correlation ≥ 0.9999 and max abs
    difference ≤ 1e-4 · max |map| (float32; the stabilisers are identical)."""
    from zennit.canonizers import SequentialMergeBatchNorm

    net = plain_conv_net()
    for name, (kwargs, composite) in zennit_composites([SequentialMergeBatchNorm()]).items():
        ours = build_method("lrp", composite=name, **kwargs)(net, images, TARGET)
        theirs = zennit_relevance(net, images, composite)
        assert correlation(ours, theirs) >= 0.9999, name
        assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max(), name


def test_lrp_matches_zennit_on_the_foreign_nets(foreign_net, images):
    """zennit hooks modules: it runs on the equivalent net with one ReLU module per call, its BatchNorms merged by
    name (``NamedMergeBatchNorm``). Tolerance as above."""
    from zennit.canonizers import NamedMergeBatchNorm

    separate = SeparateReLUs(foreign_net).eval()
    pairs = [(["net.stem"], "net.bn"), (["net.conv1"], "net.bn1"), (["net.conv2"], "net.bn2")]
    canonizers = [NamedMergeBatchNorm(pairs)] if type(foreign_net).__name__ == "ReusedInplaceReLUNet" else []
    for name, (kwargs, composite) in zennit_composites(canonizers).items():
        ours = build_method("lrp", composite=name, **kwargs)(foreign_net, images, TARGET)
        theirs = zennit_relevance(separate, images, composite)
        assert correlation(ours, theirs) >= 0.9999, name
        assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max(), name


def test_excitation_backprop_matches_torchray(images):
    """TorchRay's ``excitation_backprop`` / ``contrastive_excitation_backprop`` (contrast at the classifier's input)
    at two hidden layers of a plain conv net. TorchRay is not a declared test dependency (``pip install --no-deps
    torchray``): without it this case skips and the equations written out in tests/test_attribution_baselines.py
    remain.
    Tolerance: 1e-5 · max |map| (float32)."""
    excitation = pytest.importorskip("torchray.attribution.excitation_backprop")
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5),
    ).eval()
    x = images.abs()
    for layer in ("3", "6"):
        ours = build_method("excitation_backprop", layer=layer)(net, x, TARGET)
        theirs = torch.cat([excitation.excitation_backprop(net, x[i : i + 1], int(TARGET[i]), saliency_layer=layer)
                            for i in range(len(x))])
        assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
        ours = build_method("excitation_backprop", layer=layer, contrastive=True)(net, x, TARGET)
        theirs = torch.cat([excitation.contrastive_excitation_backprop(
            net, x[i : i + 1], int(TARGET[i]), saliency_layer=layer, contrast_layer="12", classifier_layer="13")
            for i in range(len(x))])
        assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
