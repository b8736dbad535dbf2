"""``python -m lit_xai dissect --config configs/dissect_chest.yaml``: Network Dissection and semantic attribution of
trained checkpoints (seed 002 ch. "Towards Semantic Interpretation…", Fig. 2-5).

Steps: check the config before any work (checkpoint files, concept keys in the data, layer names in every model,
the semantic target); per model (``initial``: the checkpoints' architecture freshly initialised with ``seed``, then
the checkpoints in order: the evolution over training, Fig. 4) and layer: thresholds (pass 1) and the IoU sums of
Eq. 5 (pass 2), each cached under ``<run folder>/cache`` keyed by the weights' fingerprint, the data config, the split,
the number of images, the layer and the tail (checked, atomic files: a rerun resumes); semantic attribution (Eq. 6)
of the last model on the most severe images; tables, figures and a W&B run (offline unless opted in) in the run folder
``runs/dissect/<name>``. See docs/concepts.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, lazy_instance
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from lit_xai.concepts.dissection import (
    IOU_THRESHOLD,
    TAIL,
    DissectionIoU,
    DissectionResult,
    iou_from_sums,
    layer_iou,
    layer_thresholds,
)
from lit_xai.concepts.layers import check_spatial, recording, resolve_layers
from lit_xai.concepts.plots import detectors_figure, evolution_figure, examples_figure, semantic_figure
from lit_xai.concepts.semantic import MAX_ROWS, STEPS, semantic_attribution
from lit_xai.data.base import ClassificationDataModule
from lit_xai.data.chest import SyntheticChestDataModule
from lit_xai.loggers import DEFAULT_RUN_NAME, run_folder
from lit_xai.models.classifier import ClassifierModule, ConfigurationError
from lit_xai.storage import atomic_torch_save, load_or_discard, weights_fingerprint

INITIAL = "initial"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m lit_xai dissect", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config (configs/dissect_*.yaml)")
    parser.add_argument("--checkpoints", type=list[str], default=[],
                        help="ClassifierModule checkpoints (fit's .ckpt files), in training order")
    parser.add_argument("--labels", type=list[str] | None, default=None,
                        help="a name per checkpoint in tables and figures (default: the file stems)")
    parser.add_argument("--initial", type=bool, default=True,
                        help="also dissect the architecture freshly initialised with --seed (Fig. 4's 'initial')")
    parser.add_subclass_arguments(ClassificationDataModule, "data", default=lazy_instance(SyntheticChestDataModule))
    parser.add_argument("--split", type=str, default="val", help="the annotation set: train, val or test")
    parser.add_argument("--num_images", type=int | None, default=None, help="the first images of the split (all)")
    parser.add_argument("--concept_keys", type=list[str], default=["concept_masks", "region_masks"],
                        help="sample keys with [C, H, W] bool masks; names from the DataModule's <key>_names "
                             "(concept_names, region_names)")
    parser.add_argument("--layers", type=list[str], default=["features.8"], help="named modules with [B, K, h, w]")
    parser.add_argument("--tail", type=float, default=TAIL, help="P(f_k > T_k) (seed 002 §2.2, Bau et al.: 0.005)")
    parser.add_argument("--iou_threshold", type=float, default=IOU_THRESHOLD, help="detector when IoU > it (0.04)")
    parser.add_argument("--semantic.layer", type=str | None, default=None, help="default: the last of --layers")
    parser.add_argument("--semantic.target", type=int | None, default=None,
                        help="output explained; default: the score (regression) / the summed region scores (regions)")
    parser.add_argument("--semantic.num_images", type=int, default=6, help="the most severe images (by 'score')")
    parser.add_argument("--semantic.top", type=int, default=3, help="top contributing units shown per image")
    parser.add_argument("--semantic.steps", type=int, default=STEPS, help="α points of Eq. 6 (midpoint rule)")
    parser.add_argument("--semantic.max_rows", type=int, default=MAX_ROWS)
    parser.add_argument("--examples.units", type=int, default=4, help="detector units in the Fig. 3 figure")
    parser.add_argument("--examples.images", type=int, default=4, help="images per unit in the Fig. 3 figure")
    parser.add_argument("--seed", type=int, default=0, help="the initial model's seed")
    parser.add_argument("--name", type=str, default=DEFAULT_RUN_NAME,
                        help="run name: the run folder is runs/dissect/<name>")
    parser.add_argument("--output_dir", type=str | None, default=None, help="default: the run folder")
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--progress", type=bool, default=True)
    parser.add_argument("--wandb.enabled", type=bool, default=True, help="a W&B run (offline unless opted in)")
    parser.add_argument("--wandb.project", type=str, default="lit_xai")
    parser.add_argument("--wandb.log_caches", type=bool, default=True, help="log the cache folder as an artifact")
    return parser


def check_checkpoint_file(path: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"dissect --checkpoints: {path}: no such file")
    if not zipfile.is_zipfile(file):
        raise ConfigurationError(f"dissect --checkpoints: {path}: not a PyTorch checkpoint (not a zip archive)")


def load_models(cfg: Namespace) -> tuple[list[str], list[ClassifierModule]]:
    """(names, modules): the initial model (if asked) and every checkpoint, in eval mode on ``cfg.device``."""
    if not cfg.checkpoints:
        raise ConfigurationError("dissect: give --checkpoints (one or more fit checkpoints)")
    if cfg.labels is not None and len(cfg.labels) != len(cfg.checkpoints):
        raise ConfigurationError(f"dissect: {len(cfg.labels)} labels for {len(cfg.checkpoints)} checkpoints")
    for path in cfg.checkpoints:
        check_checkpoint_file(path)
    names = list(cfg.labels or [Path(p).stem for p in cfg.checkpoints])
    if len(set(names)) != len(names) or INITIAL in names:
        raise ConfigurationError(f"dissect: model names must be unique and not {INITIAL!r}, got {names}; set --labels")
    modules = []
    for path in cfg.checkpoints:
        try:
            modules.append(ClassifierModule.load_from_checkpoint(path, map_location="cpu"))
        except (KeyError, RuntimeError, TypeError) as error:
            raise ConfigurationError(f"dissect --checkpoints: {path} is not a ClassifierModule checkpoint "
                                     f"({str(error).splitlines()[0]})") from None
    if cfg.initial:
        hparams = {**modules[0].hparams, "weights": None}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            modules.insert(0, ClassifierModule(**hparams))
        names.insert(0, INITIAL)
    return names, [m.to(cfg.device).eval() for m in modules]


def concept_names(datamodule: Any, keys: list[str], sample: dict[str, Tensor]) -> list[str]:
    """The concept names of the mask keys: ``<key minus _masks>_names`` of the DataModule (``region_`` prefixed for
    regions), or ``<key>:<index>``."""
    names = []
    for key in keys:
        if key not in sample:
            raise ConfigurationError(f"dissect --concept_keys: the data has no {key!r}; sample keys: "
                                     f"{', '.join(sorted(sample))}")
        masks = sample[key]
        if masks.dim() != 3 or masks.dtype != torch.bool:
            raise ConfigurationError(f"dissect --concept_keys: {key!r} is {tuple(masks.shape)} {masks.dtype}, "
                                     "not [C, H, W] bool masks")
        stem = key.removesuffix("_masks")
        given = getattr(datamodule, f"{stem}_names", None)
        if given is not None and len(given) == masks.shape[0]:
            prefix = "" if stem == "concept" else f"{stem}_"
            names += [f"{prefix}{n}" for n in given]
        else:
            names += [f"{key}:{i}" for i in range(masks.shape[0])]
    return names


def output_function(module: ClassifierModule, target: int | None) -> Any:
    """The explained scalar per image from the backbone's outputs (the task's explained outputs, §2.3)."""
    head = module.task.explained()
    task = module.task.name
    if target is None and task in ("multiclass", "multilabel"):
        raise ConfigurationError(f"dissect --semantic.target: a {task} model needs an output index (0.."
                                 f"{module.task.num_classes - 1})")
    if target is not None and not 0 <= target < module.task.num_classes:
        raise ConfigurationError(f"dissect --semantic.target={target}: the {task} model has "
                                 f"{module.task.num_classes} explained outputs")
    head = head.to(next(module.parameters()).device) if head is not None else None

    def output(raw: Tensor) -> Tensor:
        explained = head(raw) if head is not None else raw
        return explained.sum(1) if target is None else explained[:, target]

    return output


def cache_key(fingerprint: str, cfg: Namespace, layer: str, num_images: int) -> str:
    payload = {"weights": fingerprint, "data": cfg.data.as_dict() if isinstance(cfg.data, Namespace) else cfg.data,
               "split": cfg.split, "num_images": num_images, "layer": layer, "tail": cfg.tail,
               "concept_keys": cfg.concept_keys}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def dissect_model(net: nn.Module, loader: DataLoader, cfg: Namespace, concepts: list[str], num_images: int,
                  cache: Path, masks: Any) -> dict[str, DissectionResult]:
    """Thresholds and IoU sums of every layer, from the cache where present (per layer, two checked files)."""
    fingerprint = weights_fingerprint(net)
    keys = {layer: cache_key(fingerprint, cfg, layer, num_images) for layer in cfg.layers}
    stored = {layer: load_or_discard(cache / f"iou-{keys[layer]}.pt") for layer in cfg.layers}
    thresholds = {layer: load_or_discard(cache / f"thresholds-{keys[layer]}.pt") for layer in cfg.layers}
    missing = [layer for layer in cfg.layers if stored[layer] is None and thresholds[layer] is None]
    if missing:
        for layer, values in layer_thresholds(net, loader, missing, num_images, cfg.tail, cfg.device,
                                              cfg.progress).items():
            atomic_torch_save(values, cache / f"thresholds-{keys[layer]}.pt")
            thresholds[layer] = values
    todo = [layer for layer in cfg.layers if stored[layer] is None]
    if todo:
        sums = layer_iou(net, loader, todo, {layer: thresholds[layer] for layer in todo}, masks, len(concepts),
                         cfg.device, cfg.progress)
        for layer, (intersection, union) in sums.items():
            stored[layer] = {"thresholds": thresholds[layer], "intersection": intersection, "union": union}
            atomic_torch_save(stored[layer], cache / f"iou-{keys[layer]}.pt")
    return {layer: DissectionResult(layer, concepts, stored[layer]["thresholds"],
                                    iou_from_sums(stored[layer]["intersection"], stored[layer]["union"]),
                                    cfg.iou_threshold) for layer in cfg.layers}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def example_panels(net: nn.Module, result: DissectionResult, loader: DataLoader, cfg: Namespace,
                   masks: Any, denormalize: Any) -> tuple[Tensor, Tensor, Tensor, list[str]] | None:
    """Fig. 3 panels: the best detector units of ``result`` and, per unit, the images where its mask overlaps the
    concept most (per-image IoU), from the first batch of the annotation set."""
    units = [int(u) for u in result.best_iou.argsort(descending=True) if result.detectors[u]][: cfg.examples.units]
    if not units:
        return None
    batch = next(iter(loader))
    with torch.no_grad(), recording(net, [result.layer]) as store:
        net(batch["image"].to(cfg.device))
    concept = masks(batch)
    metric = DissectionIoU(result.thresholds.to(cfg.device), len(result.concepts))
    unit_masks = metric.unit_masks(store[result.layer], tuple(concept.shape[-2:])).cpu()
    pictures = (denormalize(batch["image"]) if denormalize else batch["image"])[:, 0]
    images, shown_units, shown_concepts, titles = [], [], [], []
    for unit in units:
        c = int(result.best_concept[unit])
        inter = (unit_masks[:, unit] & concept[:, c]).flatten(1).sum(1).float()
        union = (unit_masks[:, unit] | concept[:, c]).flatten(1).sum(1).float()
        score = torch.where(concept[:, c].flatten(1).any(1), inter / union.clamp(min=1), torch.full_like(inter, -1))
        order = score.argsort(descending=True)[: cfg.examples.images]
        images.append(pictures[order])
        shown_units.append(unit_masks[order, unit])
        shown_concepts.append(concept[order, c])
        titles.append(f"unit {unit}: {result.concepts[c]} (IoU {float(result.best_iou[unit]):.3f}, Eq. 5)")
    return torch.stack(images), torch.stack(shown_units), torch.stack(shown_concepts), titles


def semantic_rows(module: ClassifierModule, result: DissectionResult, dataset: Any, cfg: Namespace,
                  denormalize: Any) -> tuple[list[dict[str, Any]], Any]:
    """Eq. 6 on the most severe images (by the sample's ``score``, else the first ones): table rows and Fig. 5."""
    count = min(cfg.semantic.num_images, len(dataset))
    if "score" in dataset[0]:
        scores = torch.stack([torch.as_tensor(dataset[i]["score"]).float() for i in range(len(dataset))])
        chosen = scores.argsort(descending=True, stable=True)[:count].tolist()
    else:
        chosen = list(range(count))
    images = torch.stack([dataset[i]["image"] for i in chosen]).to(cfg.device)
    output = output_function(module, cfg.semantic.target)
    found = semantic_attribution(module.net, result.layer, images, output, cfg.semantic.top, cfg.semantic.steps,
                                 cfg.semantic.max_rows)
    rows, titles, map_titles = [], [], []
    for b, index in enumerate(chosen):
        total = float(found.contributions[b].sum())
        score = dataset[index].get("score")
        titles.append(f"image {index}" + (f", score {float(score):.0f}" if score is not None else "")
                      + f", f={float(found.outputs[b]):.2f}")
        per_image = []
        for rank in range(found.top_units.shape[1]):
            unit = int(found.top_units[b, rank])
            label = result.label(unit)
            share = float(found.top_contributions[b, rank]) / total if total > 0 else 0.0
            rows.append({"image": index, "score": None if score is None else float(score),
                         "output": float(found.outputs[b]), "baseline_output": float(found.baseline_outputs[b]),
                         "rank": rank + 1, "unit": unit, "contribution": float(found.top_contributions[b, rank]),
                         "share": share, "concept": label or "",
                         "unit_best_concept": result.concepts[int(result.best_concept[unit])],
                         "unit_best_iou": float(result.best_iou[unit])})
            per_image.append(f"unit {unit}: {label or 'no concept'} ({100 * share:.0f}%)")
        map_titles.append(per_image)
    pictures = (denormalize(images.cpu()) if denormalize else images.cpu())[:, 0]
    return rows, semantic_figure(pictures, found.top_maps.detach().cpu(), titles, map_titles)


def run(cfg: Namespace) -> dict[str, Any]:
    """The whole command for a parsed config; returns what was written and the results."""
    out = Path(cfg.output_dir or run_folder("dissect", cfg.name))
    if cfg.num_images is not None and cfg.num_images < 1:
        raise ConfigurationError(f"dissect --num_images must be ≥ 1, got {cfg.num_images}")
    if not 0 < cfg.tail < 1:
        raise ConfigurationError(f"dissect --tail must be in (0, 1), got {cfg.tail}")
    semantic_layer = (cfg.semantic.layer or cfg.layers[-1]) if cfg.layers else None
    if semantic_layer is not None and semantic_layer not in cfg.layers:
        raise ConfigurationError(f"dissect --semantic.layer {semantic_layer!r} must be one of --layers {cfg.layers}")
    names, modules = load_models(cfg)
    for module in modules:
        resolve_layers(module.net, cfg.layers)
    output_function(modules[-1], cfg.semantic.target)
    datamodule = build_parser().instantiate_classes(cfg).data
    datamodule.prepare_data()
    datamodule.setup("fit")
    dataset = datamodule.dataset(cfg.split)
    num_images = min(cfg.num_images or len(dataset), len(dataset))
    subset = Subset(dataset, range(num_images))
    concepts = concept_names(datamodule, cfg.concept_keys, dataset[0])
    with torch.no_grad():  # shapes of every layer (a non-spatial layer fails here, before any pass)
        with recording(modules[-1].net, cfg.layers) as store:
            modules[-1].net(dataset[0]["image"][None].to(cfg.device))
            probe = dict(store)
        for layer, activation in probe.items():
            check_spatial(layer, activation)
    loader = DataLoader(subset, batch_size=datamodule.batch_size, shuffle=False)

    def masks(batch: dict[str, Tensor]) -> Tensor:
        return torch.cat([batch[key] for key in cfg.concept_keys], 1)

    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    results: dict[str, dict[str, DissectionResult]] = {}
    for name, module in tqdm(list(zip(names, modules)), desc="dissect: models", disable=not cfg.progress):
        results[name] = dissect_model(module.net, loader, cfg, concepts, num_images, cache, masks)
        for layer, result in results[name].items():
            print(f"[lit_xai dissect] {name} {layer}: {int(result.detectors.sum())} detectors of "
                  f"{len(result.thresholds)} units " + str({c: n for c, n in result.counts().items() if n}),
                  flush=True)
    unit_rows = [{"model": name, **row} for name, per_layer in results.items() for result in per_layer.values()
                 for row in result.rows()]
    counts = {layer: {name: results[name][layer].counts() for name in names} for layer in cfg.layers}
    count_rows = [{"model": name, "layer": layer, "concept": c, "detectors": n}
                  for layer in cfg.layers for name in names for c, n in counts[layer][name].items()]
    write_csv(out / "dissection_units.csv", unit_rows)
    write_csv(out / "dissection_detectors.csv", count_rows)
    figures = {"detectors": detectors_figure(counts, concepts),
               "evolution": evolution_figure(counts[semantic_layer], concepts, semantic_layer)}
    denormalize = getattr(datamodule, "denormalize", None)
    last = results[names[-1]][semantic_layer]
    panels = example_panels(modules[-1].net, last, loader, cfg, masks, denormalize)
    if panels is not None:
        figures["detector_examples"] = examples_figure(*panels)
    semantic, figures["semantic_attribution"] = semantic_rows(modules[-1], last, dataset, cfg, denormalize)
    write_csv(out / "semantic_units.csv", semantic)
    for key, figure in figures.items():
        figure.savefig(out / f"{key}.png", dpi=110)
    written = {"folder": str(out), "tables": ["dissection_units.csv", "dissection_detectors.csv", "semantic_units.csv"],
               "figures": [f"{key}.png" for key in figures]}
    if cfg.wandb.enabled:
        log_wandb(cfg, out, unit_rows, count_rows, semantic, list(figures))
    print(f"[lit_xai dissect] {num_images} images × {len(concepts)} concepts, {len(names)} models: {out}/ "
          + ", ".join(written["tables"] + written["figures"]), flush=True)
    return {"results": results, "semantic": semantic, "names": names, **written}


def log_wandb(cfg: Namespace, out: Path, units: list[dict[str, Any]], counts: list[dict[str, Any]],
              semantic: list[dict[str, Any]], figures: list[str]) -> None:
    """A W&B run (offline unless opted in) in the run folder: the three tables, the figures, the cache artifact."""
    import wandb

    from lit_xai.loggers import log_cache_artifact, wandb_mode

    run = wandb.init(project=cfg.wandb.project, name=cfg.name, dir=str(out.absolute()), mode=wandb_mode(),
                     config=json.loads(json.dumps(cfg.as_dict(), default=str)), job_type="dissect",
                     settings=wandb.Settings(silent=True), reinit="finish_previous")
    try:
        for key, rows in (("units", units), ("detectors", counts), ("semantic", semantic)):
            run.log({f"dissect/{key}": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])})
        run.log({f"dissect/figures/{key}": wandb.Image(str(out / f"{key}.png")) for key in figures})
        if cfg.wandb.log_caches:
            log_cache_artifact(run, out / "cache", "dissect")
    finally:
        run.finish()


def main(args: list[str] | None = None) -> None:
    """Parse the command line / config and run the dissection."""
    run(build_parser().parse_args(args))
