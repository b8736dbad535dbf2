"""The chest chapters' attribution findings (seed 002, issue 17) on the synthetic chest X-rays, with standard errors.

    .venv/bin/python benchmarks/report_chest_findings.py                  # seed 0 (docs/chest_findings.md)
    .venv/bin/python benchmarks/report_chest_findings.py --seeds 0 1      # two training seeds

Models: ``digits_cnn`` (``pooled_size`` 4) as in ``configs/chest_multilabel.yaml`` (weighted BCE, Eq. 1) and
``configs/chest_regression.yaml`` (weighted MSE, Eq. 2), trained here with ``ClassifierModule`` /
``SyntheticChestDataModule`` and a Lightning Trainer (``--epochs``, ``--num-train``; one model per training seed,
``seed_everything(seed)``, the data seed stays the config's) or read from ``--ckpt-multilabel`` /
``--ckpt-regression``. The IBA family's feature statistics are fitted on the training loader.

Findings, each per image (or per image-label pair), paired between methods on the same images:

1. Fig. 1, Inverse IBA vs IBA (multilabel model): pairs whose explained lesion (ground glass or consolidation) has
   ≥ 2 instances (regions). Per pair (:func:`instance_hits`): the share of instances hit by the map's top region,
   whether all are hit, the weakest instance's enrichment (its mean map value over the image's) and the marked
   area (the share of pixels ≥ ``--marked-level`` × the map's maximum).
2. Table 1, localisation IoU (``localisation_iou``, ``gt_area`` threshold) against the explained label's concept
   mask (and box) for every (test image, present and predicted label) pair: data-set IoU Σ|A∩G| / Σ|A∪G| with a
   bootstrap SE over pairs, paired bootstrap differences, and the mean per-pair IoU ± SE.
3. Fig. 3b, Sensitivity-N (``sensitivity_n``, ``output: identity``) of Regression IBA with the MSE (y = the image's
   true score), RM and DV losses on the regression model, images with score ≥ 1, vs the random map.
4. PCC (``severity_correlation``) of each method on the regression model (same images) vs the random map.

Every map and per-image score is cached under ``--cache`` (atomic, checked writes via ``lit_xai.storage``; keyed by the
weights, the method and its arguments, the images and the attribution/metric source), so a rerun redoes nothing
finished. Results: ``<cache>/results-seed<s>.json`` (one section per model, each with its run time) and the Markdown
tables printed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from configs import load_configs
from lit_xai.attribution import build_method
from lit_xai.data import SyntheticChestDataModule
from lit_xai.data.chest import CONCEPTS
from lit_xai.metrics import build_metric
from lit_xai.metrics.base import pixel_scores
from lit_xai.metrics.localisation import box_masks
from lit_xai.metrics.sensitivity_n import pearson
from lit_xai.models.classifier import ClassifierModule
from lit_xai.storage import atomic_torch_save, atomic_write_json, load_or_discard, weights_fingerprint

CONFIGS = {"multilabel": "configs/chest_multilabel.yaml", "regression": "configs/chest_regression.yaml"}
#: the lesions that occur in several regions (one instance per region); the others have one instance per image
MULTI_INSTANCE = (CONCEPTS.index("consolidation"), CONCEPTS.index("ground_glass"))
#: digits_cnn's ReLU outputs at 64² inputs: 64², 32², 16² (the chapter: IBA after DenseNet-121's dense block 3,
#: Multi-layer IBA after dense blocks 1, 2 and 3)
LAYERS = ("features.2", "features.6", "features.10")
FIG1_MEASURES = ("hits", "all_hit", "enrichment", "area")


# -- statistics --------------------------------------------------------------------------------------------------
def mean_se(values: Tensor) -> tuple[float, float, int]:
    """Mean, standard error (sample std / √n) and n of the finite entries."""
    values = values[values.isfinite()].double()
    n = values.numel()
    if n == 0:
        return math.nan, math.nan, 0
    se = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    return float(values.mean()), se, n


def bootstrap_ratio(numerators: dict[str, Tensor], denominators: dict[str, Tensor], resamples: int,
                    seed: int) -> dict[str, Tensor]:
    """Per key the bootstrap distribution ``[R]`` of Σ num / Σ den over resampled rows; the same resampled rows for
    every key (so differences between keys are paired)."""
    n = next(iter(numerators.values())).numel()
    rows = torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    return {key: numerators[key].double()[rows].sum(1) / denominators[key].double()[rows].sum(1).clamp_min(1e-12)
            for key in numerators}


# -- Fig. 1 measures ---------------------------------------------------------------------------------------------
def instance_hits(maps: Tensor, boxes: Tensor, valid: Tensor, size: tuple[int, int], coverage: float = 0.25,
                  marked_level: float = 0.5, seed: int = 0) -> dict[str, Tensor]:
    """Per image ``[B]``, for the valid instance boxes ``[B, I, 4]`` (mask ``valid`` ``[B, I]``) of one lesion:

    - ``hits``: the share of instances hit. The map's top region has exactly as many pixels as the union of the
      instance boxes (Table 1's ``gt_area`` rule; ties broken at random, :func:`top_k`); an instance is hit when at
      least ``coverage`` of its box lies in the top region (a random map covers each box by about the boxes' area
      share);
    - ``all_hit``: 1 when every instance is hit;
    - ``enrichment``: the weakest instance's mean map value over the image's mean map value (≈ 1 for a random
      map; > 1 only when every instance is marked above the image average; threshold-free);
    - ``area``: the marked area, the share of pixels ≥ ``marked_level`` × the map's maximum.

    Maps are summed over channels and upsampled bilinearly to ``size``; they must be ≥ 0 (|·| of signed maps)."""
    scores = pixel_scores(maps, size, "sum")  # [B, P]
    inside = box_masks(boxes.flatten(0, 1), size).view(*boxes.shape[:2], -1) & valid[..., None]  # [B, I, P]
    top = top_k(scores, inside.any(1).sum(1), seed)
    covered = (inside & top[:, None]).sum(-1) / inside.sum(-1).clamp_min(1)
    hit = (covered >= coverage) & valid
    hits = hit.sum(1) / valid.sum(1).clamp_min(1)
    means = (inside * scores[:, None]).sum(-1) / inside.sum(-1).clamp_min(1)
    weakest = torch.where(valid, means, torch.inf).amin(1)
    enrichment = weakest / scores.mean(1).clamp_min(1e-12)
    area = (scores >= marked_level * scores.amax(1, keepdim=True)).float().mean(1)
    return {"hits": hits.float(), "all_hit": (hit == valid).all(1).float(), "enrichment": enrichment, "area": area}


def top_k(scores: Tensor, k: Tensor, seed: int) -> Tensor:
    """Boolean ``[B, P]``: exactly ``k[b]`` highest-scoring pixels per row, ties broken at random (seeded), so pixels
    a map does not rank (e.g. Multi-layer IBA's zeros) get chance-level credit, not all or none of it."""
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.rand(scores.shape, generator=generator).argsort(dim=1)
    order = shuffle.gather(1, scores.gather(1, shuffle).argsort(dim=1, descending=True, stable=True))
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    return ranks < k[:, None]


def exact_k_overlaps(maps: Tensor, gt: Tensor, size: tuple[int, int], seed: int = 0) -> tuple[Tensor, Tensor]:
    """Per image |A ∩ G| and |A ∪ G| ``[B]`` with A exactly the |G| highest-scoring pixels of the map (:func:`top_k`,
    ties at random): the ``gt_area`` rule without its ties (``localisation_iou`` keeps every pixel tied at the
    threshold, so a map that is 0 on more than 1 − |G|/P of the image activates the whole image)."""
    active = top_k(pixel_scores(maps, size, "sum"), gt.sum(1), seed)
    return (active & gt).sum(1).double(), (active | gt).sum(1).double()


def explained_pairs(labels: Tensor, probabilities: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    """(image, label) pairs in test order with the label present and predicted (σ > 0.5), at most ``limit``."""
    image, label = ((labels > 0.5) & (probabilities > 0.5)).nonzero(as_tuple=True)
    return image[:limit], label[:limit]


# -- models --------------------------------------------------------------------------------------------------------
def _key(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def recipe(task: str, num_train: int) -> tuple[dict, dict]:
    """The config's model and data arguments for ``task``, with ``num_train`` training images."""
    config = load_configs([CONFIGS[task]])
    return dict(config["model"]), dict(config["data"]["init_args"], num_train=num_train)


def validate(module: ClassifierModule, datamodule: SyntheticChestDataModule) -> dict[str, float]:
    """The task's own validation metrics on the validation split."""
    import lightning as L

    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        devices=1)
    (metrics,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {name: float(value) for name, value in metrics.items()}


def trained_model(task: str, seed: int, epochs: int, num_train: int, cache: Path,
                  ckpt: str | None = None) -> tuple[nn.Module, SyntheticChestDataModule, dict]:
    """The network for ``task``, its DataModule and its validation metrics: ``ckpt`` when given, else the config's
    recipe trained here with ``seed_everything(seed)`` for ``epochs`` epochs (cached, keyed by recipe and seed)."""
    model_args, data_args = recipe(task, num_train)
    datamodule = SyntheticChestDataModule(**data_args)
    if ckpt:
        module = ClassifierModule.load_from_checkpoint(ckpt, map_location="cpu")
        return module.net.eval(), datamodule, {"source": ckpt, **validate(module, datamodule)}
    path = cache / f"model-{task}-seed{seed}-{_key([model_args, data_args, epochs, seed])[:16]}.pt"
    entry = load_or_discard(path)
    module = ClassifierModule(**model_args, max_epochs=epochs)
    if entry is None:
        import lightning as L

        print(f"training {task} (seed {seed}, {epochs} epochs, {num_train} images)", flush=True)
        L.seed_everything(seed, verbose=False)
        t0 = time.perf_counter()
        trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", devices=1)
        trainer.fit(module, datamodule=datamodule)
        entry = {"state": module.net.state_dict(), "val": validate(module, datamodule),
                 "seconds": time.perf_counter() - t0}
        atomic_torch_save(entry, path)
    module.net.load_state_dict(entry["state"])
    return module.net.eval(), datamodule, {**entry["val"], "train_seconds": entry["seconds"], "epochs": epochs}


# -- cached maps and scores ----------------------------------------------------------------------------------------
def source_fingerprint(*objects: Any) -> str:
    """SHA-256 (16 hex digits) of the source the results of ``objects`` (methods, metrics) depend on: each one's
    module file (the whole folder for a subpackage such as ``attribution/information``) and the shared
    ``base``/``batching``/``baselines``/``outputs``/``image_scores`` modules. A change there recomputes; edits to
    unrelated methods (others work on the library concurrently) keep the cache."""
    import lit_xai.attribution
    import lit_xai.metrics

    roots = [Path(lit_xai.attribution.__file__).parent, Path(lit_xai.metrics.__file__).parent]
    files = {roots[0] / "base.py", roots[0] / "batching.py", roots[0] / "postprocess.py"}
    files |= {roots[1] / name for name in ("base.py", "baselines.py", "outputs.py", "image_scores.py")}
    for obj in objects:
        source = Path(inspect.getsourcefile(type(obj)) or "")
        files |= set(source.parent.glob("*.py")) if source.parent not in roots else {source}
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


class Cache:
    """``get(key, compute)``: the stored value of ``key`` (with ``fingerprint``, e.g. the weights') or ``compute()``,
    stored atomically as a checked file (:mod:`lit_xai.storage`; a corrupt file is reported and recomputed)."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder, self.fingerprint = folder, fingerprint

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        path = self.folder / f"{_key([self.fingerprint, key])}.pt"
        value = load_or_discard(path)
        if value is None:
            value = compute()
            atomic_torch_save(value, path)
        return value


def chunked(fn: Callable[[slice], Tensor], count: int, chunk: int) -> Tensor:
    """``fn`` over consecutive slices of ``chunk`` rows, concatenated (bounds the IBA family's memory)."""
    return torch.cat([fn(slice(start, start + chunk)) for start in range(0, count, chunk)])


def data_loader(datamodule: SyntheticChestDataModule) -> Any:
    datamodule.setup("fit")
    return datamodule.train_dataloader()


# -- the two models' findings --------------------------------------------------------------------------------------
def multilabel_findings(args: argparse.Namespace, seed: int, cache: Path, model: nn.Module,
                        datamodule: SyntheticChestDataModule) -> dict:
    """Findings 1 and 2 on the multilabel ``model`` (maps and statistics cached under ``cache``)."""
    test = datamodule.dataset("test")
    batch = next(iter(torch.utils.data.DataLoader(test, batch_size=len(test))))
    with torch.no_grad():
        probabilities = model(batch["image"]).sigmoid()
    image, label = explained_pairs(batch["labels"], probabilities, args.pairs)
    test_images = batch["image"]
    x, gt_masks = test_images[image], batch["concept_masks"][image, label][:, None]
    gt_boxes = batch["concept_boxes"][image, label]
    store = Cache(cache / "maps", weights_fingerprint(model))
    stats_dir = cache / "statistics"
    layer, bce = LAYERS[-1], {"task_loss": "bce"}  # seed 002: BCE in place of CE for sigmoid outputs
    specs: dict[str, tuple[str, dict, bool]] = {  # name → (method, kwargs, |map|)
        "Gradient": ("gradient", {}, True),
        "IntegratedGradients": ("integrated_gradients", {"steps": args.ig_steps}, True),
        "GradCAM": ("gradcam", {"layer": layer}, False),
        "IBA": ("iba", {"layer": layer, **bce}, False),
        "InverseIBA": ("inverse_iba", {"layer": layer, **bce}, False),
        "MultiLayerIBA": ("multilayer_iba", {"layers": list(LAYERS), **bce}, False),
        "random": ("random", {"seed": seed}, False),
    }
    loader = data_loader(datamodule)
    maps: dict[str, Tensor] = {}
    for name, (kind, kwargs, absolute) in specs.items():
        def compute(kind: str = kind, kwargs: dict = kwargs, absolute: bool = absolute) -> Tensor:
            print(f"  multilabel seed {seed}: {kind} {kwargs} on {len(image)} pairs", flush=True)
            if kind.endswith("iba"):  # feature statistics fitted on the training loader (cached)
                method = build_method(kind, cache_dir=stats_dir, **kwargs).fit(model, loader)
            else:
                method = build_method(kind, **kwargs)
            out = chunked(lambda part: method(model, x[part], label[part]), len(image), args.chunk)
            return out.abs() if absolute else out
        code = source_fingerprint(build_method(kind, **kwargs))
        maps[name] = store.get(["multilabel", kind, kwargs, absolute, code, image.tolist(), label.tolist()], compute)

    # Table 1: localisation IoU over all pairs, masks and boxes
    iou: dict[str, dict] = {}
    size = (x.shape[-2], x.shape[-1])
    gt_area = {"masks": gt_masks.flatten(1).sum(1).double(),
               "boxes": box_masks(gt_boxes, size).sum(1).double()}
    for truth in ("masks", "boxes", "masks_exact_k"):
        inter, union = {}, {}
        for name, value in maps.items():
            if truth == "masks_exact_k":
                inter[name], union[name] = exact_k_overlaps(value, gt_masks.flatten(1).bool(), size, seed)
            else:
                metric = build_metric("localisation_iou", ground_truth=truth)
                inter[name], union[name] = metric.overlaps(x, label, value, **{truth: gt_masks if truth == "masks"
                                                                                else gt_boxes})
        area = gt_area["boxes" if truth == "boxes" else "masks"]
        boot = bootstrap_ratio(inter, union, args.bootstrap, seed)
        per_pair = {name: inter[name] / union[name].clamp_min(1) for name in maps}
        iou[truth] = {
            name: {
                "dataset_iou": float(inter[name].sum() / union[name].sum()),
                "dataset_iou_se": float(boot[name].std()),
                "diff_vs_multilayer": float((inter[name].sum() / union[name].sum())
                                            - (inter["MultiLayerIBA"].sum() / union["MultiLayerIBA"].sum())),
                "diff_vs_multilayer_se": float((boot[name] - boot["MultiLayerIBA"]).std()),
                "diff_vs_random_se": float((boot[name] - boot["random"]).std()),
                "per_pair": mean_se(per_pair[name]),
                "per_pair_diff_vs_multilayer": mean_se(per_pair[name] - per_pair["MultiLayerIBA"]),
                # |A| = |A ∪ G| − |G| + |A ∩ G|; ≥ 2 |G| only when ties at the threshold enlarge A
                "tie_inflated": float(((union[name] - area + inter[name]) >= 2 * area).float().mean()),
            }
            for name in maps
        }
    per_concept = {
        CONCEPTS[c]: {"n": int((label == c).sum()), **{
            name: float(inter_c.sum() / union_c.sum().clamp_min(1))
            for name, (inter_c, union_c) in (
                (name, build_metric("localisation_iou").overlaps(x[label == c], label[label == c],
                                                                 value[label == c], masks=gt_masks[label == c]))
                for name, value in maps.items())
        }}
        for c in range(len(CONCEPTS)) if bool((label == c).any())
    }

    # Fig. 1: pairs whose lesion has ≥ 2 instances
    concepts = batch["instance_concepts"][image]
    valid = concepts == label[:, None]
    several = valid.sum(1) >= 2
    fig1: dict[str, Any] = {"n": int(several.sum()), "lesions": {CONCEPTS[c]: int((label[several] == c).sum())
                                                                  for c in MULTI_INSTANCE}}
    measures = {name: instance_hits(maps[name][several], batch["instance_boxes"][image][several], valid[several],
                                    tuple(x.shape[-2:]), args.hit_coverage, args.marked_level, seed)
                for name in ("IBA", "InverseIBA", "MultiLayerIBA", "GradCAM", "Gradient", "random")}
    fig1["instances"] = mean_se(valid[several].sum(1).float())
    for key in FIG1_MEASURES:
        fig1[key] = {name: mean_se(m[key]) for name, m in measures.items()}
        fig1[key + "_diff"] = mean_se(measures["InverseIBA"][key] - measures["IBA"][key])
    # why IBA ≈ Inverse IBA: how similar their maps are, how saturated the explained outputs, and whether a map
    # changes when the other extreme label (the least probable one) is explained instead (target sensitivity)
    flat = {name: maps[name][several].flatten(1) for name in ("IBA", "InverseIBA")}
    fig1["pcc_iba_inverse"] = mean_se(pearson(flat["IBA"], flat["InverseIBA"]))
    fig1["probability"] = mean_se(probabilities[image[several], label[several]])
    other = probabilities[image[several]].argmin(1)
    for name in ("IBA", "InverseIBA"):
        kind, kwargs, _ = specs[name]

        def compute_other(kind: str = kind, kwargs: dict = kwargs) -> Tensor:
            print(f"  multilabel seed {seed}: {kind} for the least probable label on {len(other)} pairs", flush=True)
            method = build_method(kind, cache_dir=stats_dir, **kwargs).fit(model, loader)
            rows = image[several]
            return chunked(lambda part: method(model, test_images[rows[part]], other[part]), len(other), args.chunk)
        code = source_fingerprint(build_method(kind, **kwargs))
        other_maps = store.get(["multilabel-other", kind, kwargs, code, image[several].tolist(), other.tolist()],
                               compute_other)
        fig1[f"pcc_other_label_{name}"] = mean_se(pearson(flat[name], other_maps.flatten(1)))
    return {"pairs": len(image), "images": int(image.unique().numel()), "iou": iou,
            "iou_per_concept": per_concept, "fig1": fig1}


def regression_findings(args: argparse.Namespace, seed: int, cache: Path, model: nn.Module,
                        datamodule: SyntheticChestDataModule) -> dict:
    """Findings 3 and 4 on the regression ``model`` (maps and scores cached under ``cache``)."""
    test = datamodule.dataset("test")
    batch = next(iter(torch.utils.data.DataLoader(test, batch_size=len(test))))
    chosen = (batch["score"] >= 1).nonzero().squeeze(1)[: args.images]
    x, score, severity = batch["image"][chosen], batch["score"][chosen], batch["severity_map"][chosen]
    target = torch.zeros(len(chosen), dtype=torch.long)
    store = Cache(cache / "maps", weights_fingerprint(model))
    loader = data_loader(datamodule)
    layer = LAYERS[-1]
    specs: dict[str, tuple[str, dict, bool]] = {
        "Gradient": ("gradient", {}, True),
        "IntegratedGradients": ("integrated_gradients", {"steps": args.ig_steps}, True),
        "RegressionIBA_MSE": ("regression_iba", {"layer": layer, "loss": "mse"}, False),  # y = the true score
        "RegressionIBA_RM": ("regression_iba", {"layer": layer, "loss": "maximisation"}, False),
        "RegressionIBA_DV": ("regression_iba", {"layer": layer, "loss": "deviation"}, False),
        "random": ("random", {"seed": seed}, False),
    }
    maps: dict[str, Tensor] = {}
    for name, (kind, kwargs, absolute) in specs.items():
        def compute(kind: str = kind, kwargs: dict = kwargs, absolute: bool = absolute) -> Tensor:
            print(f"  regression seed {seed}: {kind} {kwargs} on {len(chosen)} images", flush=True)
            if kind == "regression_iba":
                method = build_method(kind, cache_dir=cache / "statistics", **kwargs).fit(model, loader)
                values = score if kwargs["loss"] == "mse" else None
                out = chunked(lambda part: method.explain(
                    model, x[part], target[part], None if values is None else values[part]).capacity.detach(),
                    len(chosen), args.chunk)
            else:
                method = build_method(kind, **kwargs)
                out = chunked(lambda part: method(model, x[part], target[part]), len(chosen), args.chunk)
            return out.abs() if absolute else out
        code = source_fingerprint(build_method(kind, **kwargs))
        maps[name] = store.get(["regression", kind, kwargs, absolute, code, chosen.tolist()], compute)

    sens_kwargs = {"num_n": args.sens_num_n, "num_masks": args.sens_masks, "patch_size": args.sens_patch,
                   "output": "identity", "seed": seed}
    sensitivity, pcc = {}, {}
    for name, value in maps.items():
        def sens(value: Tensor = value, name: str = name) -> Tensor:
            print(f"  regression seed {seed}: Sensitivity-N of {name}", flush=True)
            with torch.no_grad():
                return build_metric("sensitivity_n", **sens_kwargs).image_scores(model, x, target, value)
        code = source_fingerprint(build_method(specs[name][0], **specs[name][1]), build_metric("sensitivity_n"))
        sensitivity[name] = store.get(["sensitivity_n", name, specs[name], sens_kwargs, code, chosen.tolist()], sens)
        pcc[name] = build_metric("severity_correlation").image_scores(model, x, target, value, masks=severity)
    with torch.no_grad():
        prediction = model(x)[:, 0]
    return {
        "images": len(chosen), "mean_score": mean_se(score),
        "test_mae_chosen": float((prediction - score).abs().mean()),
        "sensitivity_n": {name: mean_se(v) for name, v in sensitivity.items()},
        "sensitivity_n_diff_vs_dv": {name: mean_se(v - sensitivity["RegressionIBA_DV"])
                                     for name, v in sensitivity.items()},
        "sensitivity_n_diff_vs_random": {name: mean_se(v - sensitivity["random"]) for name, v in sensitivity.items()},
        "pcc": {name: mean_se(v) for name, v in pcc.items()},
        "pcc_diff_vs_random": {name: mean_se(v - pcc["random"]) for name, v in pcc.items()},
        "sensitivity_n_kwargs": sens_kwargs,
    }


# -- tables --------------------------------------------------------------------------------------------------------
def fmt(entry: tuple[float, float, int] | list, signed: bool = False) -> str:
    mean, se, _ = entry
    return f"{mean:+.3f} ± {se:.3f}" if signed else f"{mean:.3f} ± {se:.3f}"


def markdown(seed: int, results: dict) -> str:
    ml, rg = results["multilabel"], results["regression"]
    lines = [f"### Seed {seed}", ""]
    f1 = ml["fig1"]
    lines += [f"Fig. 1 (multilabel; n = {f1['n']} pairs with ≥ 2 instances, {f1['lesions']}; instances per pair "
              f"{fmt(f1['instances'])})", "",
              "| method | instances hit | all instances hit | weakest-instance enrichment | marked area |",
              "|---|---|---|---|---|"]
    for name in f1["hits"]:
        lines.append(f"| {name} | " + " | ".join(fmt(f1[key][name]) for key in FIG1_MEASURES) + " |")
    lines.append("| Inverse IBA − IBA (paired) | " + " | ".join(fmt(f1[key + "_diff"], True) for key in FIG1_MEASURES)
                 + " |")
    lines += ["", f"Diagnostics: explained σ {fmt(f1['probability'])}; per-pair PCC IBA vs Inverse IBA "
              f"{fmt(f1['pcc_iba_inverse'])}; PCC of the map with the map for the least probable label: IBA "
              f"{fmt(f1['pcc_other_label_IBA'])}, Inverse IBA {fmt(f1['pcc_other_label_InverseIBA'])}"]
    for truth in ml["iou"]:
        table = ml["iou"][truth]
        lines += ["", f"Table 1 (multilabel; {ml['pairs']} pairs on {ml['images']} images; ground truth: concept "
                  f"{truth})", "",
                  "| method | data-set IoU ± boot. SE | − Multi-layer IBA ± SE | mean per-pair IoU ± SE "
                  "| tie-inflated A |",
                  "|---|---|---|---|---|"]
        for name, row in table.items():
            lines.append(f"| {name} | {row['dataset_iou']:.3f} ± {row['dataset_iou_se']:.3f} | "
                         f"{row['diff_vs_multilayer']:+.3f} ± {row['diff_vs_multilayer_se']:.3f} | "
                         f"{fmt(row['per_pair'])} | {row.get('tie_inflated', math.nan):.2f} |")
    lines += ["", f"Fig. 3b / PCC (regression; n = {rg['images']} test images with score ≥ 1)", "",
              "| method | Sensitivity-N | − DV | − random | PCC | PCC − random |", "|---|---|---|---|---|---|"]
    for name in rg["sensitivity_n"]:
        lines.append(f"| {name} | {fmt(rg['sensitivity_n'][name])} | {fmt(rg['sensitivity_n_diff_vs_dv'][name], True)}"
                     f" | {fmt(rg['sensitivity_n_diff_vs_random'][name], True)} | {fmt(rg['pcc'][name])} | "
                     f"{fmt(rg['pcc_diff_vs_random'][name], True)} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (seed_everything)")
    parser.add_argument("--tasks", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                        help="which models' findings to (re)compute; results-seed<s>.json keeps the others'")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--ckpt-multilabel", default=None, help="use this checkpoint instead of training")
    parser.add_argument("--ckpt-regression", default=None, help="use this checkpoint instead of training")
    parser.add_argument("--pairs", type=int, default=250, help="(image, label) pairs explained (multilabel)")
    parser.add_argument("--images", type=int, default=200, help="test images with score ≥ 1 (regression)")
    parser.add_argument("--ig-steps", type=int, default=50, help="Integrated Gradients steps (Captum's default 50)")
    parser.add_argument("--hit-coverage", type=float, default=0.25,
                        help="Fig. 1: an instance is hit when this share of its box lies in the map's top region")
    parser.add_argument("--marked-level", type=float, default=0.5, help="Fig. 1: marked = ≥ level × the max")
    parser.add_argument("--sens-num-n", type=int, default=12)
    parser.add_argument("--sens-masks", type=int, default=64)
    parser.add_argument("--sens-patch", type=int, default=4, help="Sensitivity-N cell side (4: 16×16 cells)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the data-set IoU")
    parser.add_argument("--chunk", type=int, default=50, help="images per method call")
    parser.add_argument("--cache", default="runs/findings/chest")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    start = time.perf_counter()
    for seed in args.seeds:
        path = cache / f"results-seed{seed}.json"
        results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        for task in args.tasks:
            t0 = time.perf_counter()
            model, datamodule, val = trained_model(task, seed, args.epochs, args.num_train, cache,
                                                   getattr(args, f"ckpt_{task}"))
            findings = multilabel_findings if task == "multilabel" else regression_findings
            results[task] = {"val": val, **findings(args, seed, cache, model, datamodule),
                             "seconds": time.perf_counter() - t0, "args": vars(args)}
            atomic_write_json(path, results)  # the other task's section of an earlier run is kept
        if all(task in results for task in CONFIGS):
            print(markdown(seed, results), flush=True)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\ntotal time {time.perf_counter() - start:.0f} s (load average at the end: {load})")


if __name__ == "__main__":
    main()
