"""InputIBA (dissertation ch. 6 §3.2-3.4): predictive information measured directly on the input.

1. Feature bottleneck: IBA at a deep layer gives the optimal mask λ* and Z* = λ*·R + (1−λ*)·ε.
2. WGAN (Eq. 3): an input mask λ_G with learnable noise ε_G ~ N(μ_G, σ_G²) is fitted so that the features
   f(λ_G·I + (1−λ_G)·ε_G) are distributed like Z* (a critic per image; RMSprop, weight clipping, a generator
   step every ``critic_steps`` critic steps, a fixed target set of ``gan_target_samples`` draws of Z*).
3. Input bottleneck: Z_I = Λ·I + (1−Λ)·ε, ε ~ N(μ_I, σ_I²), minimise CE + β·mean KL of Proposition 3 with λ_G
   as the prior. The result is the mask Λ* ("we refer to this methodology resulting in Λ* as InputIBA"),
   averaged over channels, at input resolution ``[B, 1, H, W]`` (no interpolation); ``map_kind="capacity"``
   returns the Proposition-3 KL in bits instead. Λ*, not the KL, is the default because where the GAN prior
   saturates (λ_G → 1, typical on the object) the KL of Proposition 3 vanishes: keeping those pixels is free.

All images of a batch are optimised jointly: the B critics are one grouped network (grouped convolutions,
per-channel BatchNorm, batched MLP), every loss is a sum over images, and the optimisers are element-wise,
so each image's result equals a run on that image alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError
from lit_xai.attribution.information.bottleneck import capacity_bits, prior_kl
from lit_xai.attribution.information.iba import (
    TASK_LOSSES,
    BottleneckResult,
    FeatureBottleneckMethod,
    StatisticsLike,
    classification_loss,
)
from lit_xai.attribution.information.layer_hooks import layer_output, resolve_layer
from lit_xai.attribution.information.optimisation import BottleneckSettings, final_mask, optimise_mask
from lit_xai.attribution.information.statistics import FeatureStatistics
from lit_xai.attribution.registry import register


class GroupedCritic(nn.Module):
    """``groups`` independent WGAN critics evaluated as one network, one per explained image.

    Per critic (InputIBA): conv C→2C (4×4, stride 2), conv 2C→4C (4×4, stride 2), conv 4C→C (3×3), each with
    BatchNorm and LeakyReLU(``negative_slope``), then an MLP → ``hidden`` → 1. Input ``[N, G·C, h, w]`` (image g's
    features in channel block g), output ``[N, G]``. Every critic starts from the same seeded initialisation.
    """

    def __init__(
        self,
        groups: int,
        channels: int,
        size: tuple[int, int],
        hidden: Sequence[int] = (512, 256),
        negative_slope: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        g, c = groups, channels
        h, w = size[0] // 4, size[1] // 4
        if h < 1 or w < 1:
            raise AttributionError(f"input_iba: the critic downsamples by 4; a {size[0]}×{size[1]} feature map is too "
                                   "small — choose an earlier layer")
        self.groups = groups
        self.negative_slope = negative_slope
        widths = [(c, 2 * c, 4, 2, 1), (2 * c, 4 * c, 4, 2, 1), (4 * c, c, 3, 1, 1)]
        self.convs = nn.ModuleList(  # skip_init: no draw from the global generator; _initialise fills them
            nn.utils.skip_init(nn.Conv2d, g * cin, g * cout, k, s, p, groups=g) for cin, cout, k, s, p in widths
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(g * cout) for _, cout, *_ in widths)
        dims = [c * h * w, *hidden, 1]
        pairs = zip(dims[:-1], dims[1:], strict=True)
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(g, i, o)) for i, o in pairs)
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(g, o)) for o in dims[1:])
        self._initialise(seed)

    @torch.no_grad()
    def _initialise(self, seed: int) -> None:
        """PyTorch's default U(±1/√fan_in) init, drawn once for a single critic and copied to every group."""
        rng = torch.Generator().manual_seed(seed)
        draw = lambda shape, fan_in: (torch.rand(shape, generator=rng) * 2 - 1) / math.sqrt(fan_in)
        g = self.groups
        for conv in self.convs:
            per_group = (conv.out_channels // g, *conv.weight.shape[1:])
            fan_in = math.prod(conv.weight.shape[1:])
            conv.weight.copy_(draw(per_group, fan_in).repeat(g, 1, 1, 1))
            conv.bias.copy_(draw((conv.out_channels // g,), fan_in).repeat(g))
        for weight, bias in zip(self.weights, self.biases, strict=True):
            fan_in = weight.shape[1]
            weight.copy_(draw(weight.shape[1:], fan_in).expand_as(weight))
            bias.copy_(draw(bias.shape[1:], fan_in).expand_as(bias))

    def forward(self, features: Tensor) -> Tensor:
        x = features
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.leaky_relu(norm(conv(x)), self.negative_slope)
        x = x.reshape(x.shape[0], self.groups, -1)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.einsum("ngi,gio->ngo", x, weight) + bias
            if i < len(self.weights) - 1:
                x = F.leaky_relu(x, self.negative_slope)
        return x.squeeze(-1)


@dataclass(frozen=True)
class GANSettings:
    """WGAN stage hyper-parameters (dissertation §4.1, App. D.1; generator learning rates from the public code)."""

    epochs: int = 20
    target_samples: int = 200
    batch_size: int = 32
    critic_lr: float = 5e-5
    weight_clip: float = 0.01
    critic_steps: int = 5
    mask_lr: float = 0.003
    noise_mean_lr: float = 0.1
    noise_std_lr: float = 0.05
    critic_hidden: tuple[int, ...] = (512, 256)
    negative_slope: float = 0.2
    init_scale: float = 1.0
    seed: int = 0


def fit_input_prior(
    model: nn.Module,
    module: nn.Module,
    inputs: Tensor,
    features: Tensor,
    feature_mask: Tensor,
    stats: FeatureStatistics,
    init_logits: Tensor,
    settings: GANSettings,
) -> Tensor:
    """Fit λ_G (Eq. 3) for every image jointly; returns λ_G = sigmoid(logits), shaped like ``inputs``.

    Real samples: Z* = λ*·R + (1−λ*)·ε, ε ~ N(μ_R, σ_R²) — a fixed set of ``target_samples`` draws. Fake samples:
    f(λ_G·I + (1−λ_G)·(μ_G + σ_G·g)), g ~ N(0, 1), with per-image, per-channel μ_G, σ_G.
    """
    batch, channels = inputs.shape[:2]
    device, dtype = inputs.device, inputs.dtype
    rng = torch.Generator(device=device).manual_seed(settings.seed)
    critic = GroupedCritic(batch, features.shape[1], tuple(features.shape[2:]), settings.critic_hidden,
                           settings.negative_slope, settings.seed).to(device, dtype)
    critic.train()
    logits = init_logits.detach().clone().requires_grad_(True)
    noise_mean = torch.zeros(batch, channels, 1, 1, device=device, dtype=dtype, requires_grad=True)
    noise_std = torch.ones(batch, channels, 1, 1, device=device, dtype=dtype, requires_grad=True)
    critic_opt = torch.optim.RMSprop(critic.parameters(), lr=settings.critic_lr)
    generator_opt = torch.optim.RMSprop([
        {"params": [logits], "lr": settings.mask_lr},
        {"params": [noise_mean], "lr": settings.noise_mean_lr},
        {"params": [noise_std], "lr": settings.noise_std_lr},
    ])
    target_noise = torch.randn((settings.target_samples, *features.shape[1:]), generator=rng, device=device,
                               dtype=dtype)
    active = stats.active

    def real(index: Tensor) -> Tensor:
        eps = stats.mean + stats.std * target_noise[index]
        z = (feature_mask * features)[None] + (1 - feature_mask)[None] * eps[:, None]
        return (z * active).flatten(1, 2)

    def fake(count: int) -> Tensor:
        g = torch.randn((count, *inputs.shape[1:]), generator=rng, device=device, dtype=dtype)
        lam = torch.sigmoid(logits)
        masked = lam[None] * inputs[None] + (1 - lam)[None] * (noise_mean[None] + noise_std[None] * g[:, None])
        return layer_output(model, module, masked.flatten(0, 1)).reshape(count, -1, *features.shape[2:])

    critic_updates = 0
    for _ in range(settings.epochs):
        order = torch.randperm(settings.target_samples, generator=rng, device=device)
        for index in order.split(settings.batch_size):
            with torch.no_grad():
                fake_features = fake(index.numel())
            critic_loss = (critic(fake_features).mean(0) - critic(real(index)).mean(0)).sum()
            critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_opt.step()
            with torch.no_grad():
                for param in critic.parameters():
                    param.clamp_(-settings.weight_clip, settings.weight_clip)
            critic_updates += 1
            if critic_updates % settings.critic_steps == 0:
                generator_loss = -critic(fake(index.numel())).mean(0).sum()
                generator_opt.zero_grad(set_to_none=True)
                generator_loss.backward()
                generator_opt.step()
    return torch.sigmoid(logits).detach()


@dataclass
class InputIBAResult:
    """InputIBA per image, all at input resolution: the map, Λ*, the Prop.-3 capacity (bits) and its total, the
    GAN prior λ_G, and the feature-IBA result."""

    attribution: Tensor  # [B, 1, H, W], Λ* channel mean or capacity, per ``map_kind``
    lam: Tensor  # [B, C, H, W], Λ*
    capacity: Tensor  # [B, 1, H, W], bits
    total_bits: Tensor  # [B]
    prior: Tensor  # [B, C, H, W], λ_G
    feature: BottleneckResult


@register("input_iba")
class InputIBA(FeatureBottleneckMethod):
    """InputIBA (dissertation ch. 6): feature IBA → WGAN input prior λ_G → input bottleneck with Prop. 3's KL.

    Defaults follow §4.1/App. D: feature β=10, 10 steps; WGAN 20 epochs, 200 target samples, RMSprop 5e-5,
    clipping 0.01, a generator step per 5 critic steps; input β=20, 60 steps, Adam lr 1. ``input_mean`` and
    ``input_std`` (scalars or per-channel) describe the input noise ε ~ N(μ_I, σ_I²): 0 and 1 for normalised
    images. Returns ``[B, 1, H, W]`` at input resolution: Λ* = sigmoid(α) after the last update, averaged over
    channels (``map_kind="mask"``; the reference's ``VisionAttributor.train_input_iba``) or the Proposition-3
    capacity in bits (``"capacity"``). As in the reference code the feature bottleneck is not blurred (``sigma=0``;
    ``BaseAttributor.estimate`` sets ``sigma = None``) and the input mask is blurred only inside the optimisation.
    """

    def __init__(
        self,
        layer: str | None = None,
        feature_beta: float = 10.0,
        feature_steps: int = 10,
        feature_lr: float = 1.0,
        initial_alpha: float = 5.0,
        sigma: float = 0.0,  # the reference's feature bottleneck is not blurred: estimate() sets sigma = None
        noise_draws: int = 10,
        gan_epochs: int = 20,
        gan_target_samples: int = 200,
        gan_batch_size: int = 32,
        critic_lr: float = 5e-5,
        weight_clip: float = 0.01,
        critic_steps: int = 5,
        generator_mask_lr: float = 0.003,
        generator_mean_lr: float = 0.1,
        generator_std_lr: float = 0.05,
        critic_hidden: Sequence[int] = (512, 256),
        critic_negative_slope: float = 0.2,
        generator_init_scale: float = 1.0,
        input_beta: float = 20.0,
        input_steps: int = 60,
        input_lr: float = 1.0,
        input_sigma: float = 1.0,
        input_smoothing_truncate: float = 2.0,
        input_mean: float | Sequence[float] = 0.0,
        input_std: float | Sequence[float] = 1.0,
        map_kind: str = "mask",
        seed: int = 0,
        statistics: StatisticsLike = None,
        stats_samples: int = 5000,
        cache_dir: str | Path | None = None,
        missing_statistics: str = "warn",
        min_std: float = 0.01,
        active_threshold: float = 0.01,
        task_loss: str = "ce",  # Zhang et al.: cross-entropy; "bce" for sigmoid outputs (seed 002, as IBA)
    ) -> None:
        super().__init__(statistics, stats_samples, cache_dir, missing_statistics, min_std, active_threshold)
        if task_loss not in TASK_LOSSES:
            raise ValueError(f"task_loss must be one of {TASK_LOSSES}, got {task_loss!r}")
        self.task_loss = task_loss
        if map_kind not in ("mask", "capacity"):
            raise ValueError(f"map_kind must be 'mask' or 'capacity', got {map_kind!r}")
        self.layer = layer
        self.map_kind = map_kind
        self.feature_settings = BottleneckSettings(feature_beta, feature_steps, feature_lr, initial_alpha, sigma,
                                                   noise_draws, seed=seed)  # IBA's blur and map rule
        self.gan_settings = GANSettings(
            gan_epochs, gan_target_samples, gan_batch_size, critic_lr, weight_clip, critic_steps, generator_mask_lr,
            generator_mean_lr, generator_std_lr, tuple(critic_hidden), critic_negative_slope, generator_init_scale,
            seed,
        )
        # the reference's input mask is sigmoid(input_iba.alpha) read after the loop, i.e. after every update
        self.input_settings = BottleneckSettings(input_beta, input_steps, input_lr, initial_alpha, input_sigma,
                                                 noise_draws, input_smoothing_truncate, False, seed,
                                                 map_from="final_update")
        self.input_mean = input_mean
        self.input_std = input_std

    def configured_layers(self) -> list[str] | None:
        return [self.layer] if self.layer is not None else None

    def _input_noise(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        channels = inputs.shape[1]
        stats = []
        for value, name in ((self.input_mean, "input_mean"), (self.input_std, "input_std")):
            t = torch.as_tensor(value, device=inputs.device, dtype=inputs.dtype).reshape(-1)
            if t.numel() not in (1, channels):
                raise AttributionError(f"input_iba: {name} needs 1 or {channels} values, got {t.numel()}")
            stats.append(t.view(-1, 1, 1))
        if bool((stats[1] <= 0).any()):
            raise AttributionError(f"input_iba: input_std must be > 0, got {self.input_std}")
        return stats[0], stats[1]

    def _explain(self, model: nn.Module, inputs: Tensor, target: Tensor | None) -> InputIBAResult:
        (layer,) = self.layers_for(model, inputs)
        mean, std = self._input_noise(inputs)
        target = self._resolve_class_target(model, inputs, target)
        task_loss = classification_loss(target, self.feature_settings.noise_draws, self.task_loss)
        feature = self._bottleneck_at(model, layer, inputs, target, task_loss, self.feature_settings)
        module = resolve_layer(model, layer)
        init_logits = F.interpolate(feature.capacity, size=tuple(inputs.shape[2:]), mode="bilinear",
                                    align_corners=False).expand_as(inputs) * self.gan_settings.init_scale
        prior = fit_input_prior(model, module, inputs, feature.features, feature.lam, feature.statistics, init_logits,
                                self.gan_settings)

        kl = lambda lam, one_minus_lam: prior_kl(inputs, lam, one_minus_lam, prior, mean, std)
        alpha = optimise_mask(inputs, mean, std, kl, model, task_loss, self.input_settings)
        with torch.no_grad():
            lam, one_minus_lam = final_mask(alpha, self.input_settings)
            capacity = capacity_bits(kl(lam, one_minus_lam))
        # the reference's map: torch.sigmoid(input_iba.alpha).mean over channels (the unblurred mask)
        attribution = torch.sigmoid(alpha).mean(1, keepdim=True) if self.map_kind == "mask" else capacity
        return InputIBAResult(attribution, lam, capacity, capacity.sum((1, 2, 3)), prior, feature)
