"""Evidence for the information-bottleneck methods on a model trained on synthetic scenes with ground truth.

    .venv/bin/python benchmarks/report_iba.py --images 24        # ~20 min on one busy CPU core
    .venv/bin/python benchmarks/report_iba.py --images 8 --gan-epochs 2 --epochs 3   # quick smoke run

1. Trains a small CNN (``digits_cnn``, width 16) on ``lit_xai.data.synthetic`` scenes (a class-shape object among
   distractors on textured noise; 4 classes, 32×32) — the weights are cached under ``.cache/report_iba``.
2. Explains held-out images with Gradient, Integrated Gradients, IBA, Inverse IBA and InputIBA (paper defaults)
   and scores them with the project's metrics: Deletion AUC (lower = better; ``lit_xai.metrics.Deletion``) and
   EHR against the ground-truth box (higher = better; ``lit_xai.metrics.localisation.EffectiveHeatRatio``).
3. Two class-objects in one image (a second object of the same class pasted from another scene): the share of
   the map's mass on the weaker of the two objects, for IBA vs Inverse IBA (0.5 = both equally, 0 = one only).
4. Checks the output contract: IBA maps at the layer's resolution, InputIBA maps at input resolution.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lit_xai.attribution import build
from lit_xai.attribution.information import capacity_per_input_pixel
from lit_xai.data.synthetic import render_scenes
from lit_xai.metrics.localisation import EffectiveHeatRatio
from lit_xai.metrics.perturbation import Deletion
from lit_xai.models.backbones import DigitsCNN

LAYER = "features.6"  # second conv stage after ReLU: 32 channels at 16×16


def train_model(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor) -> DigitsCNN:
    """Train (or load from the cache) the classifier; Adam, seeded shuffling."""
    torch.manual_seed(args.seed)
    model = DigitsCNN(num_classes=args.classes, in_chans=3, width=16)
    path = Path(args.cache) / f"digits16_c{args.classes}_n{images.shape[0]}_e{args.epochs}_s{args.seed}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(args.seed)
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(images.shape[0], generator=g)
        total = 0.0
        for idx in order.split(64):
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * idx.numel()
        print(f"  epoch {epoch + 1}/{args.epochs}: train loss {total / images.shape[0]:.3f}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def two_object_scenes(scenes, count: int):
    """Paste a second class object of the same class (from another scene) where it does not overlap the first."""
    images, masks_a, masks_b, labels = [], [], [], []
    n = scenes.images.shape[0]
    for i in range(n):
        for j in range(n):
            if j == i or scenes.labels[j] != scenes.labels[i]:
                continue
            grown = F.max_pool2d(scenes.masks[i].float()[None], 5, 1, 2)[0].bool()
            if bool((grown & scenes.masks[j]).any()):
                continue
            images.append(torch.where(scenes.masks[j], scenes.images[j], scenes.images[i]))
            masks_a.append(scenes.masks[i])
            masks_b.append(scenes.masks[j])
            labels.append(scenes.labels[i])
            break
        if len(images) == count:
            break
    return torch.stack(images), torch.stack(masks_a), torch.stack(masks_b), torch.stack(labels)


def input_resolution(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Non-negative per-pixel scores at input size (channel abs-sum, bilinear for layer maps)."""
    maps = maps.abs().sum(1, keepdim=True)
    return maps if maps.shape[-2:] == size else F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--images", type=int, default=32, help="explained test images (InputIBA is the cost)")
    parser.add_argument("--gan-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=".cache/report_iba")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    train = render_scenes(args.train, seed=args.seed, num_classes=args.classes)
    mean, std = train.images.mean((0, 2, 3)).view(1, 3, 1, 1), train.images.std((0, 2, 3)).view(1, 3, 1, 1)
    normalise = lambda images: (images - mean) / std
    print(f"training digits_cnn (width 16) on {args.train} synthetic scenes", flush=True)
    model = train_model(args, normalise(train.images), train.labels)
    test = render_scenes(400, seed=args.seed + 1, num_classes=args.classes)
    with torch.no_grad():
        accuracy = (model(normalise(test.images)).argmax(1) == test.labels).float().mean()
        empty = render_scenes(400, seed=args.seed + 1, num_classes=args.classes, include_object=False)
        chance = (model(normalise(empty.images)).argmax(1) == empty.labels).float().mean()
    print(f"test accuracy {accuracy:.3f}; same scenes without the class object: {chance:.3f} (chance "
          f"{1 / args.classes:.2f})")

    with torch.no_grad():
        correct = (model(normalise(test.images)).argmax(1) == test.labels).nonzero().squeeze(1)[: args.images]
    x, y, boxes = normalise(test.images[correct]), test.labels[correct], test.boxes[correct]
    loader = [{"image": normalise(train.images[i : i + 250])} for i in range(0, args.train, 250)]

    methods = {
        "gradient": build("gradient"),
        "integrated_gradients": build("integrated_gradients"),
        "iba": build("iba", layer=LAYER),
        "inverse_iba": build("inverse_iba", layer=LAYER),
        "input_iba": build("input_iba", layer=LAYER, gan_epochs=args.gan_epochs),
    }
    print(f"\nexplaining {x.shape[0]} correctly classified test images (target = label), layer {LAYER!r}")
    print(f"{'method':<22}{'map shape':<18}{'s/image':>9}{'Deletion AUC ↓':>17}{'EHR ↑':>9}")
    maps_by_method = {}
    for name, method in methods.items():
        if hasattr(method, "fit"):
            method.fit(model, loader)
        t0 = time.perf_counter()
        maps = method(model, x, y)
        seconds = (time.perf_counter() - t0) / x.shape[0]
        maps_by_method[name] = maps
        deletion = Deletion(channel_reduction="abs_sum")
        deletion.update(model, x, y, maps)
        ehr = EffectiveHeatRatio()
        ehr.update(model, x, y, maps, boxes=boxes)
        print(f"{name:<22}{str(tuple(maps.shape[1:])):<18}{seconds:9.3f}{float(deletion.compute()['score']):17.4f}"
              f"{float(ehr.compute()['score']):9.4f}", flush=True)
    assert maps_by_method["iba"].shape[-2:] == (16, 16), "IBA maps must have the layer's resolution"
    assert maps_by_method["input_iba"].shape[-2:] == x.shape[-2:], "InputIBA maps must have input resolution"
    bits = capacity_per_input_pixel(maps_by_method["iba"], (32, 32))
    print(f"IBA capacity: {float(maps_by_method['iba'].sum((1, 2, 3)).mean()):.1f} bits per image on average "
          f"(bits per input pixel preserve it: {float(bits.sum((1, 2, 3)).mean()):.1f})")

    pool = render_scenes(600, seed=args.seed + 2, num_classes=args.classes, object_size=(8, 11))
    images, mask_a, mask_b, labels = two_object_scenes(pool, max(args.images, 8))
    x2 = normalise(images)
    with torch.no_grad():
        keep = model(x2).argmax(1) == labels
    x2, mask_a, mask_b, labels = x2[keep], mask_a[keep], mask_b[keep], labels[keep]
    print(f"\ntwo class-objects of the same class per image: {int(keep.sum())} correctly classified scenes")
    print(f"{'method':<22}{'weaker-object share':>21}{'both objects ≥ 25%':>21}")
    for name in ("iba", "inverse_iba"):
        scores = input_resolution(methods[name](model, x2, labels), (32, 32))
        mass_a = (scores * mask_a).sum((1, 2, 3)) / mask_a.sum((1, 2, 3))
        mass_b = (scores * mask_b).sum((1, 2, 3)) / mask_b.sum((1, 2, 3))
        weaker = torch.minimum(mass_a, mass_b) / (mass_a + mass_b).clamp_min(1e-12)
        print(f"{name:<22}{float(weaker.mean()):21.3f}{float((weaker >= 0.25).float().mean()):21.3f}")
    print(f"\ntotal time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
