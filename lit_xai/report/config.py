"""The report's configuration: parser, evaluation families, and validation before any work starts.

A family is a group of registered metrics (:func:`lit_xai.metrics.available_metrics`; a test keeps every name
registered, so no family loses a metric to a typo). The axiom
family scores every method on the scenes of a scene store (``axioms_scenes``, :mod:`lit_xai.report.axioms`), one
column per scenario; without a store, a finished axioms run's table (``axioms_table``) is shown as given. ROAR is not
recomputed: a finished ROAR summary (``roar_summary``, the CSV/JSON the ``roar`` command writes) is shown as given.
Either is otherwise skipped with the reason stated on the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, lazy_instance

from lit_xai.data.base import ClassificationDataModule
from lit_xai.data.digits import DigitsDataModule
from lit_xai.loggers import DEFAULT_RUN_NAME
from lit_xai.models.classifier import ConfigurationError

#: family → its metrics (registered names), in display order
FAMILIES: dict[str, tuple[str, ...]] = {
    "perturbation": ("morf", "lerf", "deletion", "insertion"),
    "sensitivity_n": ("sensitivity_n",),
    "randomisation": ("randomisation", "random_logit"),
    "localisation": ("ehr", "pointing_game", "localisation_iou"),
    "faithfulness": (
        "faithfulness_correlation", "monotonicity", "monotonicity_correlation", "infidelity", "road", "irof",
    ),
    "robustness": ("max_sensitivity", "avg_sensitivity", "local_lipschitz"),
    "complexity": ("sparseness", "complexity"),
}
#: families read from finished runs of other commands instead of computed here
EXTERNAL_FAMILIES = ("roar", "axioms")
#: the control every method is compared with (always evaluated; Hooker et al. 2019's random baseline)
CONTROL = "random"
#: sample keys the ground-truth arguments of a metric come from
GROUND_TRUTH_KEYS = {"masks": "mask", "boxes": "box"}


@dataclass
class MethodSpec:
    """An attribution method of the report: registered ``name``, constructor ``kwargs``, display ``label``."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass
