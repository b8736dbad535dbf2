"""Synthetic chest X-rays with full ground truth, for the multi-label / regression / six-region chapters.

Stands in for NIH ChestX-ray8 and BrixIA (seed 002, "Explaining COVID-19 and Thoracic Pathology Model Predictions"
and "Towards Semantic Interpretation of Thoracic Disease and COVID-19 Diagnosis Models"), which cannot be downloaded
here. Each grey image holds a thorax with two "lungs" (darker ellipses) over soft tissue and ribs. Each lung is cut
into three horizontal thirds, giving BrixIA's six regions A-F (A-C the image-left lung top to bottom, D-F the
image-right one; BrixIA scores each region 0-3, the global score is their sum, 0-18).

Lesion *concepts* (the Network Dissection annotation set):

- ``ground_glass``: a faint textured haze, in every region with severity ≥ 1;
- ``consolidation``: a dense blob, in every region with severity ≥ 2 (small at 2, filling most of the region at 3);
- ``nodule``: a small bright disc in a random region (independent of severity);
- ``line``: a thin bright line across a random region (linear atelectasis-like; independent of severity);
- ``apparatus``: a tube entering from the top edge with an electrode at its end (independent of severity).

So severity is carried only by ground glass and consolidation, as BrixIA's scale (1: interstitial, 2: interstitial
and alveolar, 3: alveolar predominant) is; nodules, lines and apparatus are labelled concepts that a severity model
should ignore. Label frequencies are arguments: ``healthy_prob`` (no severity at all), ``severity_probs`` (per
region, P(score = 0..3)) and ``concept_probs`` for the three independent concepts — rare classes are what the
chapters' weighted losses address.

Each sample is a dict: ``image`` ``[1, S, S]`` (normalised), ``label`` (by ``task``: ``multilabel`` → the multi-hot
``[5]`` float vector, ``regression`` → the global score (float), ``regions`` → the six scores ``[6]`` long),
``index``, and always the full ground truth: ``labels`` ``[5]``, ``severity`` ``[6]``, ``score``, ``severity_map``
``[1, S, S]`` (each lung pixel carries its region's score, 0 outside; the chapter's PCC analysis), ``concept_masks``
``[5, S, S]`` bool, ``concept_boxes`` ``[5, 4]`` (union box per concept, ``-1`` where absent), ``instance_boxes``
``[15, 4]`` and ``instance_concepts`` ``[15]`` (one row per lesion instance, concept ``-1`` for padding),
``region_masks`` ``[6, S, S]`` bool and ``region_boxes`` ``[6, 4]``. Boxes are (x0, y0, x1, y1), exclusive.

Generation is batched and seeded per split; masks are stored as bit fields (one byte per pixel) and expanded per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from lit_xai.data.base import GeneratedDataModule, Sample

CONCEPTS: tuple[str, ...] = ("consolidation", "ground_glass", "nodule", "line", "apparatus")
REGIONS: tuple[str, ...] = ("A", "B", "C", "D", "E", "F")
TASKS: tuple[str, ...] = ("multilabel", "regression", "regions")
#: instance rows: per region a ground-glass and a consolidation slot, then nodule, line, apparatus
MAX_INSTANCES = 2 * len(REGIONS) + 3
MAX_SEVERITY = 3


@dataclass
class ChestScenes:
    """Rendered scenes in pixel space: images ``[N, 1, S, S]`` in [0, 1] and their ground truth (bit fields)."""

    images: Tensor
    severity: Tensor  # [N, 6] long, 0..3
    concept_bits: Tensor  # [N, S, S] uint8, bit c = concept c present at the pixel
    region_map: Tensor  # [N, S, S] uint8, 0 outside the lungs, r + 1 inside region r
    instance_boxes: Tensor  # [N, MAX_INSTANCES, 4] long, -1 for padding
    instance_concepts: Tensor  # [N, MAX_INSTANCES] long, -1 for padding

    @property
    def labels(self) -> Tensor:
        """Multi-hot ``[N, 5]`` float: which concepts occur in the image."""
        bits = torch.arange(len(CONCEPTS), dtype=torch.uint8)
        present = (self.concept_bits[:, None] >> bits[None, :, None, None]) & 1
        return present.flatten(2).amax(2).float()


def _boxes(masks: Tensor) -> Tensor:
    """Exclusive (x0, y0, x1, y1) boxes of boolean masks ``[..., S, S]``; ``-1`` rows for empty masks."""
    size = masks.shape[-1]
    index = torch.arange(size)
    rows, cols = masks.any(-1), masks.any(-2)
    boxes = torch.stack(
        [
            torch.where(cols, index, size).amin(-1), torch.where(rows, index, size).amin(-1),
            torch.where(cols, index, -1).amax(-1) + 1, torch.where(rows, index, -1).amax(-1) + 1,
        ],
        dim=-1,
    )
    return torch.where(masks.flatten(-2).any(-1, keepdim=True), boxes, torch.full_like(boxes, -1))


def _smooth_noise(count: int, size: int, cell: int, generator: torch.Generator) -> Tensor:
    """``[N, S, S]`` bilinear-upsampled uniform noise with a correlation length of about ``cell`` pixels."""
    low = math.ceil(size / cell) + 1
    noise = torch.rand(count, 1, low, low, generator=generator)
    return F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def _ellipses(centre: Tensor, radii: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """Boolean ``[N, S, S]``: inside the axis-aligned ellipse of centre ``[N, 2]`` (x, y) and radii ``[N, 2]``."""
    u = (xs - centre[:, 0, None, None]) / radii[:, 0, None, None]
    v = (ys - centre[:, 1, None, None]) / radii[:, 1, None, None]
    return u.square() + v.square() <= 1


def _uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def render_chest(
    count: int,
    seed: int,
    image_size: int = 64,
    healthy_prob: float = 0.4,
    severity_probs: Sequence[float] = (0.55, 0.2, 0.15, 0.1),
    concept_probs: Sequence[float] = (0.15, 0.1, 0.3),
    noise_std: float = 0.03,
) -> ChestScenes:
    """Render ``count`` synthetic chest X-rays from ``seed`` (see the module docstring)."""
    if len(severity_probs) != MAX_SEVERITY + 1 or min(severity_probs) < 0 or not math.isclose(sum(severity_probs), 1):
        raise ValueError(f"severity_probs must be 4 probabilities of scores 0..3 summing to 1, got {severity_probs}")
    if not 0 <= healthy_prob <= 1:
        raise ValueError(f"healthy_prob must be a probability, got {healthy_prob}")
    if len(concept_probs) != 3 or not all(0 <= p <= 1 for p in concept_probs):
        raise ValueError(f"concept_probs must be 3 probabilities (nodule, line, apparatus), got {concept_probs}")
    if image_size < 32:
        raise ValueError(f"image_size must be ≥ 32 to hold six regions with lesions, got {image_size}")
    g = torch.Generator().manual_seed(seed)
    n, s = count, image_size
    grid = torch.arange(s, dtype=torch.float32) + 0.5
    ys, xs = grid[None, :, None], grid[None, None, :]

    # thorax: soft tissue with a vertical gradient, ribs as curved bands, two darker lungs
    tissue = 0.55 + 0.1 * (ys / s) + 0.08 * (_smooth_noise(n, s, s // 4, g) - 0.5)
    rib_phase = _uniform((n, 1, 1), 0, 2 * math.pi, g)
    rib_period = s / _uniform((n, 1, 1), 6.0, 8.0, g)
    ribs = 0.06 * torch.sin(2 * math.pi * (ys + 0.15 * (xs - s / 2).abs()) / rib_period + rib_phase).clamp(min=0)
    radii = torch.stack([_uniform((n,), 0.14, 0.17, g), _uniform((n,), 0.30, 0.34, g)], 1) * s
    centre_y = _uniform((n,), 0.48, 0.54, g) * s
    lungs = []
    for cx in (0.29, 0.71):
        centre = torch.stack([(cx + _uniform((n,), -0.02, 0.02, g)) * s, centre_y], 1)
        lungs.append((centre, _ellipses(centre, radii, ys, xs)))
    lung_mask = lungs[0][1] | lungs[1][1]
    images = torch.where(lung_mask, 0.22 + 0.06 * _smooth_noise(n, s, s // 8, g), tissue) + ribs

    # regions: thirds of each lung's height, A-C on the image-left lung, D-F on the image-right one
    region_map = torch.zeros(n, s, s, dtype=torch.uint8)
    region_top = torch.empty(n, 6)
    third = 2 * radii[:, 1] / 3
    for side, (centre, mask) in enumerate(lungs):
        top = centre[:, 1] - radii[:, 1]
        for level in range(3):
            low = top + level * third
            inside = mask & (ys >= low[:, None, None]) & (ys < (low + third)[:, None, None])
            region_map[inside] = 3 * side + level + 1
            region_top[:, 3 * side + level] = low
    region_masks = region_map[:, None] == torch.arange(1, 7, dtype=torch.uint8)[None, :, None, None]  # [N, 6, S, S]
    region_cx = torch.stack([lungs[r // 3][0][:, 0] for r in range(6)], 1)  # [N, 6]

    severity = torch.multinomial(torch.tensor(severity_probs, dtype=torch.float), n * 6, True, generator=g).view(n, 6)
    severity[torch.rand(n, generator=g) < healthy_prob] = 0
    concept_bits = torch.zeros(n, s, s, dtype=torch.uint8)
    instance_masks = torch.zeros(n, MAX_INSTANCES, s, s, dtype=torch.bool)
    instance_concepts = torch.full((n, MAX_INSTANCES), -1, dtype=torch.long)

    def lesion_centre(region: Tensor) -> Tensor:
        """A seeded point inside each image's region ``region`` ``[N]`` (near its centre line, jittered)."""
        rows = torch.arange(n)
        cx = region_cx[rows, region] + _uniform((n,), -0.35, 0.35, g) * radii[:, 0]
        cy = region_top[rows, region] + _uniform((n,), 0.3, 0.7, g) * third
        return torch.stack([cx, cy], 1)

    def add(instance: int, concept: int, mask: Tensor, present: Tensor, delta: Tensor) -> None:
        nonlocal images
        mask = mask & present[:, None, None]
        images = images + delta * mask
        concept_bits.bitwise_or_(mask.to(torch.uint8) << concept)
        instance_masks[:, instance] = mask
        instance_concepts[:, instance] = torch.where(mask.flatten(1).any(1), concept, -1)

    ground_glass, consolidation = CONCEPTS.index("ground_glass"), CONCEPTS.index("consolidation")
    for r in range(6):
        inside = region_masks[:, r]
        region = torch.full((n,), r)
        haze = _ellipses(lesion_centre(region), radii * torch.tensor([0.8, 0.3]), ys, xs) & inside
        texture = 0.10 + 0.08 * _smooth_noise(n, s, 2, g)
        add(2 * r, ground_glass, haze, severity[:, r] >= 1, texture)
        scale = torch.where(severity[:, r] >= 3, 0.75, 0.35)[:, None] * torch.stack([radii[:, 0], third], 1)
        blob = _ellipses(lesion_centre(region), scale * _uniform((n, 2), 0.8, 1.0, g), ys, xs) & inside
        add(2 * r + 1, consolidation, blob, severity[:, r] >= 2, torch.tensor(0.30))

    nodule_p, line_p, apparatus_p = concept_probs
    nodule_at = lesion_centre(torch.randint(0, 6, (n,), generator=g))
    nodule_r = _uniform((n, 1), 0.025, 0.04, g).expand(n, 2) * s
    add(12, CONCEPTS.index("nodule"), _ellipses(nodule_at, nodule_r, ys, xs),
        torch.rand(n, generator=g) < nodule_p, torch.tensor(0.35))
    line_region = torch.randint(0, 6, (n,), generator=g)
    line_y = lesion_centre(line_region)[:, 1]
    line = ((ys - line_y[:, None, None]).abs() < 0.75) & region_masks[torch.arange(n), line_region]
    add(13, CONCEPTS.index("line"), line, torch.rand(n, generator=g) < line_p, torch.tensor(0.25))
    tube_x = _uniform((n,), 0.4, 0.6, g) * s
    tube_end = _uniform((n,), 0.35, 0.7, g) * s
    tube = ((xs - tube_x[:, None, None]).abs() < 1.0) & (ys < tube_end[:, None, None])
    pad = ((xs - tube_x[:, None, None]).abs() < 2.5) & ((ys - tube_end[:, None, None]).abs() < 2.5)
    add(14, CONCEPTS.index("apparatus"), tube | pad, torch.rand(n, generator=g) < apparatus_p, torch.tensor(0.4))

    images = images + noise_std * torch.randn(n, s, s, generator=g)
    return ChestScenes(
        images=images.clamp(0, 1)[:, None],
        severity=severity,
        concept_bits=concept_bits,
        region_map=region_map,
        instance_boxes=_boxes(instance_masks),
        instance_concepts=instance_concepts,
    )


