"""SyntheticShapesDataModule: determinism, exact ground truth, object removal, and a model that needs the object."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.data.synthetic import SyntheticShapesDataModule, render_scenes


def test_generation_is_seeded_and_splits_are_independent() -> None:
    first = render_scenes(20, seed=3, image_size=16, object_size=(5, 8))
    again = render_scenes(20, seed=3, image_size=16, object_size=(5, 8))
    assert torch.equal(first.images, again.images) and torch.equal(first.boxes, again.boxes)
    other = render_scenes(20, seed=4, image_size=16, object_size=(5, 8))
    assert not torch.equal(first.images, other.images)
    data = SyntheticShapesDataModule(num_train=10, num_val=5, num_test=7, image_size=16, object_size=(5, 8), seed=1)
    data.setup()
    assert len(data.test_dataset) == 7 and data.num_classes == 4 and data.in_chans == 3
    assert not torch.equal(data.dataset("val").images[:5], data.dataset("test").images[:5])
    assert len(data.mean) == 3 and all(s > 0 for s in data.std)
    sample = data.test_dataset[2]
    assert set(sample) == {"image", "label", "index", "mask", "box"}
    assert sample["mask"].shape == (1, 16, 16) and sample["mask"].dtype == torch.bool and sample["box"].shape == (4,)


def test_masks_boxes_and_object_removal_are_exact() -> None:
    scenes = render_scenes(50, seed=0, image_size=24, num_classes=5, object_size=(6, 10), num_distractors=3)
    without = render_scenes(50, seed=0, image_size=24, num_classes=5, object_size=(6, 10), num_distractors=3,
                            include_object=False)
    masks = scenes.masks[:, 0]
    assert bool(masks.flatten(1).any(1).all())  # every image holds its object
    for i in range(50):  # the box is the mask's bounding box (exclusive ends)
        ys, xs = masks[i].nonzero(as_tuple=True)
        assert scenes.boxes[i].tolist() == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    changed = (scenes.images != without.images).any(1)
    assert bool((changed & ~masks).sum() == 0)  # removal touches only the object's pixels
    assert bool(changed.any())
    assert torch.equal(scenes.labels, without.labels)
    assert set(scenes.labels.tolist()) == set(range(5))
    with pytest.raises(ValueError, match="num_classes"):
        render_scenes(2, 0, num_classes=9)


@pytest.mark.slow
def test_a_trained_model_relies_on_the_object() -> None:
    """Train a small CNN; test accuracy is high with the object and drops to chance when it is removed."""
    torch.manual_seed(0)
    data = SyntheticShapesDataModule(num_train=3000, num_val=8, num_test=400, image_size=24, object_size=(8, 12))
    data.setup()
    images, labels = data.train_dataset.images, data.train_dataset.labels
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(64, 4),
    )
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(15):
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(net(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    test_labels = data.test_dataset.labels
    removed = data.normalize(data.scenes("test", include_object=False).images)
    with torch.no_grad():
        accuracy = (net(data.test_dataset.images).argmax(1) == test_labels).float().mean()
        accuracy_removed = (net(removed).argmax(1) == test_labels).float().mean()
    print(f"accuracy with object {accuracy:.3f}, without {accuracy_removed:.3f}")
    assert accuracy > 0.85
    assert accuracy_removed < 0.25 + 0.08  # chance for 4 balanced classes, with a binomial margin
