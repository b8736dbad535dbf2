"""Complexity, faithfulness, robustness and Random Logit metrics: closed forms, seeding, contract.

Closed forms on a linear model ``f(x) = w·x`` (one logit per class) pin each protocol independently of Quantus
(the Quantus comparison is ``tests/conformance/test_conformance_quantus_families.py``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lit_xai.metrics.complexity import Complexity, Sparseness
from lit_xai.metrics.faithfulness import FaithfulnessCorrelation, Infidelity, Monotonicity, MonotonicityCorrelation


class Linear(nn.Module):
    """``f(x)_k = Σ w_k·x``: the gradient is ``w``, every removal changes the logit by ``Σ w·Δx``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.weight)


def _linear(seed: int = 0, classes: int = 2) -> Linear:
    return Linear(torch.randn(classes, 3, 8, 8, generator=torch.Generator().manual_seed(seed))).eval()


def _inputs(seed: int = 1, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_gini_and_entropy_closed_forms() -> None:
    """One-hot map: Gini (n − 1)/n, entropy 0; constant map: Gini 0, entropy ln n (n = 3·8·8 entries)."""
    n = 3 * 8 * 8
    one_hot = torch.zeros(2, 3, 8, 8)
    one_hot[:, 1, 2, 3] = -5.0  # sign dropped by |·|
    constant = torch.full((2, 3, 8, 8), 0.7)
    inputs, target, model = _inputs(batch=2), torch.zeros(2, dtype=torch.long), nn.Identity()
    assert torch.allclose(Sparseness().image_scores(model, inputs, target, one_hot), torch.tensor((n - 1) / n),
                          atol=1e-5)
    assert torch.allclose(Sparseness().image_scores(model, inputs, target, constant), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(Complexity().image_scores(model, inputs, target, one_hot), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(Complexity().image_scores(model, inputs, target, constant), torch.tensor(math.log(n)),
                          rtol=1e-6)
    assert Sparseness.higher_is_better and not Complexity.higher_is_better


def test_faithfulness_correlation_is_one_for_input_times_gradient_on_a_linear_model() -> None:
    """Fill 0, logits: ``f(x) − f(x_{S←0}) = Σ_S w·x`` = the sum of the Input×Gradient map over S, so ρ = 1;
    a map unrelated to the model scores far below."""
    model, inputs = _linear(), _inputs()
    target = torch.tensor([0, 1, 0, 1])
    exact = inputs * model.weight[target]
    metric = FaithfulnessCorrelation(num_runs=20, subset_size=32, baseline=0.0)
    assert torch.allclose(metric.image_scores(model, inputs, target, exact), torch.ones(4), atol=1e-5)
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    assert metric.image_scores(model, inputs, target, noise).abs().max() < 0.9


def test_infidelity_is_zero_for_the_gradient_on_a_linear_model() -> None:
    """``Σ w·(x − x̃) = f(x) − f(x̃)`` for every patch removal, whatever the fill: infidelity 0; a scaled map is off
    by (s − 1)²·mean_j Δ_j²."""
    model, inputs = _linear(), _inputs()
    target = torch.tensor([0, 1, 1, 0])
    gradient = model.weight[target].detach()
    for baseline in ("image_min", 0.0, "image_mean"):
        metric = Infidelity(baseline=baseline, patch_sizes=(3, 4))
        assert metric.image_scores(model, inputs, target, gradient).abs().max() < 1e-8
    assert (Infidelity().image_scores(model, inputs, target, 2 * gradient) > 1e-3).all()


def test_monotonicity_inserts_the_input_values() -> None:
    """Logit output, fill 0: inserting feature i changes the logit by ``w_i x_i``. All contributions positive:
    monotone whatever the order (1); one negative contribution: the curve falls once (0). A metric that re-filled
    with the baseline (Quantus 0.6) would give 1 for both."""
    model, inputs = _linear(), _inputs(batch=2)
    target = torch.tensor([0, 0])
    model.weight.data = model.weight.data.abs()
    positive = inputs.abs()
    maps = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    maps[:, :, 0, 0] = 2.0  # inserted in the last step (the curve has no point before the first insertion)
    metric = Monotonicity(baseline=0.0, output="logit", features_in_step=8)
    assert metric.image_scores(model, positive, target, maps).tolist() == [1.0, 1.0]
    negative = positive.clone()
    negative[:, 0, 0, 0] = -5.0
    assert metric.image_scores(model, negative, target, maps).tolist() == [0.0, 0.0]


def test_monotonicity_correlation_ranks_the_variance_of_a_linear_model() -> None:
    """Logit output: ``E[(f(x_{S←u}) − f(x))²]`` grows with ``|w|`` over S for fills u far from x; a map equal to
    ``|w|`` gives a Spearman ρ close to 1, its reverse close to −1."""
    model = _linear()
    inputs = torch.zeros(2, 3, 8, 8)  # Δ = u·Σ_S w with u ~ U[0, 1): variance ∝ (Σ_S w)²
    model.weight.data = model.weight.data.abs()
    target = torch.tensor([0, 0])
    maps = model.weight[0].detach().expand(2, -1, -1, -1)
    metric = MonotonicityCorrelation(features_in_step=24, num_samples=50, output="logit")
    assert (metric.image_scores(model, inputs, target, maps) > 0.8).all()
    assert (metric.image_scores(model, inputs, target, -maps + maps.max() + 1) < -0.8).all()


@pytest.mark.parametrize("factory", [
    lambda: FaithfulnessCorrelation(num_runs=5, subset_size=16),
    lambda: MonotonicityCorrelation(features_in_step=32, num_samples=3),
])
def test_random_draws_are_per_image_and_seeded(factory) -> None:  # noqa: ANN001
    """An image's score does not depend on its batch or position (per-image generators), the global generator is
    untouched, and another seed draws otherwise."""
    model, inputs = _linear(), _inputs(batch=4)
    target = torch.tensor([0, 1, 0, 1])
    maps = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    state = torch.random.get_rng_state()
    whole = factory().image_scores(model, inputs, target, maps)
    assert torch.equal(torch.random.get_rng_state(), state)
    order = torch.tensor([3, 1, 0, 2])
    shuffled = factory().image_scores(model, inputs[order], target[order], maps[order])
    halves = torch.cat([factory().image_scores(model, inputs[:2], target[:2], maps[:2]),
                        factory().image_scores(model, inputs[2:], target[2:], maps[2:])])
    torch.testing.assert_close(shuffled, whole[order], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(halves, whole, rtol=1e-5, atol=1e-6)
    other = factory()
    other.seed = 1
    assert not torch.allclose(other.image_scores(model, inputs, target, maps), whole)


@pytest.mark.parametrize("factory", [
    Sparseness, Complexity, lambda: FaithfulnessCorrelation(num_runs=4, subset_size=16),
    lambda: Monotonicity(features_in_step=32), lambda: MonotonicityCorrelation(features_in_step=64, num_samples=2),
    Infidelity,
])
def test_states_sum_over_ranks_and_the_model_is_left_alone(factory) -> None:  # noqa: ANN001
    """Two "ranks" on disjoint halves, states summed (``dist_reduce_fx="sum"``) = one process on the whole batch;
    the model's parameters, gradient flags and mode are untouched."""
    model, inputs = _linear(), _inputs(batch=4)
    target, maps = torch.tensor([0, 1, 0, 1]), torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    before = [p.detach().clone() for p in model.parameters()]
    whole, first, second = factory(), factory(), factory()
    whole.update(model, inputs, target, maps)
    first.update(model, inputs[:2], target[:2], maps[:2])
    second.update(model, inputs[2:], target[2:], maps[2:])
    merged = (first.score_sum + second.score_sum) / (first.count + second.count)
    torch.testing.assert_close(merged.float(), whole.compute()["score"], rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.requires_grad and p.grad is None for p in model.parameters()) and not model.training


def test_bad_input_is_a_clear_error() -> None:
    model, inputs, target = _linear(), _inputs(batch=2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="subset_size=500 must be smaller than the 192 features"):
        FaithfulnessCorrelation(subset_size=500).update(model, inputs, target, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="maps must have 1 or 3 channels"):
        Infidelity().update(model, inputs, target, torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError, match="non-finite"):
        Sparseness().update(model, inputs, target, torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="patch_sizes"):
        Infidelity(patch_sizes=(0,))
    with pytest.raises(ValueError, match="output="):
        Monotonicity(output="softmax")


def test_linear_imputation_reproduces_a_linear_ramp_inside_the_image() -> None:
    """The stencil is symmetric, so a linear function is its own weighted neighbour mean: removed pixels away from
    the border get the ramp's values back exactly (the border rows, with missing neighbours, are kept)."""
    from lit_xai.metrics.faithfulness import linear_imputation

    rows, cols = torch.meshgrid(torch.arange(10.0, dtype=torch.float64), torch.arange(12.0, dtype=torch.float64),
                                indexing="ij")
    ramp = (0.3 * rows - 0.7 * cols + 2.0).expand(2, 3, -1, -1)
    removed = torch.zeros(2, 1, 10, 12, dtype=torch.bool)
    removed[0, :, 2:8, 3:9] = True
    removed[1, :, 1:9, 1:11] = torch.rand(8, 10, generator=torch.Generator().manual_seed(0)) < 0.8
    torch.testing.assert_close(linear_imputation(ramp, removed), ramp, rtol=0, atol=1e-8)


def test_road_removes_the_ranked_pixels_with_seeded_noise() -> None:
    """At p% the first ``int(H·W·p/100)`` pixels by rank change (imputation + noise) and no other pixel does."""
    from lit_xai.metrics.faithfulness import ROAD

    inputs = _inputs(batch=2)
    maps = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    metric = ROAD(percentages=(10, 50))
    imputed = metric.imputed(inputs, maps).view(2, 2, 3, 64)  # [p, b, C, H·W]
    changed = (imputed != inputs.flatten(2)[None]).any(2)  # [p, b, H·W]
    top = maps.flatten(1).argsort(1, descending=True)
    for p, count in enumerate((6, 32)):
        expected = torch.zeros(2, 64, dtype=torch.bool).scatter_(1, top[:, :count], True)
        assert torch.equal(changed[p], expected)
    assert torch.equal(ROAD(percentages=(10, 50)).imputed(inputs, maps), metric.imputed(inputs, maps))
    assert ROAD.higher_is_better is not None and not metric.higher_is_better and ROAD(order="lerf").higher_is_better


def test_irof_of_a_model_that_ignores_its_input_is_one() -> None:
    """Every ratio ``f(x̃)/f(x)`` is 1, so the area over n points is ``n − (n − 1) = 1`` whatever the segments."""
    from lit_xai.metrics.faithfulness import IROF

    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[1.0, 2.0, 0.5]]).expand(x.shape[0], -1)

    inputs, target = _inputs(batch=3), torch.tensor([0, 1, 2])
    maps = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    segments = (torch.arange(64).view(8, 8) // 16).expand(3, -1, -1).clone()
    segments[2] = segments[2].clamp(max=1)  # an image with 2 superpixels next to ones with 4
    curve, counts = IROF().curves(Constant(), inputs, target, maps, segments)
    assert counts.tolist() == [4, 4, 2] and torch.equal(curve[2, 2:], torch.zeros(2))
    torch.testing.assert_close(IROF(n_segments=4).image_scores(Constant(), inputs, target, maps), torch.ones(3))


def _input_x_gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = inputs.detach().clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return (x * gradient).detach()


def test_robustness_closed_forms_on_a_linear_model() -> None:
    """Input×Gradient of ``w·x`` is ``w⊙x``, so ``a(x + δ) − a(x) = w⊙δ``: Max-/Avg-Sensitivity are the max/mean of
    ``‖w⊙δ_n‖/‖w⊙x‖`` and the Lipschitz estimate the max of ``‖w⊙δ_n‖/‖δ_n‖``, from the metric's own δ_n."""
    from lit_xai.metrics.robustness import AvgSensitivity, LocalLipschitzEstimate, MaxSensitivity

    model, inputs = _linear(), _inputs(batch=3)
    target = torch.tensor([0, 1, 0])
    weight = model.weight[target].detach()
    maps = inputs * weight
    for cls, reduce in ((MaxSensitivity, "max"), (AvgSensitivity, "mean")):
        metric = cls(num_samples=5)
        delta = metric.perturbations(inputs).view(5, 3, -1).double()
        assert delta.abs().max() <= 0.2
        expected = (delta * weight.flatten(1)).norm(dim=2) / maps.flatten(1).double().norm(dim=1)
        expected = expected.amax(0) if reduce == "max" else expected.mean(0)
        got = metric.image_scores(model, inputs, target, maps, method=_input_x_gradient)
        torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-6)
    lipschitz = LocalLipschitzEstimate(num_samples=5, normalise=False)
    delta = lipschitz.perturbations(inputs).view(5, 3, -1).double()
    expected = ((delta * weight.flatten(1)).norm(dim=2) / delta.norm(dim=2)).amax(0)
    got = lipschitz.image_scores(model, inputs, target, maps, method=_input_x_gradient)
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-6)
    assert torch.equal(MaxSensitivity(num_samples=5).perturbations(inputs), MaxSensitivity(num_samples=5).perturbations(
        inputs)) and not torch.equal(AvgSensitivity(num_samples=5).perturbations(inputs),
                                     MaxSensitivity(num_samples=5).perturbations(inputs))


def test_robustness_needs_the_method_and_leaves_the_model_alone() -> None:
    from lit_xai.metrics.robustness import MaxSensitivity

    model, inputs, target = _linear(), _inputs(batch=2), torch.tensor([0, 1])
    maps = _input_x_gradient(model, inputs, target)
    with pytest.raises(ValueError, match="needs method"):
        MaxSensitivity(num_samples=2).update(model, inputs, target, maps)
    state = torch.random.get_rng_state()
    metric = MaxSensitivity(num_samples=3, max_batch=4)  # chunks across samples: same δ, same score
    metric.update(model, inputs, target, maps, method=_input_x_gradient)
    reference = MaxSensitivity(num_samples=3).image_scores(model, inputs, target, maps, method=_input_x_gradient)
    torch.testing.assert_close(metric.compute()["score"], reference.mean(), rtol=1e-5, atol=1e-7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="non-finite"):
        MaxSensitivity(num_samples=1).update(model, inputs, target, maps,
                                             method=lambda m, x, t: torch.full_like(x, float("nan")))


def test_random_logit_draws_other_classes_uniformly_and_scores_a_class_blind_method_one() -> None:
    """The other class is never the target and covers the other classes evenly; a method that ignores the class
    gives identical maps (SSIM 1); Input×Gradient of a linear model (maps w_c⊙x) scores below 1."""
    from lit_xai.metrics.random_logit import RandomLogit

    inputs = torch.randn(300, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    target = torch.arange(300) % 4
    other = RandomLogit().other_classes(inputs, target, 4)
    assert (other != target).all()
    counts = torch.bincount(other[target == 0], minlength=4)[1:]
    assert counts.min() > 15  # 75 images over 3 classes: ~25 each
    model, small = _linear(classes=4), inputs[:3]
    blind = RandomLogit().image_scores(model, small, target[:3], small, method=lambda m, x, t: x)
    torch.testing.assert_close(blind, torch.ones(3))
    maps = _input_x_gradient(model, small, target[:3])
    assert (RandomLogit().image_scores(model, small, target[:3], maps, method=_input_x_gradient) < 0.9).all()


def test_update_keeps_the_batch_image_scores_for_the_callback() -> None:
    """``last_image_scores`` after an update = ``image_scores`` on that batch (the callback reuses them)."""
    from lit_xai.metrics.faithfulness import ROAD

    model, inputs, target = _linear(), _inputs(batch=3), torch.tensor([0, 1, 0])
    maps = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    for metric in (Sparseness(), FaithfulnessCorrelation(num_runs=4, subset_size=16), ROAD(percentages=(20, 60))):
        metric.update(model, inputs, target, maps)
        torch.testing.assert_close(metric.last_image_scores, metric.image_scores(model, inputs, target, maps))
