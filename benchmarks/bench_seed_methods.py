"""Cost of the seed methods as a ratio to their floor unit: one forward + input-gradient backward of the same batch.

    .venv/bin/python benchmarks/bench_seed_methods.py [--backbone resnet8] [--batch 32] [--rounds 5]
    .venv/bin/python benchmarks/bench_seed_methods.py --only prune_grad neuron_mct --against 4a3a766~1   # before/after

Protocol (``benchmarks/harness.py``): every case warmed up, rounds in rotated order, per-round paired ratios to the
floor pass (parameters frozen), median and inter-quartile range; a row above its target prints MISS.
Targets (issue 4 / seed 000): PruneGrad ≤ 2.5×, NeuronMCT pathway gradient ≤ 2.5× (2 passes each), DGA with N steps
≤ (N+2)×, conductance and NeuronIntGrad with S α values ≤ (S+1.5)×. NeuronIntGrad (seed 001 Eq. 4) scales each
layer *alone* by α, so it needs Σ_l S·suffix_l forward+backward passes for the L ReLU calls (its prefix is replayed
from the clean pass), plus the clean pass and the pathway gradient: the (S+1.5)× target cannot be met by exact Eq. 4
on a network with more than one ReLU layer, and the row says so with MISS. ``neuron_intgrad_full`` forwards every
(α, image) row through the whole network (L·S + 2 passes; same result).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _root_from_argv() -> str:
    """``--root DIR`` (the lit_xai package to import; default this checkout), read before any lit_xai import."""
    return sys.argv[sys.argv.index("--root") + 1] if "--root" in sys.argv else str(ROOT)


sys.path.insert(0, _root_from_argv())

import torch  # noqa: E402
from harness import Row, interleaved_times, machine_state, markdown_table, paired_ratio  # noqa: E402

from lit_xai.attribution import build_method  # noqa: E402
from lit_xai.attribution.activations import forward_with_activations  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402
from lit_xai.pathways.contributions import CONDUCTANCE_STEPS, INTGRAD_STEPS  # noqa: E402


def against(revision: str, alternations: int) -> None:
    """This script run on ``revision``'s lit_xai package (``git archive`` into a temporary directory) and on this
    checkout, in alternating fresh processes: each side's rows are paired to its own floor within its process."""
    argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--against" and sys.argv[i] != "--against"]
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "archive", revision, "lit_xai"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        for _ in range(alternations):
            for label, root in ((f"before ({revision})", old), ("after (this checkout)", str(ROOT))):
                print(f"\n### {label}", flush=True)
                subprocess.run([sys.executable, __file__, *argv, "--root", root], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet8")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dga_steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip_slow", action="store_true", help="leave out the whole-network NeuronIntGrad row")
    parser.add_argument("--only", nargs="+", default=None, help="time only these rows (and the floor)")
    parser.add_argument("--against", default=None, help="before/after: also run on this git revision's lit_xai")
    parser.add_argument("--alternations", type=int, default=2, help="with --against: before/after process pairs")
    parser.add_argument("--root", default=str(ROOT), help="import lit_xai from this directory (set by --against)")
    args = parser.parse_args()
    if args.against:
        against(args.against, args.alternations)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_backbone(args.backbone, num_classes=10, in_chans=3).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    with torch.no_grad():
        target = model(x).argmax(1)
        relu_calls = len(forward_with_activations(model, x[:1], "bench")[1])

    def floor() -> None:
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(model(xg).gather(1, target[:, None]).sum(), xg)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)

    s, n = INTGRAD_STEPS, args.dga_steps
    cases = {  # name: (run, target ratio or None, note)
        "floor": (floor, None, "unit: forward + ∂y/∂x, parameters frozen"),
        "gradient": (lambda: build_method("gradient")(model, x, target), 1.1, "1 pass"),
        "prune_grad": (lambda: build_method("prune_grad")(model, x, target), 2.5, "2 passes; seed 000 target"),
        "neuron_mct": (lambda: build_method("neuron_mct")(model, x, target), 2.5, "2 passes; seed 000 target"),
        "neuron_intgrad": (
            lambda: build_method("neuron_intgrad")(model, x, target), s + 1.5,
            f"Eq. 4, midpoint S = {s}, prefix replayed; {relu_calls} ReLU calls: S·Σ suffixes + 2 passes",
        ),
        "neuron_intgrad_closed11": (
            lambda: build_method("neuron_intgrad", steps=11, rule="closed")(model, x, target), 11 + 1.5,
            "the former default (11 points incl. α = 0)",
        ),
        "neuron_conductance": (
            lambda: build_method("neuron_conductance")(model, x, target), CONDUCTANCE_STEPS + 1.5,
            f"input-path conductance (not Eq. 4), S = {CONDUCTANCE_STEPS}",
        ),
        "dga": (lambda: build_method("dga", steps=n)(model, x, target), n + 2.0, f"N = {n}: N+1 passes"),
    }
    if not args.skip_slow:
        cases["neuron_intgrad_full"] = (
            lambda: build_method("neuron_intgrad", share_prefix=False)(model, x, target), relu_calls * s + 2.0,
            f"Eq. 4, whole net per row: {relu_calls} × {s} + 2 passes",
        )
    if args.only:
        cases = {name: case for name, case in cases.items() if name == "floor" or name in args.only}
    before = machine_state()
    times = interleaved_times({name: run for name, (run, _, _) in cases.items()}, args.rounds)
    setting = f"{args.backbone} b{args.batch} {args.size}² {torch.get_num_threads()}t"
    rows = [
        Row(setting, name, "floor pass", paired_ratio(times[name], times["floor"]), bound, note)
        for name, (_, bound, note) in cases.items()
        if name != "floor"
    ]
    unit_ms = 1000 * sorted(times["floor"])[len(times["floor"]) // 2]
    print(f"{setting}, {args.rounds} rounds (rotated, paired); floor pass median {unit_ms:.1f} ms; lit_xai from "
          f"{args.root}; started {before}, ended {machine_state()}")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
