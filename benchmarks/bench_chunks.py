"""Which rows-per-forward is fastest for batched attribution passes, and where the memory-budget rule lands.

For each model, ``--rows`` rows (e.g. IG steps × images) are pushed through forward + input-gradient backward with
frozen parameters, in chunks of each candidate size; times are interleaved (benchmarks/harness.py) and reported
as paired ratios to the fastest chunk. The last line gives the chunk that :func:`lit_xai.attribution.batching.
rows_per_chunk` chooses by default, so the default can be checked against the optimum on the machine at hand.

    .venv/bin/python benchmarks/bench_chunks.py                        # digits CNN, ResNet-8 32², ResNet-18 224²
    .venv/bin/python benchmarks/bench_chunks.py --models resnet8 --rounds 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import interleaved_times, paired_ratio  # noqa: E402

from lit_xai.attribution.batching import activation_bytes_per_row, rows_per_chunk  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402

SETUPS = {  # name: (backbone, in_chans, size, rows, candidate chunks)
    "digits_cnn": ("digits_cnn", 1, 32, 512, (16, 32, 64, 128, 192, 256, 512)),
    "resnet8": ("resnet8", 3, 32, 256, (4, 8, 16, 20, 24, 32, 64, 128, 256)),
    "resnet18": ("torchvision/resnet18", 3, 224, 16, (1, 2, 4, 8, 16)),
}


def bench(name: str, rounds: int) -> None:
    backbone, in_chans, size, rows, chunks = SETUPS[name]
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=10, in_chans=in_chans).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(rows, in_chans, size, size)
    target = torch.zeros(rows, dtype=torch.long)

    def run(chunk: int):
        def passes() -> None:
            for start in range(0, rows, chunk):
                xc = x[start : start + chunk].clone().requires_grad_(True)
                torch.autograd.grad(model(xc).gather(1, target[start : start + chunk, None]).sum(), xc)

        return passes

    times = interleaved_times({c: run(c) for c in chunks}, rounds=rounds)
    best = min(chunks, key=lambda c: sorted(times[c])[len(times[c]) // 2])
    per_row = activation_bytes_per_row(model, x)
    print(f"\n== {backbone} {size}², {rows} rows, {torch.get_num_threads()} thread(s), {rounds} rounds; "
          f"{per_row / 2**20:.2f} MiB forward activations per row")
    for chunk in chunks:
        median = sorted(times[chunk])[len(times[chunk]) // 2]
        ratio = paired_ratio(times[chunk], times[best])
        print(f"chunk {chunk:4d}: {median / rows * 1e3:8.2f} ms/row   / fastest {ratio}")
    print(f"default (budget rule): {rows_per_chunk(model, x)} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        bench(name, args.rounds)


if __name__ == "__main__":
    main()
