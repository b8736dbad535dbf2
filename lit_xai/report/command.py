"""``python -m lit_xai report --config configs/report_<…>.yaml [--shard i/n]``: the attribution report card.

Steps: validate the config (names, arguments, files; ground truth for localisation) before any work; load the
model (``model.weights`` is required) and the split; compute the missing cells (cached, resumable; with
``--shard i/n`` only this shard's cells, then stop); merge all cells into per-image score vectors; statistics
(:mod:`lit_xai.report.statistics`); write the page and files (:mod:`lit_xai.report.html`) and a W&B run. See
docs/report.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from torch import nn

from lit_xai.axioms.evaluation import make_metric
from lit_xai.axioms.generation import SceneBatch
from lit_xai.loggers import run_folder
from lit_xai.models.classifier import ConfigurationError
from lit_xai.report.axioms import (
    StoredScenes,
    check_stores,
    compute_axiom_cells,
    find_stores,
    load_scenes,
    merge_axioms,
    plan_axioms,
)
from lit_xai.report.cells import Cell, chunks, compute_cells, load_cell, plan
from lit_xai.report.config import CONTROL, MethodSpec, MetricSpec, build_parser, check_ground_truth, validate
from lit_xai.report.methods import ReportMethods
from lit_xai.report.statistics import MetricReport, metric_report


def load_model(cfg: Namespace) -> nn.Module:
    from lit_xai.models.backbones import build_backbone

    model = build_backbone(cfg.model.name, num_classes=cfg.model.num_classes, in_chans=cfg.model.in_chans,
                           weights=cfg.model.weights)
    return model.to(cfg.device).eval()


def load_split(cfg: Namespace, datamodule: Any) -> Any:
    """The configured split, checked to hold ``num_images`` images."""
    datamodule.prepare_data()
    datamodule.setup("test" if cfg.split == "test" else "fit")
    dataset = datamodule.dataset(cfg.split)
    if len(dataset) < cfg.num_images:
        raise ConfigurationError(f"report: num_images={cfg.num_images} but the {cfg.split} split has {len(dataset)}")
    return dataset


def context(cfg: Namespace, model: nn.Module) -> dict[str, Any]:
    """What every cell key shares: weights fingerprint, data config, split, target rule, seed."""
    from lit_xai.storage import weights_fingerprint

    return {"weights": weights_fingerprint(model), "data": cfg.data.as_dict(), "split": cfg.split, "target": cfg.target,
            "seed": cfg.seed}


def select_shard(cells: list[Cell], shard: str | None) -> list[Cell]:
    """Cell ``c`` belongs to shard ``c % n == i``; no shard: all cells."""
    from lit_xai.roar.grid import parse_shard

    if shard is None:
        return cells
    i, n = parse_shard(shard)
    return [cell for position, cell in enumerate(cells) if position % n == i]


def merge(cells: list[Cell], root: Path, methods: list[MethodSpec], metrics: list[MetricSpec]
          ) -> tuple[dict[str, dict[str, torch.Tensor]], torch.Tensor, dict[str, dict[str, Any]]]:
    """metric → method → per-image scores ``[N]`` (chunks in order), the image indices ``[N]``, and metric → the
    mean curves per method (where every cell of the metric stored per-image curves)."""
    parts: dict[tuple[str, str], list[torch.Tensor]] = {}
    curve_parts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    index: dict[int, torch.Tensor] = {}
    for cell in cells:
        payload = load_cell(cell, root)
        if payload is None:
            raise RuntimeError(f"report: cell {cell.path(root)} is missing after computing; rerun to redo it")
        parts.setdefault((cell.metric.name, cell.method.display), []).append(payload["scores"])
        curve_parts.setdefault((cell.metric.name, cell.method.display), []).append(payload.get("curves") or {})
        index[cell.chunk.index] = payload["index"]
    scores = {s.name: {m.display: torch.cat(parts[(s.name, m.display)]) for m in methods} for s in metrics}
    curves: dict[str, dict[str, Any]] = {}
    for s in metrics:
        chunks_of = [curve_parts[(s.name, m.display)] for m in methods]
        if not all("values" in c for per_method in chunks_of for c in per_method):
            continue
        first = chunks_of[0][0]
        means = {m.display: {name: torch.cat([c["values"][name] for c in per_method]).nanmean(0)
                             for name in first["values"]} for m, per_method in zip(methods, chunks_of)}
        curves[s.name] = {"axis": first["axis"], "ticks": first["ticks"], "means": means}
    return scores, torch.cat([index[i] for i in sorted(index)]), curves


def directions(metrics: list[MetricSpec]) -> dict[str, bool | None]:
    from lit_xai.metrics import build_metric

    return {s.name: getattr(build_metric(s.name, **s.kwargs), "higher_is_better", None) for s in metrics}


def run(cfg: Namespace) -> dict[str, Any]:
    """The whole report for a parsed config; returns what was written (paths) and the metric reports."""
    if not isinstance(cfg.data, Namespace):
        raise TypeError("report.run expects the parsed (not instantiated) config")
    cfg.output_dir = cfg.output_dir or str(run_folder("report", cfg.name))
    init = build_parser().instantiate_classes(cfg)
    methods, metrics = validate(init)
    datamodule = init.data
    dataset = load_split(cfg, datamodule)
    check_ground_truth(metrics, dataset[0], type(datamodule).__name__)
    model = load_model(cfg)
    root = Path(cfg.output_dir)
    shared = context(cfg, model)
    cells = plan(shared, methods, metrics, chunks(cfg.num_images, cfg.chunk_size))
    stores, scenes, axiom_cells = axiom_plan(cfg, methods, shared)  # checks the scenes' model first
    mine = select_shard(cells + axiom_cells, cfg.shard)
    todo = [cell for cell in mine if load_cell(cell, root) is None]
    print(f"[lit_xai report] {len(cells) + len(axiom_cells)} cells ({len(methods)} methods × {len(metrics)} metrics × "
          f"{len(cells) // max(1, len(methods) * len(metrics))} chunks"
          + (f", + {len(axiom_cells)} axiom cells over {len(stores)} scenarios" if axiom_cells else "")
          + f"); this run: {len(mine)}, cached {len(mine) - len(todo)}, to compute {len(todo)}", flush=True)
    normalisation = (getattr(datamodule, "mean", None), getattr(datamodule, "std", None))
    axiom_keys = {cell.key for cell in axiom_cells}
    built = ReportMethods(model, datamodule, cfg.seed)  # the IBA family fitted on the training split first
    for _ in compute_cells([c for c in todo if c.key not in axiom_keys], root, model, dataset, cfg.target, cfg.seed,
                           normalisation, cfg.device, built, cfg.progress):
        pass
    for _ in compute_axiom_cells([c for c in todo if c.key in axiom_keys], root, model, stores, scenes, cfg.seed,
                                 cfg.device, built, cfg.progress):
        pass
    if cfg.shard is not None:
        print(f"[lit_xai report] shard {cfg.shard} done; run without --shard to merge", flush=True)
        return {"cells": len(mine), "computed": len(todo)}
    scores, image_index, curves = merge(cells, root, methods, metrics) if metrics else ({}, torch.zeros(0), {})
    hib = directions(metrics)
    reports = [metric_report(s.family, s.name, scores[s.name], hib[s.name], CONTROL, cfg.bootstrap,
                             cfg.confidence, cfg.seed) for s in metrics]
    index = {s.name: image_index for s in metrics}
    if axiom_cells:
        axiom_scores, scene_ids = merge_axioms(axiom_cells, root, methods)
        scores.update(axiom_scores)
        index.update(scene_ids)
        reports += [metric_report("axioms", s.scenario, axiom_scores[s.scenario],
                                  make_metric(s.scenario, cfg.axioms_correlation).higher_is_better, CONTROL,
                                  cfg.bootstrap, cfg.confidence, cfg.seed) for s in stores]
    from lit_xai.report.html import examples, write_outputs

    pictures = examples(model, dataset, methods, cfg.target, min(cfg.num_examples, cfg.num_images), cfg.device,
                        cfg.seed, getattr(datamodule, "denormalize", None), built)
    written = write_outputs(root, reports, scores, index, curves, pictures, external_tables(cfg, stores, scenes), cfg)
    if cfg.wandb.enabled:
        log_wandb(cfg, reports, scores, index, written)
    print(f"[lit_xai report] {written['html']}", flush=True)
    return {"cells": len(mine), "computed": len(todo), "reports": reports, "scores": scores, **written}


def axiom_plan(cfg: Namespace, methods: list[MethodSpec], shared: dict[str, Any]
               ) -> tuple[list[StoredScenes], dict[str, SceneBatch], list[Cell]]:
    """The scene stores (checked to be the report model's: ``shared["weights"]`` is its fingerprint), their scenes
    and the axiom cells; none without ``axioms_scenes``."""
    if cfg.axioms_scenes is None:
        return [], {}, []
    stores = find_stores(cfg.axioms_scenes)
    check_stores(stores, shared["weights"], cfg.model.num_classes, cfg.model.in_chans)
    scenes = {s.scenario: load_scenes(s, cfg.axioms_num_scenes) for s in stores}
    return stores, scenes, plan_axioms(shared, methods, stores, scenes, cfg.chunk_size, cfg.axioms_reduction,
                                       cfg.axioms_correlation)


def external_tables(cfg: Namespace, stores: list[StoredScenes] | None = None,
                    scenes: dict[str, SceneBatch] | None = None) -> dict[str, Any]:
    """ROAR and axiom results from finished runs (rows), the scene stores the axiom family was scored on, or the
    reason they are absent."""
    import csv

    tables: dict[str, Any] = {}
    if stores:
        tables["axioms"] = [{"scenario": s.scenario, "scenes": len((scenes or {})[s.scenario]),
                             "image_size": s.config.image_size, "patch_size": s.config.patch_size,
                             "store": str(s.directory)} for s in stores]
    for family, path, command in (("roar", cfg.roar_summary, "roar"), ("axioms", cfg.axioms_table, "axioms")):
        if family not in cfg.families or family in tables:
            continue
        if path is None:
            option = "roar_summary" if family == "roar" else "axioms_table"
            tables[family] = f"skipped: no finished {command} run given (set {option})" + (
                " and no scene store to score (set axioms_scenes)" if family == "axioms" else "")
        elif path.endswith(".json"):
            loaded = json.loads(Path(path).read_text())
            tables[family] = loaded if isinstance(loaded, list) else [loaded]
        else:
            with open(path, newline="") as handle:
                tables[family] = list(csv.DictReader(handle))
    return tables


def log_wandb(cfg: Namespace, reports: list[MetricReport], scores: dict[str, dict[str, torch.Tensor]],
              index: dict[str, torch.Tensor], written: dict[str, Any]) -> None:
    """A W&B run (offline unless opted in): per-sample table, summary metrics with min/max by direction, images."""
    import wandb

    from lit_xai.loggers import log_cache_artifact, wandb_mode

    run = wandb.init(project=cfg.wandb.project, name=cfg.wandb.name or cfg.name,
                     dir=str(Path(cfg.output_dir).absolute()),
                     mode=wandb_mode(), config=json.loads(json.dumps(cfg.as_dict(), default=str)),
                     job_type="report", settings=wandb.Settings(silent=True), reinit="finish_previous")
    try:
        rows = [[r.family, r.metric, method, int(i), float(v)] for r in reports
                for method, values in scores[r.metric].items() for i, v in zip(index[r.metric], values)]
        run.log({"report/samples": wandb.Table(columns=["family", "metric", "method", "index", "score"], data=rows)})
        for r in reports:
            for row in r.rows:
                key = f"report/{r.family}/{r.metric}/{row.method}"
                if r.higher_is_better is not None:
                    run.define_metric(key, summary="max" if r.higher_is_better else "min")
                run.log({key: row.mean})
                run.summary[f"{key}/rank"] = r.ranks.get(row.method)
        figures = sorted(Path(written["html"]).parent.glob("*.png"))  # rank plot, per-family plots, examples
        run.log({f"report/figures/{png.stem}": wandb.Image(str(png)) for png in figures})
        if cfg.wandb.log_caches:  # cells are named by their key: the artifact is keyed by the set of cells
            log_cache_artifact(run, Path(cfg.output_dir) / "cells", "report-cells")
    finally:
        run.finish()


def main(args: list[str] | None = None) -> None:
    """Parse the command line / config and build the report."""
    parser = build_parser()
    run(parser.parse_args(args))
