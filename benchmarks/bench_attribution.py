"""Baseline attribution methods vs Captum, side by side on the CPU: time ratios and IG peak memory.

Figure of merit (environment.md): method time / (passes × one plain forward+backward of the same batch).
Two references are timed, interleaved with the methods:
  - ``fb``: one plain forward + ``.backward()`` of the target scores with the parameters requiring grad (a
    training-style pass, what "one forward+backward" usually means);
  - ``fb_input``: one forward + ``torch.autograd.grad`` w.r.t. the input only (no weight gradients) — the
    physical floor for input-gradient methods.
Each measurement is the median over ``--repeats`` interleaved rounds (the machine is shared: medians, ratios).

IG peak memory is measured honestly for torch: each configuration runs in a fresh subprocess that reports the
growth of its peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over the RSS after the model
and inputs were created and one warm-up forward+backward ran. tracemalloc cannot see torch's allocations.

    .venv/bin/python benchmarks/bench_attribution.py                 # everything (resnet18 224² takes minutes)
    .venv/bin/python benchmarks/bench_attribution.py --models resnet8 --repeats 5
    .venv/bin/python benchmarks/bench_attribution.py --memory-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_xai.attribution import build_method  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402

SETUPS = {
    # name: (backbone, batch, size)
    "resnet8": ("resnet8", 64, 32),
    "resnet18": ("timm/resnet18", 8, 224),
}


def make_setup(name: str, batch: int | None) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    backbone, default_batch, size = SETUPS[name]
    batch = batch or default_batch
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=10).eval()
    inputs = torch.randn(batch, 3, size, size)
    target = torch.randint(0, 10, (batch,))
    return model, inputs, target


def plain_forward_backward(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> None:
    x = inputs.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    model.zero_grad(set_to_none=True)


def input_only_forward_backward(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> None:
    x = inputs.clone().requires_grad_(True)
    torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)


def candidates(model: torch.nn.Module, steps: int, max_batch: int) -> dict[str, tuple[int, Callable]]:
    """name → (number of forward+backward passes the method needs, callable(inputs, target))."""
    from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, LayerGradCam, Saliency

    layer = model.layer4 if hasattr(model, "layer4") else model.layer3
    ours_ig = build_method("integrated_gradients", steps=steps, rule="gausslegendre", max_batch=max_batch)
    ours_ig_default = build_method("integrated_gradients", steps=steps, rule="gausslegendre")
    captum_ig = IntegratedGradients(model)
    return {
        f"IG ours (max_batch={max_batch})": (steps, lambda x, t: ours_ig(model, x, t)),
        "IG ours (default max_batch=256)": (steps, lambda x, t: ours_ig_default(model, x, t)),
        f"IG captum (internal_batch_size={max_batch})": (
            steps,
            lambda x, t: captum_ig.attribute(x, baselines=0.0, target=t, n_steps=steps, method="gausslegendre",
                                             internal_batch_size=max_batch),
        ),
        "Gradient ours": (1, lambda x, t: build_method("gradient")(model, x, t)),
        "Gradient captum": (1, lambda x, t: Saliency(model).attribute(x, target=t, abs=False)),
        "InputXGradient ours": (1, lambda x, t: build_method("input_x_gradient")(model, x, t)),
        "InputXGradient captum": (1, lambda x, t: InputXGradient(model).attribute(x, target=t)),
        "GuidedBackprop ours": (1, lambda x, t: build_method("guided_backprop")(model, x, t)),
        "GuidedBackprop captum": (1, lambda x, t: GuidedBackprop(model).attribute(x, target=t)),
        "GradCAM ours": (1, lambda x, t: build_method("gradcam")(model, x, t)),
        "GradCAM captum": (1, lambda x, t: LayerGradCam(model, layer).attribute(x, target=t,
                                                                               relu_attributions=True)),
    }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_times(name: str, repeats: int, steps: int, max_batch: int, only: list[str] | None,
                batch: int | None) -> None:
    model, inputs, target = make_setup(name, batch)
    methods = candidates(model, steps, max_batch)
    if only:
        methods = {k: v for k, v in methods.items() if any(o.lower() in k.lower() for o in only)}
    references = {
        "fb": lambda: plain_forward_backward(model, inputs, target),
        "fb_input": lambda: input_only_forward_backward(model, inputs, target),
    }
    for fn in references.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in [*references, *methods]}
    for _ in range(repeats):
        for key, fn in references.items():
            times[key].append(timed(fn))
        for key, (_, method) in methods.items():
            times[key].append(timed(lambda method=method: method(inputs, target)))
    fb, fb_input = statistics.median(times["fb"]), statistics.median(times["fb_input"])
    backbone, _, size = SETUPS[name]
    batch = inputs.shape[0]
    print(f"\n== {backbone}, batch {batch} of {size}×{size}, {torch.get_num_threads()} thread(s), "
          f"median of {repeats}: one fb = {fb * 1e3:.1f} ms, one fb_input = {fb_input * 1e3:.1f} ms")
    print(f"{'method':40s} {'time [s]':>9s} {'passes':>6s} {'/ (passes·fb)':>14s} {'/ (passes·fb_input)':>20s}")
    for key, (passes, _) in methods.items():
        t = statistics.median(times[key])
        print(f"{key:40s} {t:9.3f} {passes:6d} {t / (passes * fb):14.2f} {t / (passes * fb_input):20.2f}")
    pairs = [(f"IG ours (max_batch={max_batch})", f"IG captum (internal_batch_size={max_batch})")] + [
        (f"{m} ours", f"{m} captum") for m in ("Gradient", "InputXGradient", "GuidedBackprop", "GradCAM")
    ]
    for ours, theirs in pairs:
        if ours in times and theirs in times:
            ratio = statistics.median(times[ours]) / statistics.median(times[theirs])
            print(f"ratio ours/captum {ours.split(' ')[0]:16s} {ratio:.2f}")


MEMORY_CHILD = """
import json, resource, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from lit_xai.attribution import build_method
from lit_xai.models.backbones import build_backbone
torch.manual_seed(0)
model = build_backbone("resnet8", num_classes=10).eval()
x, t = torch.randn(2, 3, 32, 32), torch.arange(2)
xg = x.clone().requires_grad_(True)
torch.autograd.grad(model(xg).gather(1, t[:, None]).sum(), xg)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if {impl!r} == "ours":
    build_method("integrated_gradients", steps={steps}, max_batch={max_batch})(model, x, t)
