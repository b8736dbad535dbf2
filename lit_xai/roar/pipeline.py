"""The ROAR pipeline's stages: ``source`` (train or load the model whose maps are used), ``maps`` (compute and
cache every method's maps for train/val/test), ``train`` (retrain this shard's grid cells, recording each in the
shard's manifest) and ``merge`` (summary from every shard's manifest). Each stage skips finished work, so
rerunning a command after a crash continues where it stopped."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lit_xai.data.base import ClassificationDataModule
from lit_xai.models.classifier import ClassifierModule
from lit_xai.roar.fills import build_fill
from lit_xai.roar.grid import (
    BASELINE,
    Cell,
    RemovedDataModule,
    build_grid,
    finish_logger,
    fit_and_test,
    shard_cells,
)
from lit_xai.roar.manifest import Manifest, find_manifests, merge_manifests
from lit_xai.roar.map_cache import SPLITS, MapCache, MapComputation, MapJob, MethodSpec
from lit_xai.roar.removal import PixelRemoval, rank_order
from lit_xai.roar.summary import CurvePoint, MethodAUC, log_to_wandb, plot_curves, summarize, write_csv
from lit_xai.storage import atomic_torch_save, atomic_write_json, is_intact, load_checked, weights_fingerprint

#: Trainer options that decide *where* maps are computed; the rest (epochs, batch limits) only concern training.
PLACEMENT_OPTIONS = ("accelerator", "devices", "strategy", "num_nodes", "precision")
#: Trainer options that do not change results, left out of the grid's configuration fingerprint.
COSMETIC_OPTIONS = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps", "barebones")


@dataclass
class RemovalOptions:
    """``mode``: ``remove`` (ROAR) or ``keep`` (KAR); ``fill``: ``dataset_mean`` (0 in normalised space),
    ``image_mean`` (seed 004), ``blur`` or ``noise``; ``fill_kwargs``: the fill's constructor arguments."""

    mode: Literal["remove", "keep"] = "remove"
    fill: Literal["dataset_mean", "image_mean", "blur", "noise"] = "dataset_mean"
    fill_kwargs: dict[str, float] = field(default_factory=dict)


def data_fingerprint(datamodule: ClassificationDataModule) -> str:
    """Identify the data the maps index into: class, split sizes, and the first/last sample of every split."""
    digest = hashlib.sha256(type(datamodule).__qualname__.encode())
    for split in SPLITS:
        dataset = datamodule.dataset(split)
        digest.update(f"{split}:{len(dataset)}".encode())  # type: ignore[arg-type]
        for index in (0, len(dataset) - 1):  # type: ignore[arg-type]
            sample = dataset[index]
            digest.update(sample["image"].float().contiguous().numpy().tobytes())
            digest.update(str(int(sample["label"])).encode())
    return digest.hexdigest()[:12]


