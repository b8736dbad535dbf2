"""IBA, Inverse IBA, Multi-layer IBA: KL maths, statistics, batching equivalence, model hygiene."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate
from torch import nn

from lit_xai.attribution import AttributionError, build_method
from lit_xai.attribution.information import IBA, FeatureStatistics, capacity_per_input_pixel
from lit_xai.attribution.information.bottleneck import GaussianSmoothing, iba_kl, prior_kl
from lit_xai.attribution.information.statistics import (
    WelfordState,
    all_gather_merge,
    cache_path,
    data_fingerprint,
    estimate_feature_statistics,
)
from lit_xai.storage import atomic_torch_save, load_or_discard


class TinyNet(nn.Module):
    """Two conv stages (8×8 then 4×4 feature maps at 16×16 input), in-place ReLU, BN, linear head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU(inplace=True))
        self.head = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def tiny(dtype: torch.dtype = torch.float32) -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet().to(dtype)
    model.stem[1].running_mean.uniform_(-0.1, 0.1)
    return model


def loader(n_batches: int = 3, batch: int = 8, dtype: torch.dtype = torch.float32) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(batch, 3, 16, 16, generator=g, dtype=dtype)} for _ in range(n_batches)]


def numeric_kl(m1: float, s1: float, m2: float, s2: float) -> float:
    """∫ p log(p/q) over ±12 σ₁ by adaptive quadrature (independent of the closed form)."""

    def integrand(z: float) -> float:
        logp = -0.5 * ((z - m1) / s1) ** 2 - math.log(s1 * math.sqrt(2 * math.pi))
        logq = -0.5 * ((z - m2) / s2) ** 2 - math.log(s2 * math.sqrt(2 * math.pi))
        return math.exp(logp) * (logp - logq)

    value, _ = integrate.quad(integrand, m1 - 12 * s1, m1 + 12 * s1, limit=200)
    return value


@pytest.mark.parametrize("r,mu,sigma,lam", [(1.3, 0.2, 0.7, 0.3), (-0.5, 0.0, 1.5, 0.9), (2.0, 1.0, 0.5, 0.05)])
def test_iba_kl_matches_numerical_integration(r: float, mu: float, sigma: float, lam: float) -> None:
    # P(Z|R=r) = N(λr + (1−λ)μ, (1−λ)²σ²) against Q(Z) = N(μ, σ²), in original (not standardised) units
    expected = numeric_kl(lam * r + (1 - lam) * mu, (1 - lam) * sigma, mu, sigma)
    t = lambda v: torch.tensor([v], dtype=torch.float64)
    got = iba_kl(t(r), t(lam), t(1 - lam), t(mu), t(sigma)).item()
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("x,mu,sigma,lam,prior", [(1.3, 0.2, 0.7, 0.6, 0.3), (-2.0, 0.5, 1.2, 0.95, 0.8)])
def test_prior_kl_matches_numerical_integration(x: float, mu: float, sigma: float, lam: float, prior: float) -> None:
    # Remark 2 vs Remark 1 of the dissertation (ch. 6): the two Gaussians whose KL Proposition 3 states
    m1, s1 = lam * x + (1 - lam) * mu, (1 - lam) * sigma
    m2, s2 = prior * lam * x + (1 - prior * lam) * mu, (1 - prior * lam) * sigma
    t = lambda v: torch.tensor([v], dtype=torch.float64)
    got = prior_kl(t(x), t(lam), t(1 - lam), t(prior), t(mu), t(sigma)).item()
    assert got == pytest.approx(numeric_kl(m1, s1, m2, s2), rel=1e-6, abs=1e-9)
    # with a zero prior, Proposition 3 is IBA's KL against N(μ, σ²)
    assert prior_kl(t(x), t(lam), t(1 - lam), t(0.0), t(mu), t(sigma)).item() == pytest.approx(
        iba_kl(t(x), t(lam), t(1 - lam), t(mu), t(sigma)).item(), rel=1e-12)