class MetricSpec:
    """One metric column: ``family``, registered ``name``, constructor ``kwargs``."""

    family: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m lit_xai report", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config (configs/report_*.yaml)")
    parser.add_argument("--model.name", type=str, default="digits_cnn", help="build_backbone name")
    parser.add_argument("--model.num_classes", type=int, default=10)
    parser.add_argument("--model.in_chans", type=int, default=1)
    parser.add_argument("--model.weights", type=str | None, default=None,
                        help="required: a state_dict or Lightning checkpoint (e.g. from `python -m lit_xai fit`)")
    parser.add_subclass_arguments(ClassificationDataModule, "data", default=lazy_instance(DigitsDataModule))
    parser.add_argument("--split", type=Literal["train", "val", "test"], default="test")
    parser.add_argument("--num_images", type=int, default=64, help="the first images of the split, in order")
    parser.add_argument("--chunk_size", type=int, default=16, help="images per cell (one cached file, one batch)")
    parser.add_argument("--target", type=Literal["label", "prediction"], default="label",
                        help="the explained class (as the AttributionEvaluation callback's default)")
    parser.add_argument("--methods", type=list[MethodSpec],
                        default=[MethodSpec("gradient"), MethodSpec("integrated_gradients"), MethodSpec("gradcam")],
                        help="[{name, kwargs, label}]; the random control is always added")
    parser.add_argument("--families", type=list[str], default=["perturbation", "sensitivity_n", "randomisation"],
                        help=f"of {', '.join((*FAMILIES, *EXTERNAL_FAMILIES))}")
    parser.add_argument("--family_metrics", type=dict[str, list[str]], default={},
                        help="family → the subset of its metrics to run (default: all registered)")
    parser.add_argument("--metric_kwargs", type=dict[str, dict[str, Any]], default={},
                        help="metric name → constructor arguments")
    parser.add_argument("--roar_summary", type=str | None, default=None, help="a finished ROAR grid's summary file")
    parser.add_argument("--axioms_table", type=str | None, default=None,
                        help="an axioms run's axioms_table.csv, shown as given (without axioms_scenes)")
    parser.add_argument("--axioms_scenes", type=str | None, default=None,
                        help="a scene store of the axioms command (a store directory, or its scene_dir with one per "
                        "scenario) generated for this model: the axiom family scores every method on its scenes")
    parser.add_argument("--axioms_num_scenes", type=int | None, default=None,
                        help="the first verified scenes of each store (None: all)")
    parser.add_argument("--axioms_reduction", type=Literal["abs", "positive", "signed"], default="abs",
                        help="maps → one value per pixel, as the axioms command's `reduction` (default abs, its "
                        "default: Σ_c |a|, the usual heatmap)")
    parser.add_argument("--axioms_correlation", type=Literal["pearson", "spearman"], default="spearman",
                        help="Eq. 10/11's correlation across scenes (default spearman, the authors' code, as the "
                        "axioms command)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every cell (forked RNG) and the bootstrap")
    parser.add_argument("--bootstrap", type=int, default=0,
                        help="bootstrap resamples for a percentile CI of each mean (0: standard error only)")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--num_examples", type=int, default=4, help="example images in the heatmap figure")
    parser.add_argument("--shard", type=str | None, default=None,
                        help="'i/n': compute only this shard's cells (cell c when c %% n == i) and stop; a run "
                        "without --shard merges the cached cells")
    parser.add_argument("--name", type=str, default=DEFAULT_RUN_NAME,
                        help="run name: the run folder is runs/report/<name> (rerun the same name to reuse its cells)")
    parser.add_argument("--output_dir", type=str | None, default=None,
                        help="page, tables, figures, cells and the W&B run (default: the run folder "
                        "runs/report/<name>)")
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--progress", type=bool, default=True)
    parser.add_argument("--wandb.enabled", type=bool, default=True, help="a W&B run (offline unless opted in)")
    parser.add_argument("--wandb.project", type=str, default="lit_xai")
    parser.add_argument("--wandb.name", type=str | None, default=None, help="W&B run name (default: name)")
    parser.add_argument("--wandb.log_caches", type=bool, default=True,
                        help="log the computed cells as a W&B artifact (type cache) at the end")
    return parser


def with_control(methods: list[MethodSpec]) -> list[MethodSpec]:
    """The methods with the random control appended unless present; labels must be unique."""
    methods = list(methods)
    if not any(m.name == CONTROL for m in methods):
        methods.append(MethodSpec(CONTROL))
    labels = [m.display for m in methods]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ConfigurationError(f"report: methods with the same label {duplicated}; give each a distinct label")
    return methods


def metric_specs(cfg: Namespace) -> list[MetricSpec]:
    """The metric columns of the configured families; unknown family or metric names are configuration errors."""
    known = (*FAMILIES, *EXTERNAL_FAMILIES)
    unknown = [f for f in cfg.families if f not in known]
    if unknown:
        raise ConfigurationError(f"report: unknown family {unknown[0]!r}; available: {', '.join(known)}")
    for family in cfg.family_metrics:
        if family not in FAMILIES:
            raise ConfigurationError(f"report: family_metrics names {family!r}, not one of {', '.join(FAMILIES)}")
    specs: list[MetricSpec] = []
    for family in cfg.families:
        if family in EXTERNAL_FAMILIES:
            continue
        members = list(FAMILIES[family])
        chosen = cfg.family_metrics.get(family, members)
        wrong = [m for m in chosen if m not in members]
        if wrong:
            raise ConfigurationError(
                f"report: metric {wrong[0]!r} is not a registered metric of family {family!r}; "
                f"registered there: {', '.join(members) or 'none'}"
            )
        if not chosen:
            raise ConfigurationError(f"report: family_metrics chooses no metric of family {family!r}")
        specs += [MetricSpec(family, m, dict(cfg.metric_kwargs.get(m, {}))) for m in chosen]
    used = {s.name for s in specs}
    stray = sorted(set(cfg.metric_kwargs) - used)
    if stray:
        raise ConfigurationError(f"report: metric_kwargs for {stray}, which no configured family runs")
    return specs


