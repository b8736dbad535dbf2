"""Which rows-per-forward is fastest for batched attribution passes and metrics, and where the budget rule lands.

Methods: for each model, a fixed number of rows (e.g. IG steps × images) are pushed through forward +
input-gradient backward with frozen parameters, in chunks of each candidate size; times are interleaved
(benchmarks/harness.py) and reported as paired ratios to the fastest chunk. The last line gives the chunk that
:func:`lit_xai.attribution.batching.rows_per_chunk` chooses by default, so the default can be checked against the
optimum on the machine at hand.

Metrics (``--metrics``): a whole ``update`` of Deletion or Sensitivity-N (gradient-free forwards of the perturbed
rows) with each candidate ``max_batch``, with ``max_batch=None`` (the same budget rule) and with the batch size (the
metrics' former default), as paired ratios to the fastest candidate. ``--memory`` adds the peak RSS above the
resting RSS of one Deletion update on torchvision ResNet-18 224², batches 4 and 32, default vs the former chunk (the
batch), each in a fresh process.

    .venv/bin/python benchmarks/bench_chunks.py                        # methods: digits CNN, ResNet-8, ResNet-18
    .venv/bin/python benchmarks/bench_chunks.py --models resnet8 --rounds 5
    .venv/bin/python benchmarks/bench_chunks.py --models --metrics deletion_digits_cnn sensitivity_n_resnet8
    .venv/bin/python benchmarks/bench_chunks.py --models --metrics --memory   # every metric row, then memory
    .venv/bin/python benchmarks/bench_chunks.py --models --neuron-intgrad digits_cnn resnet8   # α rows per pass
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import interleaved_times, paired_ratio  # noqa: E402

from lit_xai.attribution.batching import activation_bytes_per_row, rows_per_chunk  # noqa: E402
from lit_xai.metrics import Deletion, SensitivityN  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[1])

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


#: metric rows: (metric, setup of SETUPS, batch, metric arguments giving rows = steps × batch, candidate chunks)
METRIC_SETUPS = {
    "deletion_digits_cnn": ("deletion", "digits_cnn", 8, {"num_steps": 63}, (8, 32, 64, 128, 256, 512)),
    "deletion_resnet8": ("deletion", "resnet8", 8, {"num_steps": 31}, (4, 8, 16, 32, 64, 128, 256)),
    "deletion_resnet18": ("deletion", "resnet18", 4, {"num_steps": 7}, (1, 2, 4, 8)),
    "sensitivity_n_digits_cnn": ("sensitivity_n", "digits_cnn", 8, {"num_n": 4, "num_masks": 16},
                                 (8, 32, 64, 128, 256, 512)),
    "sensitivity_n_resnet8": ("sensitivity_n", "resnet8", 8, {"num_n": 4, "num_masks": 8},
                              (4, 8, 16, 32, 64, 128, 256)),
}


def metric(kind: str, max_batch: int | None, kwargs: dict) -> Deletion | SensitivityN:
    """Deletion to the dataset mean (``zero``: no data normalisation needed) or Sensitivity-N, with ``max_batch``."""
    if kind == "deletion":
        return Deletion(baseline="zero", max_batch=max_batch, **kwargs)
    return SensitivityN(max_fraction=0.5, max_batch=max_batch, **kwargs)


def bench_metric(name: str, rounds: int) -> None:
    kind, setup, batch, kwargs, chunks = METRIC_SETUPS[name]
    backbone, in_chans, size, _, _ = SETUPS[setup]
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=10, in_chans=in_chans).eval()
    x, maps = torch.randn(batch, in_chans, size, size), torch.randn(batch, 1, size, size)
    target = torch.zeros(batch, dtype=torch.long)
    default = rows_per_chunk(model, x)
    candidates = sorted({*chunks, default, batch})  # the rule's and the former default's chunks measured once

    def run(max_batch: int):
        return lambda: metric(kind, max_batch, kwargs).update(model, x, target, maps)

    probe = metric(kind, None, kwargs)
    probe.update(model, x, target, maps)
    rows = probe.curve_axis().numel() * batch * (probe.num_masks if kind == "sensitivity_n" else 1)
    times = interleaved_times({c: run(c) for c in candidates}, rounds=rounds)
    # fastest: the lowest median over rounds of the time relative to the round's median case (load drifts between
    # rounds, rarely within one), then paired ratios to it
    per_round = [statistics.median(times[c][r] for c in candidates) for r in range(rounds)]
    best = min(candidates, key=lambda c: statistics.median(t / m for t, m in zip(times[c], per_round)))
    print(f"\n== {kind} {backbone} {size}², batch {batch}, {rows} rows, {torch.get_num_threads()} thread(s), "
          f"{rounds} rounds; load {open('/proc/loadavg').read().split()[0]}", flush=True)
    for c in candidates:
        role = " ".join(r for r, v in (("← budget rule (default)", default), ("← former default (batch)", batch))
                        if v == c)
        print(f"chunk {c:4d}: {statistics.median(times[c]) / rows * 1e3:8.3f} ms/row   / fastest ({best}) "
              f"{paired_ratio(times[c], times[best])} {role}", flush=True)


MEMORY_CHILD = """
import re, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from lit_xai.metrics import Deletion
from lit_xai.models.backbones import build_backbone
torch.manual_seed(0)
model = build_backbone('torchvision/resnet18', num_classes=10, in_chans=3).eval()
x, maps = torch.randn({batch}, 3, 224, 224), torch.randn({batch}, 1, 224, 224)
target = torch.zeros({batch}, dtype=torch.long)
def status(key):
    return int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))
