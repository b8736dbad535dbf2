"""LRP (every composite) and PrunePGD_50* against their pass floors and their peers (issue 15): paired ratios.

The pass floor of a method is the forward/backward work its rules cannot avoid, built from two measured units on the
same batch: ``fb`` = one forward + input-gradient backward with frozen parameters and ``f`` = one gradient-free
forward (benchmarks/harness.py). LRP keeps every layer's input and output from its one forward, so (docs/protocols.md)

- ``epsilon``: ``fb`` (each rule is the layer's own transposed pass);
- ``epsilon_plus_flat``, ``epsilon_plus``: ``fb + f`` (z⁺ on a ReLU output: one forward with ``W⁺`` per conv, whose
  transposed pass replaces the layer's own; ``f`` also counts BatchNorm/ReLU/pooling, so it is an upper bound);
- ``epsilon_alpha2_beta1_flat``, ``epsilon_gamma_box``: ``2·fb + f`` (two modified forwards and two transposed
  passes per conv: ``W⁺``/``W⁻`` for αβ, ``W + γW⁺``/``W + γW⁻`` for γ).

PrunePGD_50*: ``steps × fb`` (its first step's forward also gives the keep mask). Every case runs interleaved with the
floors (warm-up on every side, rotated order); ratios are per round, median [inter-quartile range]. LRP is timed warm
(one method object, its modified weights kept between calls: the evaluation-loop case) and cold (a new object per
call: every modified weight formed again); the peer is zennit's composite with ``SequentialMergeBatchNorm``.
"former" is PrunePGD_50* with its mask from a separate forward (steps + 1 forwards), as before.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pass_floors.py          # timm/resnet18, 8 × 32², 1 thread
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pass_floors.py --only lrp --rounds 9
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pass_floors.py --only lrp --against e764972~1  # before/after

``--against REV`` adds each LRP composite as of git revision ``REV`` (its lit_xai/attribution/lrp.py behind the model
guard of its base.py, warm) to the same interleaved run: its ratio to the floor, and today's code over it.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Row, forward_floor, input_gradient_floor, interleaved_times, markdown_table, paired_ratio  # noqa: E402
from revision import call_at, load_module_at  # noqa: E402

from lit_xai.attribution import build_method  # noqa: E402
from lit_xai.attribution.activations import forward_with_activations  # noqa: E402
from lit_xai.attribution.base import target_scores  # noqa: E402
from lit_xai.attribution.pruning import PrunePGD  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402

#: composite → (floor in units of (fb, f), zennit composite class name)
LRP_FLOORS = {
    "epsilon": ((1, 0), None),
    "epsilon_plus_flat": ((1, 1), "EpsilonPlusFlat"),
    "epsilon_plus": ((1, 1), "EpsilonPlus"),
    "epsilon_alpha2_beta1_flat": ((2, 1), "EpsilonAlpha2Beta1Flat"),
    "epsilon_gamma_box": ((2, 1), "EpsilonGammaBox"),
}
TARGET = 1.2  # issue 15: within 1.2× of the pass floor


class SeparateMaskPGD(PrunePGD):
    """The former PrunePGD_50*: the keep mask from a gradient-free forward of its own."""

    def prune(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor | None) -> tuple:
        with torch.no_grad():
            logits, activations = forward_with_activations(model, inputs, "prune_pgd_dead")
        return [a > 0 for a in activations], target_scores(logits, target)[1]


def zennit_call(model: torch.nn.Module, name: str, classes: int,
                **kwargs: float) -> Callable[[torch.Tensor, torch.Tensor], object]:
    """zennit's composite ``name`` with its generic BatchNorm canonizer, relevance y_t at the target."""
    from zennit import composites
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm

    def run(x: torch.Tensor, t: torch.Tensor) -> object:
        composite = getattr(composites, name)(canonizers=[SequentialMergeBatchNorm()], **kwargs)
        onehot = torch.nn.functional.one_hot(t, classes).to(x)
        with Gradient(model, composite) as attributor:
            return attributor(x, lambda out: onehot * out)[1]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="timm/resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="PrunePGD_50* steps (seed 000 §4.8: 20)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=["lrp", "pgd"], help="lrp and/or pgd")
    parser.add_argument("--against", default=None, help="also time LRP as of this git revision")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = build_backbone(args.model, num_classes=10).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    t = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(2))
    fb, f = input_gradient_floor(model, x, t), forward_floor(model, x)

    def floor(n_fb: int, n_f: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n_f):
                f()
            for _ in range(n_fb):
                fb()
        return run

    cases: dict[str, Callable[[], object]] = {}
    rows: list[tuple[str, str, str, float | None]] = []  # (setting, case, reference case, target)
    if "lrp" in args.only:
        for units in sorted({u for u, _ in LRP_FLOORS.values()}):
            cases[f"floor {units[0]}·fb + {units[1]}·f"] = floor(*units)
        for composite, (units, peer) in LRP_FLOORS.items():
            kwargs = {"low": -3.0, "high": 3.0} if composite == "epsilon_gamma_box" else {}
            warm = build_method("lrp", composite=composite, **kwargs)
            cases[f"lrp {composite}"] = lambda warm=warm: warm(model, x, t)
            cases[f"lrp {composite} cold"] = lambda c=composite, k=kwargs: build_method("lrp", composite=c, **k)(
                model, x, t)
            reference = f"floor {units[0]}·fb + {units[1]}·f"
            rows += [(composite, f"lrp {composite}", reference, TARGET),
                     (composite, f"lrp {composite} cold", reference, None)]
            if args.against:
                before = load_module_at(args.against, "lit_xai/attribution/lrp.py").LRP(composite=composite, **kwargs)
                cases[f"lrp {composite} before"] = lambda before=before: call_at(args.against, before, model, x, t)
                rows += [(composite, f"lrp {composite} before", reference, None),
                         (composite, f"lrp {composite}", f"lrp {composite} before", None)]
            if peer is not None:
                zennit = zennit_call(model, peer, 10, **kwargs)
                cases[f"zennit {peer}"] = lambda zennit=zennit: zennit(x, t)
                rows += [(composite, f"lrp {composite}", f"zennit {peer}", 1.0),
                         (composite, f"zennit {peer}", reference, None)]
    if "pgd" in args.only:
        ours, former = build_method("prune_pgd_dead", steps=args.steps), SeparateMaskPGD(sparsity=0.0, steps=args.steps)
        cases[f"floor {args.steps}·fb"] = floor(args.steps, 0)
        cases["prune_pgd_dead"] = lambda: ours(model, x, t)
        cases["prune_pgd_dead former"] = lambda: former(model, x, t)
        rows += [("prune_pgd_dead", "prune_pgd_dead", f"floor {args.steps}·fb", TARGET),
                 ("prune_pgd_dead", "prune_pgd_dead former", f"floor {args.steps}·fb", None),
                 ("prune_pgd_dead", "prune_pgd_dead", "prune_pgd_dead former", None)]
    times = interleaved_times(cases, args.rounds)
    print(f"== {args.model}, batch {args.batch} of {args.size}², {args.threads} thread(s), {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(markdown_table([Row(setting, work, reference, paired_ratio(times[work], times[reference]), target)
                          for setting, work, reference, target in rows]))


if __name__ == "__main__":
    main()
