"""Batched IBA vs one image at a time (same settings, same process, interleaved), and InputIBA's time per image.

    .venv/bin/python benchmarks/bench_iba.py                 # resnet8 + digits_cnn, 32 images, 3 repeats
    .venv/bin/python benchmarks/bench_iba.py --models resnet8 --repeats 1 --input-iba-models
    .venv/bin/python benchmarks/bench_iba.py --models digits_cnn --noise-draws 1 --reference-scheme

IBA optimises every image of a batch jointly (a sum of per-image losses, element-wise Adam), which is exactly
equivalent to separate runs (tests/test_iba.py checks it); this script measures what batching buys. One image
already runs its noise draws as one batch after the bottleneck layer, so on a CPU the ratio is large only where
per-step overhead dominates (small models, few draws); ``--reference-scheme`` adds the reference code's scheme
(inputs repeated per draw through the whole network, nothing replayed). Results: docs/information.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_xai.attribution.information import IBA, InputIBA
from lit_xai.models.backbones import build_backbone

LAYERS = {"resnet8": "layer2", "cnn6": "features.9", "digits_cnn": "features.6"}


def timed(method, model: torch.nn.Module, images: torch.Tensor, one_at_a_time: bool = False) -> float:
    """Seconds for ``method`` on ``images``: as one batch, or image by image."""
    start = time.perf_counter()
    if one_at_a_time:
        for i in range(images.shape[0]):
            method(model, images[i : i + 1])
    else:
        method(model, images)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet8", "digits_cnn"])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--noise-draws", type=int, default=10)
    parser.add_argument("--input-iba-models", nargs="*", default=["digits_cnn"])
    parser.add_argument("--input-iba-images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reference-scheme", action="store_true",
                        help="also time one-at-a-time runs that repeat the input per noise draw (reference code)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images 32×32, "
          f"{args.steps} steps × {args.noise_draws} noise draws, median of {args.repeats}")
    for name in args.models:
        in_chans = 3
        model = build_backbone(name, num_classes=10, in_chans=in_chans).eval()
        x = torch.randn(args.images, in_chans, 32, 32, generator=g)
        method = IBA(layer=LAYERS[name], steps=args.steps, noise_draws=args.noise_draws)
        method.fit(model, [{"image": torch.randn(64, in_chans, 32, 32, generator=g)}])
        method(model, x[:2])  # warm-up
        # the reference implementation's scheme: one image at a time, the input repeated once per noise draw
        repeating = IBA(layer=LAYERS[name], steps=args.steps, noise_draws=args.noise_draws, expand_at_layer=False)
        repeating.fit(model, [{"image": torch.randn(64, in_chans, 32, 32, generator=g)}])
        batched, single, reference = [], [], []
        for _ in range(args.repeats):  # interleaved
            batched.append(timed(method, model, x))
            single.append(timed(method, model, x, one_at_a_time=True))
            if args.reference_scheme:
                reference.append(timed(repeating, model, x, one_at_a_time=True))
        b, s = statistics.median(batched), statistics.median(single)
        line = (f"IBA {name:<10} layer {LAYERS[name]:<10} batched {b / args.images * 1e3:8.1f} ms/image   "
                f"one-at-a-time {s / args.images * 1e3:8.1f} ms/image   speed-up ×{s / b:.2f}")
        if reference:
            r = statistics.median(reference)
            line += f"   | one-at-a-time, inputs repeated per draw {r / args.images * 1e3:8.1f} ms/image ×{r / b:.2f}"
        print(line, flush=True)

    for name in args.input_iba_models:
        model = build_backbone(name, num_classes=10, in_chans=3).eval()
        x = torch.randn(args.input_iba_images, 3, 32, 32, generator=g)
        method = InputIBA(layer=LAYERS[name]).fit(model, [{"image": torch.randn(64, 3, 32, 32, generator=g)}])
        seconds = timed(method, model, x)
        print(f"InputIBA {name:<10} layer {LAYERS[name]:<10} (paper defaults: 20 GAN epochs, 200 targets, 60 input "
              f"steps) {seconds / args.input_iba_images:8.2f} s/image on CPU (batch of {args.input_iba_images})")


if __name__ == "__main__":
    main()