@pytest.mark.parametrize("shape", [(9, 7), (2, 3), (1, 4)])
@pytest.mark.parametrize("padding,truncate,scipy_mode", [("reflect", 2.0, "mirror"), ("replicate", 3.0, "nearest")])
def test_gaussian_smoothing_matches_scipy(shape: tuple[int, int], padding: str, truncate: float,
                                          scipy_mode: str) -> None:
    """scipy's ``mirror`` is ``nn.ReflectionPad2d`` (folded again on maps narrower than the radius, where
    ReflectionPad2d raises); ``nearest`` is the edge-replicating rule. Exact to float64 rounding."""
    from scipy.ndimage import gaussian_filter

    mask = torch.rand(2, 3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for sigma in (0.6, 1.0, 1.6):  # radii 1, 2, 3 at truncate 2 (no .5 tie, where scipy rounds half up)
        got = GaussianSmoothing(sigma, truncate=truncate, padding=padding)(mask)
        expected = gaussian_filter(mask.numpy(), sigma=(0, 0, sigma, sigma), mode=scipy_mode, truncate=truncate)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.5])
def test_default_smoothing_is_schulz_et_al_spatial_gaussian_kernel(sigma: float) -> None:
    """The reference's ``SpatialGaussianKernel`` written from its description: a (2·round(2σ)+1)² 2-D Gaussian
    normalised to sum 1, ``nn.ReflectionPad2d`` then a depthwise convolution. Before this fix lit_xai blurred with
    radius ⌈3σ⌉ and replicate padding (7×7 at σ = 1): up to 0.2 apart on a random mask."""
    mask = torch.rand(2, 3, 9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    size = int(round(2 * sigma)) * 2 + 1
    grid = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(grid[:, None] ** 2 + grid[None] ** 2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).expand(3, 1, size, size)
    expected = F.conv2d(nn.ReflectionPad2d((size - 1) // 2)(mask), kernel, groups=3)
    torch.testing.assert_close(GaussianSmoothing(sigma)(mask), expected, rtol=1e-12, atol=1e-12)
    old_rule = GaussianSmoothing(sigma, truncate=3.0, padding="replicate")(mask)
    assert float((old_rule - expected).abs().max()) > 1e-3


def test_mask_adam_equals_torch_adam() -> None:
    from lit_xai.attribution.information.optimisation import MaskAdam

    g = torch.Generator().manual_seed(0)
    ours = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    theirs = ours.clone().requires_grad_(True)
    adam, reference = MaskAdam(ours, lr=1.0), torch.optim.Adam([theirs], lr=1.0, foreach=False)
    for _ in range(6):
        gradient = torch.randn(ours.shape, generator=g, dtype=torch.float64)
        adam.step(gradient)
        theirs.grad = gradient.clone()
        reference.step()
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("inverse", [False, True])
def test_optimise_mask_equals_the_textbook_loop(inverse: bool) -> None:
    """optimise_mask (fused lerp composition, active mask folded in, lean Adam) against a plain loop written from
    the equations and Schulz et al.'s ``heatmap`` loop: Z = λ·S + (1−λ)·ε (Inverse IBA: (1−λ)·S + λ·ε) zeroed at
    inactive positions, loss task + β·mean KL (Inverse: β·mean KL − task), torch.optim.Adam on α, ``steps``
    forward/backward/update rounds. ``map_from="last_forward"`` (default) returns the α of the last forward (the
    reference's ``buffer_capacity``), ``"final_update"`` the α after the last update."""
    from dataclasses import replace

    from lit_xai.attribution.information.bottleneck import mask_pair
    from lit_xai.attribution.information.optimisation import BottleneckSettings, optimise_mask

    g = torch.Generator().manual_seed(3)
    signal = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)
    mean, std = torch.randn(2, 5, 5, generator=g, dtype=torch.float64), torch.rand(2, 5, 5, generator=g) + 0.5
    active = (torch.rand(2, 5, 5, generator=g) > 0.2).double()
    head = torch.randn(2 * 5 * 5, generator=g, dtype=torch.float64)
    settings = BottleneckSettings(beta=0.7, steps=4, lr=0.3, sigma=1.0, noise_draws=3, inverse=inverse, seed=5)
    forward = lambda z: torch.tanh(z.flatten(1) @ head)  # noqa: E731
    task = lambda out: -out  # noqa: E731
    kl = lambda lam, one_minus_lam: iba_kl((signal - mean) / std, lam, one_minus_lam)  # noqa: E731
    last_forward = optimise_mask(signal, mean, std.double(), kl, forward, task, settings, active)
    final_update = optimise_mask(signal, mean, std.double(), kl, forward, task,
                                 replace(settings, map_from="final_update"), active)

    alpha = torch.full_like(signal, settings.initial_alpha).requires_grad_(True)
    adam = torch.optim.Adam([alpha], lr=settings.lr, foreach=False)
    noise_generator = torch.Generator().manual_seed(settings.seed)
    smoothing = GaussianSmoothing(settings.sigma, settings.smoothing_truncate, settings.smoothing_padding)
    for _ in range(settings.steps):
        forward_alpha = alpha.detach().clone()
        lam, one_minus_lam = mask_pair(alpha, smoothing)
        epsilon = mean + std.double() * torch.randn((3, 2, 5, 5), generator=noise_generator, dtype=torch.float64)
        keep, drop = (one_minus_lam, lam) if inverse else (lam, one_minus_lam)
        z = (keep[:, None] * signal[:, None] + drop[:, None] * epsilon[None]) * active
        task_term = task(forward(z.flatten(0, 1))).view(3, 3).mean(1)
        info = (kl(lam, one_minus_lam) * active).flatten(1).mean(1)
        loss = settings.beta * info - task_term if inverse else task_term + settings.beta * info
        adam.zero_grad()
        loss.sum().backward()
        adam.step()
    torch.testing.assert_close(last_forward, forward_alpha, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final_update, alpha.detach(), rtol=1e-10, atol=1e-10)


def test_welford_merge_on_split_data_equals_full_data() -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.relu(torch.randn(37, 2, 3, 3, generator=g, dtype=torch.float64) + 0.3)
    parts = [data[:5], data[5:6], data[6:20], data[20:]]
    streamed = WelfordState.from_batch(parts[0])
    for part in parts[1:]:
        streamed = streamed.update(part)
    ranks = WelfordState.from_batch(data[:20]).merge(WelfordState.from_batch(data[20:]))
    for state in (streamed, ranks):
        assert float(state.count) == 37
        torch.testing.assert_close(state.mean, data.mean(0))
        torch.testing.assert_close(state.m2 / 36, data.var(0, unbiased=True))
        torch.testing.assert_close(state.nonzero, (data != 0).sum(0).double())
    stats = FeatureStatistics.from_welford(ranks, min_std=0.01, active_threshold=0.2)
    torch.testing.assert_close(stats.std, data.std(0).clamp_min(0.01).float())
    assert torch.equal(stats.active, (data != 0).double().mean(0) > 0.2)


def test_all_gather_merge_single_process_group(tmp_path) -> None:
    import torch.distributed as dist

    data = torch.randn(10, 2, 2, dtype=torch.float64)
    state = WelfordState.from_batch(data)
    assert all_gather_merge(state) is state  # not initialised: untouched
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        merged = all_gather_merge(state)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(merged.mean, state.mean)
    torch.testing.assert_close(merged.m2, state.m2)
    assert float(merged.count) == 10


def _ddp_statistics_worker(rank: int, world: int, store: str, data: torch.Tensor, cache_dir: str) -> None:
    """One DDP rank: stream its own shard of ``data`` and save the merged statistics it ends up with."""
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    try:
        shard = data[rank::world]
        batches = [{"image": shard[:5]}, {"image": shard[5:]}]
        stats = estimate_feature_statistics(tiny(), "block", batches, max_samples=data.shape[0], cache_dir=cache_dir)
        torch.save(stats.state_dict(), f"{cache_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_statistics_merge_across_two_ddp_processes(tmp_path) -> None:
    import torch.multiprocessing as mp

    data = torch.randn(24, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    args = (2, str(tmp_path / "store"), data, str(cache_dir))
    mp.start_processes(_ddp_statistics_worker, args=args, nprocs=2, join=True, start_method="fork")  # no re-import
    model = tiny().eval()
    with torch.no_grad():
        feats = model.block(model.stem(data))
    for rank in range(2):  # every rank holds the statistics of all 24 samples, not of its own 12
        stats = FeatureStatistics.from_state_dict(torch.load(cache_dir / f"rank{rank}.pt", weights_only=True))
        assert stats.num_samples == 24
        torch.testing.assert_close(stats.mean, feats.mean(0), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(stats.std, feats.std(0).clamp_min(0.01), atol=1e-6, rtol=1e-5)
    assert len(list(cache_dir.glob("iba_stats-*.pt"))) == 1  # written once, by rank 0


def test_statistics_cache_is_keyed_reused_and_atomic(tmp_path, monkeypatch) -> None:
    model = tiny()
    stats = estimate_feature_statistics(model, "block", loader(), max_samples=20, cache_dir=tmp_path)
    assert stats.num_samples == 20
    files = sorted(p.name for p in tmp_path.iterdir())
    data_key = data_fingerprint(loader()[0]["image"])
    assert files == [cache_path(tmp_path, model, "block", 20, data_key).name]  # no temp file left behind

    from lit_xai.attribution.information import statistics as module

    def fail(*args, **kwargs):
        raise AssertionError("statistics recomputed despite the cache")

    monkeypatch.setattr(module, "welford_over_loader", fail)
    again = estimate_feature_statistics(model, "block", iter(loader()), max_samples=20, cache_dir=tmp_path)
    torch.testing.assert_close(again.mean, stats.mean)
    torch.testing.assert_close(again.std, stats.std)
    # other data (another first batch) or other weights never reuse the file
    monkeypatch.undo()
    other_data = [{"image": batch["image"] + 1.0} for batch in loader()]
    shifted = estimate_feature_statistics(model, "block", other_data, max_samples=20, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2
    assert not torch.allclose(shifted.mean, stats.mean)
    with torch.no_grad():
        model.head.bias.add_(1.0)
    assert cache_path(tmp_path, model, "block", 20, data_key).name not in files


def test_statistics_cache_serves_other_min_std_and_active_threshold_exactly(tmp_path, monkeypatch) -> None:
    """The cache holds the raw moments: a file written with one ``min_std``/``active_threshold`` serves another
    exactly as a fresh estimate with that value would (before, the derived σ and mask were cached and reused)."""
    model = tiny().eval()
    estimate_feature_statistics(model, "block", loader(), max_samples=20, cache_dir=tmp_path)
    fresh = estimate_feature_statistics(model, "block", loader(), max_samples=20, min_std=0.5, active_threshold=0.6)
    from lit_xai.attribution.information import statistics as module

    def fail(*args, **kwargs):
        raise AssertionError("statistics recomputed despite the cache")

    monkeypatch.setattr(module, "welford_over_loader", fail)
    cached = estimate_feature_statistics(
        model, "block", loader(), max_samples=20, cache_dir=tmp_path, min_std=0.5, active_threshold=0.6
    )
    assert float(cached.std.min()) >= 0.5 and not bool(cached.active.all())
    torch.testing.assert_close(cached.std, fresh.std)
    assert torch.equal(cached.active, fresh.active)


def test_statistics_cache_in_the_old_derived_format_is_recomputed(tmp_path) -> None:
    model = tiny().eval()
    data_key = data_fingerprint(loader()[0]["image"])
    path = cache_path(tmp_path, model, "block", 20, data_key)
    stale = estimate_feature_statistics(model, "block", loader(), max_samples=20, min_std=0.5)
    atomic_torch_save(stale.state_dict(), path)  # the old format: σ clamped at 0.5 baked in
    stats = estimate_feature_statistics(model, "block", loader(), max_samples=20, cache_dir=tmp_path, min_std=0.01)
    assert float(stats.std.min()) < 0.5
    assert set(load_or_discard(path)) == {"count", "mean", "m2", "nonzero"}


def test_statistics_of_a_one_shot_iterator_keep_its_first_batch(tmp_path) -> None:
    """Fingerprinting peeks at the first batch; a generator must still contribute it to the estimate."""
    model = tiny().eval()
    listed = estimate_feature_statistics(model, "block", loader(), max_samples=20)
    streamed = estimate_feature_statistics(model, "block", (b for b in loader()), max_samples=20, cache_dir=tmp_path)
    assert streamed.num_samples == 20
    torch.testing.assert_close(streamed.mean, listed.mean)


def test_statistics_match_direct_computation() -> None:
    model = tiny().eval()
    data = loader()
    stats = estimate_feature_statistics(model, "block", data, max_samples=20)
    with torch.no_grad():
        feats = model.block(model.stem(torch.cat([b["image"] for b in data])[:20]))
    torch.testing.assert_close(stats.mean, feats.mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(stats.std, feats.std(0).clamp_min(0.01), atol=1e-6, rtol=1e-5)


def snapshot(model: nn.Module) -> dict:
    return {
        "params": {k: v.clone() for k, v in model.state_dict().items()},
        "flags": [(p.requires_grad, p.grad) for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
        "forwards": [m.__dict__.get("forward") for m in model.modules()],  # no patched forward may remain
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    for key, value in before["params"].items():
        assert torch.equal(after["params"][key], value), key
    assert after["flags"] == before["flags"]
    assert after["training"] == before["training"]
    assert after["hooks"] == before["hooks"]
    assert after["forwards"] == before["forwards"]


@pytest.mark.parametrize("name", ["iba", "inverse_iba"])
def test_capacity_nonnegative_sums_to_reported_bits_and_model_untouched(name: str) -> None:
    model = tiny().train()  # train mode on entry must survive
    before = snapshot(model)
    method = build_method(name, layer="block", steps=3, noise_draws=4).fit(model, loader())
    x = loader(1, 3)[0]["image"]
    result = method.explain(model, x)
    assert result.capacity.shape == (3, 1, 4, 4)
    assert bool((result.capacity >= 0).all())
    torch.testing.assert_close(result.capacity.sum((1, 2, 3)), result.total_bits)
    torch.testing.assert_close(method(model, x), result.capacity)
    per_pixel = capacity_per_input_pixel(result.capacity, (16, 16))
    assert per_pixel.shape == (3, 1, 16, 16) and bool((per_pixel >= 0).all())
    torch.testing.assert_close(per_pixel.sum((1, 2, 3)), result.total_bits)
    assert_unchanged(model, before)


def test_model_left_as_found_when_the_forward_raises() -> None:
    model = tiny()
    before = snapshot(model)
    calls = {"n": 0}

    def explode(_m, _i, out):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom")

    handle = model.head.register_forward_hook(explode)
    before["hooks"] = snapshot(model)["hooks"]
    method = IBA(layer="block", steps=5, noise_draws=1).fit(model, loader())
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="boom"):
        method(model, loader(1, 2)[0]["image"])
    assert_unchanged(model, before)
    handle.remove()


def test_batched_optimisation_equals_one_image_at_a_time() -> None:
    model = tiny(torch.float64)
    method = IBA(layer="block", steps=4, noise_draws=3).fit(model, loader(dtype=torch.float64))
    x = loader(1, 4, dtype=torch.float64)[0]["image"]
    target = torch.tensor([0, 2, 1, 2])
    batched = method(model, x, target)
    single = torch.cat([method(model, x[i : i + 1], target[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-9, atol=1e-10)


def test_expanding_at_the_layer_equals_repeating_inputs() -> None:
    from lit_xai.attribution.information.layer_hooks import BottleneckForward

    model = tiny(torch.float64).eval()
    x = loader(1, 2, dtype=torch.float64)[0]["image"]
    z = torch.randn(6, 6, 4, 4, dtype=torch.float64)
    expanding = BottleneckForward(model, model.block, x, 3)
    repeating = BottleneckForward(model, model.block, x, 3)
    repeating.expand_at_layer = False
    torch.testing.assert_close(expanding(z), repeating(z))
    assert expanding.expand_at_layer


class SharedReluNet(nn.Module):
    """A ReLU module shared before and after the bottleneck (``conv2``), a functional op, and an in-place op on the
    output of a module before the bottleneck (a replayed output must not be corrupted by it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(4, 4, 3, 2, 1)
        self.conv3, self.relu, self.head = nn.Conv2d(4, 5, 3, 1, 1), nn.ReLU(), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        h += 0.5
        h = self.conv2(torch.tanh(self.relu(h)))
        return self.head(self.relu(self.conv3(h)).mean((2, 3)))


@pytest.mark.parametrize("case", ["resnet8", "shared_relu", "sequential"])
def test_replayed_prefix_equals_full_forward(case: str) -> None:
    from lit_xai.attribution.information.layer_hooks import BottleneckForward, completed_prefix
    from lit_xai.models.backbones import build_backbone

    torch.manual_seed(0)
    if case == "resnet8":  # layer2 output: 128 channels at half the input size
        model, layer, channels, size = build_backbone("resnet8", num_classes=4).double().eval(), "layer2", 128, 8
    elif case == "shared_relu":
        model, layer, channels, size = SharedReluNet().double().eval(), "conv2", 4, 4
    else:  # digits_cnn: an nn.Sequential whose first five replayed children feed only the next replayed child
        model, layer, channels, size = build_backbone("digits_cnn", num_classes=4, in_chans=3).double().eval(), \
            "features.6", 32, 8
    module = model.get_submodule(layer)
    x = torch.randn(2, 3, 2 * size, 2 * size, dtype=torch.float64)
    prefix = completed_prefix(model, module, x)
    names = {id(m): name for name, m in model.named_modules()}
    kept = [names[id(m)] for m, _ in prefix]
    expected = {"resnet8": ["stem", "layer1"], "shared_relu": ["conv1"],
                "sequential": [f"features.{i}" for i in range(6)]}
    assert kept == expected[case]  # the shared relu and the parents of the bottleneck are not replayed
    stored = [output.numel() > 0 for _, output in prefix]
    assert stored == ([False] * 5 + [True] if case == "sequential" else [True] * len(prefix))
    z = torch.randn(2 * 3, channels, size, size, dtype=torch.float64)
    replaying = BottleneckForward(model, module, x, 3)
    recomputing = BottleneckForward(model, module, x, 3, reuse_prefix=False)
    reference = recomputing(z)
    for _ in range(2):  # twice: the first call must not have changed the replayed outputs
        torch.testing.assert_close(replaying(z), reference)
    assert replaying.expand_at_layer and all("forward" not in m.__dict__ for m in model.modules())


def test_prefix_layers_run_once_per_explanation_not_per_step() -> None:
    model = tiny()
    x = loader(1, 2)[0]["image"]
    calls = {"n": 0}
    handle = model.stem[0].register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    counts = {}
    try:
        for reuse in (True, False):
            for steps in (2, 6):
                method = IBA(layer="block", steps=steps, noise_draws=3, reuse_prefix=reuse).fit(model, loader())
                calls["n"] = 0
                method(model, x)
                counts[reuse, steps] = calls["n"]
    finally:
        handle.remove()
    assert counts[True, 2] == counts[True, 6]  # target, features and one probe: independent of the steps
    assert counts[False, 6] - counts[False, 2] == 4  # the recomputing scheme runs the stem every step
    r1 = IBA(layer="block", steps=3, noise_draws=3).fit(model, loader())(model, x)
    r2 = IBA(layer="block", steps=3, noise_draws=3, reuse_prefix=False).fit(model, loader())(model, x)
    torch.testing.assert_close(r1, r2)


def test_optimisation_removes_information() -> None:
    model = tiny()
    x = loader(1, 2)[0]["image"]
    start, end = (IBA(layer="block", steps=s, noise_draws=4).fit(model, loader()).explain(model, x) for s in (0, 6))
    assert bool((end.total_bits < 0.5 * start.total_bits).all())


def test_missing_statistics_warn_or_error() -> None:
    model = tiny()
    x = loader(1, 2)[0]["image"]
    with pytest.warns(UserWarning, match="no feature statistics"):
        IBA(layer="block", steps=1, noise_draws=1)(model, x)
    with pytest.raises(AttributionError, match="no feature statistics"):
        IBA(layer="block", steps=1, noise_draws=1, missing_statistics="error")(model, x)
    with pytest.raises(AttributionError, match="not found"):
        IBA(layer="nope", steps=1).fit(model, loader())


def test_setup_uses_datamodule_and_cache(tmp_path) -> None:
    class DataModule:
        def train_dataloader(self):
            return loader()

    model = tiny()
    method = build_method("iba", layer="block", steps=1, noise_draws=2, stats_samples=16, cache_dir=str(tmp_path),
                   missing_statistics="error")
    method.setup(model, DataModule())
    assert len(list(tmp_path.glob("iba_stats-*-block-n16.pt"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert method(model, loader(1, 2)[0]["image"]).shape == (2, 1, 4, 4)


def test_default_layer_and_multilayer_intersection() -> None:
    model = tiny()
    method = build_method("multilayer_iba", steps=2, noise_draws=2).fit(model, loader())
    x = loader(1, 2)[0]["image"]
    result = method.explain(model, x)
    assert list(result.layers) == ["block", "stem"]
    assert result.capacity.shape == result.mask.shape == (2, 1, 16, 16)  # the authors' maps: input resolution
    assert result.mask.dtype == torch.bool
    # the coarser layer ("block") thresholded at 1.344 × its RMS; the finest ("stem") weights the intersection
    block = capacity_per_input_pixel(result.layers["block"].capacity, (16, 16))
    stem = capacity_per_input_pixel(result.layers["stem"].capacity, (16, 16))
    rms = block.pow(2).mean((1, 2, 3), keepdim=True).sqrt()
    assert torch.equal(result.mask, block >= 1.344 * rms)
    assert bool((result.capacity[~result.mask] == 0).all())
    torch.testing.assert_close(result.capacity[result.mask], stem[result.mask])
    finest_iba = build_method("multilayer_iba", steps=2, noise_draws=2, resolution="finest")
    finest = finest_iba.fit(model, loader()).explain(model, x)
    assert finest.capacity.shape == (2, 1, 8, 8)
    literal = build_method("multilayer_iba", steps=2, noise_draws=2, weight_by_finest=False).fit(model, loader())
    eq5 = literal.explain(model, x)  # Eq. 5 literally: binary intersection of every thresholded layer
    stem_rms = stem.pow(2).mean((1, 2, 3), keepdim=True).sqrt()
    assert torch.equal(eq5.mask, (block >= 1.344 * rms) & (stem >= 1.344 * stem_rms))
    assert torch.equal(eq5.capacity, eq5.mask.float())


def _fake_layer(capacity: torch.Tensor) -> object:
    from lit_xai.attribution.information import BottleneckResult

    stats = FeatureStatistics(torch.zeros(1), torch.ones(1), torch.ones(1, dtype=torch.bool), 1)
    return BottleneckResult(capacity, capacity.sum((1, 2, 3)), capacity, torch.zeros(1), capacity, stats)


def test_multilayer_threshold_drops_a_layer_whose_capacity_is_half_zero(monkeypatch) -> None:
    """Issue 19 item 8: the old rule (per-image median, ``>=``) put the threshold at 0 when half of a layer's
    capacity is exactly 0, so that layer's mask kept every pixel and the intersection did nothing (the output was
    the finest map everywhere). The authors' rule never keeps a zero pixel."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.ones(1, 1, 8, 8)
    coarse[..., :5] = 0.0  # 5 of 8 columns carry exactly no information, the rest 1 bit per position
    fine = torch.rand(1, 1, 16, 16, generator=g) + 0.5
    fakes = {"coarse": _fake_layer(coarse), "fine": _fake_layer(fine)}
    method = build_method("multilayer_iba", layers=["coarse", "fine"], resolution="finest")
    monkeypatch.setattr(method, "_resolve_class_target", lambda model, inputs, target: torch.zeros(1, dtype=torch.long))
    monkeypatch.setattr(method, "_bottleneck_at", lambda model, layer, *args: fakes[layer])
    result = method.explain(nn.Identity(), torch.zeros(1, 3, 16, 16))
    upsampled = capacity_per_input_pixel(coarse, (16, 16))
    assert bool((upsampled[..., :9] == 0).all())  # bilinear: 9 of 16 columns see only zeros, so the median is 0
    assert float(torch.quantile(upsampled.flatten(), 0.5)) == 0.0  # the old threshold: every pixel passed ≥ 0
    assert bool((result.capacity[..., :9] == 0).all()) and not bool(result.mask[..., :9].any())
    assert bool(result.mask[..., 11:].all())  # the informative part (1 > 1.344 · RMS = 0.80) is kept
    torch.testing.assert_close(result.capacity[..., 11:], fine[..., 11:])


class TokenNet(nn.Module):
    """A patch embedding, a token-wise Linear ([B, N, C], like a ViT block) and a linear head ([B, K])."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 4, 4)
        self.tokens = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokens(self.embed(x).flatten(2).transpose(1, 2)).mean(1))


@pytest.mark.parametrize("name", ["iba", "inverse_iba", "regression_iba", "input_iba"])
@pytest.mark.parametrize("layer,what", [("tokens", "token sequence"), ("head", "vector per image")])
def test_non_spatial_layer_is_a_clear_error(name: str, layer: str, what: str) -> None:
    """Issue 19 item 13: a Linear or token layer raised a raw IndexError; now an AttributionError naming the
    method, the layer, the shape and the reason, and the model is left as found."""
    model = TokenNet()
    before = snapshot(model)
    stats = FeatureStatistics(torch.zeros(4, 6), torch.ones(4, 6), torch.ones(4, 6, dtype=torch.bool), 10)
    method = build_method(name, layer=layer, statistics=stats)
    with pytest.raises(AttributionError, match=rf"{name}: layer '{layer}' outputs a {what} .* not a spatial map"):
        method(model, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(AttributionError, match=rf"layer '{layer}' outputs a {what}"):
        build_method(name, layer=layer).fit(model, [torch.randn(4, 3, 8, 8)])
    assert_unchanged(model, before)


def test_defaults_are_the_reference_values() -> None:
    """Every IBA-family default, pinned to its source (see docs/information.md and the protocol card)."""
    from dataclasses import replace

    from lit_xai.attribution.information import InputIBA, InverseIBA, MultiLayerIBA, RegressionIBA
    from lit_xai.attribution.information.input_iba import GANSettings
    from lit_xai.attribution.information.optimisation import BottleneckSettings

    # Schulz et al., per_sample_bottleneck.py / IBA/pytorch.py: beta=10, optimization_steps=10, Adam lr=1,
    # initial_alpha=5, sigma=1 (5×5 reflect-padded kernel), batch_size=10 noise draws, heatmap of the last forward
    reference = BottleneckSettings(beta=10.0, steps=10, lr=1.0, initial_alpha=5.0, sigma=1.0, noise_draws=10,
                                   smoothing_truncate=2.0, inverse=False, seed=0, smoothing_padding="reflect",
                                   map_from="last_forward")
    assert BottleneckSettings() == reference
    for method in (IBA(), MultiLayerIBA(), RegressionIBA()):
        assert method.settings == reference
        # WelfordEstimator: std clamped at min_std=0.01; active_neurons(threshold=0.01): active in > 1% of samples
        assert (method.min_std, method.active_threshold) == (0.01, 0.01)
    assert InverseIBA().settings.inverse and RegressionIBA(inverse=True).settings.inverse
    assert GaussianSmoothing(1.0).radius == 2 and GaussianSmoothing(1.0).padding == "reflect"
    assert reference.updates == 9  # the reference's heatmap is read after 9 of its 10 Adam updates
    # CheXplain-IBA filtered_mask: hm / ‖hm‖₂ ≥ 0.006 on 224² maps = hm ≥ 0.006·224 × RMS
    multi = MultiLayerIBA()
    assert multi.threshold == pytest.approx(0.006 * 224) and multi.weight_by_finest and multi.resolution == "input"
    # InputIBA (dissertation ch. 6 §4.1 / App. D): feature IBA β=10, 10 steps; input IBA β=20, 60 steps, Adam lr 1;
    # WGAN: 20 epochs, 200 target samples, batch 32, RMSprop 5e-5, clip 0.01, generator every 5 critic steps
    # the reference code: no blur on the feature bottleneck (estimate() sets sigma=None), the input mask read as
    # sigmoid(alpha) after the loop (every update)
    input_iba = InputIBA()
    assert input_iba.feature_settings == replace(reference, sigma=0.0)
    assert (input_iba.input_settings.beta, input_iba.input_settings.steps, input_iba.input_settings.lr) == (20, 60, 1)
    assert input_iba.input_settings.map_from == "final_update" and input_iba.input_settings.sigma == 1.0
    assert input_iba.gan_settings == GANSettings(epochs=20, target_samples=200, batch_size=32, critic_lr=5e-5,
                                                 weight_clip=0.01, critic_steps=5, mask_lr=0.003, noise_mean_lr=0.1,
                                                 noise_std_lr=0.05, critic_hidden=(512, 256), negative_slope=0.2)
