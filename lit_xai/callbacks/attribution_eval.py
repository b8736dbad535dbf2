"""AttributionEvaluation: run attribution methods on validation/test batches, score them, log maps and results.

YAML (append to ``trainer.callbacks``)::

    - class_path: lit_xai.callbacks.AttributionEvaluation
      init_args:
        methods: [{name: gradient}, {name: integrated_gradients, kwargs: {steps: 16}, label: IG}]
        metrics: [{name: deletion, kwargs: {pixels_per_step: 16}}, {name: insertion}]
        max_samples: 128

For every evaluated batch (samples with dataset ``index < max_samples``) each method's maps are computed (with
gradients enabled, also inside ``trainer.test``'s inference mode) and fed to every metric. The metrics are
torchmetrics living in the callback's own ``ModuleDict`` on the module's device; at epoch end ``compute()`` runs
on every rank (DDP sync), then rank zero logs:

- one scalar per (method, metric): ``attr/{stage}/{method}/{metric}`` (through ``pl_module.log``, so every logger
  and checkpoint monitor sees it);
- per metric, the curves of all methods (a W&B line plot and a figure, or a PNG + JSON in the run folder);
- a heatmap grid: the first ``num_grid_samples`` inputs next to every method's maps;
- a summary table method × metric.

A ``random`` map is always evaluated as the control (label ``random``) unless the specs already name it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor, nn
from tqdm.auto import tqdm

from lit_xai.callbacks import figures
from lit_xai.callbacks.explainers import Explainer, build_explainer
from lit_xai.metrics.base import AttributionMetric
from lit_xai.metrics.registry import build_metric

STAGES = ("val", "test")
TARGETS = ("label", "prediction")
RANDOM_CONTROL = "random"


def _metric_spec(spec: Mapping[str, Any] | str) -> tuple[str, str, dict[str, Any]]:
    """``{name, kwargs, label}`` (or a name) → (label, name, kwargs)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    unknown = sorted(set(spec) - {"name", "kwargs", "label"})
    if unknown or "name" not in spec:
        raise ValueError(f"a metric spec needs 'name' and may have 'kwargs', 'label'; got {dict(spec)}")
    return spec.get("label") or spec["name"], spec["name"], dict(spec.get("kwargs") or {})


