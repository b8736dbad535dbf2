"""Complexity, faithfulness, robustness and Random Logit metrics next to Quantus 0.6 and their floor (CPU).

Setting: the digits CNN on 1×32×32 inputs (Quantus' ROAD and IROF work on 1-channel images only), a batch of
``--batch`` images, the Gradient method. For every metric: ours / Quantus on the same inputs, maps and settings, and
ours / the floor the protocol needs (benchmarks/harness.py: warm-up, rotated interleaving, paired per-round ratios):

- perturbation metrics: their perturbed images pushed through gradient-free forwards in batches of the metric's
  chunk (the batch size), on prepared inputs;
- robustness and Random Logit: their method calls on prepared inputs (the Gradient method; ``input_gradient_floor``
  of the harness, its bare forward + input gradient, is printed once for scale);
- Sparseness/Complexity need no model call: ours / Quantus only, on 256 maps (a batch of 8 small maps times only
  call overheads).

Monotonicity: Quantus is run with a perturb_func that inserts the input's values (Arya's protocol, which ours
follows); Quantus' shipped one never inserts them, so its forwards see constant images.

Targets: ours ≤ Quantus (ratio ≤ 1) and ours ≤ 1.1 × floor. ROAD's floor counts its forwards only; the imputation's
linear solve (conjugate gradients, one 3×3 convolution per iteration) and IROF's SLIC (scikit-image, CPU) come on top
and are part of the protocol, so their floor rows are reported without a target.

    .venv/bin/python benchmarks/bench_metric_families.py
    .venv/bin/python benchmarks/bench_metric_families.py --rounds 5 --batch 16
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import quantus  # noqa: E402
from harness import Row, input_gradient_floor, interleaved_times, markdown_table, paired_ratio  # noqa: E402

from lit_xai.attribution import build  # noqa: E402
from lit_xai.metrics.complexity import Complexity, Sparseness  # noqa: E402
from lit_xai.metrics.faithfulness import (  # noqa: E402
    IROF,
    ROAD,
    FaithfulnessCorrelation,
    Infidelity,
    Monotonicity,
    MonotonicityCorrelation,
)
from lit_xai.metrics.random_logit import RandomLogit  # noqa: E402
from lit_xai.metrics.robustness import AvgSensitivity, LocalLipschitzEstimate, MaxSensitivity  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402

np.trapz = getattr(np, "trapz", np.trapezoid)  # Quantus 0.6 calls numpy.trapz (gone in NumPy 2): benchmark-only shim

SIZE, CLASSES = 32, 10
RUNS, SUBSET = 20, 64  # Faithfulness Correlation
MONO_STEP = 16  # Monotonicity: 1024 / 16 = 64 steps
CORR_STEP, CORR_SAMPLES = 64, 5  # Monotonicity Correlation: 16 steps × 5 draws
PERCENTAGES = tuple(range(5, 100, 10))  # ROAD: 10 levels
SAMPLES = 10  # robustness


def forward_floor(model: torch.nn.Module, inputs: torch.Tensor, rows: int, chunk: int) -> Callable[[], None]:
    """``rows`` gradient-free forwards in batches of ``chunk`` on prepared inputs."""
    batch = inputs[torch.arange(chunk) % inputs.shape[0]].contiguous()

    def run() -> None:
        with torch.no_grad():
            for start in range(0, rows, chunk):
                model(batch[: min(chunk, rows - start)])

    return run


def method_floor(method: Callable, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                 calls: int) -> Callable[[], None]:
    """``calls`` calls of the method on the (prepared) batch: what a metric that re-runs the method needs."""
    def run() -> None:
        for _ in range(calls):
            method(model, inputs, target)

    return run


def arya_insertion(x_flat: np.ndarray) -> Callable[..., np.ndarray]:
    """A Quantus perturb_func that puts the input's values back (AIX360's ``x_copy[ind] = x[ind]``): Quantus' own
    re-fills its baseline image with the baseline, so its forwards see constant images (cheaper max-pooling on CPU)."""
    def perturb(arr: np.ndarray, indices: np.ndarray, **kwargs: object) -> np.ndarray:
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = x_flat[rows, indices]
        return out
    return perturb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = args.batch

    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=CLASSES, in_chans=1).eval()
    inputs = torch.randn(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    target = model(inputs).argmax(1)
    gradient = build("gradient")
    maps = gradient(model, inputs, target).detach()

    def quantus_explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object):  # noqa: ANN202
        return gradient(model, torch.as_tensor(inputs), torch.as_tensor(targets)).detach().numpy()

    common = {"model": model, "x_batch": inputs.numpy(), "y_batch": target.numpy(), "a_batch": maps.numpy(),
              "device": "cpu", "batch_size": batch}
    quiet = {"disable_warnings": True}

    many = torch.randn(256, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))  # map-only metrics
    many_np = {"model": None, "x_batch": many.numpy(), "y_batch": np.zeros(256, dtype=int), "a_batch": many.numpy(),
               "batch_size": 256}

    def map_only(metric: Callable[[], object]) -> Callable[[], None]:
        return lambda: metric().update(model, many, torch.zeros(256, dtype=torch.long), many)  # type: ignore[attr-defined]

    def ours(metric: Callable[[], object], method: bool = False) -> Callable[[], None]:
        def run() -> None:
            metric().update(model, inputs, target, maps, method=gradient if method else None)  # type: ignore[attr-defined]
        return run

    def peer(metric: object, explain: bool = False) -> Callable[[], None]:
        extra = {"explain_func": quantus_explain} if explain else {}
        return lambda: metric(**common, **extra)  # type: ignore[operator]

    features = SIZE * SIZE
    cases: dict[str, tuple[Callable[[], None], Callable[[], None], Callable[[], None] | None, bool]] = {
        "Sparseness (256 maps 3×32²)": (map_only(Sparseness),
                                        lambda: quantus.Sparseness(**quiet)(**many_np), None, True),
        "Complexity (256 maps 3×32²)": (map_only(Complexity),
                                        lambda: quantus.Complexity(**quiet)(**many_np), None, True),
        "Faithfulness Correlation": (
            ours(lambda: FaithfulnessCorrelation(num_runs=RUNS, subset_size=SUBSET)),
            peer(quantus.FaithfulnessCorrelation(nr_runs=RUNS, subset_size=SUBSET, return_aggregate=False, **quiet)),
            forward_floor(model, inputs, (RUNS + 1) * batch, batch), True),
        "Monotonicity (Arya)": (
            ours(lambda: Monotonicity(features_in_step=MONO_STEP)),
            peer(quantus.Monotonicity(features_in_step=MONO_STEP,
                                      perturb_func=arya_insertion(inputs.flatten(1).numpy()), **quiet)),
            forward_floor(model, inputs, features // MONO_STEP * batch, batch), True),
        "Monotonicity Correlation": (
            ours(lambda: MonotonicityCorrelation(features_in_step=CORR_STEP, num_samples=CORR_SAMPLES)),
            peer(quantus.MonotonicityCorrelation(features_in_step=CORR_STEP, nr_samples=CORR_SAMPLES, **quiet)),
            forward_floor(model, inputs, (features // CORR_STEP * CORR_SAMPLES + 1) * batch, batch), True),
        "Infidelity (4×4 patches)": (
            ours(Infidelity),
            peer(quantus.Infidelity(perturb_patch_sizes=[4], n_perturb_samples=1, **quiet)),
            forward_floor(model, inputs, (features // 16 + 1) * batch, batch), True),
        "ROAD (10 levels)": (
            ours(lambda: ROAD(percentages=PERCENTAGES)),
            peer(quantus.ROAD(percentages=list(PERCENTAGES), **quiet)),
            forward_floor(model, inputs, len(PERCENTAGES) * batch, batch), False),
        "IROF (SLIC)": (
            ours(lambda: IROF(baseline=0.0)), peer(quantus.IROF(perturb_baseline=0.0, **quiet)),
            None, True),
        "Max-Sensitivity": (
            ours(lambda: MaxSensitivity(num_samples=SAMPLES), method=True),
            peer(quantus.MaxSensitivity(nr_samples=SAMPLES, **quiet), explain=True),
            method_floor(gradient, model, inputs, target, SAMPLES), True),
        "Avg-Sensitivity": (
            ours(lambda: AvgSensitivity(num_samples=SAMPLES), method=True),
            peer(quantus.AvgSensitivity(nr_samples=SAMPLES, **quiet), explain=True),
            method_floor(gradient, model, inputs, target, SAMPLES), True),
        "Local Lipschitz": (
            ours(lambda: LocalLipschitzEstimate(num_samples=SAMPLES), method=True),
            peer(quantus.LocalLipschitzEstimate(nr_samples=SAMPLES, **quiet), explain=True),
            method_floor(gradient, model, inputs, target, SAMPLES), True),
        "Random Logit": (
            ours(RandomLogit, method=True), peer(quantus.RandomLogit(num_classes=CLASSES, **quiet), explain=True),
            method_floor(gradient, model, inputs, target, 1), True),
    }
    gradient_times = interleaved_times({"method": method_floor(gradient, model, inputs, target, 1),
                                        "bare": input_gradient_floor(model, inputs, target)}, rounds=args.rounds)
    method_ratio = paired_ratio(gradient_times["method"], gradient_times["bare"])
    print(f"Gradient method / bare forward + input gradient: {method_ratio}")
    rows = []
    for label, (run_ours, run_peer, floor, floor_target) in cases.items():
        timed = {"ours": run_ours, "quantus": run_peer}
        if floor is not None:
            timed["floor"] = floor
        times = interleaved_times(timed, rounds=args.rounds)
        rows.append(Row(label, "ours", "Quantus", paired_ratio(times["ours"], times["quantus"]), target=1.0,
                        extra={"ours_s": float(np.median(times["ours"]))}))
        if floor is not None:
            rows.append(Row(label, "ours", "floor", paired_ratio(times["ours"], times["floor"]),
                            target=1.1 if floor_target else None,
                            note="" if floor_target else "floor = forwards only (solve on top)"))
    print(f"\n== digits CNN 1×{SIZE}×{SIZE}, batch {batch}, {torch.get_num_threads()} thread(s), "
          f"{args.rounds} rounds ==")
    print(markdown_table(rows))
    if any(not math.isfinite(r.ratio.median) for r in rows):
        raise SystemExit("non-finite ratio")


if __name__ == "__main__":
    main()