def validate(cfg: Namespace) -> tuple[list[MethodSpec], list[MetricSpec]]:
    """Every check that needs no model or data: names, arguments, sizes, files. Raises ConfigurationError."""
    from lit_xai.attribution import build_method
    from lit_xai.attribution.base import AttributionError
    from lit_xai.metrics import build_metric
    from lit_xai.roar.grid import parse_shard

    if not cfg.model.weights:
        raise ConfigurationError(
            "report: model.weights is required (a state_dict or Lightning checkpoint); train one first, e.g. "
            "`python -m lit_xai fit` and pass runs/fit/<name>/<id>/checkpoints/best.ckpt"
        )
    if not Path(cfg.model.weights).is_file():
        raise ConfigurationError(f"report: model.weights {cfg.model.weights}: no such file")
    for name in ("num_images", "chunk_size", "num_examples"):
        if getattr(cfg, name) < 1:
            raise ConfigurationError(f"report: {name} must be ≥ 1, got {getattr(cfg, name)}")
    if not 0 < cfg.confidence < 1 or cfg.bootstrap < 0:
        raise ConfigurationError(f"report: confidence in (0, 1) and bootstrap ≥ 0 expected, got "
                                 f"{cfg.confidence}, {cfg.bootstrap}")
    if cfg.shard is not None:
        try:
            parse_shard(cfg.shard)
        except ValueError as error:
            raise ConfigurationError(f"report: {error}") from None
    for path in (cfg.roar_summary, cfg.axioms_table):
        if path is not None and not Path(path).is_file():
            raise ConfigurationError(f"report: {path}: no such file")
    check_axiom_options(cfg)
    methods = with_control(cfg.methods)
    for spec in methods:
        try:
            build_method(spec.name, **spec.kwargs)
        except (AttributionError, TypeError) as error:
            raise ConfigurationError(f"report: method {spec.display!r}: {error}") from None
    metrics = metric_specs(cfg)
    for spec in metrics:
        try:
            build_metric(spec.name, **spec.kwargs)
        except (ValueError, TypeError) as error:
            raise ConfigurationError(f"report: {error}") from None
    return methods, metrics


def check_axiom_options(cfg: Namespace) -> None:
    """``axioms_scenes`` only with the axiom family and without ``axioms_table``; a positive scene count; the stores
    readable (:func:`lit_xai.report.axioms.find_stores`)."""
    if cfg.axioms_scenes is None:
        return
    if "axioms" not in cfg.families:
        raise ConfigurationError("report: axioms_scenes is set but families has no 'axioms'; add it or drop the store")
    if cfg.axioms_table is not None:
        raise ConfigurationError("report: give the axiom family either axioms_scenes (scored here) or axioms_table "
                                 "(shown as given), not both")
    if cfg.axioms_num_scenes is not None and cfg.axioms_num_scenes < 3:
        raise ConfigurationError(f"report: axioms_num_scenes must be ≥ 3 (the jackknife of Eq. 10/11), got "
                                 f"{cfg.axioms_num_scenes}")
    from lit_xai.report.axioms import find_stores

    find_stores(cfg.axioms_scenes)


def check_ground_truth(metrics: list[MetricSpec], sample: dict[str, Any], data_name: str) -> None:
    """A metric that needs masks/boxes on data whose samples lack them → ConfigurationError naming both."""
    from lit_xai.metrics import build_metric

    for spec in metrics:
        needs = build_metric(spec.name, **spec.kwargs).requires
        missing = sorted(GROUND_TRUTH_KEYS[n] for n in needs if n in GROUND_TRUTH_KEYS and GROUND_TRUTH_KEYS[n]
                         not in sample)
        if spec.family == "localisation" and not any(key in sample for key in GROUND_TRUTH_KEYS.values()):
            missing = missing or ["mask or box"]  # e.g. the pointing game takes either
        if missing:
            raise ConfigurationError(
                f"report: family {spec.family!r} (metric {spec.name!r}) needs ground-truth {'/'.join(missing)} "
                f"but {data_name} samples have only {sorted(sample)}; use data with masks and boxes (e.g. "
                "lit_xai.data.SyntheticShapesDataModule) or drop the family"
            )