class ChestDataset(Dataset):
    """Normalised chest scenes; expands the bit-field masks of one sample on access (see the module docstring)."""

    def __init__(self, scenes: ChestScenes, images: Tensor, task: str) -> None:
        self.scenes, self.images, self.task = scenes, images, task
        self.labels = scenes.labels
        self._bits = torch.arange(len(CONCEPTS), dtype=torch.uint8)[:, None, None]
        self._regions = torch.arange(1, len(REGIONS) + 1, dtype=torch.uint8)[:, None, None]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Sample:
        sc = self.scenes
        severity = sc.severity[index]
        score = severity.sum().float()
        concept_masks = ((sc.concept_bits[index] >> self._bits) & 1).bool()
        region_masks = sc.region_map[index] == self._regions
        severity_map = torch.cat([torch.zeros(1), severity.float()])[sc.region_map[index].long()][None]
        label = {"multilabel": self.labels[index], "regression": score, "regions": severity}[self.task]
        return {
            "image": self.images[index],
            "label": label,
            "index": torch.tensor(index),
            "labels": self.labels[index],
            "severity": severity,
            "score": score,
            "severity_map": severity_map,
            "concept_masks": concept_masks,
            "concept_boxes": _boxes(concept_masks),
            "instance_boxes": sc.instance_boxes[index],
            "instance_concepts": sc.instance_concepts[index],
            "region_masks": region_masks,
            "region_boxes": _boxes(region_masks),
        }


