"""Perturbation metrics vs their forward-pass floor, side by side with Quantus 0.6 (CPU).

The floor of a perturbation metric is the forward passes its protocol needs: (images × steps) inputs, evaluated in
batches of the metric's chunk size on ready-made inputs. The metrics' default chunk is the batch size (one forward
per step, as Quantus does); ``--chunk`` sets another one for ours and for the floor. Reported per metric: our time /
floor, Quantus time / the same floor, and Quantus / ours. Runs are interleaved and repeated; medians are reported.

    .venv/bin/python benchmarks/bench_metrics.py                      # resnet8 32×32 and timm resnet18 224×224
    .venv/bin/python benchmarks/bench_metrics.py --models resnet8 --repeats 5

Quantus ranks C×H×W features; its ``features_in_step`` is 3·H·W/48 so that it evaluates 48 steps, as ours
(``num_steps=48``, plus the unperturbed step). Quantus' Sensitivity-N is its sequential variant (sets along the
attribution order, one forward per step and image), a different protocol with the same number of forwards; its
ratio is given for scale.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import quantus
import torch

from lit_xai.metrics import Deletion, Insertion, PixelPerturbation, SensitivityN
from lit_xai.models.backbones import build_backbone

np.trapz = getattr(np, "trapz", np.trapezoid)  # Quantus 0.6 calls numpy.trapz (gone in NumPy 2): benchmark-only shim

STEPS = 48  # 3·H·W / 48 divides H·W for 32² and 224², as Quantus' features_in_step must
SETTINGS = {  # model: (image size, batch, sensitivity sizes × masks = STEPS)
    "resnet8": (32, 16, (6, 8)),
    "timm/resnet18": (224, 2, (6, 8)),
}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _floor(model: torch.nn.Module, inputs: torch.Tensor, forwards: int, chunk: int) -> Callable[[], None]:
    """``forwards`` model evaluations in batches of ``chunk`` on prepared inputs (the protocol's bare cost)."""
    batch = inputs[torch.arange(chunk) % inputs.shape[0]].contiguous()

    def run() -> None:
        with torch.no_grad():
            done = 0
            while done < forwards:
                size = min(chunk, forwards - done)
                model(batch[:size])
                done += size

    return run


def bench_model(
    name: str, repeats: int, threads: int, batch_override: int | None = None, chunk: int | None = None
) -> None:
    """Time every metric on one model, interleaved with its floor and Quantus; print one table."""
    size, batch, (num_n, num_masks) = SETTINGS[name]
    steps = STEPS
    batch = batch_override or batch
    torch.manual_seed(0)
    model = build_backbone(name, num_classes=10, in_chans=3).eval()
    inputs = torch.randn(batch, 3, size, size)
    target = torch.randint(0, 10, (batch,))
    maps = torch.randn(batch, 1, size, size)
    pixels = size * size
    x_np, y_np, a_np = inputs.numpy(), target.numpy(), maps.expand(-1, 3, -1, -1).numpy().copy()
    k = steps + 1  # our curves include the unperturbed step

    def ours(metric_factory: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            metric = metric_factory()
            metric.update(model, inputs, target, maps)  # type: ignore[attr-defined]

        return run

    quantus_pf = quantus.PixelFlipping(
        features_in_step=3 * pixels // steps, perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True
    )
    quantus_sn = quantus.SensitivityN(
        features_in_step=3 * pixels // steps, n_max_percentage=1.0, perturb_baseline=0.0,
        normalise=False, abs=False, disable_warnings=True, return_aggregate=False,
    )
    cases = {
        "MoRF (pixel flipping)": (
            ours(lambda: PixelPerturbation("morf", num_steps=steps, max_batch=chunk)),
            lambda: quantus_pf(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, device="cpu", batch_size=batch),
            batch * k,
        ),
        "Deletion": (ours(lambda: Deletion(baseline="zero", num_steps=steps, max_batch=chunk)), None, batch * k),
        "Insertion (blur canvas)": (
            ours(lambda: Insertion(num_steps=steps, max_batch=chunk)), None, batch * k
        ),
        "Sensitivity-N": (
            ours(lambda: SensitivityN(num_n=num_n, num_masks=num_masks, max_fraction=0.5, max_batch=chunk)),
            lambda: quantus_sn(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, device="cpu", batch_size=batch),
            None,
        ),
    }
    print(f"\n== {name} {size}×{size}, batch {batch}, chunk {chunk or batch}, {threads} thread(s), "
          f"median of {repeats} ==")
    print(f"{'metric':<26}{'forwards':>9}{'floor s':>9}{'ours s':>9}{'ours/floor':>11}{'quantus s':>11}"
          f"{'quantus/floor':>14}{'quantus/ours':>13}")
    for label, (run_ours, run_quantus, forwards) in cases.items():
        if forwards is None:  # Sensitivity-N: sizes actually drawn × masks × images (+ the clean pass)
            probe = SensitivityN(num_n=num_n, num_masks=num_masks, max_fraction=0.5, max_batch=chunk)
            probe.prepare(model, (size, size))
            forwards = batch * (probe.curve_axis().numel() * num_masks + 1)
        floor = _floor(model, inputs, forwards, chunk or batch)
        run_ours()  # warm-up
        times: dict[str, list[float]] = {"floor": [], "ours": [], "quantus": []}
        for _ in range(repeats):  # interleaved
            times["floor"].append(_timed(floor))
            times["ours"].append(_timed(run_ours))
            if run_quantus is not None:
                times["quantus"].append(_timed(run_quantus))
        med = {key: statistics.median(v) if v else float("nan") for key, v in times.items()}
        ratio_ours, ratio_quantus = med["ours"] / med["floor"], med["quantus"] / med["floor"]
        print(f"{label:<26}{forwards:>9}{med['floor']:>9.2f}{med['ours']:>9.2f}{ratio_ours:>11.2f}"
              f"{med['quantus']:>11.2f}{ratio_quantus:>14.2f}{med['quantus'] / med['ours']:>13.2f}")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None, help="override the images per batch of every model")
    parser.add_argument("--chunk", type=int, default=None, help="our metrics' max_batch (default: memory budget)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    for name in args.models:
        bench_model(name, args.repeats, args.threads, args.batch, args.chunk)

if __name__ == "__main__":
    main()
