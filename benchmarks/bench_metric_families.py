"""Complexity, faithfulness, robustness and Random Logit metrics next to Quantus 0.6 and their floor (CPU).

Setting: the digits CNN on 1×32×32 inputs (Quantus' ROAD and IROF work on 1-channel images only), a batch of
``--batch`` images, the Gradient method. For every metric: ours / Quantus on the same inputs, maps and settings, and
ours / the floor the protocol needs (benchmarks/harness.py: warm-up, rotated interleaving, paired per-round ratios):

- perturbation metrics: the metric's own forwards (recorded once through a wrapper: the same perturbed images and
  batch sizes, incl. its clean forwards) replayed gradient-free — on a tiny CPU net the cost of a forward depends on
  the data (max-pooling), so a floor on other images would be off by more than the 10 % target;
- robustness: the metric's own method calls (the Gradient method) replayed on the recorded inputs and perturbations
  (the harness' ``input_gradient_floor``, a bare forward + input gradient, is printed once for scale). Ours chunks
  by the default ``max_batch=None`` (the methods' memory-budget rule: 197 perturbed images per call on this net, so
  the 320 rows take 2 calls); Quantus calls the explainer once per sample on the batch (10 calls of 32);
- Random Logit: its method call (recorded) + one SSIM of each recorded pair of maps (``similarity.ssim``, the batched
  float64 SSIM: the comparison is part of the protocol). Ours is given ``num_classes`` as Quantus is; without it, one
  extra one-image forward reads the class count;
- ROAD: its forwards (recorded) + one exact solve of every recorded imputation system by the banded Cholesky
  (``lit_xai.metrics.imputation``, the cheapest exact solve we have; it is what ROAD uses on the CPU). Separate rows
  time that solve against the conjugate-gradient solve (``solver="cg"``, to 1e-10) and against SciPy's sparse direct
  solve (``spsolve``, Quantus' solver; one call per image and level, matrices assembled outside the timing);
- Sparseness/Complexity need no model call: ours / Quantus only, on 256 maps (a batch of 8 small maps times only
  call overheads).

Monotonicity: Quantus is run with a perturb_func that inserts the input's values (Arya's protocol, which ours
follows); Quantus' shipped one never inserts them, so its forwards see constant images.

Every metric runs at its default chunking (``max_batch=None``, the shared budget rule: 197 rows per forward here;
Quantus forwards its batch of 32). Monotonicity Correlation also gets an untargeted reference row at
``max_batch=128``, and a breakdown of one call per side into process CPU time (user, system) and minor page faults
(``getrusage``; CPU time is what the load of other jobs does not inflate): on this machine the budget rule's
197-row chunks of this net make glibc return and re-fault the activation memory on every chunk (see
docs/metric_families.md).

Each side's metric object is built once, outside the timing (as a user builds a metric once for many batches); the
timed call is one update (ours) or one ``__call__`` (Quantus) on the batch.

Targets: ours ≤ Quantus (ratio ≤ 1) and ours ≤ 1.1 × floor. IROF's floor counts its forwards only; SLIC
(scikit-image, CPU) comes on top and is part of the protocol, so its floor row is reported without a target.

    .venv/bin/python benchmarks/bench_metric_families.py
    .venv/bin/python benchmarks/bench_metric_families.py --rounds 5 --batch 16 --cases ROAD "Random Logit"
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import quantus  # noqa: E402
from harness import (  # noqa: E402
    Row,
    input_gradient_floor,
    interleaved_times,
    machine_state,
    markdown_table,
    paired_ratio,
)

from lit_xai.attribution import build_method  # noqa: E402
from lit_xai.attribution.batching import rows_per_chunk  # noqa: E402
from lit_xai.metrics import faithfulness  # noqa: E402
from lit_xai.metrics.complexity import Complexity, Sparseness  # noqa: E402
from lit_xai.metrics.faithfulness import (  # noqa: E402
    IROF,
    ROAD,
    FaithfulnessCorrelation,
    Infidelity,
    Monotonicity,
    MonotonicityCorrelation,
)
from lit_xai.metrics.imputation import banded_imputation  # noqa: E402
from lit_xai.metrics.random_logit import RandomLogit  # noqa: E402
from lit_xai.metrics.robustness import AvgSensitivity, LocalLipschitzEstimate, MaxSensitivity  # noqa: E402
from lit_xai.metrics.similarity import ssim  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402

np.trapz = getattr(np, "trapz", np.trapezoid)  # Quantus 0.6 calls numpy.trapz (gone in NumPy 2): benchmark-only shim

SIZE, CLASSES = 32, 10
RUNS, SUBSET = 20, 64  # Faithfulness Correlation
MONO_STEP = 16  # Monotonicity: 1024 / 16 = 64 steps
CORR_STEP, CORR_SAMPLES = 64, 5  # Monotonicity Correlation: 16 steps × 5 draws
PERCENTAGES = tuple(range(5, 100, 10))  # ROAD: 10 levels
SAMPLES = 10  # robustness


class Recorder(torch.nn.Module):
    """The model, recording every batch it is called on (to replay the protocol's exact forwards as its floor)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.detach().clone())
        return self.model(x)


def forward_floor(model: torch.nn.Module, run_metric: Callable[[torch.nn.Module], None]) -> Callable[[], None]:
    """The metric's own forwards replayed gradient-free on the inputs it built (recorded once, outside the timing):
    the same images and batch sizes, none of the metric's other work."""
    recorder = Recorder(model)
    run_metric(recorder)
    batches = recorder.batches

    def run() -> None:
        with torch.no_grad():
            for batch in batches:
                model(batch)

    return run


def method_floor(method: Callable, model: torch.nn.Module,
                 run_metric: Callable[[Callable], None]) -> Callable[[], None]:
    """The metric's own method calls replayed on the inputs and classes it passed (recorded once)."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append((inputs.detach().clone(), target.clone()))
        return method(model, inputs, target)

    run_metric(recording)

    def run() -> None:
        for inputs, target in calls:
            method(model, inputs, target)

    return run


def random_logit_floor(method: Callable, model: torch.nn.Module, maps: torch.Tensor,
                       run_metric: Callable[[Callable], None]) -> Callable[[], None]:
    """Random Logit's method call on the other classes (recorded once) + the SSIM of each (given, other) pair of maps,
    laid out as the metric's Quantus-default ``flat`` layout (maps normalised by their max |value|)."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append((inputs.detach().clone(), target.clone()))
        return method(model, inputs, target)

    run_metric(recording)
    layout = RandomLogit()._layout

    def run() -> None:
        for inputs, target in calls:
            other = method(model, inputs, target).detach()
            ssim(layout(maps), layout(other), 7, "pair")

    return run


def road_systems(run_metric: Callable[[], None]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The imputation systems (images, removed masks) ROAD solves, recorded once through the module's solver."""
    systems: list[tuple[torch.Tensor, torch.Tensor]] = []
    solve = faithfulness.linear_imputation

    def recording(images: torch.Tensor, removed: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        systems.append((images.detach().clone(), removed.clone()))
        return solve(images, removed, *args, **kwargs)

    faithfulness.linear_imputation = recording
    try:
        run_metric()
    finally:
        faithfulness.linear_imputation = solve
    return systems


def sparse_systems(systems: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[object, np.ndarray]]:
    """Every (image, level) system as Quantus assembles it for ``scipy.sparse.linalg.spsolve``: a CSC matrix over the
    removed pixels and the right-hand side (one channel: the digits are 1-channel)."""
    import scipy.sparse

    stencil = faithfulness.ROAD_STENCIL
    out = []
    for images, removed in systems:
        height, width = images.shape[-2:]
        for image, mask in zip(images[:, 0].double().numpy(), removed[:, 0].numpy()):
            unknown = np.flatnonzero(mask.ravel())
            position = np.full(height * width, -1)
            position[unknown] = np.arange(len(unknown))
            rows, cols, values, rhs = [], [], [], np.zeros(len(unknown))
            i, j = np.divmod(unknown, width)
            degree = np.zeros(len(unknown))
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    weight = stencil[di + 1][dj + 1]
                    inside = (i + di >= 0) & (i + di < height) & (j + dj >= 0) & (j + dj < width)
                    if not weight:
                        continue
                    degree += weight * inside
                    q = np.where(inside, (i + di) * width + j + dj, 0)
                    linked = inside & (position[q] >= 0)
                    rows.append(np.flatnonzero(linked))
                    cols.append(position[q][linked])
                    values.append(np.full(int(linked.sum()), -weight))
                    rhs += np.where(inside & ~linked, weight * image.ravel()[q], 0.0)
            rows.append(np.arange(len(unknown)))
            cols.append(np.arange(len(unknown)))
            values.append(degree)
            matrix = scipy.sparse.csc_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                                             shape=(len(unknown), len(unknown)))
            out.append((matrix, rhs))
    return out


def cpu_breakdown(cases: dict[str, Callable[[], None]], calls: int) -> str:
    """Median process user and system CPU seconds and minor page faults of one call of each case (rotated, after
    one warm-up call each): ``getrusage`` of this process, 1 thread."""
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in cases}
    for run in cases.values():
        run()
    names = list(cases)
    for r in range(calls):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            before = resource.getrusage(resource.RUSAGE_SELF)
            cases[name]()
            after = resource.getrusage(resource.RUSAGE_SELF)
            samples[name].append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                                  after.ru_minflt - before.ru_minflt))
    lines = ["| side | user s | system s | minor page faults |", "|---|---|---|---|"]
    for name, values in samples.items():
        user, system, faults = (float(np.median([v[k] for v in values])) for k in range(3))
        lines.append(f"| {name} | {user:.3f} | {system:.3f} | {faults:.0f} |")
    return "\n".join(lines)


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
    parser.add_argument("--cases", nargs="*", default=None, help="only the cases whose label contains one of these")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = args.batch

    torch.manual_seed(0)
    model = build_backbone("digits_cnn", num_classes=CLASSES, in_chans=1).eval()
    inputs = torch.randn(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    target = model(inputs).argmax(1)
    gradient = build_method("gradient")
    maps = gradient(model, inputs, target).detach()

    def quantus_explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object):  # noqa: ANN202
        return gradient(model, torch.as_tensor(inputs), torch.as_tensor(targets)).detach().numpy()

    common = {"model": model, "x_batch": inputs.numpy(), "y_batch": target.numpy(), "a_batch": maps.numpy(),
              "device": "cpu", "batch_size": batch}
    quiet = {"disable_warnings": True}

    many = torch.randn(256, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))  # map-only metrics
    many_np = {"model": None, "x_batch": many.numpy(), "y_batch": np.zeros(256, dtype=int), "a_batch": many.numpy(),
               "batch_size": 256}

    # each side's metric object is built once, outside the timing (the Quantus objects below are too; a user builds
    # a metric once for many batches): the timed call is one update on the batch
    def map_only(metric: Callable[[], object]) -> Callable[[], None]:
        built = metric()
        return lambda: built.update(model, many, torch.zeros(256, dtype=torch.long), many)  # type: ignore[attr-defined]

    def ours(metric: Callable[[], object], method: bool = False) -> Callable[[], None]:
        built = metric()

        def run() -> None:
            built.update(model, inputs, target, maps, method=gradient if method else None)  # type: ignore[attr-defined]
        return run

    def forwards_of(metric: Callable[[], object]) -> Callable[[], None]:
        return forward_floor(model, lambda m: metric().update(m, inputs, target, maps))  # type: ignore[attr-defined]

    def calls_of(metric: Callable[[], object]) -> Callable[[], None]:
        return method_floor(gradient, model, lambda g: metric().update(model, inputs, target, maps, method=g))  # type: ignore[attr-defined]

    def road_floor() -> Callable[[], None]:
        forwards = forwards_of(lambda: ROAD(percentages=PERCENTAGES))
        systems = road_systems(lambda: ROAD(percentages=PERCENTAGES).update(model, inputs, target, maps))

        def run() -> None:
            forwards()
            for images, removed in systems:
                banded_imputation(images, removed, faithfulness.ROAD_STENCIL)

        return run

    def peer_maps(metric: object) -> Callable[[], None]:
        return lambda: metric(**many_np)  # type: ignore[operator]

    def peer(metric: object, explain: bool = False) -> Callable[[], None]:
        extra = {"explain_func": quantus_explain} if explain else {}
        return lambda: metric(**common, **extra)  # type: ignore[operator]

    cases: dict[str, tuple[Callable[[], None], Callable[[], None], Callable[[], None] | None, bool]] = {
        "Sparseness (256 maps 3×32²)": (map_only(Sparseness),
                                        peer_maps(quantus.Sparseness(**quiet)), None, True),
        "Complexity (256 maps 3×32²)": (map_only(Complexity),
                                        peer_maps(quantus.Complexity(**quiet)), None, True),
        "Faithfulness Correlation": (
            ours(lambda: FaithfulnessCorrelation(num_runs=RUNS, subset_size=SUBSET)),
            peer(quantus.FaithfulnessCorrelation(nr_runs=RUNS, subset_size=SUBSET, return_aggregate=False, **quiet)),
            forwards_of(lambda: FaithfulnessCorrelation(num_runs=RUNS, subset_size=SUBSET)), True),
        "Monotonicity (Arya)": (
            ours(lambda: Monotonicity(features_in_step=MONO_STEP)),
            peer(quantus.Monotonicity(features_in_step=MONO_STEP,
                                      perturb_func=arya_insertion(inputs.flatten(1).numpy()), **quiet)),
            forwards_of(lambda: Monotonicity(features_in_step=MONO_STEP)), True),
        "Monotonicity Correlation": (
            ours(lambda: MonotonicityCorrelation(features_in_step=CORR_STEP, num_samples=CORR_SAMPLES)),
            peer(quantus.MonotonicityCorrelation(features_in_step=CORR_STEP, nr_samples=CORR_SAMPLES, **quiet)),
            forwards_of(lambda: MonotonicityCorrelation(features_in_step=CORR_STEP, num_samples=CORR_SAMPLES)), True),
        "Infidelity (4×4 patches)": (
            ours(Infidelity),
            peer(quantus.Infidelity(perturb_patch_sizes=[4], n_perturb_samples=1, **quiet)),
            forwards_of(Infidelity), True),
        "ROAD (10 levels)": (
            ours(lambda: ROAD(percentages=PERCENTAGES)),
            peer(quantus.ROAD(percentages=list(PERCENTAGES), **quiet)),
            road_floor(), True),
        "IROF (SLIC)": (
            ours(lambda: IROF(baseline=0.0)), peer(quantus.IROF(perturb_baseline=0.0, **quiet)),
            forwards_of(lambda: IROF(baseline=0.0)), False),
        "Max-Sensitivity": (
            ours(lambda: MaxSensitivity(num_samples=SAMPLES), method=True),
            peer(quantus.MaxSensitivity(nr_samples=SAMPLES, **quiet), explain=True),
            calls_of(lambda: MaxSensitivity(num_samples=SAMPLES)), True),
        "Avg-Sensitivity": (
            ours(lambda: AvgSensitivity(num_samples=SAMPLES), method=True),
            peer(quantus.AvgSensitivity(nr_samples=SAMPLES, **quiet), explain=True),
            calls_of(lambda: AvgSensitivity(num_samples=SAMPLES)), True),
        "Local Lipschitz": (
            ours(lambda: LocalLipschitzEstimate(num_samples=SAMPLES), method=True),
            peer(quantus.LocalLipschitzEstimate(nr_samples=SAMPLES, **quiet), explain=True),
            calls_of(lambda: LocalLipschitzEstimate(num_samples=SAMPLES)), True),
        "Random Logit": (
            ours(lambda: RandomLogit(num_classes=CLASSES), method=True),
            peer(quantus.RandomLogit(num_classes=CLASSES, **quiet), explain=True),
            random_logit_floor(gradient, model, maps, lambda g: RandomLogit(num_classes=CLASSES).update(
                model, inputs, target, maps, method=g)), True),
    }
    correlation = {"features_in_step": CORR_STEP, "num_samples": CORR_SAMPLES}
    cases["Monotonicity Correlation (max_batch=128, reference setting)"] = (  # untargeted: explains the row above
        ours(lambda: MonotonicityCorrelation(**correlation, max_batch=128)),
        peer(quantus.MonotonicityCorrelation(features_in_step=CORR_STEP, nr_samples=CORR_SAMPLES, **quiet)),
        None, False)
    if args.cases is not None:
        cases = {k: v for k, v in cases.items() if any(c in k for c in args.cases)}
    gradient_times = interleaved_times({"method": lambda: gradient(model, inputs, target),
                                        "bare": input_gradient_floor(model, inputs, target)}, rounds=args.rounds)
    method_ratio = paired_ratio(gradient_times["method"], gradient_times["bare"])
    print(f"Gradient method / bare forward + input gradient: {method_ratio}")
    rows = []
    if any("ROAD" in label for label in cases):  # the imputation solve alone: banded vs CG vs SciPy's direct solve
        systems = road_systems(lambda: ROAD(percentages=PERCENTAGES).update(model, inputs, target, maps))
        assembled = sparse_systems(systems)
        from scipy.sparse.linalg import spsolve

        solves = interleaved_times({
            "banded": lambda: [banded_imputation(i, r, faithfulness.ROAD_STENCIL) for i, r in systems],
            "cg": lambda: [faithfulness.linear_imputation(i, r, solver="cg") for i, r in systems],
            "spsolve": lambda: [spsolve(a, b) for a, b in assembled],
        }, rounds=args.rounds)
        for reference in ("cg", "spsolve"):
            rows.append(Row("ROAD imputation solve (the recorded systems)", "banded", reference,
                            paired_ratio(solves["banded"], solves[reference]), untargeted="reference setting"))
    for label, (run_ours, run_peer, floor, floor_target) in cases.items():
        timed = {"ours": run_ours, "quantus": run_peer}
        if floor is not None:
            timed["floor"] = floor
        times = interleaved_times(timed, rounds=args.rounds)
        reference = "reference setting" in label
        rows.append(Row(label, "ours", "Quantus", paired_ratio(times["ours"], times["quantus"]),
                        target=None if reference else 1.0, untargeted="reference setting" if reference else "",
                        extra={"ours_s": float(np.median(times["ours"]))}))
        if floor is not None:
            rows.append(Row(label, "ours", "floor", paired_ratio(times["ours"], times["floor"]),
                            target=1.1 if floor_target else None,
                            note="" if floor_target else "floor = forwards only (SLIC on top)"))
    print(f"\n== digits CNN 1×{SIZE}×{SIZE}, batch {batch}, {torch.get_num_threads()} thread(s), "
          f"{args.rounds} rounds; {machine_state()} ==")
    print(markdown_table(rows))
    reference_label = "Monotonicity Correlation (max_batch=128, reference setting)"
    if {"Monotonicity Correlation", reference_label} <= set(cases):
        print("\nMonotonicity Correlation, one call per side (CPU time and page faults, median of "
              f"{args.rounds} rotated calls):")
        print(cpu_breakdown({
            f"ours (max_batch=None: {rows_per_chunk(model, inputs)} rows)": cases["Monotonicity Correlation"][0],
            "ours (max_batch=128)": cases[reference_label][0],
            "floor (our forwards replayed)": cases["Monotonicity Correlation"][2],
            "Quantus (32 rows)": cases["Monotonicity Correlation"][1],
        }, args.rounds))
    if any(not math.isfinite(r.ratio.median) for r in rows):
        raise SystemExit("non-finite ratio")


if __name__ == "__main__":
    main()
