"""The report's axiom family: every method scored on the verified scenes of an axiom scene store.

The scenes (:class:`lit_xai.axioms.store.SceneStore`, written by ``python -m lit_xai axioms``) were generated with
the model in the loop, so they are only valid for that model: each store's recorded ``model_fingerprint`` must equal
the report model's :func:`lit_xai.storage.weights_fingerprint` (checked before any work, one-line error otherwise).
Each scenario is one metric column of family ``axioms``; the maps are :func:`lit_xai.axioms.scene_maps` (the axioms
command's reduction and explained classes) and the per-scene numbers are those of the scenario's metric
(:mod:`lit_xai.metrics.axioms`, dissertation ch. 7 Eq. 8-11):

- ``null_feature`` (Eq. 8) and ``class_sensitivity_double`` (Eq. 9) average per-scene ratios: the per-scene score is
  the ratio (NaN where its denominator is 0, the scenes the metric skips), and its mean is the metric's value;
- ``class_sensitivity_single`` (Eq. 10) and ``saturation`` (Eq. 11) are a correlation *across* scenes, which has no
  per-scene value. Per-scene scores are the jackknife pseudo-values ``ψ_i = n·r − (n − 1)·r₍₋ᵢ₎`` (Quenouille 1956;
  Tukey 1958; Efron & Tibshirani 1993 ch. 11), ``r₍₋ᵢ₎`` the correlation without scene i: their mean is the
  jackknife bias-corrected correlation (close to, not equal to, the metric's ``r``), ``sd(ψ)/√n`` the jackknife SE,
  and since ψ is linear in the statistic, the paired difference of two methods' ψ is the jackknife of the
  difference of their correlations — so the report's mean ± SE, paired Δ and ranks apply unchanged. ``n`` counts the
  scenes every method scored (finite pairs for all), so all methods' pseudo-values are over the same scenes.

A cell is one method × scenario × chunk of ``chunk_size`` scenes; it stores the per-scene pairs the score is made of
(numerator/denominator, or the two correlated statistics), cached like the image cells (:mod:`lit_xai.report.cells`)
under a key over the store, the scene ids, the method, the reduction and the metric arguments; the scores are formed
at the merge, once every cell of the scenario is there (the pseudo-values need all scenes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lit_xai.axioms.evaluation import Reduction, make_metric, scene_maps
from lit_xai.axioms.generation import DecoderConfig, GenerationConfig, SceneBatch
from lit_xai.axioms.scenarios import SCENARIOS, patch_masks
from lit_xai.metrics.similarity import average_ranks, centred_unit
from lit_xai.models.classifier import ConfigurationError
from lit_xai.report.cells import Cell, Chunk, load_cell
from lit_xai.report.config import MethodSpec, MetricSpec
from lit_xai.storage import atomic_torch_save, is_intact, load_checked

#: bump when the axiom cell payload or its statistics change
AXIOM_CELL_VERSION = 1
#: scenarios scored by a correlation across scenes (per-scene scores: jackknife pseudo-values)
CORRELATION_SCENARIOS = ("class_sensitivity_single", "saturation")


@dataclass(frozen=True)
class StoredScenes:
    """One scenario's scene store: its directory, the recorded identity and the generation config."""

    directory: Path
    scenario: str
    fingerprint: str
    num_classes: int
    config: GenerationConfig
    chunks: tuple[int, ...]


def _generation_config(data: dict[str, Any]) -> GenerationConfig:
    decoder = DecoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["decoder"].items()})
    fields = {k: tuple(v) if k in ("mean", "std") else v for k, v in data.items() if k != "decoder"}
    return GenerationConfig(**fields, decoder=decoder)


def find_stores(path: str | Path) -> list[StoredScenes]:
    """The scene stores at ``path``: a store directory (``manifest.json`` in it) or a folder of them (the axioms
    command's ``scene_dir``), one per scenario. ConfigurationError if there is none, a manifest is unreadable, a
    scenario is unknown or appears twice."""
    root = Path(path)
    manifests = [root / "manifest.json"] if (root / "manifest.json").is_file() else sorted(root.glob("*/manifest.json"))
    if not manifests:
        raise ConfigurationError(f"report: axioms_scenes {root}: no scene store (no manifest.json in it or in its "
                                 "subfolders); fill one with `python -m lit_xai axioms --generate_only true`")
    stores: dict[str, StoredScenes] = {}
    for manifest in manifests:
        try:
            data = json.loads(manifest.read_text())
            scenario, chunks = data["scenario"], tuple(sorted(int(c) for c in data["chunks"]))
            store = StoredScenes(manifest.parent, scenario, data["model_fingerprint"], int(data["num_classes"]),
                                 _generation_config(data["config"]), chunks)
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigurationError(f"report: scene store manifest {manifest} is unreadable ({error!r})") from None
        if scenario not in SCENARIOS:
            raise ConfigurationError(f"report: scene store {manifest.parent} has unknown scenario {scenario!r}")
        if scenario in stores:
            raise ConfigurationError(
                f"report: two scene stores of scenario {scenario!r} ({stores[scenario].directory.name}, "
                f"{manifest.parent.name}); set axioms_scenes to one store directory or a folder with one per scenario"
            )
        stores[scenario] = store
    return [stores[s] for s in SCENARIOS if s in stores]


