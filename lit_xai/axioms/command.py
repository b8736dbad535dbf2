"""``python -m lit_xai axioms --config configs/axioms_<...>.yaml``: generate scenes, score methods, log the table.

For every scenario the command makes sure ``num_scenes`` verified scenes exist in the scene store (generating
missing chunks, resuming an interrupted run), then explains them with every method and writes:

- ``<output_dir>/axioms_table.csv`` / ``.png``: method × scenario (dissertation Table 1 format);
- ``<output_dir>/axioms_layers.csv``: the layer sweep, metric × method@layer (Table 2 format), if configured;
- ``<output_dir>/generation.csv``: per scenario attempted / verified scenes, seconds per verified scene and the
  achieved output-change ratios (mean |ΔΦ| / min(|Φ_with|, |Φ_without|) over the independence terms);
- ``<output_dir>/examples_<scenario>.png``: example scenes with every method's maps;
- the same table, images and generation statistics in a W&B run under ``<output_dir>`` (offline by default), and
  the scene stores and IBA statistics as W&B artifacts of type ``cache`` (``--wandb.log_caches false`` opts out).

``output_dir`` defaults to the run folder ``runs/axioms/<name>`` (README "Where outputs go"); the scene store and the
statistics cache live inside it, so a rerun with the same name resumes from them.

Methods that need feature statistics (the IBA family) get them from the host model's training data
(``data.class_path`` / ``data.init_args``, a DataModule as in the model's fit config), estimated once per layer and
cached under ``stats_cache_dir`` keyed by weights, data and layer; without ``data`` they are refused rather than
run on the statistics of the explained batch (a poor prior).
"""

from __future__ import annotations

import csv
import importlib
import time
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from lit_xai.attribution.base import AttributionMethod
from lit_xai.attribution.information.iba import FeatureBottleneckMethod
from lit_xai.axioms.evaluation import EXPLAINED_SLOTS, Reduction, make_metric, scene_maps, update_metric
from lit_xai.axioms.generation import GenerationConfig, SceneBatch
from lit_xai.axioms.scenarios import SCENARIOS
from lit_xai.axioms.store import SceneStore
from lit_xai.loggers import DEFAULT_RUN_NAME, run_folder, wandb_mode

DEFAULT_METHODS = [
    "gradcam",
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "guided_backprop",
    "fullgrad",
    "random",
]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m lit_xai axioms", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--model.name", type=str, default="digits_cnn", help="build_backbone name")
    parser.add_argument("--model.num_classes", type=int, default=10)
    parser.add_argument("--model.in_chans", type=int, default=3)
    parser.add_argument("--model.weights", type=str | None, default=None, help="local state_dict / checkpoint")
    parser.add_argument("--data.class_path", type=str | None, default=None,
                        help="the host model's training DataModule (feature statistics of the IBA family)")
    parser.add_argument("--data.init_args", type=dict[str, Any], default={})
    parser.add_argument("--stats_cache_dir", type=str | None, default=None,
                        help="feature-statistics cache (default <output_dir>/iba_stats)")
    parser.add_argument("--generation", type=GenerationConfig, default=GenerationConfig())
    parser.add_argument("--scenarios", type=list[str], default=list(SCENARIOS))
    parser.add_argument("--num_scenes", type=int, default=20, help="verified scenes per scenario")
    parser.add_argument("--chunk_size", type=int, default=16, help="scenes optimised together (one store file)")
    parser.add_argument("--max_chunks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", type=list[str], default=DEFAULT_METHODS)
    parser.add_argument("--method_kwargs", type=dict[str, dict[str, Any]], default={})
    parser.add_argument("--layer_sweep.methods", type=list[str], default=[])
    parser.add_argument("--layer_sweep.layers", type=list[str], default=[])
    parser.add_argument("--layer_sweep.argument", type=str, default="layer", help="the methods' layer keyword")
    parser.add_argument("--reduction", type=Literal["abs", "positive", "signed"], default="abs")
    parser.add_argument("--correlation", type=Literal["pearson", "spearman"], default="spearman")
    parser.add_argument("--eval_batch_size", type=int, default=16)
    parser.add_argument("--num_examples", type=int, default=2)
    parser.add_argument("--name", type=str, default=DEFAULT_RUN_NAME,
                        help="run name: the run folder is runs/axioms/<name> (rerun the same name to resume)")
    parser.add_argument("--output_dir", type=str | None, default=None,
                        help="tables, figures, scene store, statistics (default: the run folder runs/axioms/<name>)")
    parser.add_argument("--scene_dir", type=str | None, default=None, help="scene store (default <output_dir>/scenes)")
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--threads", type=int | None, default=None, help="torch CPU threads (None: leave as is)")
    parser.add_argument("--wandb.enabled", type=bool, default=True)
    parser.add_argument("--wandb.project", type=str, default="lit_xai")
    parser.add_argument("--wandb.log_caches", type=bool, default=True,
                        help="log the scene stores and IBA statistics as W&B artifacts (type cache) at the end")
    parser.add_argument("--progress", type=bool, default=True)
    parser.add_argument("--generate_only", type=bool, default=False, help="fill the scene store and stop")
    return parser