class RoarPipeline:
    """Remove-and-retrain over ``methods × percentiles × seeds`` (+ a baseline per seed) on ``datamodule``.

    Args:
        datamodule: the unmodified data (its ``augment`` is applied after removal).
        model_kwargs: :class:`ClassifierModule` arguments, for the source model and every retrained cell.
        trainer_kwargs: ``lightning.Trainer`` arguments (callbacks/logger are set per run).
        methods: attribution methods; a ``random`` control is added when missing.
        percentiles: percent of pixels replaced, e.g. ``[10, 30, 50, 70, 90]``.
        seeds: training seeds of the retrained cells.
        output_dir: holds ``source/``, ``maps/``, ``cells/``, the manifests and the summary.
        removal: ROAR/KAR mode and fill.
        shard: ``(index, count)`` of this process's grid shard.
        source_checkpoint: a trained model (state dict or Lightning checkpoint) instead of training one.
        source_seed, source_max_epochs: seed and epochs (default: the trainer's) of the source model.
        map_batch_size, map_shard_size: batch size of the map computation and samples per cache shard.
        wandb: log every run to W&B (offline unless opted in), in one ``group``.
    """

    def __init__(
        self,
        datamodule: ClassificationDataModule,
        model_kwargs: dict[str, Any],
        trainer_kwargs: dict[str, Any],
        methods: list[MethodSpec],
        percentiles: list[float],
        seeds: list[int],
        output_dir: str | Path,
        removal: RemovalOptions | None = None,
        shard: tuple[int, int] = (0, 1),
        source_checkpoint: str | None = None,
        source_seed: int = 0,
        source_max_epochs: int | None = None,
        map_batch_size: int = 128,
        map_shard_size: int = 1024,
        wandb: bool = True,
        project: str = "lit_xai",
        group: str | None = None,
    ) -> None:
        if not any(spec.name == "random" for spec in methods):
            methods = [*methods, MethodSpec("random")]
        if not seeds:
            raise ValueError("seeds must not be empty")
        self.datamodule, self.model_kwargs, self.trainer_kwargs = datamodule, model_kwargs, trainer_kwargs
        self.methods = {spec.display: spec for spec in methods}
        if len(self.methods) != len(methods):
            raise ValueError(f"method labels must be unique: {[spec.display for spec in methods]}")
        self.percentiles, self.seeds = percentiles, seeds
        self.output_dir = Path(output_dir)
        self.removal = removal or RemovalOptions()
        self.shard = shard
        self.source_checkpoint, self.source_seed, self.source_max_epochs = (
            source_checkpoint, source_seed, source_max_epochs
        )
        self.map_batch_size, self.map_shard_size = map_batch_size, map_shard_size
        self.wandb, self.project = wandb, project
        self.group = group or f"roar-{self.output_dir.resolve().name}"
        self.cells = build_grid(list(self.methods), percentiles, seeds)
        self._orders: dict[str, dict[str, torch.Tensor]] = {}
        self._source: ClassifierModule | None = None

    # ----------------------------------------------------------------------------------------------- helpers
    def _logger(self, name: str, job_type: str, config: dict[str, Any]) -> Any:
        if not self.wandb:
            return False
        from lit_xai.loggers import LitXaiWandbLogger

        return LitXaiWandbLogger(
            project=self.project, name=name, group=self.group, save_dir=str(self.output_dir),
            job_type=job_type, config=config,
        )

    @property
    def source_weights_path(self) -> Path:
        return self.output_dir / "source" / "weights.pt"

    def fingerprint(self) -> str:
        """Hash of everything a cell's result depends on besides its (method, percentile, seed): model and
        training options, removal, data and the source model's weights. (Method configurations are checked per
        cell, so adding a method to a finished grid keeps its results.)"""
        config = {
            "model": self.model_kwargs,
            "trainer": {k: v for k, v in self.trainer_kwargs.items() if k not in COSMETIC_OPTIONS},
            "removal": self.removal.__dict__,
            "data": data_fingerprint(self.datamodule),
            "source": weights_fingerprint(self.source_model(train_if_missing=False).net, chars=16),
        }
        return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def has_source(self) -> bool:
        return self.source_checkpoint is not None or is_intact(self.source_weights_path)

    # ------------------------------------------------------------------------------------------------ stages
    def source_model(self, train_if_missing: bool = True) -> ClassifierModule:
        """The model whose maps drive the removal: the given checkpoint, the cached one, or trained now."""
        if self._source is not None:
            return self._source
        if self.source_checkpoint is not None:
            self._source = ClassifierModule(**{**self.model_kwargs, "weights": self.source_checkpoint})
            return self._source
        module = ClassifierModule(**self.model_kwargs)
        if is_intact(self.source_weights_path):
            module.net.load_state_dict(load_checked(self.source_weights_path))
        elif not train_if_missing:
            raise FileNotFoundError(
                f"no source model at {self.source_weights_path}: run --stage source first (or set source_checkpoint)"
            )
        else:
            trainer_kwargs = dict(self.trainer_kwargs)
            if self.source_max_epochs is not None:
                trainer_kwargs["max_epochs"] = self.source_max_epochs
            logger = self._logger("source", "roar-source", {"seed": self.source_seed})
            module, result = fit_and_test(
                self.datamodule, self.model_kwargs, trainer_kwargs, self.output_dir / "source" / "checkpoint",
                self.source_seed, logger,
            )
            finish_logger(logger)
            state = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
            module.load_state_dict(state)
            rank_zero_info(f"[roar] source model: test acc {result['test_acc']:.4f}")
            if rank_zero_only.rank == 0:
                atomic_write_json(self.output_dir / "source" / "result.json", result)
                atomic_torch_save(module.net.state_dict(), self.source_weights_path)
        self._source = module
        return module

    def map_cache(self) -> MapCache:
        fingerprint = weights_fingerprint(self.source_model(train_if_missing=False).net, chars=16)
        return MapCache(self.output_dir / "maps", fingerprint, data_fingerprint(self.datamodule), self.map_shard_size)

    def map_jobs(self, cache: MapCache) -> list[MapJob]:
        return [
            job
            for spec in self.methods.values()
            for split in SPLITS
            for job in cache.jobs(spec, split, len(self.datamodule.dataset(split)))  # type: ignore[arg-type]
        ]

    def maps_complete(self) -> bool:
        if not self.has_source():
            return False
        cache = self.map_cache()
        return all(cache.is_done(job) for job in self.map_jobs(cache))

    def compute_maps(self) -> None:
        """Compute the missing map shards with ``Trainer.predict`` (split across ranks under DDP)."""
        self.source_model()
        cache = self.map_cache()
        jobs = self.map_jobs(cache)
        pending = sum(not cache.is_done(job) for job in jobs)
        rank_zero_info(f"[roar] maps: {len(jobs) - pending}/{len(jobs)} shards cached in {cache.directory}")
        if not pending:
            return
        datasets = {split: self.datamodule.dataset(split) for split in SPLITS}
        placement = {k: v for k, v in self.trainer_kwargs.items() if k in PLACEMENT_OPTIONS}
        trainer = L.Trainer(
            **placement, logger=False, enable_checkpointing=False, inference_mode=False,
            enable_model_summary=False, enable_progress_bar=self.trainer_kwargs.get("enable_progress_bar"),
        )
        computation = MapComputation(self.source_model().net, cache, jobs, datasets, self.map_batch_size)
        trainer.predict(computation, return_predictions=False)

    def _removal(self, method: str, split: str, percentile: float) -> PixelRemoval:
        if method not in self._orders:
            self._orders.clear()  # cells are method-major within a seed: keep one method's orders in memory
            cache, spec = self.map_cache(), self.methods[method]
            self._orders[method] = {
                s: rank_order(cache.load(spec, s, len(self.datamodule.dataset(s))))  # type: ignore[arg-type]
                for s in SPLITS
            }
        fill = build_fill(self.removal.fill, **self.removal.fill_kwargs)
        return PixelRemoval(self._orders[method][split], percentile, self.removal.mode, fill)

    def cell_datamodule(self, cell: Cell) -> ClassificationDataModule:
        """The data of one cell: unmodified for the baseline, else removal on train, val and test."""
        transforms = {}
        if cell.method != BASELINE:
            transforms = {split: self._removal(cell.method, split, cell.percentile) for split in SPLITS}
        return RemovedDataModule(self.datamodule, transforms, seed=cell.seed)

    def _method_key(self, cell: Cell) -> str | None:
        return self.methods[cell.method].key if cell.method in self.methods else None

    def train(self) -> Manifest:
        """Retrain every unfinished cell of this shard; each finished cell is recorded at once (atomic write)."""
        manifest = Manifest(self.output_dir, *self.shard, fingerprint=self.fingerprint())
        mine = shard_cells(self.cells, *self.shard)
        for cell in mine:
            recorded = manifest.cells.get(cell.key, {}).get("method_key")
            if cell.key in manifest and recorded != self._method_key(cell):
                raise ValueError(
                    f"{cell.key} was recorded with method config {recorded}, now {self._method_key(cell)}: give the "
                    "changed method a new label, or use a new output_dir"
                )
        todo = [cell for cell in mine if cell.key not in manifest]
        rank_zero_info(
            f"[roar] shard {self.shard[0]}/{self.shard[1]}: {len(mine)} cells, {len(mine) - len(todo)} already "
            f"finished (skipped), {len(todo)} to train"
        )
        for number, cell in enumerate(todo, 1):
            datamodule = self.cell_datamodule(cell)
            spec = self.methods.get(cell.method)
            config = {"method": cell.method, "method_key": self._method_key(cell),
                      "percentile": cell.percentile, "seed": cell.seed,
                      "mode": self.removal.mode, "fill": self.removal.fill,
                      "method_config": spec.__dict__ if spec else None}
            logger = self._logger(cell.key, "roar-retrain", config)
            _, result = fit_and_test(
                datamodule, self.model_kwargs, self.trainer_kwargs, self.output_dir / "cells" / cell.slug,
                cell.seed, logger,
            )
            finish_logger(logger)
            if rank_zero_only.rank == 0:
                manifest.record(cell.key, {**config, **result})
            rank_zero_info(f"[roar] [{number}/{len(todo)}] {cell.key}: test acc {result['test_acc']:.4f} "
                           f"({result['train_seconds']:.1f} s)")
        return manifest

    def merge(self) -> tuple[list[CurvePoint], list[MethodAUC], list[str]]:
        """Summary from every shard's manifest: CSVs, PNG, ``summary.json`` and a W&B summary run.
        Returns (curves, aucs, keys of grid cells with no result yet)."""
        recorded = merge_manifests(find_manifests(self.output_dir))
        grid = {cell.key for cell in self.cells}
        results = {key: result for key, result in recorded.items() if key in grid}
        if len(results) < len(recorded):
            rank_zero_info(f"[roar] ignoring {len(recorded) - len(results)} recorded cells that are not in this grid")
        missing = [cell.key for cell in self.cells if cell.key not in results]
        curves, aucs = summarize(results)
        write_csv(curves, aucs, self.output_dir)
        plot = plot_curves(curves, aucs, self.output_dir / "roar_curves.png",
                           title=f"ROAR ({self.removal.mode}, {self.removal.fill})")
        atomic_write_json(self.output_dir / "summary.json", {
            "cells": len(self.cells), "finished": len(self.cells) - len(missing), "missing": missing,
            "curves": [c.__dict__ for c in curves], "auc": [a.__dict__ for a in aucs],
            "auc_convention": "trapezoid over removed fraction p/100, baseline at 0, accuracy in [0, 1]",
        })
        if self.wandb:
            logger = self._logger("summary", "roar-summary", {"cells": len(self.cells)})
            log_to_wandb(curves, aucs, plot, logger)
            finish_logger(logger)
        status = "complete" if not missing else f"INCOMPLETE, missing {len(missing)}: {', '.join(missing[:5])}"
        rank_zero_info(f"[roar] summary of {len(results)}/{len(self.cells)} cells ({status}) in {self.output_dir}")
        for auc in sorted(aucs, key=lambda a: a.mean):
            rank_zero_info(f"[roar]   AUC {auc.method:>24s}: {auc.mean:.4f} ± {auc.std:.4f} ({auc.seeds} seeds)")
        return curves, aucs, missing

    def run(self, stage: str = "all") -> None:
        """Run one stage, or ``all`` of them in order."""
        if stage not in ("source", "maps", "train", "merge", "all"):
            raise ValueError(f"unknown stage {stage!r}; use source, maps, train, merge or all")
        if stage == "all" and self.shard[1] > 1 and not self.maps_complete():
            raise ValueError(
                "with several grid shards, run '--stage source' and '--stage maps' once before the shards' "
                "'--stage train' (or 'all'): otherwise each shard would train its own source model"
            )
        if stage in ("source", "all"):
            self.source_model()
        if stage in ("maps", "all"):
            self.compute_maps()
        if stage in ("train", "all"):
            self.source_model(train_if_missing=False)
            self.train()
        if stage == "merge" or (stage == "all" and rank_zero_only.rank == 0):
            self.merge()
