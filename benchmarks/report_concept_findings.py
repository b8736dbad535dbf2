"""Concept findings over training seeds (issue 17; seed 002 ch. "Towards Semantic Interpretation of Thoracic Disease
and COVID-19 Diagnosis Models": §3.1 Fig. 2, §3.4 Fig. 4, §3.5 Fig. 5) on the synthetic chest X-rays.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/report_concept_findings.py              # training seeds 0 1 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/report_concept_findings.py --seeds 0 1 2 3

Per training seed ``s`` (``--seed_everything s``; the data seed stays 0, so every model is trained on, and dissected
with, the same images and annotation set):

1. **fit** (skipped when the checkpoints exist): the regions model of ``configs/dissect_chest_fit.yaml`` (a checkpoint
   per epoch) and the multilabel model of ``configs/chest_multilabel.yaml`` with ``--trainer.max_epochs 6`` and
   ``--model.weighting batch`` (weighted BCE, seed 002 Eq. 1) or ``none`` (BCE), each with ``python -m lit_xai fit``.
   Seed 0 reuses the runs of docs/concepts.md (``dissect_chest_regions``, ``dissect_ml_batch``, ``dissect_ml_none``);
   the others are named ``<that>_seed<s>``.
2. **dissect** with ``python -m lit_xai dissect --config configs/dissect_chest.yaml`` (skipped when its tables exist
   for the same arguments; its activation/threshold/IoU cache makes a rerun cheap): the regions run — ``initial``
   (the architecture freshly initialised with seed ``s``) and epochs 1..6 — with semantic attribution of the epoch-6
   model on the ``--semantic_images`` most severe validation images; the multilabel run — weighted and unweighted BCE.
3. **aggregate** the tables of every seed: mean ± SE over seeds (SE = sample SD / √n), paired differences (same
   seed), the number of seeds whose difference has the claimed sign, and a verdict per chapter claim; binomial SEs
   over images within a seed. Written to ``runs/seed_study/findings_seeds<0-1-2>.md`` and ``.json`` and printed.

Verdicts (ours; with three seeds even 3/3 agreeing signs is a one-sided sign-test p of 0.125, so read them as the
direction of the evidence): a paired claim *holds* when every seed's difference has the claimed sign, *does not
hold* when none has it, *mixed* otherwise; a per-image claim (Fig. 5) holds when a majority of the images satisfies
it in every seed, does not hold when in none.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path("runs")
STUDY = RUNS / "seed_study"
TIMINGS = STUDY / "timings.json"  # wall seconds of the fits and dissections this script ran
VALIDATION = STUDY / "validation.json"  # validation metrics per checkpoint
DISSECT_CONFIG = "configs/dissect_chest.yaml"  # the dissection (and its annotation data) of docs/concepts.md
EPOCHS = 6  # the chapter's evolution figure follows the training epochs; ours: configs/dissect_chest_fit.yaml's 6
LAYERS = ("features.2", "features.5", "features.8")  # configs/dissect_chest.yaml: the three stages of digits_cnn
LESIONS = ("consolidation", "ground_glass", "nodule", "line", "apparatus")  # SyntheticChestDataModule.concept_names
REGIONS = tuple(f"region_{r}" for r in "ABCDEF")
SEVERITY = ("consolidation", "ground_glass")  # the lesions that carry the severity score (lit_xai/data/chest.py)
RARE = ("line", "nodule")  # the rarest labels: P = 0.1 and 0.15 per image (SyntheticChestDataModule.concept_probs)
IRRELEVANT = ("apparatus",) + REGIONS  # not severity: the chapter's "less important concepts (e.g. left lung)"
WEIGHTINGS = {"weighted": "batch", "unweighted": "none"}  # --model.weighting: seed 002 Eq. 1 vs plain BCE
SEMANTIC_IMAGES = 40  # the most severe validation images of Fig. 5 (ours: the chapter shows a handful)
TOP = 3  # top contributing units per image (configs/dissect_chest.yaml semantic.top)


# ----------------------------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Summary:
    """Mean ± SE over ``n`` values (SE = sample SD / √n; NaN for n = 1)."""

    mean: float
    se: float
    n: int

    def text(self, digits: int = 1) -> str:
        se = "–" if math.isnan(self.se) else f"{self.se:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {se}"


def mean_se(values: Sequence[float]) -> Summary:
    """Mean and standard error of the mean, SD with Bessel's correction (n − 1)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_se needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return Summary(mean, math.nan, 1)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Summary(mean, math.sqrt(variance / n), n)