else:
    from captum.attr import IntegratedGradients
    IntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps={steps}, method="gausslegendre")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"peak_growth_mib": (after - before) / 1024}}))
"""


def bench_memory(max_batch: int) -> None:
    root = str(Path(__file__).resolve().parents[1])
    print(f"\n== IG peak-RSS growth, resnet8, batch 2 of 32×32 (fresh subprocess each; ours max_batch={max_batch}, "
          "Captum default = all steps in one batch)")
    print(f"{'steps':>6s} {'rows':>6s} {'ours [MiB]':>11s} {'captum [MiB]':>13s}")
    for steps in (8, 32, 128):  # rows = 2·steps
        growth = {}
        for impl in ("ours", "captum"):
            code = MEMORY_CHILD.format(root=root, impl=impl, steps=steps, max_batch=max_batch)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            growth[impl] = json.loads(out.strip().splitlines()[-1])["peak_growth_mib"]
        print(f"{steps:6d} {steps * 2:6d} {growth['ours']:11.1f} {growth['captum']:13.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, help="override the batch size (default: 64 for resnet8, 8 for resnet18)")
    parser.add_argument("--max-batch", type=int, default=640, help="IG internal batch for ours and Captum")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="substrings of method names to time")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.memory_only:
        for name in args.models:
            bench_times(name, args.repeats, args.steps, args.max_batch, args.only, args.batch)
    if not args.no_memory:
        bench_memory(max_batch=16)


if __name__ == "__main__":
    main()