class AttributionEvaluation(Callback):
    """Evaluate attribution methods with attribution metrics during ``validate``/``test`` (and ``fit``'s validation).

    Args:
        methods: method specs ``{name, kwargs, postprocess, label}`` (see :mod:`lit_xai.callbacks.explainers`).
        metrics: metric specs ``{name, kwargs, label}`` (names: :func:`lit_xai.metrics.available_metrics`).
        stages: where to run: ``val`` and/or ``test``.
        every_n_epochs: run on validation every N epochs (test always runs).
        max_samples: evaluate the samples whose dataset index is below this (``None``: all); index-based, so the
            same samples are evaluated whatever the number of DDP ranks.
        target: explain the ``label`` or the model's ``prediction``.
        random_control: add the ``random`` map as the control method.
        random_seed: seed of the random control.
        num_grid_samples: rows of the heatmap grid (0: no grid).
        grid_channel_reduction: how the grid reduces a map's channels for display.
        progress_bar: show a tqdm bar per method (rank zero).
        output_dir: folder for figures/JSON when the logger is not W&B (default: the trainer's log dir).
    """

    def __init__(
        self,
        methods: list[dict[str, Any]] | None = None,
        metrics: list[dict[str, Any]] | None = None,
        stages: list[str] | None = None,
        every_n_epochs: int = 1,
        max_samples: int | None = 256,
        target: str = "label",
        random_control: bool = True,
        random_seed: int = 0,
        num_grid_samples: int = 8,
        grid_channel_reduction: str = "abs_sum",
        progress_bar: bool = True,
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        stages = list(stages) if stages is not None else list(STAGES)
        if not set(stages) <= set(STAGES):
            raise ValueError(f"stages={stages}: expected a subset of {STAGES}")
        if target not in TARGETS:
            raise ValueError(f"target={target!r}: expected one of {TARGETS}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be ≥ 1, got {every_n_epochs}")
        method_specs: list[Any] = list(methods if methods is not None else [{"name": "gradient"}])
        if random_control and not any(
            (s if isinstance(s, str) else s.get("name")) == RANDOM_CONTROL for s in method_specs
        ):
            method_specs.append({"name": RANDOM_CONTROL, "kwargs": {"seed": random_seed}})
        self.explainers: list[Explainer] = [build_explainer(spec) for spec in method_specs]
        labels = [e.label for e in self.explainers]
        if len(set(labels)) != len(labels):
            raise ValueError(f"method labels must be unique, got {labels}; set 'label' in the method specs")
        metric_specs = [_metric_spec(s) for s in (metrics if metrics is not None else [{"name": "deletion"}])]
        metric_labels = [label for label, _, _ in metric_specs]
        if len(set(metric_labels)) != len(metric_labels):
            raise ValueError(f"metric labels must be unique, got {metric_labels}; set 'label' in the metric specs")
        self.metrics = nn.ModuleDict(
            {
                explainer.label: nn.ModuleDict({label: build_metric(name, **kw) for label, name, kw in metric_specs})
                for explainer in self.explainers
            }
        )
        self.stages, self.every_n_epochs, self.max_samples = stages, every_n_epochs, max_samples
        self.target, self.num_grid_samples = target, num_grid_samples
        self.grid_channel_reduction = grid_channel_reduction
        self.progress_bar, self.output_dir = progress_bar, output_dir
        self._active = False
        self._seen = 0
        self._grid_images: list[Tensor] = []
        self._grid_maps: dict[str, list[Tensor]] = {}
        self._grid_captions: list[str] = []
        self._bars: dict[str, Any] = {}

    # ------------------------------------------------------------------ Lightning hooks
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
            self._finish("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:
            self._finish("test", trainer, pl_module)

    # ------------------------------------------------------------------ evaluation
    def _start(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, due: bool) -> None:
        self._active = stage in self.stages and due
        if not self._active:
            return
        self.metrics.to(pl_module.device)
        for group in self.metrics.values():
            for metric in group.values():
                metric.reset()
        for explainer in self.explainers:
            explainer.reset()
        self._seen = 0
        self._grid_images, self._grid_captions = [], []
        self._grid_maps = {e.label: [] for e in self.explainers}
        if self.progress_bar and trainer.is_global_zero:
            total = self._expected_samples(trainer, stage)
            self._bars = {
                e.label: tqdm(total=total, desc=f"attribution {e.label}", position=i + 1, leave=False, unit="img")
                for i, e in enumerate(self.explainers)
            }

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

    def _selection(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Which samples of the batch to evaluate: dataset index below ``max_samples`` (or a running count)."""
        size = batch["image"].shape[0]
        device = batch["image"].device
        if self.max_samples is None:
            return torch.ones(size, dtype=torch.bool, device=device)
        if "index" in batch:
            return batch["index"].to(device) < self.max_samples
        keep = torch.arange(self._seen, self._seen + size, device=device) < self.max_samples
        self._seen += size
        return keep

    def evaluate_batch(self, pl_module: L.LightningModule, batch: Mapping[str, Tensor]) -> None:
        """Compute every method's maps on the selected samples of ``batch`` and update every metric."""
        images = batch["image"]
        model: nn.Module = getattr(pl_module, "net", pl_module)
        for group in self.metrics.values():  # every rank allocates its states, also without samples
            for metric in group.values():
                metric.prepare(model, tuple(images.shape[-2:]))
        keep = self._selection(batch)
        if not bool(keep.any()):
            return
        inputs = images[keep]
        if self.target == "label":
            target = batch["label"][keep].long()
        else:
            with torch.no_grad():
                target = model(inputs).argmax(1)
        extras = {
            name: batch[key][keep] if key in batch else None for name, key in (("masks", "mask"), ("boxes", "box"))
        }
        grid_room = self.num_grid_samples - sum(len(x) for x in self._grid_images)
        if grid_room > 0:
            indices = batch["index"][keep] if "index" in batch else keep.nonzero()[:, 0]
            self._grid_images.append(inputs[:grid_room].detach().cpu())
            self._grid_captions += [f"#{int(i)} t={int(t)}" for i, t in zip(indices[:grid_room], target[:grid_room])]
        for explainer in self.explainers:
            maps = explainer(model, inputs, target)
            if grid_room > 0:
                self._grid_maps[explainer.label].append(maps[:grid_room].detach().cpu())
            for metric in self.metrics[explainer.label].values():
                metric.update(model, inputs, target, maps, method=explainer, **extras)
            if explainer.label in self._bars:
                self._bars[explainer.label].update(inputs.shape[0])

    def compute_results(self) -> dict[str, dict[str, dict[str, Tensor]]]:
        """``{method: {metric: metric.compute()}}``; must run on every DDP rank (it syncs the states)."""
        results: dict[str, dict[str, dict[str, Tensor]]] = {}
        for method_label, group in self.metrics.items():
            results[method_label] = {}
            for metric_label, metric in group.items():
                if metric.update_count == 0 and not _is_distributed():
                    continue
                try:
                    results[method_label][metric_label] = metric.compute()
                except ValueError as error:  # no sample reached this metric on any rank
                    if "before any" not in str(error):
                        raise
        return results

    def _finish(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars = {}
        results = self.compute_results()
        for method_label, per_metric in results.items():
            for metric_label, value in per_metric.items():
                pl_module.log(f"attr/{stage}/{method_label}/{metric_label}", value["score"].float(), sync_dist=False)
        if trainer.is_global_zero:
            self._publish(stage, trainer, pl_module, results)
        self._active = False

    # ------------------------------------------------------------------ logging (rank zero)
    def _publish(
        self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, results: dict[str, dict[str, dict]]
    ) -> None:
        wandb_logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        out_dir = None if wandb_logger is not None else self._output_folder(trainer, stage)
        media: dict[str, Any] = {}
        summary_rows = self._summary_rows(results)
        if out_dir is not None:
            (out_dir / "summary.json").write_text(json.dumps(summary_rows, indent=1))
        for metric_label, (example, curves) in self._curves(results).items():
            x = example.curve_axis().cpu()
            for curve_name, lines in curves.items():
                title = f"{stage} {metric_label}: {curve_name}"
                fig = figures.curves_figure(title, x, lines, example.curve_label, example.curve_ticks())
                key = f"attr/{stage}/curves/{metric_label}/{curve_name}"
                if wandb_logger is not None:
                    import wandb

                    media[key] = wandb.Image(fig)
                    media[key + "_plot"] = wandb.plot.line_series(
                        xs=x.tolist(), ys=[v.tolist() for v in lines.values()], keys=list(lines),
                        title=title, xname=example.curve_label,
                    )
                else:
                    stem = out_dir / f"curve_{metric_label}_{curve_name}"  # type: ignore[operator]
                    fig.savefig(stem.with_suffix(".png"), dpi=120)
                    payload = {"x": x.tolist(), "curves": {m: v.tolist() for m, v in lines.items()}}
                    stem.with_suffix(".json").write_text(json.dumps(payload))
                figures.close(fig)
        grid = self._grid_figure(trainer)
        if grid is not None:
            if wandb_logger is not None:
                import wandb

                media[f"attr/{stage}/heatmaps"] = wandb.Image(grid)
            else:
                grid.savefig(out_dir / "heatmaps.png", dpi=120)  # type: ignore[operator]
            figures.close(grid)
        if wandb_logger is not None:
            import wandb

            columns = list(summary_rows[0]) if summary_rows else ["method"]
            media[f"attr/{stage}/summary"] = wandb.Table(
                columns=columns, data=[[row.get(c) for c in columns] for row in summary_rows]
            )
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

    def _summary_rows(self, results: dict[str, dict[str, dict[str, Tensor]]]) -> list[dict[str, Any]]:
        metric_labels = list(next(iter(self.metrics.values())).keys())
        rows = []
        for method_label, per_metric in results.items():
            row: dict[str, Any] = {"method": method_label}
            for label in metric_labels:
                row[label] = float(per_metric[label]["score"]) if label in per_metric else None
            rows.append(row)
        return rows

    def _grid_figure(self, trainer: L.Trainer) -> Any:
        if self.num_grid_samples <= 0 or not self._grid_images:
            return None
        images = torch.cat(self._grid_images)
        datamodule = getattr(trainer, "datamodule", None)
        denormalize = getattr(datamodule, "denormalize", None)
        if callable(denormalize):
            pixels = denormalize(images)
        else:  # no normalisation statistics: stretch to [0, 1]
            pixels = (images - images.amin()) / (images.amax() - images.amin()).clamp_min(1e-12)
        maps = {label: torch.cat(chunks) for label, chunks in self._grid_maps.items() if chunks}
        return figures.heatmap_grid(pixels, maps, self._grid_captions, self.grid_channel_reduction)

    def _output_folder(self, trainer: L.Trainer, stage: str) -> Path:
        root = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        folder = root / "attribution" / f"{stage}_epoch{trainer.current_epoch}_step{trainer.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
