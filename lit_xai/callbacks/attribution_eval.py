"""AttributionEvaluation: run attribution methods on validation/test batches, score them, log maps and results.

YAML (append to ``trainer.callbacks``)::

    - class_path: lit_xai.callbacks.AttributionEvaluation
      init_args:
        name: quick            # key prefix attr/quick/…; every evaluation callback of a run needs its own
        methods: [{name: gradient}, {name: integrated_gradients, kwargs: {steps: 16}, label: IG}]
        metrics: [{name: deletion, kwargs: {pixels_per_step: 16}}, {name: insertion}]
        max_samples: 128

For every evaluated batch (samples with dataset ``index < max_samples``) each method's maps are computed (with
gradients enabled, also inside ``trainer.test``'s inference mode) and fed to every metric. The metrics are
torchmetrics living in the callback's own ``ModuleDict`` on the module's device; at epoch end ``compute()`` runs
on every rank (DDP sync), then:

- one scalar per (method, metric): ``attr/[{name}/]{stage}/{method}/{metric}``, its standard error ``…_se`` and the
  paired difference to the random control ``…_vs_random`` ± ``…_vs_random_se`` (through ``pl_module.log``, so every
  logger and checkpoint monitor sees them; W&B summaries keep the best value by the metric's direction);
- a summary table method × metric (direction, n, mean ± SE, paired Δ to the control; :mod:`.summary`), printed at
  the end of ``test``/``validate`` and logged with a forest plot;
- per metric, the curves of all methods (AUC in the legend), a heatmap grid (:mod:`.figures`) and a per-sample
  table (image, label, prediction, confidence, maps, per-image scores); with W&B as media, else as PNG/JSON files.

Per-image scores (for SE and the paired differences) come from every metric's ``image_scores`` (an update's
``last_image_scores`` where the metric keeps them, so no second pass); they are gathered over DDP ranks like the
metric states. Images a protocol skips (EHR's large boxes) score NaN and are left out of the statistics.
A ``random`` map is always evaluated as the control (label ``random``) unless the specs already name it.

The IBA family (:class:`~lit_xai.attribution.information.iba.FeatureBottleneckMethod`) needs the feature statistics
N(μ_R, σ_R²) of the training data (Schulz et al. 2020 §3.1): at the start of every active stage the callback fits
them on the explained model from ``trainer.datamodule.train_dataloader()`` (``fit_statistics``), again only when
the model or its weights changed. Under DDP every rank streams a disjoint share of that loader's images and the
estimate merges the ranks' states (``all_gather``), so every rank uses the same statistics.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torch.utils.data import DistributedSampler
from torchmetrics import Metric
from tqdm.auto import tqdm

from lit_xai.attribution.base import AttributionError
from lit_xai.attribution.information.iba import FeatureBottleneckMethod
from lit_xai.attribution.information.statistics import batch_images
from lit_xai.attribution.layers import resolve_layer
from lit_xai.callbacks import figures
from lit_xai.callbacks.explainers import Explainer, build_explainer
from lit_xai.callbacks.summary import SummaryRow, format_table, summarise
from lit_xai.callbacks.targets import (
    TARGETS,
    check_target,
    choose_targets,
    explained_model,
    recorded,
    targeted_ground_truth,
    task_name,
)
from lit_xai.metrics.base import AttributionMetric
from lit_xai.metrics.localisation import EffectiveHeatRatio
from lit_xai.metrics.perturbation import PerturbationCurve
from lit_xai.metrics.registry import build_metric
from lit_xai.storage import weights_fingerprint

STAGES = ("val", "test")
RANDOM_CONTROL = "random"
#: y-axis labels of the metrics' curve outputs
CURVE_LABELS = {
    "probability": "softmax probability of the target",
    "logit": "target logit",
    "fractional_change": "|p − p₀| / p₀ of the target",
    "sigmoid": "sigmoid probability of the target",
    "identity": "target output (score)",
}
#: where the metrics' ``masks``/``boxes`` come from in a batch, by default
GROUND_TRUTH = {"masks": "mask", "boxes": "box"}
#: Lightning's TQDMProgressBar uses rows 0 (main) and 1 (validation) at ``process_position=0``
PROGRESS_POSITION = 2
#: the callback's stage in each Trainer entry point (``setup``'s ``stage``)
ENTRY_STAGES = {"fit": "val", "validate": "val", "test": "test"}


class CallbackConfigError(ValueError):
    """A bad evaluation-callback configuration (method, metric, layer, stacked callbacks): one line in the CLI."""


class RankImages:
    """The images of one DDP rank's share of a loader: every ``world``-th image of each batch from the ``rank``-th
    on. The ranks stream disjoint images whose union (with batch sizes divisible by ``world``) is the sequence one
    process streams; re-iterable when the loader is."""

    def __init__(self, loader: Iterable[Any], rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world={world}), got {rank}")
        self.loader, self.rank, self.world = loader, rank, world

    def __iter__(self) -> Iterator[Tensor]:
        for batch in self.loader:
            images = batch_images(batch)[self.rank :: self.world]
            if images.shape[0]:
                yield images


def _metric_spec(spec: Mapping[str, Any] | str) -> tuple[str, str, dict[str, Any]]:
    """``{name, kwargs, label}`` (or a name) → (label, name, kwargs)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    unknown = sorted(set(spec) - {"name", "kwargs", "label"})
    if unknown or "name" not in spec:
        raise CallbackConfigError(f"a metric spec needs 'name' and may have 'kwargs', 'label'; got {dict(spec)}")
    return spec.get("label") or spec["name"], spec["name"], dict(spec.get("kwargs") or {})


