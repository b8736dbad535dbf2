"""Batched vs one-at-a-time axiom scene generation, side by side in one process.

Both arms run the same scenario, model, decoder and iteration count; the stopping thresholds are set out of
reach so every scene runs all iterations and the two arms do identical work per scene. Protocol
(benchmarks/harness.py): both arms warmed up (one-at-a-time on one scene: the same shapes), rotated interleaving,
per-round paired ratio batched / one-at-a-time (median and IQR). Target (issue 7): batched ≥ 4× faster per scene,
i.e. the ratio ≤ 0.25; MISS above it. Also prints seconds per scene-iteration.

    .venv/bin/python benchmarks/bench_axioms.py [--scenes 16] [--iterations 20] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Row, interleaved_times, machine_state, markdown_table, paired_ratio  # noqa: E402

from lit_xai.axioms.generation import DecoderConfig, GenerationConfig, SceneGenerator  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402

TARGET = 0.25  # issue 7: batched generation of 16 scenes ≥ 4× faster per scene than one at a time


def one_at_a_time(gen: SceneGenerator, scenario: str, ids: list[int]) -> None:
    """The per-scene loop batching replaces (the measured baseline)."""
    for i in ids:
        gen.generate(scenario, [i])


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
    times = interleaved_times(
        {"batched": lambda: gen.generate(args.scenario, ids),
         "one at a time": lambda: one_at_a_time(gen, args.scenario, ids)},
        args.repeats, warmups={"one at a time": lambda: gen.generate(args.scenario, ids[:1])},
    )
    ms = {k: sorted(v)[len(v) // 2] / args.scenes / args.iterations * 1e3 for k, v in times.items()}
    row = Row(f"{args.scenario}, {args.scenes} scenes × {args.iterations} iterations, {args.threads} thread(s)",
              "batched", "one at a time", paired_ratio(times["batched"], times["one at a time"]), TARGET,
              note=f"{ms['batched']:.1f} vs {ms['one at a time']:.1f} ms/scene-iteration")
    print(machine_state())
    print(markdown_table([row]))


if __name__ == "__main__":
    main()
