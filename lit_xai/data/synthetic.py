"""Synthetic scenes with known ground truth: a class-determining object among distractors on a textured background.

Every image holds one *class object* — its shape is the class (square, disk, triangle, cross, ...) — at a random
place and size, plus ``num_distractors`` objects whose shapes (ring, bar, diagonal, ...) never occur as classes, on a
random smooth-noise-plus-stripes background. Objects share one colour distribution, so neither colour nor
position nor the distractors carry class information: only the class object does. The class object is drawn last,
so it is fully visible and its ``"mask"`` ``[1, H, W]`` (bool) and ``"box"`` ``[4]`` (x0, y0, x1, y1, exclusive)
are exact. ``render_scenes(..., include_object=False)`` renders the very same scenes without the class object
(background and distractors unchanged): a model that relies on the object drops to chance there.

Generation is batched, seeded per split (train/val/test use independent generators derived from ``seed``) and
deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_xai.data.base import GeneratedDataModule, TensorImageDataset

ShapeFn = Callable[[Tensor, Tensor], Tensor]

#: class shapes on object coordinates u, v ∈ [−1, 1]
CLASS_SHAPES: dict[str, ShapeFn] = {
    "square": lambda u, v: (u.abs() <= 0.8) & (v.abs() <= 0.8),
    "disk": lambda u, v: u.square() + v.square() <= 0.85,
    "triangle": lambda u, v: (v <= 0.85) & (v >= 2 * u.abs() - 1.0),
    "cross": lambda u, v: ((u.abs() <= 0.3) | (v.abs() <= 0.3)) & (u.abs() <= 0.95) & (v.abs() <= 0.95),
    "hourglass": lambda u, v: (u.abs() <= v.abs() + 0.1) & (v.abs() <= 0.9),
}
#: distractor shapes, never a class
DISTRACTOR_SHAPES: dict[str, ShapeFn] = {
    "ring": lambda u, v: (u.square() + v.square() <= 0.9) & (u.square() + v.square() >= 0.35),
    "bar": lambda u, v: (v.abs() <= 0.25) & (u.abs() <= 0.95),
    "diagonal": lambda u, v: ((u - v).abs() <= 0.35) & (u.abs() <= 0.95) & (v.abs() <= 0.95),
}


@dataclass
class Scenes:
    """Rendered scenes in pixel space: images ``[N, 3, S, S]`` in [0, 1], labels ``[N]``, masks, boxes."""

    images: Tensor
    labels: Tensor
    masks: Tensor
    boxes: Tensor


def _shape_masks(shapes: dict[str, ShapeFn], kinds: Tensor, centres: Tensor, sizes: Tensor, image_size: int) -> Tensor:
    """Boolean ``[N, S, S]``: object n of kind ``kinds[n]`` centred at ``centres[n]`` (x, y) with side ``sizes[n]``."""
    coords = torch.arange(image_size, dtype=torch.float32) + 0.5
    half = sizes[:, None, None] / 2
    u = (coords[None, None, :] - centres[:, 0, None, None]) / half
    v = (coords[None, :, None] - centres[:, 1, None, None]) / half
    every = torch.stack([fn(u, v) for fn in shapes.values()])  # [K, N, S, S]
    return every.gather(0, kinds.view(1, -1, 1, 1).expand(1, *every.shape[1:]))[0]


def _background(count: int, image_size: int, generator: torch.Generator, cell: int = 4) -> Tensor:
    """Smooth colour noise plus stripes of random orientation and frequency, in about [0.15, 0.75]."""
    low = math.ceil(image_size / cell) + 1
    noise = torch.rand(count, 3, low, low, generator=generator)
    smooth = F.interpolate(noise, size=(image_size, image_size), mode="bilinear", align_corners=False)
    angle = torch.rand(count, generator=generator) * math.pi
    frequency = 0.3 + 0.6 * torch.rand(count, generator=generator)
    grid = torch.arange(image_size, dtype=torch.float32)
    phase = grid[None, None, :] * angle.cos()[:, None, None] + grid[None, :, None] * angle.sin()[:, None, None]
    stripes = torch.sin(phase * frequency[:, None, None])[:, None]
    return 0.45 + 0.2 * (smooth - 0.5) + 0.1 * stripes


def _colours(count: int, generator: torch.Generator) -> Tensor:
    """Saturated random colours ``[N, 3]``: one channel high, the others low, random hue."""
    base = 0.05 + 0.25 * torch.rand(count, 3, generator=generator)
    strong = torch.randint(0, 3, (count,), generator=generator)
    base[torch.arange(count), strong] = 0.8 + 0.2 * torch.rand(count, generator=generator)
    return base


def render_scenes(
    count: int,
    seed: int,
    image_size: int = 32,
    num_classes: int = 4,
    object_size: tuple[int, int] = (10, 15),
    num_distractors: int = 2,
    include_object: bool = True,
) -> Scenes:
    """Render ``count`` scenes from ``seed``; with ``include_object=False`` the same scenes lack the class object."""
    if not 2 <= num_classes <= len(CLASS_SHAPES):
        raise ValueError(f"num_classes must be in [2, {len(CLASS_SHAPES)}] (the class shapes), got {num_classes}")
    low, high = object_size
    if not 3 <= low <= high <= image_size:
        raise ValueError(f"object_size={object_size} must satisfy 3 ≤ min ≤ max ≤ image_size={image_size}")
    generator = torch.Generator().manual_seed(seed)

    def place(n: int) -> tuple[Tensor, Tensor]:
        sizes = torch.randint(low, high + 1, (n,), generator=generator).float()
        corner = torch.rand(n, 2, generator=generator) * (image_size - sizes)[:, None]
        return corner + sizes[:, None] / 2, sizes

    images = _background(count, image_size, generator)
    for _ in range(num_distractors):
        kinds = torch.randint(0, len(DISTRACTOR_SHAPES), (count,), generator=generator)
        centres, sizes = place(count)
        mask = _shape_masks(DISTRACTOR_SHAPES, kinds, centres, sizes, image_size)
        images = torch.where(mask[:, None], _colours(count, generator)[:, :, None, None], images)
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    centres, sizes = place(count)
    colours = _colours(count, generator)
    masks = _shape_masks(CLASS_SHAPES, labels, centres, sizes, image_size)
    if include_object:
        images = torch.where(masks[:, None], colours[:, :, None, None], images)
    rows, cols = masks.any(2), masks.any(1)
    index = torch.arange(image_size)
    boxes = torch.stack(
        [
            torch.where(cols, index, image_size).amin(1), torch.where(rows, index, image_size).amin(1),
            torch.where(cols, index, -1).amax(1) + 1, torch.where(rows, index, -1).amax(1) + 1,
        ],
        dim=1,
    )
    return Scenes(images.clamp(0, 1), labels, masks[:, None], boxes)


class SyntheticShapesDataModule(GeneratedDataModule):
    """Synthetic ground-truth scenes (see the module docstring); samples carry ``"mask"`` and ``"box"``.

    Args:
        num_train, num_val, num_test: split sizes (each split has its own seeded generator).
        image_size: side of the square RGB images.
        num_classes: number of class shapes (2..5).
        object_size: (min, max) side of objects in pixels.
        num_distractors: distractor objects per image.
        batch_size, num_workers, seed, augment: as in :class:`ClassificationDataModule` (augmentation would move
            the object away from its mask, so it is off by default).
    """

    in_chans = 3

    def __init__(
        self,
        num_train: int = 4000,
        num_val: int = 500,
        num_test: int = 501,
        image_size: int = 32,
        num_classes: int = 4,
        object_size: tuple[int, int] = (10, 15),
        num_distractors: int = 2,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.scene_args = {
            "image_size": image_size, "num_classes": num_classes, "object_size": tuple(object_size),
            "num_distractors": num_distractors,
        }
        self.num_classes = num_classes
        self.class_names = list(CLASS_SHAPES)[:num_classes]  # label k is the k-th class shape
        render_scenes(1, seed, **self.scene_args)  # validate the arguments now
        train = self.scenes("train")
        self.mean = tuple(train.images.mean(dim=(0, 2, 3)).tolist())
        self.std = tuple(train.images.std(dim=(0, 2, 3)).tolist())
        self._train_scenes = train

    def scenes(self, split: str, include_object: bool = True) -> Scenes:
        """The pixel-space scenes of ``split`` (regenerated deterministically)."""
        seed = self.split_seed(split)  # an unknown split is named here
        return render_scenes(self.sizes[split], seed, include_object=include_object, **self.scene_args)

    def make_dataset(self, scenes: Scenes) -> TensorImageDataset:
        """Normalised dataset with ``mask`` and ``box`` extras."""
        return TensorImageDataset(
            self.normalize(scenes.images), scenes.labels, {"mask": scenes.masks, "box": scenes.boxes}
        )
