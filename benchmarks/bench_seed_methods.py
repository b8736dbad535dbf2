"""Cost of the seed methods as a ratio to one forward+backward (∂y/∂x) of the same batch.

    .venv/bin/python benchmarks/bench_seed_methods.py [--backbone resnet8] [--batch 16] [--repeats 5]

Targets (issue 4): PruneGrad ≤ 2.5×, NeuronMCT pathway gradient ≤ 2.5×, DGA with N steps ≤ (N+2)×,
NeuronIntGrad with S α values ≤ (S+1.5)×.
NeuronIntGrad (seed 001 Eq. 4) scales each layer *alone* by α, so it needs L·S suffix forward+backward passes for L
ReLU calls, plus the clean pass and the pathway gradient; ``neuron_intgrad`` computes each layer's prefix once per
image (``share_prefix=True``, the default), ``neuron_intgrad_full`` forwards every (α, image) row through the whole
network (L·S+2 passes; same result). ``neuron_conductance`` (conductance along the input path α·x, not Eq. 4) needs
S + 1 passes and is the variant that meets the (S+1.5)× target.
Timings are interleaved (every repeat runs every method once) and the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lit_xai.attribution import build
from lit_xai.attribution.activations import forward_with_activations
from lit_xai.models.backbones import build_backbone


def forward_backward(model: torch.nn.Module, x: torch.Tensor) -> None:
    """The unit: one forward and one backward to the input (parameters frozen, as in every method)."""
    xg = x.detach().requires_grad_(True)
    logits = model(xg)
    torch.autograd.grad(logits.max(1).values.sum(), xg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet8")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--intgrad_steps", type=int, default=11)
    parser.add_argument("--dga_steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_backbone(args.backbone, num_classes=10, in_chans=3).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(args.batch, 3, args.size, args.size)
    with torch.no_grad():
        relu_calls = len(forward_with_activations(model, x[:1], "bench")[1])
    for p in model.parameters():
        p.requires_grad_(True)

    methods: dict[str, tuple[Callable[[], object], float, str]] = {
        "forward+backward": (lambda: forward_backward(model, x), 1.0, "unit"),
        "gradient": (lambda: build("gradient")(model, x), 1.0, "baseline method"),
        "prune_grad": (lambda: build("prune_grad")(model, x), 2.5, "target ≤ 2.5×"),
        "neuron_mct": (lambda: build("neuron_mct")(model, x), 2.5, "target ≤ 2.5×"),
        "neuron_intgrad_full": (
            lambda: build("neuron_intgrad", steps=args.intgrad_steps, share_prefix=False)(model, x),
            relu_calls * args.intgrad_steps + 2.0,
            f"Eq. 4, whole net per row: {relu_calls} ReLU calls × {args.intgrad_steps} α + 2 passes",
        ),
        "neuron_intgrad": (
            lambda: build("neuron_intgrad", steps=args.intgrad_steps)(model, x),
            relu_calls * args.intgrad_steps + 2.0,
            "Eq. 4, prefix once per image (default); same result",
        ),
        "neuron_conductance": (
            lambda: build("neuron_conductance", steps=args.intgrad_steps)(model, x),
            args.intgrad_steps + 1.5,
            f"input-path conductance (not Eq. 4), target ≤ S+1.5 = {args.intgrad_steps + 1.5}×",
        ),
        "dga": (lambda: build("dga", steps=args.dga_steps)(model, x), args.dga_steps + 2.0,
                f"target ≤ N+2 = {args.dga_steps + 2}×"),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for run, _, _ in methods.values():  # warm-up
        run()
    for _ in range(args.repeats):
        for name, (run, _, _) in methods.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    unit = statistics.median(times["forward+backward"])
    print(f"{args.backbone}, batch {args.batch} × 3×{args.size}², {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}; unit (one forward+backward) = {1000 * unit:.1f} ms")
    print(f"{'method':<21}{'median ms':>10}{'ratio':>9}{'bound':>9}  note")
    for name, (_, bound, note) in methods.items():
        ratio = statistics.median(times[name]) / unit
        print(f"{name:<21}{1000 * statistics.median(times[name]):>10.1f}{ratio:>8.2f}×{bound:>8.1f}×  {note}")


if __name__ == "__main__":
    main()