def check_stores(stores: list[StoredScenes], fingerprint: str, num_classes: int, in_chans: int) -> None:
    """The scenes must have been generated for the report's model: same weights fingerprint, classes, channels."""
    for store in stores:
        if store.fingerprint != fingerprint:
            raise ConfigurationError(
                f"report: scene store {store.directory} was generated for weights {store.fingerprint[:16]}…, not the "
                f"report's model.weights ({fingerprint[:16]}…); generate scenes for this model with the axioms command"
            )
        if store.num_classes != num_classes or len(store.config.mean) != in_chans:
            raise ConfigurationError(
                f"report: scene store {store.directory} has {store.num_classes} classes and {len(store.config.mean)} "
                f"channels, the report's model {num_classes} and {in_chans}"
            )


def load_scenes(store: StoredScenes, num_scenes: int | None) -> SceneBatch:
    """The store's first ``num_scenes`` verified scenes (``None``: all), chunks in order."""
    batches = []
    for index in store.chunks:
        path = store.directory / f"chunk_{index:05d}.pt"
        if is_intact(path):
            batches.append(SceneBatch.from_dict({**load_checked(path), "scenario": store.scenario}))
    scenes = SceneBatch.cat([b for b in batches if len(b)], store.scenario) if any(len(b) for b in batches) else None
    available = 0 if scenes is None else len(scenes)
    if scenes is None or available < max(num_scenes or 0, 3):
        raise ConfigurationError(
            f"report: scene store {store.directory} holds {available} intact verified scenes, the report needs "
            f"{max(num_scenes or 0, 3)} (at least 3 for the jackknife); generate more with the axioms command"
        )
    return scenes if num_scenes is None else scenes.select(slice(0, num_scenes))


def scene_statistics(scenario: str, maps: Tensor, masks: Tensor, eps: float) -> Tensor:
    """The two per-scene numbers ``[N, 2]`` (float64) the scenario's metric is made of, from maps ``[N, T, H, W]``
    (:func:`lit_xai.axioms.scene_maps`) and patch masks ``[N, P, H, W]``: (numerator, denominator) of Eq. 8 / 9, or
    the pair correlated across scenes by Eq. 10 (inside/outside ratios of ``S_a`` and ``S_b``, ``eps`` added) / 11."""
    maps = maps.double()

    def total(values: Tensor, mask: Tensor) -> Tensor:
        return (values * mask).flatten(1).sum(1)

    if scenario == "null_feature":
        return torch.stack([total(maps[:, 0], masks[:, 1]), total(maps[:, 0], masks[:, 0])], 1)
    if scenario == "class_sensitivity_double":
        a, b = maps[:, 0].abs(), maps[:, 1].abs()
        overlap = total(torch.minimum(a, b), masks[:, 0] | masks[:, 1])
        return torch.stack([overlap, total(a, masks[:, 0]) + total(b, masks[:, 1])], 1)
    if scenario == "class_sensitivity_single":
        inside, outside = masks[:, 0], ~masks[:, 0]

        def ratio(values: Tensor) -> Tensor:
            mean_in = total(values, inside) / inside.flatten(1).sum(1).clamp_min(1)
            mean_out = total(values, outside) / outside.flatten(1).sum(1).clamp_min(1)
            return (mean_in + eps) / (mean_out + eps)

        return torch.stack([ratio(maps[:, 0]), ratio(maps[:, 1])], 1)
    if scenario == "saturation":
        return torch.stack([total(maps[:, 0], masks[:, 0]), total(maps[:, 0], masks[:, 1])], 1)
    raise ValueError(f"unknown axiom scenario {scenario!r}")


def correlation(x: Tensor, y: Tensor, kind: str) -> Tensor:
    """Pearson or Spearman (average ranks for ties) correlation of matching rows ``[..., n]`` (float64; 0 where a
    row is constant)."""
    if kind == "spearman":
        x, y = average_ranks(x.double()), average_ranks(y.double())
    return (centred_unit(x) * centred_unit(y)).sum(-1)


def jackknife_pseudo_values(x: Tensor, y: Tensor, kind: str) -> Tensor:
    """``ψ_i = n·r − (n − 1)·r₍₋ᵢ₎`` for the correlation ``r`` of ``x``, ``y`` ``[n]`` (n ≥ 3), all ``n``
    leave-one-out correlations in one batched call."""
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"the jackknife of a correlation needs at least 3 scenes, got {n}")
    keep = torch.arange(n - 1, device=x.device)
    rows = keep[None, :] + (keep[None, :] >= torch.arange(n, device=x.device)[:, None]).long()  # [n, n-1]
    full = correlation(x, y, kind)
    return n * full - (n - 1) * correlation(x[rows], y[rows], kind)


