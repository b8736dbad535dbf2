"""What every lit_xai DataModule shares: dict samples, normalisation stats, deterministic splits.

Samples are dicts ``{"image": [C, H, W] float (normalised), "label": long, "index": long}`` (plus ``"mask"`` /
``"box"`` where the dataset has ground truth). ``index`` is the sample's position in its split: under DDP it
lets metrics drop the duplicates that ``DistributedSampler`` pads in, and ROAR look up a sample's map.

Training augmentation is kept apart from the dataset (``augment``), so a transform such as ROAR's pixel
removal can be applied *before* augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

Sample = dict[str, Tensor]
SampleTransform = Callable[[Sample], Sample]


class TensorImageDataset(Dataset):
    """Images ``[N, C, H, W]`` and labels ``[N]`` held in memory, already normalised."""

    def __init__(self, images: Tensor, labels: Tensor, extras: dict[str, Tensor] | None = None) -> None:
        if images.dim() != 4 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images [N,C,H,W] and labels [N] must match, got {tuple(images.shape)}, {tuple(labels.shape)}"
            )
        self.images, self.labels, self.extras = images, labels, extras or {}

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Sample:
        sample = {"image": self.images[index], "label": self.labels[index], "index": torch.tensor(index)}
        sample.update({key: value[index] for key, value in self.extras.items()})
        return sample


class MappedDataset(Dataset):
    """Apply a per-sample transform on top of another dataset (e.g. removal, then augmentation)."""

    def __init__(self, dataset: Dataset, transform: SampleTransform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        return self.transform(self.dataset[index])


class RandomCropFlip:
    """Training augmentation on a normalised tensor: zero-padded random crop and horizontal flip (seeded per call)."""

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        self.padding, self.flip = padding, flip

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        _, h, w = image.shape
        if self.padding:
            padded = torch.nn.functional.pad(image, [self.padding] * 4)
            top, left = torch.randint(0, 2 * self.padding + 1, (2,)).tolist()
            image = padded[:, top : top + h, left : left + w]
        if self.flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return {**sample, "image": image}


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[Tensor]:
    """Split ``range(n)`` into index sets of the given fractions (the last takes the rest), reproducibly."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [int(round(f * n)) for f in fractions[:-1]]
    sizes.append(n - sum(sizes))
    return list(torch.split(perm, sizes))


def stratified_split(labels: Tensor, fractions: Sequence[float], seed: int) -> list[Tensor]:
    """Like :func:`seeded_split` but per class, so every split keeps the class balance."""
    parts: list[list[Tensor]] = [[] for _ in fractions]
    for offset, cls in enumerate(labels.unique().tolist()):
        members = (labels == cls).nonzero().squeeze(1)
        for part, idx in zip(parts, seeded_split(len(members), fractions, seed + offset)):
            part.append(members[idx])
    return [torch.cat(p).sort().values for p in parts]


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation sampler for DDP: rank r gets samples r, r+W, r+2W, ... and nothing is repeated.

    ``DistributedSampler`` pads the last round with repeated samples so that every rank has the same
    count; summed metrics would count those twice. Lightning keeps a sampler that already is a
    ``DistributedSampler``, so returning this one from ``val/test_dataloader`` replaces the padded default.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(self.rank, self.total_size, self.num_replicas))


class ClassificationDataModule(L.LightningDataModule):
    """Base class: subclasses fill the datasets in ``setup`` and declare mean, std, num_classes, in_chans."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    in_chans: int

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0, augment: bool = False) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.augment: SampleTransform | None = RandomCropFlip() if augment else None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    def dataset(self, split: str) -> Dataset:
        """The un-augmented dataset of ``split`` ("train", "val", "test"); calls ``setup`` if needed."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; expected one of ['test', 'train', 'val']")
        if getattr(self, f"{split}_dataset") is None:
            self.setup("fit")
        return getattr(self, f"{split}_dataset")

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        sampler = None
        if not shuffle and dist.is_available() and dist.is_initialized():
            sampler = UnpaddedDistributedSampler(dataset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        if self.augment is not None:
            dataset = MappedDataset(dataset, self.augment)
        return self._loader(dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def normalize(self, images: Tensor) -> Tensor:
        """Pixel space [0, 1] → the model's input space."""
        mean = images.new_tensor(self.mean)[:, None, None]
        std = images.new_tensor(self.std)[:, None, None]
        return (images - mean) / std

    def denormalize(self, images: Tensor) -> Tensor:
        """The model's input space → pixel space [0, 1] (for plots)."""
        mean = images.new_tensor(self.mean)[:, None, None]
        std = images.new_tensor(self.std)[:, None, None]
        return images * std + mean


class GeneratedDataModule(ClassificationDataModule):
    """Base of the seeded, generated DataModules (synthetic scenes, synthetic chests): every split is rendered from
    its own seed derived from ``seed``. Subclasses set ``sizes`` (split → count) and ``_train_scenes`` (rendered once,
    for the normalisation statistics) and implement :meth:`scenes` and :meth:`make_dataset`."""

    sizes: dict[str, int]
    _train_scenes: Any

    def split_seed(self, split: str) -> int:
        """The generator seed of a split, derived from ``seed``."""
        self.check_split(split)
        return self.seed * 1000 + ("train", "val", "test").index(split)

    def check_split(self, split: str) -> None:
        if split not in self.sizes:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(self.sizes)}")

    def scenes(self, split: str) -> Any:
        """The pixel-space scenes of ``split`` (regenerated deterministically)."""
        raise NotImplementedError

    def make_dataset(self, scenes: Any) -> Dataset:
        """The normalised dataset of rendered ``scenes``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self.train_dataset = self.make_dataset(self._train_scenes)
        self.val_dataset = self.make_dataset(self.scenes("val"))
        self.test_dataset = self.make_dataset(self.scenes("test"))
