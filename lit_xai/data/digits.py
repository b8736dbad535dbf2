"""The embedded default: scikit-learn's bundled digits (1797 real 8×8 grey images, 10 classes).

Nothing is downloaded: the data ships inside scikit-learn. Images are scaled to [0, 1], upsampled
(bilinear) to ``image_size`` and normalised with the training split's mean/std.

``canvas="noise"`` instead pastes each digit, upsampled to ``tile_size``, at a seeded random position on an
N(``noise_mean``, ``noise_std``) canvas: a model trained so responds to small patches on noise, which the axiom
framework's scene generation needs (its reference input is such a noise canvas).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_xai.data.base import ClassificationDataModule, TensorImageDataset, stratified_split

CANVASES = ("plain", "noise")


def load_digits_tensors(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as pixel-space images ``[N, 1, S, S]`` in [0, 1] and labels ``[N]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1), torch.as_tensor(digits.target, dtype=torch.long)


def paste_on_noise(
    tiles: torch.Tensor, image_size: int, noise_mean: float, noise_std: float, seed: int
) -> torch.Tensor:
    """Paste tiles ``[N, 1, t, t]`` at seeded random positions on N(mean, std) canvases, clamped to [0, 1]."""
    n, _, t, _ = tiles.shape
    if t > image_size:
        raise ValueError(f"tile_size={t} does not fit in image_size={image_size}")
    generator = torch.Generator().manual_seed(seed)
    canvas = torch.randn(n, 1, image_size, image_size, generator=generator) * noise_std + noise_mean
    corners = torch.randint(0, image_size - t + 1, (n, 2), generator=generator)
    offsets = torch.arange(t)
    rows = (corners[:, 0, None] + offsets)[:, :, None]
    cols = (corners[:, 1, None] + offsets)[:, None, :]
    canvas[torch.arange(n)[:, None, None], 0, rows, cols] = tiles[:, 0]
    return canvas.clamp(0, 1)


class DigitsDataModule(ClassificationDataModule):
    """Digits with a fixed, seeded, class-stratified train/val/test split (default 70/15/15)."""

    num_classes = 10
    in_chans = 1

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = False,
        canvas: str = "plain",
        tile_size: int = 14,
        noise_mean: float = 0.5,
        noise_std: float = 0.1,
        mean: tuple[float] | None = None,
        std: tuple[float] | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must leave a training split"
            )
        self.image_size = image_size
        self.fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        if canvas not in CANVASES:
            raise ValueError(f"canvas={canvas!r}: expected one of {CANVASES}")
        if canvas == "noise":
            tiles, labels = load_digits_tensors(tile_size)
            images = paste_on_noise(tiles, image_size, noise_mean, noise_std, seed)
        else:
            images, labels = load_digits_tensors(image_size)
        self._images, self._labels = images, labels
        self._splits = stratified_split(labels, self.fractions, seed)
        train = images[self._splits[0]]
        self.mean = tuple(mean) if mean is not None else (float(train.mean()),)
        self.std = tuple(std) if std is not None else (float(train.std()),)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        images = self.normalize(self._images)
        self.train_dataset, self.val_dataset, self.test_dataset = (
            TensorImageDataset(images[idx], self._labels[idx]) for idx in self._splits
        )
