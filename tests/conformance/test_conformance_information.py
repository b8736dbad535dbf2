"""IBA family next to independent implementations: Schulz et al.'s per-sample bottleneck loop, closed-form KL
capacities and the CheXplain-IBA Multi-layer threshold, on nets lit_xai does not ship.

No IBA package is installable here (the reference code is not on PyPI), so the reference loop is written from the
authors' ``PerSampleBottleneck.heatmap`` description: one image repeated ``batch_size=10`` times, λ = sigmoid(α)
blurred by a (2·round(2σ)+1)² Gaussian after ``nn.ReflectionPad2d``, Z = (r̂·λ + (1−λ)·ε)·σ_R + μ_R zeroed at
inactive positions, loss = mean CE + β·mean capacity, ``torch.optim.Adam(lr=1)``, heatmap = the capacity buffer of
the last forward summed over channels in bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.attribution import build_method
from lit_xai.attribution.information import FeatureStatistics, estimate_feature_statistics
from lit_xai.attribution.information.iba import rms_threshold

#: the bottleneck layer of each foreign net: inside the residual block (its skip crosses the layer) / after pooling
LAYERS = {"ReusedInplaceReLUNet": "conv1", "FunctionalReLUNet": "conv2"}


def reference_kernel(sigma: float, channels: int) -> torch.Tensor:
    size = int(round(2 * sigma)) * 2 + 1
    grid = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(grid[:, None] ** 2 + grid[None] ** 2) / (2 * sigma**2))
    return (kernel / kernel.sum()).expand(channels, 1, size, size)


def reference_heatmap(model: nn.Module, layer: nn.Module, image: torch.Tensor, target: int,
                      stats: FeatureStatistics, steps: int = 10, draws: int = 10, seed: int = 0,
                      reverse_lambda: bool = False) -> torch.Tensor:
    """One image, the authors' loop; noise from a generator seeded like lit_xai's (the draws are the same).
    ``reverse_lambda``: CheXplain-IBA's Inverse IBA (z = λ·ε + (1−λ)·x, loss −CE + β·capacity)."""
    mean, std, active = stats.mean.double(), stats.std.double(), stats.active.double()
    channels = mean.shape[0]
    kernel = reference_kernel(1.0, channels)
    pad = nn.ReflectionPad2d((kernel.shape[-1] - 1) // 2)
    alpha = nn.Parameter(torch.full(mean.shape, 5.0, dtype=torch.float64))
    optimizer = torch.optim.Adam([alpha], lr=1.0)
    generator = torch.Generator().manual_seed(seed)
    buffer: dict[str, torch.Tensor] = {}

    def bottleneck(_module: nn.Module, _inputs: tuple, x: torch.Tensor) -> torch.Tensor:
        lamb = F.conv2d(pad(torch.sigmoid(alpha).expand(x.shape[0], -1, -1, -1)), kernel, groups=channels)
        x_norm = (x - mean) / std
        log_var = torch.log((1 - lamb) ** 2)
        mu = x_norm * lamb
        buffer["capacity"] = -0.5 * (1 + log_var - mu**2 - log_var.exp()) * active
        eps = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        if reverse_lambda:
            return (lamb * (std * eps + mean) + (1 - lamb) * x) * active
        return ((x_norm * lamb + (1 - lamb) * eps) * std + mean) * active

    batch = image[None].expand(draws, -1, -1, -1)
    handle = layer.register_forward_hook(bottleneck)
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            model_loss = F.cross_entropy(model(batch), torch.full((draws,), target))
            sign = -1.0 if reverse_lambda else 1.0
            loss = sign * model_loss + 10.0 * buffer["capacity"].mean()
            loss.backward()
            optimizer.step()
    finally:
        handle.remove()
    return buffer["capacity"][0].sum(0).detach() / math.log(2)


def test_iba_equals_the_authors_per_sample_loop(foreign_net: nn.Module) -> None:
    """Default arguments reproduce the reference heatmap (float64, same noise): tolerance 1e-8 relative. The old
    defaults (7×7 replicate blur, map after the last update) are kept as options and differ by a large factor."""
    model = foreign_net.double()
    layer_name = LAYERS[type(model).__name__]
    data = [torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
            for i in range(2)]
    stats = estimate_feature_statistics(model, layer_name, data, max_samples=32)
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    targets = torch.tensor([1, 3])
    ours = build_method("iba", layer=layer_name, statistics=stats)(model, images, targets)
    for i in range(2):
        expected = reference_heatmap(model, model.get_submodule(layer_name), images[i], int(targets[i]), stats)
        torch.testing.assert_close(ours[i, 0], expected, rtol=1e-8, atol=1e-10)
    old = build_method("iba", layer=layer_name, statistics=stats, smoothing_truncate=3.0, smoothing_padding="replicate",
                map_from="final_update")(model, images, targets)
    assert not torch.allclose(old, ours, rtol=0.05)


def test_inverse_iba_equals_the_authors_reverse_lambda_loop(functional_relu_net: nn.Module) -> None:
    """CheXplain-IBA's ``reverse_lambda=True`` bottleneck (their IBA/IBA/pytorch.py): relative 1e-8, float64."""
    model = functional_relu_net.double()
    data = [torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)]
    stats = estimate_feature_statistics(model, "conv2", data, max_samples=16)
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    targets = torch.tensor([2, 4])
    ours = build_method("inverse_iba", layer="conv2", statistics=stats)(model, images, targets)
    for i in range(2):
        expected = reference_heatmap(model, model.conv2, images[i], int(targets[i]), stats, reverse_lambda=True)
        torch.testing.assert_close(ours[i, 0], expected, rtol=1e-8, atol=1e-10)


