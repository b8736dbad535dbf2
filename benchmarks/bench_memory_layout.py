"""Contiguous (NCHW) vs ``channels_last`` model weights on this CPU: the model's own passes, side by side.

Not a default of lit_xai (the layout is the user's model's; changing it changes convolution algorithms and so maps at
float rounding, up to ~1e-3 relative on an untrained ResNet-8), but an opt-in every method supports
(``tests/test_memory_layout.py``): ``model.to(memory_format=torch.channels_last)``. Rows: gradient-free forward (the
perturbation metrics' unit) and forward + input gradient (the methods' floor), channels_last / contiguous, paired per
round on :mod:`harness` (1 thread).

    .venv/bin/python benchmarks/bench_memory_layout.py --rounds 7
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

from lit_xai.models.backbones import build_backbone  # noqa: E402

SETTINGS = {  # name: (backbone, input channels, image size, batch)
    "digits_cnn": ("digits_cnn", 1, 32, 64),
    "resnet8": ("resnet8", 3, 32, 32),
    "resnet18": ("torchvision/resnet18", 3, 224, 4),
}


def rows_for(name: str, rounds: int) -> list[harness.Row]:
    backbone, channels, size, batch = SETTINGS[name]
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=10, in_chans=channels).eval()
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x, t = torch.randn(batch, channels, size, size), torch.randint(0, 10, (batch,))
    cases = {"forward": harness.forward_floor(model, x), "forward, channels_last": harness.forward_floor(last, x),
             "forward + input gradient": harness.input_gradient_floor(model, x, t),
             "forward + input gradient, channels_last": harness.input_gradient_floor(last, x, t)}
    times = harness.interleaved_times(cases, rounds)
    label = f"{backbone} {size}² b{batch}"
    return [harness.Row(label, work, f"/ {work.split(',')[0]} (contiguous)",
                harness.paired_ratio(times[work], times[work.split(",")[0]]), untargeted="reference setting")
            for work in ("forward, channels_last", "forward + input gradient, channels_last")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"started {harness.machine_state()}")
    rows = [row for name in args.settings for row in rows_for(name, args.rounds)]
    print(harness.markdown_table(rows))
    print(f"ended {harness.machine_state()}")


if __name__ == "__main__":
    main()
