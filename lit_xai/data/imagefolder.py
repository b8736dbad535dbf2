"""An ImageFolder dataset (``root/train/<class>/*.png``, ``root/val/<class>/*``) as dict samples.

``val/`` is split deterministically in half into validation and test sets unless ``root/test/`` exists.
Images are resized to ``image_size`` and normalised with ``mean``/``std`` (ImageNet's by default).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from lit_xai.data.base import ClassificationDataModule, Sample, seeded_split
from lit_xai.data.cifar10 import DatasetNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Folder(Dataset):
    def __init__(self, root: Path, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        from torchvision import datasets, transforms

        self.folder = datasets.ImageFolder(
            str(root),
            transform=transforms.Compose(
                [
                    transforms.Resize(image_size),
                    transforms.CenterCrop(image_size),
                    transforms.ToTensor(),
                    transforms.Normalize(mean, std),
                ]
            ),
        )

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> Sample:
        image, label = self.folder[index]
        return {"image": image, "label": torch.tensor(label), "index": torch.tensor(index)}


class _Reindexed(Dataset):
    """A subset whose ``index`` field counts positions within the subset."""

    def __init__(self, subset: Subset) -> None:
        self.subset = subset

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, index: int) -> Sample:
        return {**self.subset[index], "index": torch.tensor(index)}


def _check_images(root: Path, classes: list[str]) -> None:
    """Fail at construction (before any run starts) when ``train``/``val`` hold no class folder with an image."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not classes:
        raise DatasetNotFoundError(f"ImageFolder root {root}: {root / 'train'} has no class folders (train/<class>/)")
    for split in ("train", "val"):
        found = any(
            path.suffix.lower() in IMG_EXTENSIONS
            for folder in (root / split).iterdir() if folder.is_dir()
            for path in folder.iterdir()
        )
        if not found:
            raise DatasetNotFoundError(
                f"ImageFolder root {root}: no image files ({', '.join(IMG_EXTENSIONS)}) in {root / split}/<class>/; "
                f"classes found in train/: {', '.join(classes)}"
            )


class ImageFolderDataModule(ClassificationDataModule):
    """Images from ``root/train`` and ``root/val`` (and ``root/test`` if present)."""

    in_chans = 3

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 32,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        self.root = Path(root)
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise DatasetNotFoundError(
                    f"ImageFolder root {self.root} must contain {split}/<class_name>/<image files>; "
                    f"{self.root / split} does not exist"
                )
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.classes = sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir())
        self.num_classes = len(self.classes)
        _check_images(self.root, self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        make = lambda split: _Folder(self.root / split, self.image_size, self.mean, self.std)  # noqa: E731
        self.train_dataset = make("train")
        if (self.root / "test").is_dir():
            self.val_dataset, self.test_dataset = make("val"), make("test")
            return
        val = make("val")
        val_idx, test_idx = seeded_split(len(val), (0.5, 0.5), self.seed)
        self.val_dataset = _Reindexed(Subset(val, val_idx.tolist()))
        self.test_dataset = _Reindexed(Subset(val, test_idx.tolist()))