@dataclass(frozen=True)
class Paired:
    """``a − b`` per seed: its mean ± SE and how many seeds have the claimed sign (``direction``)."""

    a: Summary
    b: Summary
    difference: Summary
    agreeing: int
    verdict: str


def verdict(agreeing: int, n: int) -> str:
    """holds: every seed agrees with the claim; does not hold: none does; mixed otherwise."""
    return "holds" if agreeing == n else "does not hold" if agreeing == 0 else "mixed"


def paired(a: Sequence[float], b: Sequence[float], direction: int = 1) -> Paired:
    """Paired comparison over seeds: the claim is ``direction · (a − b) > 0``."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} and {len(b)} values; pair them by seed")
    diffs = [x - y for x, y in zip(a, b)]
    agreeing = sum(direction * d > 0 for d in diffs)
    return Paired(mean_se(a), mean_se(b), mean_se(diffs), agreeing, verdict(agreeing, len(diffs)))


def binomial_se(k: int, n: int) -> float:
    """SE of a proportion k/n over n independent images: √(p(1 − p)/n)."""
    p = k / n
    return math.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------------------------------------- reading tables
Counts = dict[tuple[str, str, str], int]  # (model, layer, concept) → detectors


def read_counts(path: Path) -> Counts:
    """``dissection_detectors.csv`` of a dissect run."""
    with open(path, newline="") as handle:
        return {(r["model"], r["layer"], r["concept"]): int(r["detectors"]) for r in csv.DictReader(handle)}


def detectors(counts: Counts, model: str, layers: Sequence[str] = LAYERS, concepts: Sequence[str] | None = None) -> int:
    """Detectors of ``model`` in ``layers``, of ``concepts`` (all when None)."""
    return sum(n for (m, layer, c), n in counts.items()
               if m == model and layer in layers and (concepts is None or c in concepts))


def variety(counts: Counts, model: str) -> int:
    """Number of distinct concepts with at least one detector in any layer (the chapter's "variety")."""
    return len({c for (m, _, c), n in counts.items() if m == model and n > 0})


def read_semantic(path: Path) -> list[dict[str, str]]:
    """The rows of a dissect table (``semantic_units.csv``, ``dissection_units.csv``) as dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


#: name → (a test on a unit's (detector label or "", best concept), the number of top units it looks at)
SEMANTIC_CRITERIA: dict[str, tuple[Callable[[str, str], bool], int]] = {
    "top unit: a severity-lesion detector": (lambda label, best: label in SEVERITY, 1),
    "top unit: a consolidation detector": (lambda label, best: label == "consolidation", 1),
    "top unit's best concept: a severity lesion": (lambda label, best: best in SEVERITY, 1),
    f"top {TOP}: a consolidation detector": (lambda label, best: label == "consolidation", TOP),
}


def semantic_counts(rows: list[dict[str, str]]) -> tuple[dict[str, int], int]:
    """Per criterion of ``SEMANTIC_CRITERIA`` the number of images that satisfy it, and the number of images; ``rows``
    are ``semantic_units.csv`` (one row per image and rank; ``concept`` is the unit's label when it is a detector)."""
    images: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        images.setdefault(row["image"], []).append(row)
    ranked = [sorted(units, key=lambda u: int(u["rank"])) for units in images.values()]
    return {name: sum(any(test(u["concept"], u["unit_best_concept"]) for u in units[:top]) for units in ranked)
            for name, (test, top) in SEMANTIC_CRITERIA.items()}, len(ranked)


def chance_levels(units: list[dict[str, str]], model: str, layer: str) -> dict[str, float]:
    """Per criterion the probability that it holds for ``top`` units drawn at random (without replacement) from the
    ``layer`` of ``model`` instead of the top contributing ones: 1 − C(K − m, top) / C(K, top), with m of the K units
    passing the test; ``units`` are ``dissection_units.csv`` rows (``concept``: best concept; ``detector``)."""
    layer_units = [u for u in units if u["model"] == model and u["layer"] == layer]
    if not layer_units:
        raise ValueError(f"no units of {model} {layer} in the dissection table")
    total = len(layer_units)
    chance = {}
    for name, (test, top) in SEMANTIC_CRITERIA.items():
        passing = sum(test(u["concept"] if u["detector"] == "True" else "", u["concept"]) for u in layer_units)
        chance[name] = 1 - math.comb(total - passing, top) / math.comb(total, top)
    return chance


# ------------------------------------------------------------------------------------------------- fit and dissect
def fit_name(kind: str, seed: int) -> str:
    base = "dissect_chest_regions" if kind == "regions" else f"dissect_ml_{WEIGHTINGS[kind]}"
    return base if seed == 0 else f"{base}_seed{seed}"


def fit_command(kind: str, seed: int) -> list[str]:
    name = fit_name(kind, seed)
    pinned = ["--seed_everything", str(seed), "--trainer.logger.init_args.name", name,
              "--trainer.callbacks.init_args.dirpath", str(RUNS / "fit" / name / "checkpoints")]
    if kind == "regions":
        return ["fit", "--config", "configs/dissect_chest_fit.yaml", *pinned]
    return ["fit", "--config", "configs/chest_multilabel.yaml", *pinned, "--trainer.max_epochs", str(EPOCHS),
            "--model.weighting", WEIGHTINGS[kind]]


def finished(folder: Path) -> bool:
    """Whether the fit in ``folder`` ran to its last epoch: its W&B console log (``output.log``, offline runs too)
    has Lightning's "`max_epochs=6` reached"."""
    return any(f"`max_epochs={EPOCHS}` reached" in log.read_text(errors="replace")
               for log in folder.glob("wandb/*/files/output.log"))


def checkpoints(kind: str, seed: int) -> list[Path] | None:
    """The run's checkpoints (regions: one per epoch; multilabel: best by val/auroc), or None when not trained; an
    unfinished run (interrupted: its best.ckpt may be an early epoch) is refused."""
    folder = RUNS / "fit" / fit_name(kind, seed)
    if not folder.exists():
        return None
    if not finished(folder):
        raise SystemExit(f"{folder}: the fit did not finish its {EPOCHS} epochs (no \"`max_epochs={EPOCHS}` reached\" "
                         "in its wandb/*/files/output.log); remove the folder to train it again")
    if kind == "regions":
        files = [folder / "checkpoints" / f"epoch={e}.ckpt" for e in range(EPOCHS)]
        return files if all(f.is_file() for f in files) else None
    pinned = folder / "checkpoints" / "best.ckpt"
    found = [pinned] if pinned.is_file() else sorted(folder.glob("*/checkpoints/best.ckpt"))  # logger-version folder
    if len(found) > 1:
        raise SystemExit(f"{folder}: {len(found)} best.ckpt files ({', '.join(map(str, found))}); keep one")
    return found or None


def run_logged(args: list[str], log: Path) -> float:
    """``python -m lit_xai <args>`` with its output in ``log``; the wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ python -m lit_xai {' '.join(args)}   (log: {log})", flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "lit_xai", *args], stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def dissect_args(kind: str, seed: int, files: list[Path], semantic_images: int) -> list[str]:
    listed = "[" + ",".join(map(str, files)) + "]"
    common = ["dissect", "--config", DISSECT_CONFIG, "--checkpoints", listed, "--seed", str(seed),
              "--wandb.enabled", "false", "--progress", "false"]
    if kind == "regions":
        labels = "[" + ",".join(f"epoch{e + 1}" for e in range(EPOCHS)) + "]"
        return [*common, "--name", f"seed_study_regions_seed{seed}", "--labels", labels, "--initial", "true",
                "--semantic.num_images", str(semantic_images)]
    return [*common, "--name", f"seed_study_multilabel_seed{seed}", "--labels", "[weighted,unweighted]",
            "--initial", "false", "--data.init_args.task", "multilabel", "--semantic.target", "0"]


def record(path: Path, key: str, value: Any) -> None:
    """Set ``key`` in the JSON object in ``path`` (read, update, atomic replace: concurrent runs of this script keep
    each other's entries)."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def dissected(args: list[str], key: str) -> Path:
    """The run folder of ``dissect args``; runs it unless its tables exist for the same arguments."""
    folder = RUNS / "dissect" / args[args.index("--name") + 1]
    marker = folder / "seed_study_args.json"
    tables = [folder / "dissection_detectors.csv", folder / "semantic_units.csv"]
    if marker.is_file() and json.loads(marker.read_text()) == args and all(t.is_file() for t in tables):
        return folder
    record(TIMINGS, key, run_logged(args, STUDY / "logs" / f"{key}.log"))
    marker.write_text(json.dumps(args))
    return folder


def validation_metrics(ckpt: Path) -> dict[str, float]:
    """The checkpoint's epoch and validation metrics (its task's torchmetrics on the validation split of
    ``DISSECT_CONFIG``'s data, with the checkpoint's task), cached in ``VALIDATION`` by path and modification time."""
    key = f"{ckpt}@{ckpt.stat().st_mtime_ns}"
    cache = json.loads(VALIDATION.read_text()) if VALIDATION.is_file() else {}
    if "epoch" not in cache.get(key, {}):
        import lightning as L
        import torch

        from lit_xai.data import SyntheticChestDataModule
        from lit_xai.models.classifier import ClassifierModule

        module = ClassifierModule.load_from_checkpoint(ckpt, map_location="cpu")
        task = module.task.name
        import yaml

        dissect_data = yaml.safe_load(Path(DISSECT_CONFIG).read_text())["data"]["init_args"]  # the annotation data
        data = SyntheticChestDataModule(**{**dissect_data, "task": task})
        trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                            devices=1)
        (metrics,) = trainer.validate(module, datamodule=data, verbose=False)
        epoch = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] + 1  # Lightning counts from 0
        cache[key] = {"epoch": epoch, **{name: float(value) for name, value in metrics.items()}}
        record(VALIDATION, key, cache[key])
    return cache[key]


# ------------------------------------------------------------------------------------------------------ reporting
def row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [row(header), row(["---"] * len(header)), *(row(r) for r in rows), ""]


def paired_cells(p: Paired, digits: int = 1) -> list[str]:
    return [p.a.text(digits), p.b.text(digits), p.difference.text(digits), f"{p.agreeing}/{p.difference.n}",
            p.verdict]


def report(seeds: list[int], regions: dict[int, Counts], multilabel: dict[int, Counts],
           semantic: dict[int, list[dict[str, str]]], chance: dict[int, dict[str, float]],
           metrics: dict[str, dict[int, dict[str, float]]]) -> tuple[list[str], dict[str, Any]]:
    """The markdown tables and a JSON summary of the seed study (``chance``: per seed ``chance_levels``)."""
    n = len(seeds)
    lines = [f"Training seeds {seeds} (n = {n}); values are mean ± SE over seeds; Δ is paired by seed; "
             "'seeds' counts the seeds whose Δ has the claimed sign.", ""]
    out: dict[str, Any] = {"seeds": seeds}

    def per_seed(counts: dict[int, Counts], model: str, **kwargs: Any) -> list[float]:
        return [detectors(counts[s], model, **kwargs) for s in seeds]

    def metric_text(kind: str, name: str) -> str:
        return mean_se([metrics[kind][s][name] for s in seeds]).text(3)

    def per_seed_metric(kind: str, name: str) -> str:
        return ", ".join(f"{metrics[kind][s][name]:.3f}" for s in seeds)

    auroc = paired([metrics["weighted"][s]["val/auroc"] for s in seeds],
                   [metrics["unweighted"][s]["val/auroc"] for s in seeds])
    epochs = {kind: ", ".join(str(int(metrics[kind][s]["epoch"])) for s in seeds) for kind in WEIGHTINGS}
    lines += ["**Models** (validation split, 250 images):", ""]
    lines += table(["model", "metric", "per seed", "mean ± SE"],
                   [["regions, epoch 6", "val/acc (region scores)", per_seed_metric("regions", "val/acc"),
                     metric_text("regions", "val/acc")],
                    ["regions, epoch 6", "val/mae", per_seed_metric("regions", "val/mae"),
                     metric_text("regions", "val/mae")],
                    [f"multilabel weighted BCE (best epoch: {epochs['weighted']})", "val/auroc",
                     per_seed_metric("weighted", "val/auroc"), metric_text("weighted", "val/auroc")],
                    [f"multilabel BCE (best epoch: {epochs['unweighted']})", "val/auroc",
                     per_seed_metric("unweighted", "val/auroc"), metric_text("unweighted", "val/auroc")],
                    ["Δ weighted − BCE", "val/auroc", f"{auroc.agreeing}/{len(seeds)} seeds > 0",
                     auroc.difference.text(3)]])
    out["auroc_weighted_minus_bce"] = asdict(auroc)

    # Fig. 2 / §3.4: initial vs trained (regions model, epoch 6), per layer and per concept.
    header = ["detectors", "trained (epoch 6)", "initial", "Δ trained − initial", "seeds", "verdict"]
    groups: list[tuple[str, dict[str, Any], int]] = [(f"{layer}", {"layers": (layer,)}, 1) for layer in LAYERS]
    groups += [("all layers", {}, 1), ("severity lesions (consolidation + ground glass), all layers",
                                       {"concepts": SEVERITY}, 1),
               ("not severity (apparatus + regions A-F), all layers", {"concepts": IRRELEVANT}, -1)]
    groups += [(f"{c}, all layers", {"concepts": (c,)}, 0) for c in LESIONS]
    groups += [("regions A-F, all layers", {"concepts": REGIONS}, 0)]
    rows, out["trained_vs_initial"] = [], {}
    for name, kwargs, direction in groups:
        p = paired(per_seed(regions, f"epoch{EPOCHS}", **kwargs), per_seed(regions, "initial", **kwargs),
                   direction or 1)
        cells = paired_cells(p)
        if not direction:  # a per-concept breakdown, no claim of its own
            cells[-2:] = ["", ""]
        rows.append([name, *cells])
        out["trained_vs_initial"][name] = asdict(p) | {"claim": direction}
    p = paired([variety(regions[s], f"epoch{EPOCHS}") for s in seeds], [variety(regions[s], "initial") for s in seeds])
    rows.append(["variety (concepts with ≥ 1 detector)", *paired_cells(p)])
    out["trained_vs_initial"]["variety"] = asdict(p)
    lines += ["**Trained vs initial** (regions model; initial = the same architecture initialised with the same seed; "
              "claims: trained > initial, severity lesions up, the rest down):", ""]
    lines += table(header, rows)

    # Fig. 4: evolution over epochs.
    rows, out["evolution"] = [], {}
    for model in ["initial", *(f"epoch{e + 1}" for e in range(EPOCHS))]:
        cells = [mean_se(per_seed(regions, model, layers=(layer,))).text() for layer in LAYERS]
        cells += [mean_se(per_seed(regions, model, concepts=SEVERITY)).text(),
                  mean_se(per_seed(regions, model, concepts=IRRELEVANT)).text()]
        total = per_seed(regions, model)
        if model == "initial":
            cells += [mean_se(total).text(), "", ""]
        else:
            p = paired(total, per_seed(regions, "initial"))
            cells += [mean_se(total).text(), p.difference.text(), f"{p.agreeing}/{n}"]
        rows.append([model, *cells])
        out["evolution"][model] = {"total": total}
    lines += ["**Evolution over training** (regions model; detectors per layer, severity lesions and the rest over all "
              "layers; Δ: all layers, epoch − initial; claim: more than initial at every epoch):", ""]
    lines += table(["model", *LAYERS, "severity lesions", "apparatus + regions", "all layers", "Δ vs initial",
                    "seeds Δ > 0"], rows)

    # Fig. 2 / §3.1: weighted vs unweighted BCE.
    ml_groups = [(f"{layer}", {"layers": (layer,)}, True) for layer in LAYERS]
    ml_groups += [("all layers", {}, True),
                  (f"rare lesions ({' + '.join(RARE)}), all layers", {"concepts": RARE}, True)]
    ml_groups += [(f"{c}, all layers", {"concepts": (c,)}, c in RARE) for c in LESIONS]
    rows, out["weighted_vs_unweighted"] = [], {}
    for name, kwargs, claimed in ml_groups:
        p = paired(per_seed(multilabel, "weighted", **kwargs), per_seed(multilabel, "unweighted", **kwargs))
        cells = paired_cells(p)
        if not claimed:  # a per-concept breakdown (not a rare label here), no claim of its own
            cells[-2:] = ["", ""]
        rows.append([name, *cells])
        out["weighted_vs_unweighted"][name] = asdict(p) | {"claim": int(claimed)}
    p = paired([variety(multilabel[s], "weighted") for s in seeds], [variety(multilabel[s], "unweighted")
                                                                     for s in seeds])
    rows.append(["variety (concepts with ≥ 1 detector)", *paired_cells(p)])
    out["weighted_vs_unweighted"]["variety"] = asdict(p)
    lines += ["**Weighted (Eq. 1) vs unweighted BCE** (multilabel models, best epoch of 6 by val/auroc; claim: "
              "weighted > unweighted, in total, for the rare lesions and in variety):", ""]
    lines += table(["detectors", "weighted BCE", "BCE", "Δ weighted − BCE", "seeds", "verdict"], rows)
    def rare_text(s: int, model: str) -> str:
        return f"{detectors(multilabel[s], model)} ({detectors(multilabel[s], model, concepts=RARE)})"

    lines += [f"Per seed, detectors in all layers (of them {' + '.join(RARE)}): " + "; ".join(
        f"seed {s}: weighted {rare_text(s, 'weighted')}, BCE {rare_text(s, 'unweighted')}" for s in seeds), ""]

    # Fig. 5 / §3.5: semantic attribution.
    found = {s: semantic_counts(semantic[s]) for s in seeds}
    rows, out["semantic"] = [], {}
    for criterion in SEMANTIC_CRITERIA:
        fractions = [found[s][0][criterion] / found[s][1] for s in seeds]
        majority = sum(f > 0.5 for f in fractions)
        per = ", ".join(f"{found[s][0][criterion]}/{found[s][1]} "
                        f"(± {100 * binomial_se(found[s][0][criterion], found[s][1]):.0f}%)" for s in seeds)
        rows.append([criterion, per, mean_se([100 * f for f in fractions]).text() + "%",
                     mean_se([100 * chance[s][criterion] for s in seeds]).text() + "%", f"{majority}/{n}",
                     verdict(majority, n)])
        out["semantic"][criterion] = {"per_seed": {s: found[s][0][criterion] for s in seeds},
                                      "images": {s: found[s][1] for s in seeds},
                                      "chance": {s: chance[s][criterion] for s in seeds},
                                      "verdict": verdict(majority, n)}
    lines += [f"**Semantic attribution** (epoch-6 regions model, last layer, explaining the global severity, on the "
              f"{found[seeds[0]][1]} most severe validation images; per seed: images (± binomial SE over images); "
              "chance: the same criterion for units drawn at random from the layer; "
              "claim: a majority of the images in every seed):", ""]
    lines += table(["criterion", "per seed " + ", ".join(map(str, seeds)), "mean ± SE over seeds",
                    "chance (random units)", "seeds > 50%", "verdict"], rows)
    return lines, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (seed_everything)")
    parser.add_argument("--semantic_images", type=int, default=SEMANTIC_IMAGES)
    parser.add_argument("--no_fit", action="store_true", help="fail instead of training a missing model")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the configs and run folders are relative to the repository root
    STUDY.mkdir(parents=True, exist_ok=True)
    regions, multilabel, semantic, chance = {}, {}, {}, {}
    metrics: dict[str, dict[int, dict[str, float]]] = {"regions": {}, **{kind: {} for kind in WEIGHTINGS}}
    for seed in args.seeds:
        files = {}
        for kind in ("regions", *WEIGHTINGS):
            if checkpoints(kind, seed) is None:
                if args.no_fit:
                    raise SystemExit(f"no checkpoints for {kind} seed {seed} ({RUNS / 'fit' / fit_name(kind, seed)})")
                key = f"fit_{kind}_seed{seed}"
                record(TIMINGS, key, run_logged(fit_command(kind, seed), STUDY / "logs" / f"{key}.log"))
            files[kind] = checkpoints(kind, seed)
            metrics[kind][seed] = validation_metrics(files[kind][-1])
        folder = dissected(dissect_args("regions", seed, files["regions"], args.semantic_images),
                           f"dissect_regions_seed{seed}")
        regions[seed] = read_counts(folder / "dissection_detectors.csv")
        semantic[seed] = read_semantic(folder / "semantic_units.csv")
        chance[seed] = chance_levels(read_semantic(folder / "dissection_units.csv"), f"epoch{EPOCHS}", LAYERS[-1])
        folder = dissected(dissect_args("multilabel", seed, [files[k][-1] for k in WEIGHTINGS], args.semantic_images),
                           f"dissect_multilabel_seed{seed}")
        multilabel[seed] = read_counts(folder / "dissection_detectors.csv")
    lines, summary = report(args.seeds, regions, multilabel, semantic, chance, metrics)
    recorded = json.loads(TIMINGS.read_text()) if TIMINGS.is_file() else {}
    timings = {k: v for k, v in recorded.items() if k.rsplit("_seed", 1)[-1] in map(str, args.seeds)}
    lines += ["Run times (s, wall, one thread of this shared machine, when they ran; seed 0's fits predate the "
              "study): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(timings.items())), ""]
    text = "\n".join(lines)
    stem = "findings_seeds" + "-".join(map(str, args.seeds))
    (STUDY / f"{stem}.md").write_text(text)
    (STUDY / f"{stem}.json").write_text(json.dumps({**summary, "timings": timings}, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