def load_model(cfg: Namespace) -> torch.nn.Module:
    from lit_xai.models.backbones import build_backbone

    model = build_backbone(
        cfg.model.name, num_classes=cfg.model.num_classes, in_chans=cfg.model.in_chans, weights=cfg.model.weights
    )
    return model.to(cfg.device).eval()


def generate_all(cfg: Namespace, model: torch.nn.Module) -> tuple[dict[str, SceneBatch], list[dict[str, Any]]]:
    """Verified scenes per scenario (from the store, generating what is missing) and generation statistics."""
    scene_dir = cfg.scene_dir or str(Path(cfg.output_dir) / "scenes")
    scenes, stats = {}, []
    for scenario in cfg.scenarios:
        store = SceneStore(scene_dir, scenario, model, cfg.model.num_classes, cfg.generation, cfg.seed, cfg.chunk_size)
        scenes[scenario] = store.ensure(cfg.num_scenes, max_chunks=cfg.max_chunks, progress=cfg.progress)
        totals = store.stats()
        ratios = scenes[scenario].independence_ratio
        stats.append({
            "scenario": scenario,
            "attempted": int(totals["attempted"]),
            "converged": int(totals["converged"]),
            "verified": int(totals["verified"]),
            "seconds_per_verified_scene": totals["seconds"] / max(totals["verified"], 1),
            "output_change_ratio_mean": float(ratios.mean()),
            "output_change_ratio_max": float(ratios.max()),
            "drive_softmax_min": float(scenes[scenario].drive_softmax.min()),
            "model_fingerprint": store.fingerprint[:16],
            "store": str(store.directory),
        })
    return scenes, stats


def load_datamodule(cfg: Namespace) -> Any:
    """The host model's training DataModule from ``data.class_path`` / ``data.init_args`` (``None`` if unset)."""
    if not cfg.data.class_path:
        return None
    module_name, _, class_name = cfg.data.class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"axioms: data.class_path {cfg.data.class_path!r} cannot be imported: {error}") from None
    return cls(**cfg.data.init_args)


def build_method(
    method_name: str, method_kwargs: dict[str, Any], model: torch.nn.Module, cfg: Namespace, datamodule: Any
) -> AttributionMethod:
    """The method; an IBA-family method is fitted on the host model's training data (statistics cached on disk)."""
    from lit_xai.attribution import build_method

    method = build_method(method_name, **method_kwargs)
    if not isinstance(method, FeatureBottleneckMethod):
        return method
    if datamodule is None:
        raise ValueError(
            f"axioms: method {method_name!r} needs feature statistics of the host model's training data; set "
            "data.class_path and data.init_args (the DataModule of the model's fit config, e.g. "
            "configs/axioms_digits_model.yaml)"
        )
    cache_dir = cfg.stats_cache_dir or str(Path(cfg.output_dir) / "iba_stats")
    method = build_method(method_name, **{"cache_dir": cache_dir, "missing_statistics": "error", **method_kwargs})
    method.setup(model, datamodule)
    return method


