"""ROAR removal on the fly vs training on unmodified data: one retraining epoch, side by side, interleaved.

Both arms run the same loop (DataLoader over dict samples → training augmentation (crop pad 4 + flip) →
forward/backward/Adam step); the ROAR arm puts :class:`PixelRemoval` (50% of the pixels, precomputed rank order)
before the augmentation, as the grid does. Repeated, alternating the arms; prints the median epoch times and the
median of the per-pair ratios. Target: ratio ≤ 1.10. Also times the removal transform alone per sample.

    .venv/bin/python benchmarks/bench_roar_removal.py [--samples 512] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lit_xai.data.base import MappedDataset, RandomCropFlip, TensorImageDataset
from lit_xai.models.backbones import build_backbone
from lit_xai.roar.removal import PixelRemoval, rank_order


def epoch_seconds(model: torch.nn.Module, dataset, batch_size: int, seed: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    model.train()
    start = time.perf_counter()
    for batch in loader:
        loss = F.cross_entropy(model(batch["image"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def run(backbone: str, channels: int, size: int, samples: int, batch_size: int, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(samples, channels, size, size, generator=generator)
    labels = torch.randint(0, 10, (samples,), generator=generator)
    maps = torch.rand(samples, size, size, generator=generator)
    base = TensorImageDataset(images, labels)
    augment = RandomCropFlip(padding=4 if size >= 16 else 1)
    plain = MappedDataset(base, augment)
    removal = PixelRemoval(rank_order(maps), 50)
    removed = MappedDataset(MappedDataset(base, removal), augment)
    model = build_backbone(backbone, num_classes=10, in_chans=channels)
    epoch_seconds(model, plain, batch_size, 0)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "removal": []}
    for repeat in range(repeats):
        arms = [("plain", plain), ("removal", removed)]
        for name, dataset in arms if repeat % 2 == 0 else arms[::-1]:  # alternate which arm goes first
            times[name].append(epoch_seconds(model, dataset, batch_size, repeat))
    plain_t, removal_t = statistics.median(times["plain"]), statistics.median(times["removal"])
    # each pair ran back to back, so its ratio is the least exposed to drifting machine load
    ratio = statistics.median(r / p for r, p in zip(times["removal"], times["plain"], strict=True))
    start = time.perf_counter()
    for index in range(samples):
        removal(base[index])
    per_sample = (time.perf_counter() - start) / samples
    print(f"{backbone:>10s} {channels}x{size}x{size}, {samples} samples, batch {batch_size}: epoch plain "
          f"{plain_t:.3f} s, with removal {removal_t:.3f} s (medians) -> paired ratio {ratio:.3f} "
          f"(median of {repeats} back-to-back pairs); "
          f"removal alone {per_sample * 1e6:.1f} us/sample = {per_sample * samples / plain_t:.1%} of the plain epoch")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ratios = [
        run("resnet8", 3, 32, args.samples, 64, args.repeats),  # the papers' CIFAR-10 setting
        run("digits_cnn", 1, 8, args.samples * 4, 64, args.repeats),  # the quick digits config (a tiny model)
    ]
    print(f"target ratio <= 1.10: {'met' if max(ratios) <= 1.10 else 'NOT met'} (max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
