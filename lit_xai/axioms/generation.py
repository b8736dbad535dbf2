"""Batched scene generation with the model in the loop (dissertation ch. 7 §3.1-3.5, §4.4, App. 6.3).

``S`` scenes are optimised at once: one :class:`BatchedDeepImagePrior` holds the decoders of all their
patches, every iteration draws a fresh reference input ``X ~ N(0.5, 0.1)`` (clamped to [0, 1] pixel space,
then normalised with the model's mean/std) and fresh random patch positions per scene (or the scenario's
``fixed_corners``), and all the scenario's compositions of all scenes go through the model in one batch.

Loss per scene (the authors' code fixes what the text leaves open): during warm-up each patch only
drives its class (``w_warm·L``); afterwards ``w_drive·FL(κ̂_drive, 1)·L + w_ind·FL(κ̂_ind, 0)·ΔΦ²`` where
``L = -Φ`` (maximise the logit) or, for a constant-target drive (the null scenario's ``f_a``, both saturation
patches), ``L = L_CE(σ, c)``, the cross-entropy of §3 between the class softmax ``σ`` and the constant ``c``
(the authors' code used ``(σ - c)²`` for the null scenario; its gradient vanishes where σ is small);
``κ_drive`` is the softmax of the patch's class, ``κ_ind = tanh(|ΔΦ| / min(|Φ_with|, |Φ_without|))``
(App. 6.3 Eq. 12), ``κ̂`` their EMAs (Eq. 13, α=0.1, start 0.5) and ``FL(v, 1) = -(1-v)^γ log v``,
``FL(v, 0) = -v^γ log(1-v)`` focal weights (γ=0.8). A scene stops (§4.4) once every drive's softmax ≥
``drive_threshold`` and every ``κ_ind < independence_threshold``; its patches, reference input and positions at
that iteration are kept, re-checked at those fixed positions (verification) and dropped if a property fails.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lit_xai.attribution.base import preserved_model_state
from lit_xai.axioms.decoder import BatchedDeepImagePrior
from lit_xai.axioms.scenarios import (
    PLACEMENT_UNIFORMS,
    SCENARIOS,
    Composition,
    Scenario,
    compose,
    patch_masks,
    place_patches,
)


@dataclass
class DecoderConfig:
    """Deep-image-prior decoder shape (see :class:`BatchedDeepImagePrior`); defaults = the authors' ``skip_net``
    (Do-Explanations-Explain ``networks.py``). A shallower decoder gives one kernel size per level."""

    noise_channels: int = 32
    channels: tuple[int, ...] = (16, 32, 64, 128, 128, 128)
    skip_channels: tuple[int, ...] = (0, 4, 4, 4, 4, 4)
    down_kernel_sizes: tuple[int, ...] = (5, 3, 5, 5, 3, 5)
    up_kernel_sizes: tuple[int, ...] = (5, 3, 5, 3, 5, 3)
    noise_size: int | None = None


@dataclass
class GenerationConfig:
    """Every knob of the generation; defaults are the dissertation's / authors' code values at 224²."""

    image_size: int = 224
    patch_size: int = 86
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    background_mean: float = 0.5
    background_std: float = 0.1
    iterations: int = 1500
    warmup_iterations: int = 300
    min_iterations: int = 50
    lr: float = 0.01
    drive_threshold: float = 0.94
    independence_threshold: float = 0.14
    constant_softmax: float = 0.95
    ema_alpha: float = 0.1
    ema_start: float = 0.5
    focal_gamma: float = 0.8
    warmup_weight: float = 5.0
    drive_weight: float = 10.0
    independence_weight: float = 5.0
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    #: scenarios whose patches stay at fixed top-left corners (row, col) instead of random ones. The authors'
    #: code does this for saturation ((5, 5) and (133, 133) at 224²): how two patches saturate the output
    #: depends on where they sit, most of all on networks whose last units see only part of the image
    fixed_corners: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def normalize(self, pixels: Tensor) -> Tensor:
        """[0, 1] pixel space → the model's input space."""
        mean = torch.tensor(self.mean, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
        return (pixels - mean) / std


@dataclass
class SceneBatch:
    """Generated scenes (pixel space): everything needed to rebuild and explain them, plus achieved ratios."""

    scenario: str
    scene_ids: Tensor  # [N] long
    classes: Tensor  # [N, slots] long: class of slot a (and b)
    backgrounds: Tensor  # [N, C, H, W]
    patches: Tensor  # [N, P, C, p, p]
    corners: Tensor  # [N, P, 2] (row, col)
    iterations: Tensor  # [N] long: iteration at which the stopping criteria held
    drive_softmax: Tensor  # [N, drives] softmax of each driving patch's class (verification)
    independence_ratio: Tensor  # [N, independences] |ΔΦ| / min(|Φ_with|, |Φ_without|) (verification)

    def __len__(self) -> int:
        return int(self.scene_ids.shape[0])

    def to_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SceneBatch:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    @classmethod
    def cat(cls, batches: Sequence[SceneBatch], scenario: str) -> SceneBatch:
        """Concatenate batches of one scenario (an empty list gives ``ValueError``)."""
        if not batches:
            raise ValueError(f"no scenes to concatenate for scenario {scenario!r}")
        fields = [f for f in cls.__dataclass_fields__ if f != "scenario"]
        return cls(scenario=scenario, **{f: torch.cat([getattr(b, f) for b in batches]) for f in fields})

    def select(self, index: Tensor | slice) -> SceneBatch:
        fields = [f for f in self.__dataclass_fields__ if f != "scenario"]
        return SceneBatch(scenario=self.scenario, **{f: getattr(self, f)[index] for f in fields})

    def images(self, present: Sequence[int] | None = None) -> Tensor:
        """Pixel-space images ``[N, C, H, W]`` with the ``present`` patches (default: all) at their corners."""
        present = tuple(range(self.patches.shape[1])) if present is None else tuple(present)
        return compose(self.backgrounds, self.patches, self.corners, Composition(present, ()))


@dataclass
class GenerationResult:
    scenes: SceneBatch  # verified scenes only
    attempted: int
    converged: int
    seconds: float


def scene_seeds(seed: int, scenario: str, scene_id: int, count: int) -> list[int]:
    """``count`` independent seeds for one scene, a function of (seed, scenario, scene id) only."""
    key = (list(SCENARIOS).index(scenario), scene_id)
    return [int(s) for s in np.random.SeedSequence(seed, spawn_key=key).generate_state(count)]


def focal_weight(value: Tensor, positive: bool, gamma: float, eps: float = 1e-6) -> Tensor:
    """Focal task weight (App. 6.3): ``-(1-p)^γ log p`` with ``p = value`` (positive) or ``1 - value``."""
    p = (value if positive else 1 - value).clamp(eps, 1.0)
    return -((1 - p) ** gamma) * torch.log(p)


def constant_cross_entropy(log_softmax: Tensor, target: float, eps: float = 1e-6) -> Tensor:
    """``L_CE(Φ_t(X{f}), c)`` of §3: cross-entropy between the class softmax and a constant target ``c``,
    ``-(c log σ + (1 - c) log(1 - σ))``, smallest at ``σ = c``."""
    one_minus = torch.log1p(-log_softmax.exp().clamp(max=1 - eps))
    return -(target * log_softmax + (1 - target) * one_minus)


def relative_change(with_patch: Tensor, without_patch: Tensor, eps: float = 1e-12) -> Tensor:
    """``|Φ_with - Φ_without| / min(|Φ_with|, |Φ_without|)``; ``tanh`` of it is App. 6.3's κ."""
    return (with_patch - without_patch).abs() / torch.minimum(with_patch.abs(), without_patch.abs()).clamp_min(eps)


class SceneGenerator:
    """Generates scenes of one scenario for one model, ``len(scene_ids)`` at a time.

    The model is used in eval mode with frozen parameters and left exactly as found.
    """

    def __init__(self, model: nn.Module, num_classes: int, config: GenerationConfig, seed: int = 0) -> None:
        if num_classes < 2:
            raise ValueError(f"the axiom scenarios need at least 2 classes, got num_classes={num_classes}")
        if len(config.mean) != len(config.std):
            raise ValueError(f"mean and std must have one entry per channel, got {config.mean} and {config.std}")
        if config.patch_size >= config.image_size:
            raise ValueError(f"patch_size={config.patch_size} must be smaller than image_size={config.image_size}")
        self.model = model
        self.num_classes = num_classes
        self.config = config
        self.seed = seed

    def _device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def _logits(self, scenario: Scenario, background: Tensor, patches: Tensor, corners: Tensor) -> Tensor:
        """Logits ``[S, K, classes]`` of every composition of every scene. Compositions without a trainable patch
        (e.g. the bare reference input) go through the model in a batch of their own without autograd, so the
        backward pass skips them; the others go in one batch."""
        parts = {}
        for differentiable in (True, False):
            chosen = [k for k, c in enumerate(scenario.compositions) if bool(c.trainable) == differentiable]
            if not chosen:
                continue
            with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
                images = torch.stack([compose(background, patches, corners, scenario.compositions[k]) for k in chosen])
                logits = self.model(self.config.normalize(images.flatten(0, 1)))
            parts.update(zip(chosen, logits.view(len(chosen), background.shape[0], -1)))
        return torch.stack([parts[k] for k in range(len(scenario.compositions))], 1)

    @staticmethod
    def _terms(scenario: Scenario, logits: Tensor, classes: Tensor) -> dict[str, Tensor]:
        """Drive logits/softmaxes and independence (with, without) logits, each ``[S, n_terms]``."""
        log_softmax = logits.log_softmax(-1)
        drive_cls = torch.stack([classes[:, d.slot] for d in scenario.drives], 1)
        drive_img = [d.image for d in scenario.drives]
        drive_logit = logits[:, drive_img].gather(2, drive_cls[..., None]).squeeze(2)
        drive_log_softmax = log_softmax[:, drive_img].gather(2, drive_cls[..., None]).squeeze(2)
        ind_cls = torch.stack([classes[:, i.slot] for i in scenario.independences], 1)[..., None]
        with_logit = logits[:, [i.image_with for i in scenario.independences]].gather(2, ind_cls).squeeze(2)
        without_logit = logits[:, [i.image_without for i in scenario.independences]].gather(2, ind_cls).squeeze(2)
        return {
            "drive_logit": drive_logit,
            "drive_log_softmax": drive_log_softmax,
            "drive_softmax": drive_log_softmax.exp(),
            "with": with_logit,
            "without": without_logit,
        }

    def _draw(
        self, generators: Sequence[torch.Generator], scenario: Scenario, fixed: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Fresh reference inputs ``[S, C, H, W]`` and patch corners ``[S, P, 2]`` from each scene's generator
        (``fixed`` ``[1, P, 2]`` replaces the corners; the placement draw still advances each generator)."""
        cfg = self.config
        shape = (cfg.channels, cfg.image_size, cfg.image_size)
        background = torch.stack([torch.randn(shape, generator=g) for g in generators])
        background = (background * cfg.background_std + cfg.background_mean).clamp_(0, 1)
        uniforms = torch.stack([torch.rand(PLACEMENT_UNIFORMS, generator=g) for g in generators])
        corners = place_patches(uniforms, cfg.image_size, cfg.patch_size, scenario.num_patches)
        if fixed is not None:
            corners = fixed.expand_as(corners)
        return background, corners

    def _fixed_corners(self, scenario: Scenario) -> Tensor:
        """The configured fixed corners ``[1, P, 2]`` of ``scenario``, checked to fit without overlapping."""
        cfg = self.config
        corners = torch.as_tensor(cfg.fixed_corners[scenario.name], dtype=torch.long).view(1, -1, 2)
        span = cfg.image_size - cfg.patch_size
        masks = patch_masks(corners.clamp(0, span), cfg.image_size, cfg.patch_size)
        if corners.shape[1] != scenario.num_patches or int(corners.min()) < 0 or int(corners.max()) > span:
            raise ValueError(
                f"fixed_corners[{scenario.name!r}] must give {scenario.num_patches} (row, col) corners in "
                f"[0, {span}], got {cfg.fixed_corners[scenario.name]}"
            )
        if bool(masks.sum(1).gt(1).any()):
            raise ValueError(f"fixed_corners[{scenario.name!r}] = {cfg.fixed_corners[scenario.name]} overlap")
        return corners

    def generate(self, scenario_name: str, scene_ids: Sequence[int], progress: bool = False) -> GenerationResult:
        """Optimise the scenes ``scene_ids`` together; return the verified ones."""
        start = time.perf_counter()
        scenario = SCENARIOS.get(scenario_name)
        if scenario is None:
            raise ValueError(f"unknown axiom scenario {scenario_name!r}; choose from {', '.join(SCENARIOS)}")
        cfg, device = self.config, self._device()
        n, p = len(scene_ids), scenario.num_patches
        seeds = [scene_seeds(self.seed, scenario.name, int(i), 2 + p) for i in scene_ids]
        class_gens = [torch.Generator().manual_seed(s[0]) for s in seeds]
        classes = torch.stack([torch.randperm(self.num_classes, generator=g)[: scenario.num_slots] for g in class_gens])
        classes = classes.to(device)
        draw_gens = [torch.Generator().manual_seed(s[1]) for s in seeds]
        decoder = BatchedDeepImagePrior(
            [m for s in seeds for m in s[2:]],
            patch_size=cfg.patch_size,
            out_channels=cfg.channels,
            noise_channels=cfg.decoder.noise_channels,
            channels=cfg.decoder.channels,
            skip_channels=cfg.decoder.skip_channels,
            down_kernel_sizes=cfg.decoder.down_kernel_sizes,
            up_kernel_sizes=cfg.decoder.up_kernel_sizes,
            noise_size=cfg.decoder.noise_size,
        ).to(device)
        optimizer = torch.optim.RMSprop(decoder.parameters(), lr=cfg.lr)
        drive_ema = torch.full((n, len(scenario.drives)), cfg.ema_start, device=device)
        ind_ema = torch.full((n, len(scenario.independences)), cfg.ema_start, device=device)
        constant = torch.tensor([d.constant for d in scenario.drives], device=device)
        fixed = self._fixed_corners(scenario) if scenario.name in cfg.fixed_corners else None  # checked once

        c, s = cfg.channels, cfg.image_size
        found = SceneBatch(
            scenario=scenario.name,
            scene_ids=torch.as_tensor(list(scene_ids), dtype=torch.long),
            classes=classes.cpu(),
            backgrounds=torch.zeros(n, c, s, s),
            patches=torch.zeros(n, p, c, cfg.patch_size, cfg.patch_size),
            corners=torch.zeros(n, p, 2, dtype=torch.long),
            iterations=torch.full((n,), -1, dtype=torch.long),
            drive_softmax=torch.zeros(n, len(scenario.drives)),
            independence_ratio=torch.zeros(n, len(scenario.independences)),
        )
        done = torch.zeros(n, dtype=torch.bool)
        with torch.inference_mode(False), torch.enable_grad(), preserved_model_state(self.model):
            self.model.requires_grad_(False)
            for iteration in tqdm(range(cfg.iterations), disable=not progress, desc=f"axioms/{scenario.name}"):
                active = (~done).nonzero().squeeze(1)
                if active.numel() == 0:
                    break
                background, corners = self._draw([draw_gens[i] for i in active.tolist()], scenario, fixed)
                background, corners = background.to(device), corners.to(device)
                active_dev = active.to(device)
                patches = decoder().view(n, p, c, cfg.patch_size, cfg.patch_size)[active_dev]
                logits = self._logits(scenario, background, patches, corners)
                terms = self._terms(scenario, logits, classes[active_dev])
                with torch.no_grad():
                    kappa = torch.tanh(relative_change(terms["with"], terms["without"]))
                    success = (terms["drive_softmax"] >= cfg.drive_threshold).all(1)
                    success &= (kappa < cfg.independence_threshold).all(1)
                    success &= iteration >= cfg.min_iterations
                    if bool(success.any()):
                        idx = active[success.cpu()]
                        found.backgrounds[idx] = background[success].cpu()
                        found.patches[idx] = patches[success].detach().cpu()
                        found.corners[idx] = corners[success].cpu()
                        found.iterations[idx] = iteration
                        done[idx] = True
                    warm = iteration < cfg.warmup_iterations
                    if not warm:
                        old = drive_ema[active_dev]
                        drive_ema[active_dev] = cfg.ema_alpha * terms["drive_softmax"] + (1 - cfg.ema_alpha) * old
                        ind_ema[active_dev] = cfg.ema_alpha * kappa + (1 - cfg.ema_alpha) * ind_ema[active_dev]
                if bool(success.all()):
                    continue
                per_scene = self._loss(terms, constant, drive_ema[active_dev], ind_ema[active_dev], warm)
                optimizer.zero_grad(set_to_none=False)
                (per_scene * (~success).to(per_scene.dtype)).sum().backward()
                optimizer.step()
            converged = found.select(done)
            verified = self.verify(converged)
        return GenerationResult(verified, attempted=n, converged=int(done.sum()), seconds=time.perf_counter() - start)

    def _loss(self, terms: dict[str, Tensor], constant: Tensor, drive_ema: Tensor, ind_ema: Tensor,
              warm: bool) -> Tensor:
        """Per-scene loss ``[S]`` (see the module docstring)."""
        cfg = self.config
        const_loss = constant_cross_entropy(terms["drive_log_softmax"], cfg.constant_softmax)
        if warm:
            drive_loss = torch.where(constant, const_loss, -terms["drive_logit"]) * cfg.warmup_weight
            return drive_loss.sum(1)
        w_drive = focal_weight(drive_ema, True, cfg.focal_gamma)
        w_ind = focal_weight(ind_ema, False, cfg.focal_gamma)
        drive_loss = cfg.drive_weight * w_drive * torch.where(constant, const_loss, -terms["drive_logit"])
        ind_loss = cfg.independence_weight * w_ind * (terms["with"] - terms["without"].detach()) ** 2
        return drive_loss.sum(1) + ind_loss.sum(1)

    @torch.no_grad()
    def measure(self, scenes: SceneBatch) -> tuple[Tensor, Tensor]:
        """(drive softmax ``[N, drives]``, independence ratio ``[N, independences]``) at the stored positions."""
        scenario = SCENARIOS[scenes.scenario]
        device = self._device()
        if len(scenes) == 0:
            return torch.zeros(0, len(scenario.drives)), torch.zeros(0, len(scenario.independences))
        with preserved_model_state(self.model):
            logits = self._logits(
                scenario, scenes.backgrounds.to(device), scenes.patches.to(device), scenes.corners.to(device)
            )
        terms = self._terms(scenario, logits, scenes.classes.to(device))
        return terms["drive_softmax"].cpu(), relative_change(terms["with"], terms["without"]).cpu()

    def verify(self, scenes: SceneBatch) -> SceneBatch:
        """Re-measure the promised properties with the final patches at their fixed positions; keep the scenes
        where every patch drives its class and every independence ratio stays below the threshold."""
        drive_softmax, ratio = self.measure(scenes)
        scenes.drive_softmax, scenes.independence_ratio = drive_softmax, ratio
        ok = (drive_softmax >= self.config.drive_threshold).all(1)
        ok &= (torch.tanh(ratio) < self.config.independence_threshold).all(1)
        return scenes.select(ok)