def test_capacity_of_a_known_mask_is_the_closed_form_kl() -> None:
    """No optimisation (steps ≤ 1 keeps α₀ under the last-forward rule), no blur: λ = sigmoid(α₀) everywhere, so
    every position's capacity is D_KL[N(λ·r̂, (1−λ)²) ‖ N(0, 1)] = −log(1−λ) + ((1−λ)² + λ²r̂²)/2 − 1/2 in nats,
    summed over active channels, in bits. Tolerance 1e-10 (float64)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        features = model[0](x)
    mean, std = torch.randn(4, 6, 6, dtype=torch.float64), torch.rand(4, 6, 6, dtype=torch.float64) + 0.5
    active = torch.rand(4, 6, 6) > 0.3
    stats = FeatureStatistics(mean, std, active, 100)
    for steps, alpha in ((0, 0.3), (1, -1.2)):
        iba = build_method("iba", layer="0", statistics=stats, steps=steps, sigma=0.0, initial_alpha=alpha)
        capacity = iba(model, x)
        lam = 1 / (1 + np.exp(-alpha))
        r_hat = ((features - mean) / std).numpy()
        kl = -np.log(1 - lam) + ((1 - lam) ** 2 + lam**2 * r_hat**2) / 2 - 0.5
        expected = (kl * active.numpy()).sum(1, keepdims=True) / np.log(2)
        np.testing.assert_allclose(capacity.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_multilayer_threshold_is_the_authors_l2_rule_at_224() -> None:
    """CheXplain-IBA: ``hm = hm / np.linalg.norm(hm); mask = hm >= 0.006`` on 224² maps. ``rms_threshold`` with the
    default 1.344 = 0.006·224 gives the same mask (exact except within 1e-12 of the threshold; none here)."""
    g = np.random.default_rng(0)
    maps = g.gamma(0.5, size=(3, 1, 224, 224))
    maps[1, :, :, :150] = 0.0  # most of a layer carries no information
    expected = np.stack([m / np.linalg.norm(m) >= 0.006 for m in maps])
    ours = rms_threshold(torch.from_numpy(maps), build_method("multilayer_iba").threshold).numpy()
    assert (ours == expected).all()
    assert not ours[1, :, :, :150].any()


def test_multilayer_iba_on_a_functional_relu_net(functional_relu_net: nn.Module) -> None:
    """Multi-layer IBA at two layers of different resolution (conv1 16², conv2 8² after max-pooling, functional
    ReLUs), recombined by hand with the authors' rule: the finest map where the coarser layer's map, taken to the
    input as bits per pixel, is ≥ 0.006 after L2 normalisation scaled to this size (0.006·224/16 per RMS)."""
    model = functional_relu_net
    data = [torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))]
    method = build_method("multilayer_iba", layers=["conv1", "conv2"]).fit(model, data)
    result = method.explain(model, torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    fine, coarse = result.layers["conv1"].capacity, result.layers["conv2"].capacity
    assert fine.shape == (2, 1, 16, 16) and coarse.shape == (2, 1, 8, 8)
    up = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    up = up * coarse.sum((1, 2, 3), keepdim=True) / up.sum((1, 2, 3), keepdim=True)  # bits per pixel
    expected = np.stack([m / np.linalg.norm(m) >= 0.006 * 224 / 16 for m in up.numpy()])
    assert (result.mask.numpy() == expected).all() and result.mask.any()
    torch.testing.assert_close(result.capacity, fine * result.mask)
