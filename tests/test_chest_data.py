"""The synthetic chest X-ray DataModule: seeded, ground truth consistent with the image, frequencies as configured."""

from __future__ import annotations

import pytest
import torch

from lit_xai.data.chest import CONCEPTS, MAX_INSTANCES, SyntheticChestDataModule, render_chest

N = 300


@pytest.fixture(scope="module")
def scenes():
    return render_chest(N, seed=5)


def test_rendering_is_seeded(scenes):
    again = render_chest(N, seed=5)
    assert torch.equal(again.images, scenes.images) and torch.equal(again.concept_bits, scenes.concept_bits)
    assert not torch.equal(render_chest(N, seed=6).images, scenes.images)
    assert scenes.images.shape == (N, 1, 64, 64) and 0 <= float(scenes.images.min()) <= float(scenes.images.max()) <= 1


def test_six_regions_partition_the_lungs_in_brixia_order(scenes):
    masks = scenes.region_map[:, None] == torch.arange(1, 7, dtype=torch.uint8)[None, :, None, None]
    assert bool(masks.flatten(2).any(2).all()), "every region is non-empty in every image"
    ys = torch.arange(64.0)[None, :, None]
    xs = torch.arange(64.0)[None, None, :]
    centre_y = torch.stack([(masks[:, r] * ys).sum((1, 2)) / masks[:, r].sum((1, 2)) for r in range(6)], 1)
    centre_x = torch.stack([(masks[:, r] * xs).sum((1, 2)) / masks[:, r].sum((1, 2)) for r in range(6)], 1)
    assert bool((centre_y[:, [0, 1]] < centre_y[:, [1, 2]]).all() and (centre_y[:, [3, 4]] < centre_y[:, [4, 5]]).all())
    assert bool((centre_x[:, :3].amax(1) < centre_x[:, 3:].amin(1)).all()), "A-C on the image-left lung"


def test_ground_truth_matches_the_severity_rules(scenes):
    bits = torch.arange(len(CONCEPTS), dtype=torch.uint8)[None, :, None, None]
    concept_masks = ((scenes.concept_bits[:, None] >> bits) & 1).bool()
    assert torch.equal(scenes.labels, concept_masks.flatten(2).any(2).float())
    consolidation, ground_glass = CONCEPTS.index("consolidation"), CONCEPTS.index("ground_glass")
    assert torch.equal(scenes.labels[:, consolidation].bool(), (scenes.severity >= 2).any(1))
    assert torch.equal(scenes.labels[:, ground_glass].bool(), (scenes.severity >= 1).any(1))
    # a lesion of region r lies inside region r
    for r in range(6):
        inside = scenes.region_map == r + 1
        lesion = concept_masks[:, consolidation] | concept_masks[:, ground_glass]
        per_region = lesion & inside
        assert torch.equal(per_region.flatten(1).any(1), scenes.severity[:, r] >= 1)
    # consolidation is brighter than the untouched lung around it
    lung = scenes.region_map > 0
    clean = lung & (scenes.concept_bits == 0)
    images = scenes.images[:, 0]
    assert float(images[concept_masks[:, consolidation]].mean()) > float(images[clean].mean()) + 0.2


def test_instances_and_boxes(scenes):
    assert scenes.instance_boxes.shape == (N, MAX_INSTANCES, 4)
    present = scenes.instance_concepts >= 0
    assert torch.equal(present, (scenes.instance_boxes >= 0).all(2))
    boxes = scenes.instance_boxes[present]
    assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
    consolidation = CONCEPTS.index("consolidation")
    assert torch.equal((scenes.instance_concepts == consolidation).sum(1), (scenes.severity >= 2).sum(1))


def test_label_frequencies_are_configurable():
    rare = render_chest(400, seed=1, healthy_prob=0.0, concept_probs=(0.5, 0.0, 1.0))
    nodule, line, apparatus = (CONCEPTS.index(c) for c in ("nodule", "line", "apparatus"))
    freq = rare.labels.mean(0)
    assert abs(float(freq[nodule]) - 0.5) < 4 * (0.25 / 400) ** 0.5
    assert float(freq[line]) == 0.0 and float(freq[apparatus]) == 1.0
    healthy = render_chest(50, seed=1, healthy_prob=1.0)
    assert int(healthy.severity.sum()) == 0
    sick = render_chest(400, seed=1, healthy_prob=0.0, severity_probs=(0.0, 0.0, 0.0, 1.0))
    assert bool((sick.severity == 3).all())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"severity_probs": (0.5, 0.5, 0.5, 0.5)}, "severity_probs"),
        ({"concept_probs": (0.1, 1.5, 0.2)}, "concept_probs"),
        ({"healthy_prob": -0.1}, "healthy_prob"),
        ({"image_size": 16}, "image_size"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_chest(2, seed=0, **kwargs)
    with pytest.raises(ValueError, match="task"):
        SyntheticChestDataModule(task="segmentation", num_train=2, num_val=2, num_test=2)


@pytest.mark.parametrize(("task", "label_shape", "outputs"), [("multilabel", (5,), 5), ("regression", (), 1),
                                                            ("regions", (6,), 6)])
def test_datamodule_batches(task, label_shape, outputs):
    dm = SyntheticChestDataModule(task=task, num_train=40, num_val=10, num_test=10, batch_size=4, seed=3)
    assert dm.num_classes == outputs and len(dm.class_names) == outputs
    batch = next(iter(dm.val_dataloader()))
    assert batch["label"].shape == (4, *label_shape)
    assert batch["image"].shape == (4, 1, 64, 64)
    train = torch.stack([dm.train_dataset[i]["image"] for i in range(40)])
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-3
    sample = dm.val_dataset[0]
    # the severity map carries the region's score on its pixels
    for r in range(6):
        values = sample["severity_map"][0][sample["region_masks"][r]]
        assert bool((values == sample["severity"][r].float()).all())
    assert float(sample["severity_map"][0][~sample["region_masks"].any(0)].abs().sum()) == 0
    assert float(sample["score"]) == float(sample["severity"].sum())
    present = sample["concept_masks"].flatten(1).any(1)
    assert torch.equal(present, (sample["concept_boxes"] >= 0).all(1))
    assert torch.equal(present.float(), sample["labels"])