class ImageScores(Metric):
    """Per-image scores and their dataset indices, concatenated over updates and DDP ranks (``dist_reduce_fx=cat``)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("scores", [], dist_reduce_fx="cat")
        self.add_state("index", [], dist_reduce_fx="cat")

    def update(self, scores: Tensor, index: Tensor) -> None:
        self.scores.append(scores.detach().double().flatten())
        self.index.append(index.detach().double().flatten())

    def compute(self) -> tuple[Tensor, Tensor]:
        """(scores, indices), sorted by index so that every method's scores pair image by image."""
        scores, index = (torch.cat(s) if isinstance(s, list) else s for s in (self.scores, self.index))
        if scores.numel() == 0:
            return scores, index
        order = index.argsort(stable=True)
        return scores[order], index[order]


class AttributionEvaluation(Callback):
    """Evaluate attribution methods with attribution metrics during ``validate``/``test`` (and ``fit``'s validation).

    Args:
        methods: method specs ``{name, kwargs, postprocess, label}`` (see :mod:`lit_xai.callbacks.explainers`).
        metrics: metric specs ``{name, kwargs, label}`` (names: :func:`lit_xai.metrics.available_metrics`).
        name: key prefix (``attr/{name}/{stage}/…``); ``None`` logs under ``attr/{stage}/…``. Callbacks of one run
            must have distinct names (else their keys would collide and Lightning would average them).
        stages: where to run: ``val`` and/or ``test``.
        every_n_epochs: run on validation every N epochs (test always runs).
        max_samples: evaluate the samples whose dataset index is below this (``None``: all); index-based, so the
            same samples are evaluated whatever the number of DDP ranks.
        target: what is explained (:mod:`lit_xai.callbacks.targets`, per task): ``label``, ``prediction`` or
            ``index`` (the output ``target_index`` for every image). The model is ``pl_module.explained_net`` when
            it has one (e.g. the six expected region scores), else ``pl_module.net``.
        target_index: the explained output with ``target: index``.
        ground_truth: batch keys of the metrics' ``masks`` and ``boxes`` (default ``{masks: mask, boxes: box}``;
            e.g. ``{masks: concept_masks, boxes: concept_boxes}``, ``{masks: region_masks}`` or
            ``{masks: severity_map}`` for the chest data); per-output masks/boxes pick the explained target's.
        random_control: add the ``random`` map as the control method.
        random_seed: seed of the random control.
        paired_statistics: keep per-image scores (one extra curve pass per perturbation metric) for standard
            errors and paired differences to the control.
        num_grid_samples: rows of the heatmap grid (0: no grid).
        num_table_samples: rows of the per-sample table (0: none).
        grid_view: ``magnitude`` (|map|, channels by ``grid_channel_reduction``) or ``signed`` (channel sum).
        grid_channel_reduction: ``abs_sum`` or ``max_abs``, for the magnitude view.
        grid_outlier_perc: Captum's outlier percentage for display scaling (:data:`figures.OUTLIER_PERC`).
        progress_bar: show one aggregate progress bar with per-method rates (rank zero, interactive consoles).
        print_summary: print the summary table at the end of ``test`` and standalone ``validate`` (rank zero).
        output_dir: folder for figures/JSON when the logger is not W&B (default: the trainer's log dir).
        fit_statistics: fit the IBA family's feature statistics on ``trainer.datamodule.train_dataloader()`` at the
            start of each active stage (again only after a weight change) for every such method given no
            ``statistics``. Default ``True``: Schulz et al. 2020 §3.1 estimate μ_R, σ_R on training data (the
            authors' ``IBA.estimate`` streams training batches). ``False``: each method estimates them from the
            explained batch and warns (a poor prior).
    """

    def __init__(
        self,
        methods: list[dict[str, Any]] | None = None,
        metrics: list[dict[str, Any]] | None = None,
        name: str | None = None,
        stages: list[str] | None = None,
        every_n_epochs: int = 1,
        max_samples: int | None = 256,
        target: str = "label",
        target_index: int | None = None,
        ground_truth: dict[str, str] | None = None,
        random_control: bool = True,
        random_seed: int = 0,
        paired_statistics: bool = True,
        num_grid_samples: int = 8,
        num_table_samples: int = 32,
        grid_view: str = "magnitude",
        grid_channel_reduction: str = "abs_sum",
        grid_outlier_perc: float = figures.OUTLIER_PERC,
        progress_bar: bool = True,
        print_summary: bool = True,
        output_dir: str | None = None,
        fit_statistics: bool = True,
    ) -> None:
        super().__init__()
        stages = list(stages) if stages is not None else list(STAGES)
        if not set(stages) <= set(STAGES):
            raise CallbackConfigError(f"stages={stages}: expected a subset of {STAGES}")
        if target not in TARGETS:
            raise CallbackConfigError(f"target={target!r}: expected one of {TARGETS}")
        try:
            check_target("multiclass", target, target_index)
        except ValueError as error:
            raise CallbackConfigError(str(error)) from None
        ground_truth = dict(GROUND_TRUTH if ground_truth is None else ground_truth)
        if not set(ground_truth) <= set(GROUND_TRUTH):
            raise CallbackConfigError(f"ground_truth={ground_truth}: keys must be among {sorted(GROUND_TRUTH)}")
        if every_n_epochs < 1:
            raise CallbackConfigError(f"every_n_epochs must be ≥ 1, got {every_n_epochs}")
        if grid_view not in figures.VIEWS:
            raise CallbackConfigError(f"grid_view={grid_view!r}: expected one of {sorted(figures.VIEWS)}")
        if name is not None and (not name or "/" in name):
            raise CallbackConfigError(f"name={name!r}: expected a non-empty string without '/'")
        method_specs: list[Any] = list(methods if methods is not None else [{"name": "gradient"}])
        if random_control and not any(
            (s if isinstance(s, str) else s.get("name")) == RANDOM_CONTROL for s in method_specs
        ):
            method_specs.append({"name": RANDOM_CONTROL, "kwargs": {"seed": random_seed}})
        try:
            self.explainers: list[Explainer] = [build_explainer(spec) for spec in method_specs]
        except (AttributionError, ValueError, TypeError) as error:
            raise CallbackConfigError(f"AttributionEvaluation{_named(name)} methods: {error}") from None
        labels = [e.label for e in self.explainers]
        if len(set(labels)) != len(labels):
            raise CallbackConfigError(f"method labels must be unique, got {labels}; set 'label' in the method specs")
        metric_specs = [_metric_spec(s) for s in (metrics if metrics is not None else [{"name": "deletion"}])]
        metric_labels = [label for label, _, _ in metric_specs]
        if len(set(metric_labels)) != len(metric_labels):
            raise CallbackConfigError(
                f"metric labels must be unique, got {metric_labels}; set 'label' in the metric specs"
            )
        try:
            self.metrics = nn.ModuleDict(
                {
                    e.label: nn.ModuleDict({label: build_metric(n, **kw) for label, n, kw in metric_specs})
                    for e in self.explainers
                }
            )
        except (ValueError, TypeError) as error:
            raise CallbackConfigError(f"AttributionEvaluation{_named(name)} metrics: {error}") from None
        self.metric_names = {label: metric_name for label, metric_name, _ in metric_specs}
        self.control = RANDOM_CONTROL if RANDOM_CONTROL in labels else None
        self.image_scores = nn.ModuleDict(
            {
                e.label: nn.ModuleDict(
                    {label: ImageScores() for label, m in self.metrics[e.label].items() if _has_image_scores(m)}
                )
                for e in self.explainers
            }
            if paired_statistics
            else {}
        )
        self.name, self.stages, self.every_n_epochs, self.max_samples = name, stages, every_n_epochs, max_samples
        self.target, self.num_grid_samples, self.num_table_samples = target, num_grid_samples, num_table_samples
        self.target_index, self.ground_truth, self.task = target_index, ground_truth, "multiclass"
        self.grid_view, self.grid_channel_reduction = grid_view, grid_channel_reduction
        self.grid_outlier_perc = grid_outlier_perc
        self.progress_bar, self.print_summary, self.output_dir = progress_bar, print_summary, output_dir
        self.fit_statistics = fit_statistics
        self.summaries: dict[str, list[SummaryRow]] = {}
        self._model: nn.Module | None = None
        self._fitted_on: dict[str, tuple[int, str]] = {}  # explainer label → (model id, weights fingerprint)
        self._active = False
        self._seen = 0
        self._samples: dict[str, list[Tensor]] = {}
        self._sample_maps: dict[str, list[Tensor]] = {}
        self._bar: Any = None
        self._rates: dict[str, list[float]] = {}
        self._pending_print: str | None = None

    # ------------------------------------------------------------------ keys
    def key(self, stage: str, *parts: str) -> str:
        """``attr/[{name}/]{stage}/{parts…}``."""
        prefix = f"attr/{self.name}" if self.name else "attr"
        return "/".join((prefix, stage, *parts))

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fail before any work: stacked callbacks sharing a key prefix, or layers the model does not have."""
        names = [cb.name for cb in trainer.callbacks if isinstance(cb, AttributionEvaluation)]  # type: ignore[attr-defined]
        if names.count(self.name) > 1:
            raise CallbackConfigError(
                f"{names.count(self.name)} AttributionEvaluation callbacks log under the same keys "
                f"'{self.key('<stage>')}/…' (name={self.name!r}; names in this run: {names}); Lightning would "
                "average their results: give each callback its own init_args.name"
            )
        self.task = task_name(pl_module)
        try:
            check_target(self.task, self.target, self.target_index)
        except ValueError as error:
            raise CallbackConfigError(f"AttributionEvaluation{_named(self.name)}: {error}") from None
        model = self._explained(pl_module)
        for explainer in self.explainers:
            for layer in _layer_names(explainer.method):
                try:
                    resolve_layer(model, layer)
                except AttributionError as error:
                    raise CallbackConfigError(f"method {explainer.label!r}: {error}") from None
        fitted = self._statistics_explainers()
        datamodule = getattr(trainer, "datamodule", None)
        if fitted and ENTRY_STAGES.get(stage) in self.stages and not _has_train_loader(datamodule):
            has = "no datamodule" if datamodule is None else f"a {type(datamodule).__name__} without train_dataloader()"
            raise CallbackConfigError(
                f"AttributionEvaluation{_named(self.name)}: methods {[e.label for e in fitted]} need feature "
                f"statistics of the training data (fit_statistics=true) but the trainer has {has}: pass a datamodule "
                "with a training split, or set fit_statistics: false (each batch then estimates its own prior, with "
                "a warning)"
            )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0 or trainer.state.fn != "fit"
        self._start("val", trainer, pl_module, due and not trainer.sanity_checking)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("test", trainer, pl_module, True)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._active:
            self.evaluate_batch(pl_module, batch)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._active:
            self.evaluate_batch(pl_module, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:
            self._finish("val", trainer, pl_module, show=trainer.state.fn != "fit")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:
            self._finish("test", trainer, pl_module, show=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_print()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_print()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close_bar()
        self._active = False

    # ------------------------------------------------------------------ evaluation
    def _start(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, due: bool) -> None:
        self._active = stage in self.stages and due
        if not self._active:
            return
        self._fit_statistics(trainer, pl_module)
        self.metrics.to(pl_module.device)
        self.image_scores.to(pl_module.device)
        datamodule = getattr(trainer, "datamodule", None)
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        for group in self.metrics.values():  # pixel-space fills (e.g. black) need the data's normalisation
            for metric in group.values():
                if callable(getattr(metric, "set_data_normalisation", None)):
                    metric.set_data_normalisation(mean, std)
        for groups in (self.metrics, self.image_scores):
            for group in groups.values():
                for metric in group.values():
                    metric.reset()
        for explainer in self.explainers:
            explainer.reset()
        self._seen = 0
        self._samples, self._sample_maps = {}, {e.label: [] for e in self.explainers}
        self._rates = {e.label: [0.0, 0.0] for e in self.explainers}
        if trainer.is_global_zero:
            self._define_wandb_metrics(trainer, stage)
        if self.progress_bar and trainer.is_global_zero and trainer.progress_bar_callback is not None:
            total = self._expected_samples(trainer, stage)
            self._bar = tqdm(
                total=None if total is None else total * len(self.explainers), desc=f"attribution ({stage})",
                position=PROGRESS_POSITION, leave=False, unit="img", disable=None, dynamic_ncols=True,
            )

    def _explained(self, pl_module: L.LightningModule) -> nn.Module:
        """``explained_model(pl_module)``, the same object while it is built of the same modules and tensors: a module
        whose ``explained_net`` wraps ``net`` in a fresh ``Sequential`` per call would otherwise look like a new model
        to the IBA family's fitted statistics (which are kept for one model object)."""
        model = explained_model(pl_module)
        if self._model is not None and _same_structure(self._model, model):
            return self._model
        self._model = model
        return model

    def _statistics_explainers(self) -> list[Explainer]:
        """The explainers whose method needs fitted feature statistics (the IBA family given no ``statistics``);
        none with ``fit_statistics=False``."""
        if not self.fit_statistics:
            return []
        return [
            e for e in self.explainers
            if isinstance(e.method, FeatureBottleneckMethod) and not e.method.has_given_statistics
        ]

    def _fit_statistics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Fit the IBA family's statistics on the explained model from the datamodule's training loader, for the
        methods not yet fitted on this model object with these weights (``weights_fingerprint``). Rank 0 decides, so
        that every DDP rank enters the (collective) estimate; each rank streams its :class:`RankImages` share. The
        global RNG is forked (a training loader's augmentation draws from it) and the model is left as found."""
        explainers = self._statistics_explainers()
        if not explainers:
            return
        model = self._explained(pl_module)
        state = (id(model), weights_fingerprint(model))
        stale = trainer.strategy.broadcast([e.label for e in explainers if self._fitted_on.get(e.label) != state])
        if not stale:
            return
        loader = trainer.datamodule.train_dataloader()  # type: ignore[attr-defined]
        sharded = isinstance(getattr(loader, "sampler", None), DistributedSampler)  # one shard per rank already
        images = RankImages(loader, *((0, 1) if sharded else (trainer.global_rank, trainer.world_size)))
        with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
            for explainer in explainers:
                if explainer.label in stale:
                    try:
                        explainer.method.fit(model, images)  # type: ignore[attr-defined]
                    except AttributionError as error:
                        raise CallbackConfigError(
                            f"method {explainer.label!r}: fitting its feature statistics on the training data: {error}"
                        ) from error
                    self._fitted_on[explainer.label] = state

    def _expected_samples(self, trainer: L.Trainer, stage: str) -> int | None:
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        try:
            size = len(loader.dataset)  # type: ignore[union-attr, arg-type]
        except (TypeError, AttributeError):
            return None
        if self.max_samples is not None:
            size = min(size, self.max_samples)
        return math.ceil(size / max(1, trainer.world_size))

    def _selection(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Which samples of the batch to evaluate (dataset index below ``max_samples``, else a running count),
        and the identities of all samples (the dataset index, else the running count)."""
        size = batch["image"].shape[0]
        device = batch["image"].device
        running = torch.arange(self._seen, self._seen + size, device=device)
        self._seen += size
        index = batch["index"].to(device).reshape(-1) if "index" in batch else running
        if self.max_samples is None:
            return torch.ones(size, dtype=torch.bool, device=device), index
        return index < self.max_samples, index

    def evaluate_batch(self, pl_module: L.LightningModule, batch: Mapping[str, Tensor]) -> None:
        """Compute every method's maps on the selected samples of ``batch`` and update every metric."""
        images = batch["image"]
        model = self._explained(pl_module)
        for group in self.metrics.values():  # every rank allocates its states, also without samples
            for metric in group.values():
                metric.prepare(model, tuple(images.shape[-2:]))
        keep, index = self._selection(batch)
        if not bool(keep.any()):
            return
        inputs, index, labels = images[keep], index[keep], batch["label"][keep]
        outputs = None
        if self.target != "label" or self.task != "multiclass":
            with torch.no_grad():
                outputs = model(inputs)
        try:
            target, valid = choose_targets(self.task, self.target, self.target_index, labels, outputs)
        except ValueError as error:
            raise CallbackConfigError(f"AttributionEvaluation{_named(self.name)}: {error}") from None
        if not bool(valid.all()):  # e.g. multi-label images without a positive label under target=label
            inputs, index, labels, target = inputs[valid], index[valid], labels[valid], target[valid]
            keep = keep.clone()
            keep[keep.clone()] = valid  # the kept samples' positions in the batch, for the ground truth below
            if not bool(valid.any()):
                return
        extras = {
            name: targeted_ground_truth(batch[key][keep], target, name) if key in batch else None
            for name, key in self.ground_truth.items()
        }
        room = max(self.num_grid_samples, self.num_table_samples) - sum(len(x) for x in self._samples.get("index", []))
        if room > 0:
            self._keep_samples(model, inputs[:room], target[:room], labels[:room], index[:room], extras)
        for explainer in self.explainers:
            started = time.perf_counter()
            maps = explainer(model, inputs, target)
            if room > 0:
                self._sample_maps[explainer.label].append(maps[:room].detach().cpu())
            for label, metric in self.metrics[explainer.label].items():
                metric.update(model, inputs, target, maps, method=explainer, **extras)
                if explainer.label in self.image_scores and label in self.image_scores[explainer.label]:
                    scores = getattr(metric, "last_image_scores", None)  # this update's, when the metric keeps them
                    if scores is None or scores.shape[0] != inputs.shape[0]:
                        scores = metric.image_scores(model, inputs, target, maps, method=explainer)
                    self.image_scores[explainer.label][label].update(scores, index)
            self._rates[explainer.label][0] += time.perf_counter() - started
            self._rates[explainer.label][1] += inputs.shape[0]
            if self._bar is not None:
                self._bar.set_description_str(f"attribution {explainer.label}", refresh=False)
                self._bar.set_postfix_str(self._rate_text(), refresh=False)
                self._bar.update(inputs.shape[0])

    def _keep_samples(
        self, model: nn.Module, inputs: Tensor, target: Tensor, label: Tensor, index: Tensor,
        extras: Mapping[str, Tensor | None],
    ) -> None:
        """Keep the first samples (with prediction and confidence) for the heatmap grid and the per-sample table."""
        with torch.no_grad():
            outputs = model(inputs)
        if self.task == "multiclass":
            confidence, prediction = outputs.float().softmax(1).max(1)
        else:  # label and prediction columns: the explained output and its recorded value (callbacks/targets.py)
            label, prediction, confidence = target, target, recorded(self.task, outputs, target)
        values = {
            "image": inputs, "target": target, "label": label, "index": index, "prediction": prediction,
            "confidence": confidence, "masks": extras.get("masks"), "boxes": extras.get("boxes"),
        }
        for key, value in values.items():
            if value is not None:
                self._samples.setdefault(key, []).append(value.detach().cpu())

    def _rate_text(self) -> str:
        """Per-method time per image (maps and metric updates of that method only)."""
        parts = [f"{label} {1000 * s / n:.0f} ms/img" for label, (s, n) in self._rates.items() if n > 0]
        return ", ".join(parts)

    def compute_results(self) -> dict[str, dict[str, dict[str, Tensor]]]:
        """``{method: {metric: metric.compute()}}``; must run on every DDP rank (it syncs the states)."""
        results: dict[str, dict[str, dict[str, Tensor]]] = {}
        for method_label, group in self.metrics.items():
            results[method_label] = {}
            for metric_label, metric in group.items():
                if metric.update_count == 0 and not _is_distributed():
                    continue
                try:
                    compute = getattr(metric, "results", metric.compute)  # the full dict whatever ``result`` is
                    results[method_label][metric_label] = compute()
                except ValueError as error:  # no sample reached this metric on any rank
                    if "before any" not in str(error):
                        raise
        return results

    def compute_image_scores(self) -> dict[str, dict[str, tuple[Tensor, Tensor]]]:
        """``{method: {metric: (per-image scores [n], dataset indices [n])}}`` sorted by index, gathered over DDP
        ranks; must run on every rank."""
        out: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
        for method_label, group in self.image_scores.items():
            for metric_label, collector in group.items():
                if collector.update_count == 0 and not _is_distributed():
                    continue
                scores, index = collector.compute()
                if scores.numel():
                    out.setdefault(method_label, {})[metric_label] = (scores.cpu(), index.cpu().long())
        return out

    def _finish(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, show: bool) -> None:
        self._close_bar()
        results = self.compute_results()
        per_image = self.compute_image_scores()
        image_scores = {m: {k: v[0] for k, v in per_metric.items()} for m, per_metric in per_image.items()}
        scores = {m: {k: float(v["score"]) for k, v in per_metric.items()} for m, per_metric in results.items()}
        counts = {m: {k: int(v["count"]) for k, v in pm.items() if "count" in v} for m, pm in results.items()}
        directions = {label: _higher_is_better(m) for label, m in next(iter(self.metrics.values())).items()}
        rows = summarise(scores, image_scores, directions, self.metric_names, counts, self.control)
        self.summaries[stage] = rows
        # every rank logs the same values (computed from synced states): sync_dist=True keeps Lightning's DDP
        # bookkeeping honest (no "use sync_dist=True" warning) and the mean over identical values changes nothing
        for row in rows:
            vs = f"_vs_{self.control}"
            values = {"": row.mean, "_se": row.se, vs: row.diff, vs + "_se": row.diff_se}
            for suffix, value in values.items():
                if value is not None:
                    pl_module.log(self.key(stage, row.method, row.metric + suffix), float(value), sync_dist=True)
        if trainer.is_global_zero:
            title = f"attribution evaluation{_named(self.name)} ({stage}, epoch {trainer.current_epoch})"
            if show and self.print_summary:
                self._pending_print = format_table(rows, title, self.control)
            self._publish(stage, trainer, results, per_image, rows, title)
        self._active = False

    def _flush_print(self) -> None:
        if self._pending_print is not None:
            print("\n" + self._pending_print, flush=True)
            self._pending_print = None

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ logging (rank zero)
    def _define_wandb_metrics(self, trainer: L.Trainer, stage: str) -> None:
        """W&B run summaries keep the best value of each score by its direction (``define_metric(summary=…)``)."""
        logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        if logger is None:
            return
        experiment = logger.experiment
        if not callable(getattr(experiment, "define_metric", None)):
            return
        for method_label, group in self.metrics.items():
            for metric_label, metric in group.items():
                higher = _higher_is_better(metric)
                if higher is not None:
                    experiment.define_metric(
                        self.key(stage, method_label, metric_label), summary="max" if higher else "min",
                        step_metric="trainer/global_step",
                    )

    def _publish(
        self, stage: str, trainer: L.Trainer, results: dict[str, dict[str, dict]],
        per_image: dict[str, dict[str, tuple[Tensor, Tensor]]], rows: list[SummaryRow], title: str,
    ) -> None:
        wandb_logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        pictures: dict[str, tuple[Any, dict[str, Any] | None]] = {}  # key → (figure, curve data or None)
        for metric_label, (example, curves) in self._curves(results).items():
            x = example.curve_axis().cpu()
            for curve_name, lines in curves.items():
                auc = {m: float(results[m][metric_label]["score"]) for m in lines}
                fig = figures.curves_figure(
                    f"{stage} {metric_label}: {curve_name}", x, lines, example.curve_label,
                    CURVE_LABELS.get(curve_name, curve_name), example.curve_ticks(), auc,
                    "AUC" if isinstance(example, PerturbationCurve | EffectiveHeatRatio) else "score",
                )
                data = {
                    "x": x.tolist(), "xname": example.curve_label, "curves": {m: v.tolist() for m, v in lines.items()}
                }
                pictures[self.key(stage, "curves", metric_label, curve_name)] = (fig, data)
        grid = self._grid_figure(trainer)
        if grid is not None:
            pictures[self.key(stage, "heatmaps")] = (grid, None)
        if any(r.diff is not None for r in rows):
            pictures[self.key(stage, "summary_plot")] = (figures.summary_figure(rows, title, self.control or ""), None)
        table_rows = [r.as_dict() for r in rows]
        samples = self._sample_rows(per_image, trainer)
        if wandb_logger is None:
            out_dir = self._output_folder(trainer, stage)
            (out_dir / "summary.json").write_text(json.dumps(table_rows, indent=1, ensure_ascii=False))
            (out_dir / "summary.txt").write_text(format_table(rows, title, self.control) + "\n")
            (out_dir / "samples.json").write_text(json.dumps([s["values"] for s in samples], indent=1))
            for key, (fig, data) in pictures.items():
                stem = out_dir / key.split(f"/{stage}/", 1)[1].replace("/", "_")
                fig.savefig(stem.with_suffix(".png"), dpi=100)
                if data is not None:
                    stem.with_suffix(".json").write_text(json.dumps({"x": data["x"], "curves": data["curves"]}))
            return
        import wandb

        media: dict[str, Any] = {}
        for key, (fig, data) in pictures.items():
            media[key] = wandb.Image(_png_image(fig))
            if data is not None:
                media[key + "_plot"] = wandb.plot.line_series(
                    xs=data["x"], ys=list(data["curves"].values()), keys=list(data["curves"]), title=key,
                    xname=data["xname"],
                )
        columns = list(table_rows[0]) if table_rows else ["method"]
        media[self.key(stage, "summary")] = wandb.Table(
            columns=columns, data=[[row.get(c) for c in columns] for row in table_rows]
        )
        if samples:
            columns = ["input", *samples[0]["values"], *samples[0]["maps"]]
            data = [
                [wandb.Image(s["image"]), *s["values"].values(), *(wandb.Image(m) for m in s["maps"].values())]
                for s in samples
            ]
            media[self.key(stage, "samples")] = wandb.Table(columns=columns, data=data)
        wandb_logger.experiment.log({**media, "trainer/global_step": trainer.global_step})

    def _curves(
        self, results: dict[str, dict[str, dict[str, Tensor]]]
    ) -> dict[str, tuple[AttributionMetric, dict[str, dict[str, Tensor]]]]:
        """metric label → (a metric instance for the x-axis, {curve name: {method: y}})."""
        out: dict[str, tuple[AttributionMetric, dict[str, dict[str, Tensor]]]] = {}
        for method_label, per_metric in results.items():
            for metric_label, values in per_metric.items():
                for key, y in values.items():
                    if key.startswith("curve/"):
                        metric = self.metrics[method_label][metric_label]
                        _, curves = out.setdefault(metric_label, (metric, {}))  # type: ignore[arg-type]
                        curves.setdefault(key.removeprefix("curve/"), {})[method_label] = y.detach().cpu().reshape(-1)
        return out

    def _kept(self, key: str) -> Tensor | None:
        chunks = self._samples.get(key)
        return torch.cat(chunks) if chunks else None

    def _pixels(self, trainer: L.Trainer, images: Tensor) -> Tensor:
        denormalize = getattr(getattr(trainer, "datamodule", None), "denormalize", None)
        if callable(denormalize):
            return denormalize(images)
        return (images - images.amin()) / (images.amax() - images.amin()).clamp_min(1e-12)

    def _class_name(self, trainer: L.Trainer, k: int) -> str:
        datamodule = getattr(trainer, "datamodule", None)
        names = getattr(datamodule, "class_names", None) or getattr(datamodule, "classes", None)
        return str(names[k]) if names is not None and 0 <= k < len(names) else str(k)

    def _grid_figure(self, trainer: L.Trainer) -> Any:
        images = self._kept("image")
        if self.num_grid_samples <= 0 or images is None:
            return None
        rows = min(self.num_grid_samples, images.shape[0])
        pixels = self._pixels(trainer, images[:rows])
        index, label = self._kept("index")[:rows], self._kept("label")[:rows]  # type: ignore[index]
        prediction, confidence = self._kept("prediction")[:rows], self._kept("confidence")[:rows]  # type: ignore[index]
        captions = [
            f"#{int(i)} y={self._class_name(trainer, int(y))}\nŷ={self._class_name(trainer, int(p))} ({float(c):.2f})"
            for i, y, p, c in zip(index, label, prediction, confidence)
        ]
        maps = {label: torch.cat(chunks)[:rows] for label, chunks in self._sample_maps.items() if chunks}
        boxes, masks = self._kept("boxes"), self._kept("masks")
        return figures.heatmap_grid(
            pixels, maps, captions, self.grid_view, self.grid_channel_reduction, self.grid_outlier_perc,
            boxes=None if boxes is None else boxes[:rows], masks=None if masks is None else masks[:rows],
        )

    def _sample_rows(
        self, per_image: dict[str, dict[str, tuple[Tensor, Tensor]]], trainer: L.Trainer
    ) -> list[dict[str, Any]]:
        """Per-sample rows: values (index, label, prediction, confidence, per-image scores), the input and maps as
        RGB arrays (for a ``wandb.Table`` W&B can sort and filter)."""
        images = self._kept("image")
        if self.num_table_samples <= 0 or images is None:
            return []
        import numpy as np
        from matplotlib import colormaps

        count = min(self.num_table_samples, images.shape[0])
        index = self._kept("index")[:count]  # type: ignore[index]
        label, prediction = self._kept("label")[:count], self._kept("prediction")[:count]  # type: ignore[index]
        confidence = self._kept("confidence")[:count]  # type: ignore[index]
        pixels = self._pixels(trainer, images[:count]).clamp(0, 1)
        _, cmap, (vmin, vmax) = figures.VIEWS[self.grid_view]
        heat = {
            m: figures.display_maps(
                torch.cat(chunks)[:count], tuple(images.shape[-2:]), self.grid_view, self.grid_channel_reduction,
                self.grid_outlier_perc,
            )
            for m, chunks in self._sample_maps.items() if chunks
        }
        score_lookup = {
            f"{method}/{metric}": dict(zip(order.tolist(), scores.tolist()))
            for method, per_metric in per_image.items()
            for metric, (scores, order) in per_metric.items()
        }
        rows = []
        for k in range(count):
            values: dict[str, Any] = {
                "index": int(index[k]), "label": self._class_name(trainer, int(label[k])),
                "prediction": self._class_name(trainer, int(prediction[k])), "confidence": float(confidence[k]),
            }
            for column, lookup in score_lookup.items():
                values[column] = lookup.get(int(index[k]))
            picture = pixels[k].permute(1, 2, 0).numpy()
            picture = np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else picture[..., :3]
            maps = {
                f"{m} map": (colormaps[cmap]((h[k].numpy() - vmin) / (vmax - vmin))[..., :3] * 255).astype(np.uint8)
                for m, h in heat.items()
            }
            rows.append({"values": values, "image": (picture * 255).astype(np.uint8), "maps": maps})
        return rows

    def _output_folder(self, trainer: L.Trainer, stage: str) -> Path:
        root = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        name = f"{self.name}_" if self.name else ""
        folder = root / "attribution" / f"{name}{stage}_epoch{trainer.current_epoch}_step{trainer.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _png_image(fig: Any) -> Any:
    """A PIL image of ``fig`` (rendered by the figure's own Agg canvas; no pyplot)."""
    import io

    from PIL import Image

    return Image.open(io.BytesIO(figures.to_png(fig)))


def _named(name: str | None) -> str:
    return f" {name!r}" if name else ""


def _has_image_scores(metric: nn.Module) -> bool:
    """Whether ``metric.image_scores(model, inputs, target, maps, method=…)`` gives per-image scores."""
    if not callable(getattr(metric, "image_scores", None)):
        return False
    parameters = list(inspect.signature(metric.image_scores).parameters)  # type: ignore[union-attr]
    return parameters[:4] == ["model", "inputs", "target", "maps"] and "method" in parameters


def _higher_is_better(metric: nn.Module) -> bool | None:
    value = getattr(metric, "higher_is_better", None)
    return None if value is None else bool(value)


def _layer_names(method: Any) -> list[str]:
    """The layer names a method will look up (``layer``/``layers`` attributes given as strings)."""
    names = []
    for attribute in ("layer", "layers"):
        value = getattr(method, attribute, None)
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, list | tuple):
            names += [v for v in value if isinstance(v, str)]
    return names


def _has_train_loader(datamodule: Any) -> bool:
    """Whether ``datamodule`` implements ``train_dataloader`` (Lightning's default raises)."""
    return callable(getattr(datamodule, "train_dataloader", None)) and is_overridden(
        "train_dataloader", datamodule, L.LightningDataModule
    )


def _same_structure(cached: nn.Module, model: nn.Module) -> bool:
    """Same module types in the same order, holding the very same parameter and buffer tensors."""
    def signature(m: nn.Module) -> tuple[list[type], list[int]]:
        return [type(x) for x in m.modules()], [id(t) for t in (*m.parameters(), *m.buffers())]

    return cached is model or signature(cached) == signature(model)


def _is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
