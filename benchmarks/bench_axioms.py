"""Batched vs one-at-a-time axiom scene generation, side by side in one process.

Both arms run the same scenario, model, decoder and iteration count; the stopping thresholds are set out of
reach so every scene runs all iterations and the two arms do identical work per scene. Arms alternate,
repeat, and the medians are compared. Prints seconds per scene-iteration and the speed-up per scene.

    .venv/bin/python benchmarks/bench_axioms.py [--scenes 16] [--iterations 20] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_xai.axioms.generation import DecoderConfig, GenerationConfig, SceneGenerator
from lit_xai.models.backbones import build_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scenario", default="null_feature")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_backbone("digits_cnn", num_classes=10, in_chans=1).eval()
    cfg = GenerationConfig(
        image_size=32, patch_size=12, mean=(0.5,), std=(0.5,), iterations=args.iterations, warmup_iterations=5,
        drive_threshold=2.0,  # unreachable: every scene runs all iterations in both arms
        decoder=DecoderConfig(noise_channels=4, channels=(4, 8), skip_channels=(0, 2), down_kernel_sizes=(5, 3),
                              up_kernel_sizes=(5, 3)),
    )
    gen = SceneGenerator(model, 10, cfg, seed=0)
    ids = list(range(args.scenes))
    gen.generate(args.scenario, ids[:2])  # warm-up
    batched, sequential = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        gen.generate(args.scenario, ids)
        batched.append((time.perf_counter() - start) / args.scenes)
        start = time.perf_counter()
        for i in ids:
            gen.generate(args.scenario, [i])
        sequential.append((time.perf_counter() - start) / args.scenes)
    b, s = statistics.median(batched), statistics.median(sequential)
    per_it = args.iterations
    print(f"scenario={args.scenario} scenes={args.scenes} iterations={per_it} threads={args.threads}")
    print(f"batched    : {b:.3f} s/scene ({b / per_it * 1e3:.1f} ms/scene-iteration)", [round(x, 3) for x in batched])
    runs = [round(x, 3) for x in sequential]
    print(f"one-by-one : {s:.3f} s/scene ({s / per_it * 1e3:.1f} ms/scene-iteration)", runs)
    print(f"speed-up per scene (one-by-one / batched): {s / b:.2f}x")


if __name__ == "__main__":
    main()
