"""Network Dissection over 2 processes (gloo): thresholds (gathered top buffers) and the IoU sums of Eq. 5 (summed
states) equal the one-process results exactly when the images are split over the ranks as a DistributedSampler
does (rank r: images r, r + 2, …)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lit_xai.concepts import DissectionIoU, UnitThresholds, dissect, layer_iou, layer_thresholds

LAYERS = ["features.1", "features.3"]
CONCEPTS = ["square", "bar", "speck"]
NUM_IMAGES = 10
#: one image per batch on both sides: a convolution's float result can depend on the batch it is computed in (measured
#: here: the second conv's thresholds differed in the last bits with pairs (0, 2) vs (0, 1)), and this test is about
#: the merge, not the kernels
BATCH = 1
#: P(f_k > T_k): above the paper's 0.005 so that the tiny set's unit masks meet the concepts (the merge is the same)
TAIL = 0.1


class Tiny(nn.Module):
    """Two conv + ReLU stages (12² → 6²): dissected at both ReLUs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return Tiny().eval()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """Concept masks ``[N, 3, 24, 24]`` (random rectangles; concept 2 in half the images only, so the sums over
    images *with* the concept matter) and images ``[N, 1, 12, 12]`` drawn from them (concept c at brightness c + 1,
    plus noise), so that units fire on concepts and the intersections are not all zero."""
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(NUM_IMAGES, len(CONCEPTS), 24, 24, dtype=torch.bool)
    for n in range(NUM_IMAGES):
        for c in range(len(CONCEPTS)):
            if c == 2 and n % 2:
                continue
            y, x = torch.randint(0, 16, (2,), generator=g).tolist()
            h, w = torch.randint(3, 9, (2,), generator=g).tolist()
            masks[n, c, y : y + h, x : x + w] = True
    brightness = torch.arange(1.0, len(CONCEPTS) + 1).view(1, -1, 1, 1)
    drawn = F.avg_pool2d((masks.float() * brightness).sum(1, keepdim=True), 2)
    return drawn + 0.1 * torch.randn(drawn.shape, generator=g), masks


def _batches(images: torch.Tensor, masks: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    return [{"image": images[s : s + BATCH], "masks": masks[s : s + BATCH]} for s in range(0, len(images), BATCH)]


def _masks(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["masks"]


def _run(images: torch.Tensor, masks: torch.Tensor) -> dict[str, object]:
    """Everything the test compares, from this process's images (with ``num_images`` the whole set's count)."""
    model, batches = _model(), _batches(images, masks)
    thresholds = layer_thresholds(model, batches, LAYERS, NUM_IMAGES, TAIL)
    sums = layer_iou(model, batches, LAYERS, thresholds, _masks, len(CONCEPTS))
    results = dissect(model, batches, LAYERS, _masks, CONCEPTS, NUM_IMAGES, TAIL)
    # the metrics themselves: compute() syncs the states over the ranks
    with torch.no_grad():
        first = model.features[:2](images)
    unit_thresholds = UnitThresholds(first.shape[1], NUM_IMAGES * first.shape[2] * first.shape[3], TAIL)
    unit_thresholds.update(first)
    iou = DissectionIoU(thresholds[LAYERS[0]], len(CONCEPTS))
    iou.update(first, masks)
    return {"thresholds": thresholds, "sums": sums, "iou": {name: r.iou for name, r in results.items()},
            "metric_thresholds": unit_thresholds.compute(), "metric_iou": iou.compute()}


def _worker(rank: int, world: int, store: str, folder: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    try:
        images, masks = _data()
        torch.save(_run(images[rank::world], masks[rank::world]), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_dissection_equals_one_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    single = _run(*_data())
    for rank in range(2):
        ranks = torch.load(tmp_path / f"rank{rank}.pt")
        for name in LAYERS:
            # the same activation values reach the merged top buffers: the quantile is bit-identical
            assert torch.equal(ranks["thresholds"][name], single["thresholds"][name]), (rank, name)
            # integer pixel counts summed in float64: exact
            for got, expected in zip(ranks["sums"][name], single["sums"][name]):
                assert torch.equal(got, expected), (rank, name)
            assert torch.equal(ranks["iou"][name], single["iou"][name]), (rank, name)
        assert torch.equal(ranks["metric_thresholds"], single["metric_thresholds"])
        assert torch.equal(ranks["metric_iou"], single["metric_iou"])
    for name in LAYERS:  # the units overlap the concepts, and not all alike
        intersection = single["sums"][name][0]
        assert float(intersection.min()) < float(intersection.max()) and bool((single["iou"][name] > 0).any())


def test_merge_of_two_halves_equals_one_pass() -> None:
    """The same merge in one process (``merge_state`` applies the DDP reductions): the fast check of the logic."""
    images, masks = _data()
    model = _model()
    with torch.no_grad():
        acts = model.features[:2](images)
    count = NUM_IMAGES * acts.shape[2] * acts.shape[3]
    whole = UnitThresholds(acts.shape[1], count, TAIL)
    halves = [UnitThresholds(acts.shape[1], count, TAIL) for _ in range(2)]
    whole.update(acts)
    for r, half in enumerate(halves):
        half.update(acts[r::2])
    halves[0].merge_state(halves[1])
    assert torch.equal(halves[0].compute(), whole.compute())
    thresholds = whole.compute()
    whole_iou, iou_halves = DissectionIoU(thresholds, 3), [DissectionIoU(thresholds, 3) for _ in range(2)]
    whole_iou.update(acts, masks)
    for r, half in enumerate(iou_halves):
        half.update(acts[r::2], masks[r::2])
    iou_halves[0].merge_state(iou_halves[1])
    assert torch.equal(iou_halves[0].intersection, whole_iou.intersection)
    assert torch.equal(iou_halves[0].union, whole_iou.union)
