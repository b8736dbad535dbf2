"""Batched IBA vs the same method one image at a time, and InputIBA's time per image (CPU, one thread by default).

    .venv/bin/python benchmarks/bench_iba.py                 # resnet8 + digits_cnn, 32 images, 3 rounds, 1 thread
    .venv/bin/python benchmarks/bench_iba.py --models digits_cnn --noise-draws 1 --reference-scheme
    .venv/bin/python benchmarks/bench_iba.py --models resnet8 --rounds 1 --input-iba-models digits_cnn

IBA optimises every image of a batch jointly (a sum of per-image losses, element-wise Adam), which is exactly
equivalent to separate runs (tests/test_iba.py checks it); this script measures what batching buys. Protocol
(benchmarks/harness.py): every case warmed up (one-at-a-time on one image: the same shapes), rotated interleaving,
per-round paired ratios (median and IQR). Target (issue 5): batched ≥ 5× faster per image than one at a time, i.e.
batched / one-at-a-time ≤ 0.2; a row above it prints MISS. ``--reference-scheme`` adds the reference code's scheme
(one image at a time, the input repeated per noise draw through the whole network). Threads: equal on every side,
1 unless ``--threads`` (with all threads the batched side gains from intra-op parallelism that one small image
cannot use: a thread-count effect, not batching). Results: docs/information.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Row, interleaved_times, machine_state, markdown_table, paired_ratio, timed  # noqa: E402

from lit_xai.attribution.information import IBA, InputIBA  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402

LAYERS = {"resnet8": "layer2", "cnn6": "features.9", "digits_cnn": "features.6"}
TARGET = 0.2  # issue 5: batched IBA on 32 images ≥ 5× faster per image than one image at a time


def one_at_a_time(method: IBA, model: torch.nn.Module, images: torch.Tensor) -> None:
    """The per-image loop batching replaces (the measured baseline, not library code)."""
    for i in range(images.shape[0]):
        method(model, images[i : i + 1])


def iba_rows(name: str, args: argparse.Namespace, g: torch.Generator) -> list[Row]:
    """Batched IBA against one image at a time (and the reference scheme), interleaved and paired."""
    model = build_backbone(name, num_classes=10, in_chans=3).eval()
    x = torch.randn(args.images, 3, 32, 32, generator=g)
    fit_data = [{"image": torch.randn(64, 3, 32, 32, generator=g)}]
    method = IBA(layer=LAYERS[name], steps=args.steps, noise_draws=args.noise_draws).fit(model, fit_data)
    cases = {"batched": lambda: method(model, x), "one at a time": lambda: one_at_a_time(method, model, x)}
    warm = {"one at a time": lambda: method(model, x[:1])}
    if args.reference_scheme:  # the reference implementation's scheme: the input repeated once per noise draw
        repeating = IBA(layer=LAYERS[name], steps=args.steps, noise_draws=args.noise_draws,
                        expand_at_layer=False).fit(model, fit_data)
        cases["one at a time, inputs repeated per draw"] = lambda: one_at_a_time(repeating, model, x)
        warm["one at a time, inputs repeated per draw"] = lambda: repeating(model, x[:1])
    times = interleaved_times(cases, args.rounds, warmups=warm)
    setting = f"IBA {name} {LAYERS[name]}, {args.noise_draws} draws, {args.images} images"
    ms = {k: sorted(v)[len(v) // 2] / args.images * 1e3 for k, v in times.items()}
    return [Row(setting, "batched", reference, paired_ratio(times["batched"], times[reference]), TARGET,
                note=f"{ms['batched']:.1f} vs {ms[reference]:.1f} ms/image")
            for reference in cases if reference != "batched"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet8", "digits_cnn"], choices=list(LAYERS))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--noise-draws", type=int, default=10)
    parser.add_argument("--input-iba-models", nargs="*", default=["digits_cnn"])
    parser.add_argument("--input-iba-images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference-scheme", action="store_true",
                        help="also time one-at-a-time runs that repeat the input per noise draw (reference code)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.images} images 32×32, "
          f"{args.steps} steps × {args.noise_draws} noise draws, {args.rounds} rounds; {machine_state()}")
    rows = []
    for name in args.models:
        rows += iba_rows(name, args, g)
        print(markdown_table(rows), flush=True)

    for name in args.input_iba_models:
        model = build_backbone(name, num_classes=10, in_chans=3).eval()
        x = torch.randn(args.input_iba_images, 3, 32, 32, generator=g)
        method = InputIBA(layer=LAYERS[name]).fit(model, [{"image": torch.randn(64, 3, 32, 32, generator=g)}])
        seconds = timed(lambda: method(model, x))  # noqa: B023 (called at once). One run: a scale figure, no target
        print(f"InputIBA {name:<10} layer {LAYERS[name]:<10} (paper defaults: 20 GAN epochs, 200 targets, 60 input "
              f"steps) {seconds / args.input_iba_images:8.2f} s/image on CPU (batch of {args.input_iba_images}, one "
              "run)")
    print("\n" + markdown_table(rows))


if __name__ == "__main__":
    main()
