"""DataModules: digits split, CIFAR-10 pickle layout, ImageFolder, unpadded evaluation sampler."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from lit_xai.data import (
    CIFAR10DataModule,
    DatasetNotFoundError,
    DigitsDataModule,
    ImageFolderDataModule,
    UnpaddedDistributedSampler,
)


def test_digits_split_is_fixed_disjoint_stratified_and_normalised():
    a, b = DigitsDataModule(seed=0), DigitsDataModule(seed=0)
    for split_a, split_b in zip(a._splits, b._splits):
        assert torch.equal(split_a, split_b)
    all_idx = torch.cat(a._splits)
    assert len(all_idx) == 1797 and len(all_idx.unique()) == 1797
    a.setup()
    train = torch.stack([a.train_dataset[i]["image"] for i in range(len(a.train_dataset))])
    assert train.shape[1:] == (1, 32, 32)
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-3
    val_labels = torch.stack([s["label"] for s in a.val_dataset])
    assert torch.bincount(val_labels).min() >= 25  # every class present in proportion
    assert not torch.equal(DigitsDataModule(seed=1)._splits[0], a._splits[0])
    batch = next(iter(a.val_dataloader()))
    assert set(batch) == {"image", "label", "index"} and batch["index"][:3].tolist() == [0, 1, 2]


def _write_cifar(root, n_train=20, n_test=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", n_train) for i in range(1, 6)], ("test_batch", n_test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    return folder


def test_cifar10_reads_the_local_pickle_layout(tmp_path):
    _write_cifar(tmp_path)
    data = CIFAR10DataModule(root=str(tmp_path), batch_size=8)
    data.setup()
    assert len(data.train_dataset) + len(data.val_dataset) == 100 and len(data.test_dataset) == 10
    sample = data.test_dataset[0]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle)
    pixel = raw["data"][0].reshape(3, 32, 32)[:, 0, 0] / 255
    expected = (torch.tensor(pixel, dtype=torch.float32) - torch.tensor(data.mean)) / torch.tensor(data.std)
    assert torch.allclose(sample["image"][:, 0, 0], expected, atol=1e-6)
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32)


def test_cifar10_missing_root_names_the_expected_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data_batch_1.*test_batch.*never downloads"):
        CIFAR10DataModule(root=str(tmp_path / "nowhere"))


def test_imagefolder_train_val_layout(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 4)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    data = ImageFolderDataModule(root=str(tmp_path), image_size=32, batch_size=4)
    data.setup()
    assert data.num_classes == 2 and len(data.train_dataset) == 6
    assert len(data.val_dataset) + len(data.test_dataset) == 8
    assert data.val_dataset[0]["image"].shape == (3, 32, 32)
    with pytest.raises(DatasetNotFoundError, match="train/<class_name>"):
        ImageFolderDataModule(root=str(tmp_path / "val"))


@pytest.mark.parametrize("n", [7, 8, 269])
def test_unpadded_sampler_covers_every_sample_exactly_once(n):
    dataset = list(range(n))
    seen = [i for rank in range(2) for i in UnpaddedDistributedSampler(dataset, num_replicas=2, rank=rank)]
    assert sorted(seen) == dataset
    assert [len(UnpaddedDistributedSampler(dataset, num_replicas=2, rank=r)) for r in range(2)] == [
        (n + 1) // 2, n // 2
    ]


def test_digits_on_noise_canvas_pastes_each_digit_once_at_a_seeded_place():
    from lit_xai.data.digits import load_digits_tensors

    data = DigitsDataModule(canvas="noise", tile_size=14, mean=(0.5,), std=(0.5,), seed=3)
    again = DigitsDataModule(canvas="noise", tile_size=14, mean=(0.5,), std=(0.5,), seed=3)
    assert torch.equal(data._images, again._images) and data.mean == (0.5,)
    tiles, _ = load_digits_tensors(14)
    image, tile = data._images[0, 0], tiles[0, 0]
    hits = [(r, c) for r in range(32 - 13) for c in range(32 - 13) if torch.equal(image[r : r + 14, c : c + 14], tile)]
    assert len(hits) == 1
    outside = image.clone()
    outside[hits[0][0] : hits[0][0] + 14, hits[0][1] : hits[0][1] + 14] = float("nan")
    background = outside[~outside.isnan()]
    assert abs(float(background.mean()) - 0.5) < 0.02 and abs(float(background.std()) - 0.1) < 0.02
    with pytest.raises(ValueError, match="canvas='noisy'"):
        DigitsDataModule(canvas="noisy")
