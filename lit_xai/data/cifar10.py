"""CIFAR-10 from a local folder in the standard ``cifar-10-batches-py`` pickle layout (never downloads).

Split as in the ROAR experiments (reference.md §4): 7/8 of each class of the official training set for
training, 1/8 for validation, the official test set for testing.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from lit_xai.data.base import ClassificationDataModule, TensorImageDataset, stratified_split

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class DatasetNotFoundError(FileNotFoundError):
    """A local dataset root that lacks the expected files."""


def _folder(root: Path) -> Path:
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    missing = [name for name in TRAIN_FILES + TEST_FILES if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"CIFAR-10 not found under {root}: expected {', '.join(TRAIN_FILES + TEST_FILES)} in "
            f"{root / 'cifar-10-batches-py'} (the python pickle layout); missing: {', '.join(missing)}. "
            "lit_xai never downloads data: unpack cifar-10-python.tar.gz there."
        )
    return folder


def read_batches(folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read pickled CIFAR batches into uint8 images ``[N, 3, 32, 32]`` and labels ``[N]``."""
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    return torch.from_numpy(np.concatenate(images)), torch.as_tensor(labels, dtype=torch.long)


class CIFAR10DataModule(ClassificationDataModule):
    """CIFAR-10 from ``root``; ``augment`` = random crop (pad 4) + flip on the training split."""

    num_classes = 10
    in_chans = 3
    mean = CIFAR10_MEAN
    std = CIFAR10_STD

    def __init__(
        self,
        root: str = "data/cifar10",
        batch_size: int = 256,
        val_fraction: float = 1 / 8,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        self.root = Path(root)
        self.val_fraction = val_fraction
        self.folder = _folder(self.root)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        images, labels = read_batches(self.folder, TRAIN_FILES)
        train_idx, val_idx = stratified_split(labels, (1 - self.val_fraction, self.val_fraction), self.seed)
        images = self.normalize(images.float() / 255)
        self.train_dataset = TensorImageDataset(images[train_idx], labels[train_idx])
        self.val_dataset = TensorImageDataset(images[val_idx], labels[val_idx])
        test_images, test_labels = read_batches(self.folder, TEST_FILES)
        self.test_dataset = TensorImageDataset(self.normalize(test_images.float() / 255), test_labels)