class SyntheticChestDataModule(GeneratedDataModule):
    """Synthetic chest X-rays (module docstring) for the ``multilabel``, ``regression`` and ``regions`` tasks.

    Args:
        task: what ``label`` holds and how many outputs a model needs (``num_classes``): ``multilabel`` (5 concept
            presences), ``regression`` (the global 0-18 score, 1 output), ``regions`` (six 0-3 scores; 6 × 4 logits).
        num_train, num_val, num_test: split sizes (each split has its own seeded generator).
        image_size: side of the square grey images.
        healthy_prob: P(an image has no ground glass or consolidation at all, every score 0); ours.
        severity_probs: per region of a non-healthy image P(score = 0, 1, 2, 3); ours (BrixIA's distribution is not
            published per region), skewed towards healthy regions so that scores 2-3 and consolidation are rarer.
        concept_probs: P(nodule), P(line), P(apparatus) per image; ours, imbalanced on purpose (weighted-loss study).
        noise_std: pixel noise of the rendering.
        batch_size, num_workers, seed: as in :class:`ClassificationDataModule` (no augmentation: it would move the
            lesions away from their masks).
    """

    in_chans = 1
    concept_names = CONCEPTS
    region_names = REGIONS

    def __init__(
        self,
        task: str = "multilabel",
        num_train: int = 2000,
        num_val: int = 250,
        num_test: int = 250,
        image_size: int = 64,
        healthy_prob: float = 0.4,
        severity_probs: tuple[float, float, float, float] = (0.55, 0.2, 0.15, 0.1),
        concept_probs: tuple[float, float, float] = (0.15, 0.1, 0.3),
        noise_std: float = 0.03,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, augment=False)
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
        for name, size in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if size < 1:
                raise ValueError(f"{name} must be ≥ 1, got {size}")
        self.task = task
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.scene_args = {
            "image_size": image_size, "healthy_prob": healthy_prob, "severity_probs": tuple(severity_probs),
            "concept_probs": tuple(concept_probs), "noise_std": noise_std,
        }
        self.num_classes = {"multilabel": len(CONCEPTS), "regression": 1, "regions": len(REGIONS)}[task]
        self.class_names = {"multilabel": list(CONCEPTS), "regression": ["score"], "regions": list(REGIONS)}[task]
        render_chest(1, seed, **self.scene_args)  # validate the arguments now
        self._train_scenes = self.scenes("train")
        self.mean = (float(self._train_scenes.images.mean()),)
        self.std = (float(self._train_scenes.images.std()),)

    def scenes(self, split: str) -> ChestScenes:
        """The pixel-space scenes of ``split`` (regenerated deterministically)."""
        seed = self.split_seed(split)  # an unknown split is named here
        return render_chest(self.sizes[split], seed, **self.scene_args)

    def make_dataset(self, scenes: ChestScenes) -> ChestDataset:
        return ChestDataset(scenes, self.normalize(scenes.images), self.task)