resting = status('VmRSS')
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak RSS (VmHWM) to the current RSS
Deletion(baseline='zero', num_steps=1, max_batch={max_batch}).update(model, x, target, maps)
print((status('VmHWM') - resting) / 1024)
"""


def bench_memory(batches: tuple[int, ...] = (4, 32)) -> None:
    """Peak RSS above the resting RSS during one Deletion update on torchvision ResNet-18 224², each in a fresh
    process. Not the harness' ``peak_memory_growth``: that reads the lifetime peak, which the setup's own peak
    (import, model construction) hides at batch 4 (it reported 0.0 MiB for both); here the peak is reset right before
    the update (``/proc/self/clear_refs``). ``num_steps=1``: 2 × batch rows, enough for the per-chunk peak."""
    print("\n== peak RSS above resting during Deletion.update, torchvision ResNet-18 224², fresh processes", flush=True)
    for batch in batches:
        for label, max_batch in (("default max_batch=None", None), ("former default (the batch)", batch)):
            code = MEMORY_CHILD.format(root=ROOT, batch=batch, max_batch=max_batch)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            print(f"batch {batch:3d}, {label:>26}: {float(out.strip().splitlines()[-1]):7.1f} MiB", flush=True)


#: NeuronIntGrad rows: (setup of SETUPS, batch, candidate max_batch values); the reference is the former fixed 64
NEURON_INTGRAD_SETUPS = {
    "digits_cnn": ("digits_cnn", 64, (32, 64, 128, 256)),
    "resnet8": ("resnet8", 32, (18, 64, 128)),
}


def bench_neuron_intgrad(name: str, rounds: int) -> None:
    """NeuronIntGrad (S = 5 midpoint α, prefix replayed) at its default ``max_batch=None`` and at fixed chunks, as
    paired ratios to the former fixed 64 (α, image) rows per pass."""
    from lit_xai.attribution import build_method

    setup, batch, chunks = NEURON_INTGRAD_SETUPS[name]
    backbone, in_chans, size, _, _ = SETUPS[setup]
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=10, in_chans=in_chans).eval()
    x, target = torch.randn(batch, in_chans, size, size), torch.randint(0, 10, (batch,))
    default = rows_per_chunk(model, x)
    cases = {f"max_batch={c}": (lambda c=c: build_method("neuron_intgrad", max_batch=c)(model, x, target))
             for c in chunks}
    cases[f"default ({default} rows)"] = lambda: build_method("neuron_intgrad")(model, x, target)
    times = interleaved_times(cases, rounds=rounds)
    print(f"\n== neuron_intgrad {backbone} {size}², batch {batch}, {torch.get_num_threads()} thread(s), "
          f"{rounds} rounds; load {open('/proc/loadavg').read().split()[0]}", flush=True)
    for label in cases:
        print(f"{label:>22}: {statistics.median(times[label]):7.2f} s   / max_batch=64 "
              f"{paired_ratio(times[label], times['max_batch=64'])}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--metrics", nargs="*", default=[], choices=list(METRIC_SETUPS),
                        help="metric rows (no names: all of them)")
    parser.add_argument("--memory", action="store_true", help="Deletion peak memory at ResNet-18 224², batches 4, 32")
    parser.add_argument("--neuron-intgrad", nargs="*", default=[], choices=list(NEURON_INTGRAD_SETUPS),
                        help="NeuronIntGrad's default chunk against fixed ones (the former 64 rows the reference)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        bench(name, args.rounds)
    metric_rows = args.metrics or (list(METRIC_SETUPS) if "--metrics" in sys.argv else [])
    for name in metric_rows:
        bench_metric(name, args.rounds)
    for name in args.neuron_intgrad:
        bench_neuron_intgrad(name, args.rounds)
    if args.memory:
        bench_memory()


if __name__ == "__main__":
    main()
