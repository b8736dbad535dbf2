"""Report cells: the per-image scores of one method × metric on one chunk of images, cached on disk.

A cell file ``<output_dir>/cells/<method>/<metric>/<key>.pt`` is written atomically with a SHA-256 header
(:func:`lit_xai.storage.atomic_torch_save`), so a killed run leaves only complete cells and a corrupt one is
recomputed. The key hashes everything the scores depend on: the weights fingerprint, the data config, split,
image range and target rule, the method's and the metric's names and arguments, and the seed. Each cell runs in a
forked RNG seeded from (seed, key), so a cell gives the same scores alone, in a shard, or in one process.

Per-image scores and curves come from every metric's batched ``image_results``
(:class:`lit_xai.metrics.image_scores.PerImageMetric`): one call per cell, each image's row equal to the metric's
score on that image alone. An image the metric's protocol skips (e.g. EHR's boxes over 33 % of the image) scores
NaN; the statistics use the images every method scored.
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

from lit_xai.report.config import GROUND_TRUTH_KEYS, MethodSpec, MetricSpec
from lit_xai.storage import atomic_torch_save, load_or_discard

#: bump when the cell payload or scoring changes, so old cells are not reused
CELL_VERSION = 1


@dataclass(frozen=True)
class Chunk:
    """Images ``start … stop - 1`` of the report's split."""

    index: int
    start: int
    stop: int


@dataclass(frozen=True)
class Cell:
    """One method × metric × chunk, with its cache key."""

    method: MethodSpec
    metric: MetricSpec
    chunk: Chunk
    key: str

    def path(self, root: Path) -> Path:
        return root / "cells" / _safe(self.method.display) / _safe(self.metric.name) / f"{self.key[:24]}.pt"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def chunks(num_images: int, chunk_size: int) -> list[Chunk]:
    """Consecutive chunks covering images ``0 … num_images - 1``."""
    return [Chunk(i, s, min(s + chunk_size, num_images)) for i, s in enumerate(range(0, num_images, chunk_size))]


def cell_key(context: dict[str, Any], method: MethodSpec, metric: MetricSpec, chunk: Chunk) -> str:
    """SHA-256 over the JSON of everything a cell's scores depend on (``context``: weights, data, split, …)."""
    payload = {
        "version": CELL_VERSION, **context, "chunk": [chunk.start, chunk.stop],
        "method": [method.name, method.kwargs], "metric": [metric.name, metric.kwargs],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def plan(context: dict[str, Any], methods: list[MethodSpec], metrics: list[MetricSpec],
         parts: list[Chunk]) -> list[Cell]:
    """Every cell, in a fixed order (chunk, method, metric) that ``--shard i/n`` splits by position."""
    return [Cell(m, s, c, cell_key(context, m, s, c)) for c in parts for m in methods for s in metrics]


def image_scores(metric: nn.Module, model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor,
                 method: Any, extras: dict[str, Tensor | None], curves: dict[str, Any] | None = None) -> Tensor:
    """Per-image scores ``[B]`` from the metric's batched ``image_results``; ``curves`` (if given) receives the
    per-image curves ``{name: [B, K]}`` as ``values``, their x values ``axis`` and tick labels ``ticks`` (e.g. the
    randomisation cascade's layer names) where the metric has curves."""
    results = metric.image_results(model, inputs, target, maps, method=method, **extras)
    values = {k.removeprefix("curve/"): v.detach().double().cpu() for k, v in results.items() if k.startswith("curve/")}
    if curves is not None and values:
        curves.update(axis=metric.curve_axis().double().cpu(), ticks=metric.curve_ticks(), values=values)
    return results["score"].detach().double().cpu()


def load_cell(cell: Cell, root: Path) -> dict[str, Tensor] | None:
    """The cached payload of ``cell`` (``None`` if missing, corrupt — then deleted — or of another key)."""
    payload = load_or_discard(cell.path(root))
    if payload is None or payload.get("key") != cell.key:
        return None
    return payload


def batch(dataset: Any, chunk: Chunk) -> dict[str, Tensor]:
    """The chunk's samples stacked into a dict batch (``image``, ``label``, ``index`` + ``mask``/``box``)."""
    samples = [dataset[i] for i in range(chunk.start, chunk.stop)]
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}


def compute_cells(
    todo: list[Cell], root: Path, model: nn.Module, dataset: Any, target_rule: str, seed: int,
    normalisation: tuple[Any, Any], device: str, methods: Callable[[MethodSpec], Any], progress: bool = True,
) -> Iterator[Cell]:
    """Compute and store every cell of ``todo``; maps are computed once per (method, chunk), by the method
    ``methods(spec)`` gives (:class:`lit_xai.report.methods.ReportMethods`). Yields each cell."""
    from tqdm.auto import tqdm

    from lit_xai.metrics import build_metric

    groups: dict[tuple[str, int], list[Cell]] = {}
    for cell in todo:
        groups.setdefault((cell.method.display, cell.chunk.index), []).append(cell)
    bar = tqdm(total=len(todo), desc="report cells", disable=not progress, leave=False)
    try:
        for cells in groups.values():
            first = cells[0]
            data = {k: v.to(device) for k, v in batch(dataset, first.chunk).items()}
            inputs = data["image"]
            with torch.no_grad():
                target = data["label"].long() if target_rule == "label" else model(inputs).argmax(1)
            extras = {name: data.get(key) for name, key in GROUND_TRUTH_KEYS.items()}
            method = methods(first.method)
            with torch.random.fork_rng(devices=[]):
                # the maps' seed depends on the method and images only, so any subset of cells sees the same maps
                torch.manual_seed(_seed(seed, json.dumps([first.method.name, first.method.kwargs, first.chunk.start,
                                                          first.chunk.stop], sort_keys=True, default=str), "maps"))
                maps = method(model, inputs, target)
            for cell in cells:
                bar.set_description_str(f"{cell.method.display} × {cell.metric.name}", refresh=False)
                metric = build_metric(cell.metric.name, **cell.metric.kwargs).to(device)
                metric.set_data_normalisation(*normalisation)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(_seed(seed, cell.key, "metric"))
                    curves: dict[str, Any] = {}
                    scores = image_scores(metric, model, inputs, target, maps, method, extras, curves)
                atomic_torch_save({"key": cell.key, "scores": scores, "index": data["index"].cpu(),
                                   "target": target.cpu(), "curves": curves}, cell.path(root))
                bar.update(1)
                yield cell
    finally:
        bar.close()


def _seed(seed: int, key: str, purpose: str) -> int:
    """A 63-bit seed from the configured seed, the cell key and the purpose."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{key}|{purpose}".encode()).digest()[:8], "little") >> 1
