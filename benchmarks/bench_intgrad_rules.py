"""Accuracy vs cost of NeuronIntGrad's α quadrature (seed 001 Eq. 4) against a fine integral.

    .venv/bin/python benchmarks/bench_intgrad_rules.py [--backbone resnet8] [--epochs 3] [--images 8]

Eq. 4 is an integral over α ∈ [0, 1] of the gradient at the layer's scaled activation α·a. A ReLU network's
gradient is piecewise constant in α, and at α = 0 it is degenerate (every ReLU after the scaled layer sees a zero
or bias-only input), so a grid that gives α = 0 a full weight (the former 11-point grid, ``rule="closed"``) is
biased. This script trains a small model on the bundled digits (seeded; or loads ``--weights``), computes the
contributions of ``--images`` validation digits with a ``--reference_steps``-point midpoint integral, and for each
(rule, S) reports: the relative L1 error of all contributions (Σ|c − c_ref| / Σ|c_ref| per image, mean), the largest
per-layer relative error, the network-wide pathway Jaccard overlap with the reference pathway at κ = 0.9, and the
cost in passes (S α rows per layer) and time: every (rule, S) timed on the shared harness (benchmarks/harness.py:
warm-up on every side, rotated interleaving over ``--repeats`` rounds, 1 thread), as the median seconds and the
paired per-round ratio to the default (midpoint, 5) with its inter-quartile range. The table in docs/pathways.md
("NeuronIntGrad's α rule") is its output; it chose the default ``rule="midpoint", steps=5`` (an accuracy/cost
choice: the rows carry no speed target).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import interleaved_times, machine_state, paired_ratio  # noqa: E402

from lit_xai.data import DigitsDataModule  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402
from lit_xai.pathways import intgrad_contributions, jaccard, select_pathway  # noqa: E402
from lit_xai.pathways.contributions import INTGRAD_RULE, INTGRAD_STEPS  # noqa: E402
from lit_xai.pathways.neurons import flatten_neurons  # noqa: E402

DEFAULT = (INTGRAD_RULE, INTGRAD_STEPS)  # the library's default: the ratio column's reference
CANDIDATES = [
    ("closed", 11),  # lit_xai's former default
    ("reference", 11),  # the authors' published code (α up to 5.5)
    *[("midpoint", s) for s in (2, 3, 4, 5, 6, 8, 11)],
    *[("gausslegendre", s) for s in (2, 3, 4, 5, 8)],
    *[("trapezoid", s) for s in (3, 5, 11)],
]


def trained_model(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor]:
    """The backbone (trained ``--epochs`` on the digits training split, Adam 1e-3, seed 0) and validation images."""
    data = DigitsDataModule(batch_size=64, image_size=32, seed=0)
    data.setup()
    torch.manual_seed(0)
    model = build_backbone(args.backbone, num_classes=10, in_chans=1)
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    else:
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(args.epochs):
            for batch in data.train_dataloader():
                optimiser.zero_grad()
                F.cross_entropy(model(batch["image"]), batch["label"]).backward()
                optimiser.step()
    model.eval()
    images = torch.cat([b["image"] for b in data.val_dataloader()])[: args.images]
    return model, images


def relative_errors(got: list[torch.Tensor], ref: list[torch.Tensor]) -> tuple[float, float]:
    """(network-wide relative L1 error, mean over images; the largest per-layer relative L1 error)."""
    flat, flat_ref = flatten_neurons(got), flatten_neurons(ref)
    total = ((flat - flat_ref).abs().sum(1) / flat_ref.abs().sum(1)).mean()
    per_layer = [float((g - r).abs().sum() / r.abs().sum().clamp_min(1e-30)) for g, r in zip(got, ref, strict=True)]
    return float(total), max(per_layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet8")
    parser.add_argument("--weights", default=None, help="a state_dict for the backbone (else: train --epochs)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--reference_steps", type=int, default=256)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, images = trained_model(args)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        target = model(images).argmax(1)
    print(f"trained; reference integral of {images.shape[0]} images ...", flush=True)
    ref = intgrad_contributions(model, images, target, "bench", steps=args.reference_steps, max_batch=256)
    ref_path = select_pathway(ref.contributions, args.sparsity)
    print(f"{args.backbone}, {images.shape[0]} validation digits, reference: {args.reference_steps}-point midpoint; "
          f"κ = {args.sparsity}; {torch.get_num_threads()} thread(s), {args.repeats} interleaved rounds; "
          f"{machine_state()}", flush=True)
    cases = {
        f"{rule} {steps}": (lambda r=rule, s=steps: intgrad_contributions(model, images, target, "bench", steps=s,
                                                                          rule=r))
        for rule, steps in CANDIDATES
    }
    times = interleaved_times(cases, args.repeats)
    default = f"{DEFAULT[0]} {DEFAULT[1]}"
    print(f"| rule | S | rel. L1 error | worst layer | pathway Jaccard | passes | seconds | / {default} [IQR] |")
    print("|---|---|---|---|---|---|---|---|")
    for rule, steps in CANDIDATES:
        key = f"{rule} {steps}"
        got = cases[key]()
        error, worst = relative_errors(got.contributions, ref.contributions)
        overlap = float(jaccard(select_pathway(got.contributions, args.sparsity), ref_path).mean())
        print(f"| {rule} | {steps} | {error:.3f} | {worst:.3f} | {overlap:.3f} | {steps} | "
              f"{statistics.median(times[key]):.2f} | {paired_ratio(times[key], times[default])} |", flush=True)


if __name__ == "__main__":
    main()
