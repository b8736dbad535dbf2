"""DeepLIFT RevealCancel next to DeepLIFT Rescale (ours and Captum's) and the pass floor, on the shared harness.

Floor: RevealCancel runs one forward + input-gradient backward of the rows ``[x; x̄; x̄+Δ⁺; x̄+Δ⁻]``, i.e. 4 ×
``fb_input`` (one forward + ``torch.autograd.grad`` w.r.t. the input, parameters frozen); Rescale runs ``[x; x̄]``,
2 × ``fb_input``. Ratios are per-round pairs of one interleaved run (median [inter-quartile range]).

    .venv/bin/python benchmarks/bench_reveal_cancel.py                      # timm/resnet18, batch 16 of 32², 1 thread
    .venv/bin/python benchmarks/bench_reveal_cancel.py --model resnet8 --rounds 7
    .venv/bin/python benchmarks/bench_reveal_cancel.py --model resnet8 --against d3c27c5~1   # before/after, paired

``--against REV`` adds RevealCancel as of git revision ``REV`` (its lit_xai/attribution/deeplift.py behind the model
guard of its base.py) to the same interleaved run: its ratio to the floor, and today's code over it.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import input_gradient_floor, interleaved_times, machine_state, paired_ratio  # noqa: E402
from benchmarks.revision import call_at, load_module_at  # noqa: E402
from lit_xai.attribution import build_method  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="timm/resnet18", help="Captum needs each ReLU module called once")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=None, help="pairs per pass (default: the memory budget)")
    parser.add_argument("--against", default=None, help="also time RevealCancel as of this git revision")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = build_backbone(args.model, num_classes=10).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    t = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(2))
    rescale = build_method("deeplift", max_batch=args.max_batch)
    reveal = build_method("deeplift", rule="reveal_cancel", max_batch=args.max_batch)
    cases = {
        "fb_input": input_gradient_floor(model, x, t),
        "rescale": lambda: rescale(model, x, t),
        "reveal_cancel": lambda: reveal(model, x, t),
    }
    if args.against:
        before = load_module_at(args.against, "lit_xai/attribution/deeplift.py").DeepLift(
            rule="reveal_cancel", max_batch=args.max_batch)
        cases["reveal_cancel before"] = lambda: call_at(args.against, before, model, x, t)
    if args.model.startswith("timm/"):
        from captum.attr import DeepLift

        cases["captum rescale"] = lambda: DeepLift(model).attribute(x, 0.0 * x, target=t)
    times = interleaved_times(cases, args.rounds)
    print(f"== {args.model}, batch {args.batch} of {args.size}², {args.threads} thread(s), {args.rounds} rounds; "
          f"{machine_state()}")
    print(f"reveal_cancel / (4 × fb_input): {paired_ratio(times['reveal_cancel'], times['fb_input'], 4)}")
    print(f"rescale / (2 × fb_input):       {paired_ratio(times['rescale'], times['fb_input'], 2)}")
    print(f"reveal_cancel / rescale:        {paired_ratio(times['reveal_cancel'], times['rescale'])}")
    if args.against:
        print(f"before ({args.against}) / (4 × fb_input): "
              f"{paired_ratio(times['reveal_cancel before'], times['fb_input'], 4)}")
        print(f"reveal_cancel / before:         {paired_ratio(times['reveal_cancel'], times['reveal_cancel before'])}")
    if "captum rescale" in times:
        print(f"reveal_cancel / captum rescale: {paired_ratio(times['reveal_cancel'], times['captum rescale'])}")


if __name__ == "__main__":
    main()
