"""The embedded default: scikit-learn's bundled digits (1797 real 8×8 grey images, 10 classes).

Nothing is downloaded: the data ships inside scikit-learn. Images are scaled to [0, 1], upsampled
(bilinear) to ``image_size`` and normalised with the training split's mean/std.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_xai.data.base import ClassificationDataModule, TensorImageDataset, stratified_split


def load_digits_tensors(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as pixel-space images ``[N, 1, S, S]`` in [0, 1] and labels ``[N]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1), torch.as_tensor(digits.target, dtype=torch.long)


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
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must leave a training split"
            )
        self.image_size = image_size
        self.fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        images, labels = load_digits_tensors(image_size)
        self._images, self._labels = images, labels
        self._splits = stratified_split(labels, self.fractions, seed)
        train = images[self._splits[0]]
        self.mean = (float(train.mean()),)
        self.std = (float(train.std()),)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        images = self.normalize(self._images)
        self.train_dataset, self.val_dataset, self.test_dataset = (
            TensorImageDataset(images[idx], self._labels[idx]) for idx in self._splits
        )