def scene_scores(scenario: str, statistics: dict[str, Tensor], kind: str) -> dict[str, Tensor]:
    """Per-scene scores ``[N]`` of every method from its :func:`scene_statistics`; NaN for the scenes the metric
    skips (zero denominator) or, for the correlations, where any method's pair is not finite."""
    if scenario not in CORRELATION_SCENARIOS:
        return {m: torch.where(s[:, 1] != 0, s[:, 0] / s[:, 1], float("nan")) for m, s in statistics.items()}
    valid = torch.stack([s.isfinite().all(1) for s in statistics.values()]).all(0)
    scores = {}
    for method, pairs in statistics.items():
        values = torch.full((pairs.shape[0],), float("nan"), dtype=torch.float64)
        values[valid] = jackknife_pseudo_values(pairs[valid, 0], pairs[valid, 1], kind)
        scores[method] = values
    return scores


def axiom_metric(scenario: str, reduction: Reduction, kind: str) -> MetricSpec:
    """The metric column of a scenario (family ``axioms``), its arguments in ``kwargs``."""
    return MetricSpec("axioms", scenario, {"reduction": reduction, "correlation": kind})


def plan_axioms(context: dict[str, Any], methods: list[MethodSpec], stores: list[StoredScenes],
                scenes: dict[str, SceneBatch], chunk_size: int, reduction: Reduction, kind: str) -> list[Cell]:
    """Every axiom cell, in a fixed order (scenario, chunk, method); the key hashes the report context (weights,
    seed, …), the store, the chunk's scene ids, the method, the reduction and the metric's arguments."""
    cells = []
    for store in stores:
        metric = axiom_metric(store.scenario, reduction, kind)
        ids = scenes[store.scenario].scene_ids
        for index, start in enumerate(range(0, len(ids), chunk_size)):
            chunk = Chunk(index, start, min(start + chunk_size, len(ids)))
            for method in methods:
                payload = {"version": AXIOM_CELL_VERSION, **context, "store": store.directory.name,
                           "scene_ids": ids[chunk.start:chunk.stop].tolist(), "method": [method.name, method.kwargs],
                           "metric": [metric.name, metric.kwargs]}
                key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
                cells.append(Cell(method, metric, chunk, key))
    return cells


def compute_axiom_cells(todo: list[Cell], root: Path, model: nn.Module, stores: list[StoredScenes],
                        scenes: dict[str, SceneBatch], seed: int, device: str, methods: Callable[[MethodSpec], Any],
                        progress: bool = True) -> Iterator[Cell]:
    """Compute and store every axiom cell of ``todo`` (maps in a forked RNG seeded from the cell key) with the method
    ``methods(spec)`` gives (:class:`lit_xai.report.methods.ReportMethods`)."""
    from tqdm.auto import tqdm

    from lit_xai.report.cells import _seed

    configs = {s.scenario: s.config for s in stores}
    bar = tqdm(total=len(todo), desc="axiom cells", disable=not progress, leave=False)
    try:
        for cell in todo:
            scenario = cell.metric.name
            bar.set_description_str(f"{cell.method.display} × {scenario}", refresh=False)
            chunk = scenes[scenario].select(slice(cell.chunk.start, cell.chunk.stop))
            config = configs[scenario]
            method = methods(cell.method)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed(seed, cell.key, "maps"))
                maps = scene_maps(method, model, chunk, config, cell.metric.kwargs["reduction"], len(chunk), device)
            eps = getattr(make_metric(scenario, cell.metric.kwargs["correlation"]), "eps", 0.0)
            masks = patch_masks(chunk.corners, config.image_size, config.patch_size)
            atomic_torch_save({"key": cell.key, "statistics": scene_statistics(scenario, maps, masks, eps).cpu(),
                               "index": chunk.scene_ids.cpu()}, cell.path(root))
            bar.update(1)
            yield cell
    finally:
        bar.close()


def merge_axioms(cells: list[Cell], root: Path, methods: list[MethodSpec]
                 ) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor]]:
    """scenario → method → per-scene scores ``[N]`` (:func:`scene_scores`), and scenario → the scene ids."""
    parts: dict[tuple[str, str], dict[int, Tensor]] = {}
    ids: dict[str, dict[int, Tensor]] = {}
    kinds: dict[str, str] = {}
    for cell in cells:
        payload = load_cell(cell, root)
        if payload is None:
            raise RuntimeError(f"report: axiom cell {cell.path(root)} is missing after computing; rerun to redo it")
        parts.setdefault((cell.metric.name, cell.method.display), {})[cell.chunk.index] = payload["statistics"]
        ids.setdefault(cell.metric.name, {})[cell.chunk.index] = payload["index"]
        kinds[cell.metric.name] = cell.metric.kwargs["correlation"]
    scores, index = {}, {}
    for scenario, by_chunk in ids.items():
        statistics = {m.display: torch.cat([parts[(scenario, m.display)][i] for i in sorted(by_chunk)])
                      for m in methods}
        scores[scenario] = scene_scores(scenario, statistics, kinds[scenario])
        index[scenario] = torch.cat([by_chunk[i] for i in sorted(by_chunk)])
    return scores, index