def score(
    method_name: str,
    method_kwargs: dict[str, Any],
    model: torch.nn.Module,
    scenes: SceneBatch,
    cfg: Namespace,
    datamodule: Any = None,
) -> tuple[float, torch.Tensor]:
    """The scenario metric for one method, and its maps ``[N, T, H, W]``."""
    method = build_method(method_name, method_kwargs, model, cfg, datamodule)
    reduction: Reduction = cfg.reduction
    maps = scene_maps(method, model, scenes, cfg.generation, reduction, cfg.eval_batch_size, cfg.device)
    metric = make_metric(scenes.scenario, cfg.correlation)
    update_metric(metric, scenes, maps, cfg.generation)
    return float(metric.compute()), maps


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _table_png(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    from matplotlib.figure import Figure  # an object-oriented figure: no pyplot state, no backend switch

    columns = list(rows[0])
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    fig = Figure(figsize=(1.9 * len(columns), 0.45 * (len(rows) + 2)))
    ax = fig.subplots()
    ax.axis("off")
    ax.table(cellText=cells, colLabels=columns, loc="center").auto_set_font_size(True)
    ax.set_title(title)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def _examples_png(path: Path, scenes: SceneBatch, maps: dict[str, torch.Tensor], cfg: Namespace) -> None:
    """Rows: example scene × explained class; columns: the image (patches outlined) and each method's map."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    count = min(cfg.num_examples, len(scenes))
    slots = EXPLAINED_SLOTS[scenes.scenario]
    images = scenes.select(slice(0, count)).images()
    rows, cols = count * len(slots), 1 + len(maps)
    fig = Figure(figsize=(1.8 * cols, 1.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(count):
        for t, slot in enumerate(slots):
            r = i * len(slots) + t
            image = images[i].permute(1, 2, 0).squeeze(-1).numpy()
            axes[r, 0].imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            for k, (row, col) in enumerate(scenes.corners[i].tolist()):
                edge = "lime" if k == 0 else "red"
                axes[r, 0].add_patch(Rectangle((col - 0.5, row - 0.5), cfg.generation.patch_size,
                                               cfg.generation.patch_size, fill=False, edgecolor=edge, lw=1))
            axes[r, 0].set_ylabel(f"class {int(scenes.classes[i, slot])}", fontsize=7)
            for j, (name, m) in enumerate(maps.items(), start=1):
                axes[r, j].imshow(m[i, t].numpy(), cmap="Reds")
                if r == 0:
                    axes[r, j].set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{scenes.scenario} (green: first patch, red: second)", fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def run(cfg: Namespace) -> dict[str, Any]:
    """Everything :func:`main` does, returning the tables (for tests and notebooks). The global CPU generator
    (seeded with ``cfg.seed`` inside) and the thread count (``cfg.threads``) are restored on return."""
    cfg.output_dir = cfg.output_dir or str(run_folder("axioms", cfg.name))
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        try:
            return _run(cfg)
        finally:
            torch.set_num_threads(threads)


def _run(cfg: Namespace) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(cfg)
    datamodule = load_datamodule(cfg)
    start = time.perf_counter()
    scenes, gen_stats = generate_all(cfg, model)
    generation_seconds = time.perf_counter() - start
    _write_csv(out / "generation.csv", gen_stats)
    if cfg.generate_only:
        return {"table": [], "layers": [], "generation": gen_stats, "generation_seconds": generation_seconds}

    table: list[dict[str, Any]] = []
    all_maps: dict[str, dict[str, torch.Tensor]] = {s: {} for s in cfg.scenarios}
    for name in cfg.methods:
        row: dict[str, Any] = {"method": name}
        for scenario in cfg.scenarios:
            row[scenario], all_maps[scenario][name] = score(name, cfg.method_kwargs.get(name, {}), model,
                                                            scenes[scenario], cfg, datamodule)
        table.append(row)
    _write_csv(out / "axioms_table.csv", table)
    _table_png(out / "axioms_table.png", table, "axiom framework (null/class sensitivity: lower is better; "
                                                "saturation: higher is better)")
    for scenario in cfg.scenarios:
        _examples_png(out / f"examples_{scenario}.png", scenes[scenario], all_maps[scenario], cfg)

    layer_rows: list[dict[str, Any]] = []
    sweep = cfg.layer_sweep
    if sweep.methods and sweep.layers:
        for scenario in [s for s in cfg.scenarios if s != "saturation"]:
            row = {"metric": scenario}
            for name in sweep.methods:
                for layer in sweep.layers:
                    kwargs = {**cfg.method_kwargs.get(name, {}), sweep.argument: layer}
                    row[f"{name}@{layer}"] = score(name, kwargs, model, scenes[scenario], cfg, datamodule)[0]
            layer_rows.append(row)
        _write_csv(out / "axioms_layers.csv", layer_rows)
        _table_png(out / "axioms_layers.png", layer_rows, "layer sweep (lower is better)")

    if cfg.wandb.enabled:
        _log_wandb(cfg, out, table, layer_rows, gen_stats)
    return {"table": table, "layers": layer_rows, "generation": gen_stats, "generation_seconds": generation_seconds}


def _log_wandb(cfg: Namespace, out: Path, table: list[dict[str, Any]], layer_rows: list[dict[str, Any]],
               gen_stats: list[dict[str, Any]]) -> None:
    import wandb

    run = wandb.init(project=cfg.wandb.project, name=cfg.name, dir=str(out.absolute()), mode=wandb_mode(),
                     job_type="axioms", config=cfg.as_dict(), reinit=True, settings=wandb.Settings(silent=True))
    try:
        logged: dict[str, Any] = {
            "axioms/table": wandb.Table(columns=list(table[0]), data=[list(r.values()) for r in table]),
            "axioms/generation": wandb.Table(columns=list(gen_stats[0]), data=[list(r.values()) for r in gen_stats]),
            "axioms/table_png": wandb.Image(str(out / "axioms_table.png")),
        }
        for scenario in cfg.scenarios:
            logged[f"axioms/examples/{scenario}"] = wandb.Image(str(out / f"examples_{scenario}.png"))
        for row in table:
            for scenario in cfg.scenarios:
                logged[f"axioms/{scenario}/{row['method']}"] = row[scenario]
        for stat in gen_stats:
            logged[f"axioms/{stat['scenario']}/output_change_ratio"] = stat["output_change_ratio_mean"]
        if layer_rows:
            logged["axioms/layers"] = wandb.Table(columns=list(layer_rows[0]),
                                                  data=[list(r.values()) for r in layer_rows])
        run.log(logged)
        if cfg.wandb.log_caches:
            _log_caches(run, cfg, gen_stats)
    finally:
        run.finish()


def _log_caches(run: Any, cfg: Namespace, gen_stats: list[dict[str, Any]]) -> None:
    """Each scenario's scene store (``axioms-scenes-<scenario>-<store key>``) and the IBA statistics folder
    (``iba-stats-<key of its file names>``) as W&B artifacts of type ``cache``."""
    from lit_xai.loggers import log_cache_artifact

    for stat in gen_stats:
        log_cache_artifact(run, stat["store"], "axioms-scenes", Path(stat["store"]).name)
    log_cache_artifact(run, cfg.stats_cache_dir or Path(cfg.output_dir) / "iba_stats", "iba-stats")


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    print(" | ".join(f"{c:>24}" for c in columns))
    for row in rows:
        print(" | ".join(f"{v:>24.3f}" if isinstance(v, float) else f"{v!s:>24}" for v in row.values()))


def main(args: list[str] | None = None) -> None:
    parser = build_parser()
    cfg = parser.parse_args(args)
    unknown = sorted(set(cfg.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    cfg.generation = parser.instantiate(cfg).generation
    result = run(cfg)
    _print_table(result["generation"])
    _print_table(result["table"])
    _print_table(result["layers"])


if __name__ == "__main__":
    main()
