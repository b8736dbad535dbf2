"""On-disk cache of attribution maps for ROAR, sharded, resumable and split across DDP ranks.

Layout: ``<root>/<model fingerprint>/<data key>/<method>-<config hash>/<split>/shard-<s>.pt``. The model
fingerprint is a hash of the source model's weights, the config hash covers the method name, its constructor
arguments and the channel reduction, so changing any of them computes new maps instead of reusing stale ones.

Each shard holds the maps of a contiguous block of ``shard_size`` samples of one split, ``[n, H, W]`` float16.
Maps explain the model's *predicted* class (``target=None``). Before storage every map is reduced over
channels (``abs_sum`` by default: Σ_c |m_c|, so pixels are ranked by the magnitude of their evidence over all
channels together; ``sum`` keeps the sign), bilinearly upsampled to H×W if the method works at a layer
(GradCAM), and divided by its own max |·|: ranking within an image is invariant to that positive scale, and it
keeps float16 from flushing small gradients to zero (which would create ties).

A shard file exists only when complete (written to a temp file, then renamed) and carries a SHA-256 of its content
(:func:`lit_xai.storage.atomic_torch_save`), so an interrupted run resumes at the first missing shard and a
truncated or altered shard is reported, deleted and recomputed instead of being read. The shard jobs of all
(method, split) pairs are numbered; under DDP job ``j`` is computed by rank ``j % world_size``
(:class:`MapComputation`, run with ``Trainer.predict``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from lit_xai.attribution import AttributionError, build_method
from lit_xai.attribution.postprocess import reduce_channels
from lit_xai.data.base import UnpaddedDistributedSampler
from lit_xai.storage import atomic_torch_save, atomic_write_json, is_intact, load_checked

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MethodSpec:
    """One attribution method of the grid: registry ``name``, constructor ``kwargs``, channel ``reduction``
    (``abs_sum`` or ``sum``) and an optional display ``label`` (defaults to ``name``)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    reduction: str = "abs_sum"
    label: str | None = None

    def __post_init__(self) -> None:
        """Fail at configuration time, before the source model trains: an unknown method name or argument raises
        (:func:`lit_xai.attribution.build_method` lists what exists), as does an unknown reduction."""
        build_method(self.name, **self.kwargs)
        if self.reduction not in ("abs_sum", "sum"):
            raise AttributionError(f"roar method {self.display!r}: reduction must be 'abs_sum' or 'sum', "
                                   f"got {self.reduction!r}")

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def key(self) -> str:
        """Folder name: the display name plus a hash of everything that changes the maps."""
        config = json.dumps({"name": self.name, "kwargs": self.kwargs, "reduction": self.reduction}, sort_keys=True)
        return f"{self.display}-{hashlib.sha256(config.encode()).hexdigest()[:12]}"


def reduce_to_pixels(maps: Tensor, size: tuple[int, int], reduction: str = "abs_sum") -> Tensor:
    """Raw maps ``[B, C, h, w]`` → ``[B, H, W]`` float: channel reduction, bilinear upsampling to ``size``,
    per-image division by max |·| (a constant-zero map stays zero)."""
    if reduction not in ("abs_sum", "sum"):
        raise ValueError(f"unknown map reduction {reduction!r} for ROAR; use 'abs_sum' or 'sum'")
    reduced = reduce_channels(maps.float(), how=reduction)
    if tuple(reduced.shape[-2:]) != tuple(size):
        reduced = F.interpolate(reduced, size=tuple(size), mode="bilinear", align_corners=False)
    reduced = reduced[:, 0]
    scale = reduced.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    return reduced / scale[:, None, None]


@dataclass(frozen=True)
class MapJob:
    """One shard of one (method, split): samples ``[start, stop)``."""

    spec: MethodSpec
    split: str
    shard: int
    start: int
    stop: int


class MapCache:
    """Maps of one source model on one dataset configuration.

    Args:
        root: cache folder (shared by all models; the fingerprint separates them).
        model_fingerprint: :func:`lit_xai.storage.weights_fingerprint` of the source model.
        data_key: identifies the data the maps index into (e.g. a hash of the data config).
        shard_size: samples per shard file.
    """

    def __init__(self, root: str | Path, model_fingerprint: str, data_key: str, shard_size: int = 1024) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.directory = Path(root) / model_fingerprint / data_key
        self.shard_size = shard_size

    def split_directory(self, spec: MethodSpec, split: str) -> Path:
        return self.directory / spec.key / split

    def shard_path(self, spec: MethodSpec, split: str, shard: int) -> Path:
        return self.split_directory(spec, split) / f"shard-{shard:05d}.pt"

    def jobs(self, spec: MethodSpec, split: str, num_samples: int) -> list[MapJob]:
        """All shards of ``(spec, split)``, finished or not."""
        count = math.ceil(num_samples / self.shard_size)
        return [
            MapJob(spec, split, s, s * self.shard_size, min((s + 1) * self.shard_size, num_samples))
            for s in range(count)
        ]

    def is_done(self, job: MapJob) -> bool:
        """Whether the shard is on disk and intact (a corrupt shard is reported and deleted, so it is recomputed)."""
        return is_intact(self.shard_path(job.spec, job.split, job.shard))

    def compute(self, job: MapJob, model: nn.Module, dataset: Dataset, batch_size: int = 128) -> None:
        """Compute and atomically store one shard (explaining each sample's predicted class)."""
        method = build_method(job.spec.name, **job.spec.kwargs)
        device = next(model.parameters()).device
        loader = DataLoader(Subset(dataset, range(job.start, job.stop)), batch_size=batch_size, shuffle=False)
        parts = []
        for batch in loader:
            images = batch["image"].to(device)
            raw = method(model, images, None)
            parts.append(reduce_to_pixels(raw.detach(), images.shape[-2:], job.spec.reduction).half().cpu())
        maps = torch.cat(parts)
        if maps.shape[0] != job.stop - job.start:
            raise RuntimeError(f"{job.spec.display}/{job.split} shard {job.shard}: got {maps.shape[0]} maps")
        path = self.shard_path(job.spec, job.split, job.shard)
        atomic_write_json(path.parent.parent / "spec.json", {**job.spec.__dict__, "key": job.spec.key})
        atomic_torch_save({"maps": maps, "start": job.start, "stop": job.stop}, path)

    def load(self, spec: MethodSpec, split: str, num_samples: int) -> Tensor:
        """All maps of ``(spec, split)`` as ``[N, H, W]`` float16; raises if a shard is missing."""
        jobs = self.jobs(spec, split, num_samples)
        missing = [job.shard for job in jobs if not self.is_done(job)]
        if missing:
            raise FileNotFoundError(
                f"maps of {spec.display}/{split} are incomplete: shards {missing} missing in "
                f"{self.split_directory(spec, split)}; run the 'maps' stage first"
            )
        parts = [load_checked(self.shard_path(spec, split, j.shard))["maps"] for j in jobs]
        return torch.cat(parts)


def compute_maps(
    cache: MapCache, jobs: list[MapJob], model: nn.Module, datasets: dict[str, Dataset], batch_size: int = 128,
    rank: int = 0, world_size: int = 1,
) -> int:
    """Compute the unfinished jobs owned by ``rank`` (job ``j`` belongs to rank ``j % world_size``), without a
    Trainer. Returns the number of shards computed."""
    computed = 0
    for number, job in enumerate(jobs):
        if number % world_size == rank and not cache.is_done(job):
            cache.compute(job, model, datasets[job.split], batch_size)
            computed += 1
    return computed


class _JobNumbers(Dataset):
    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> int:
        return index


class MapComputation(L.LightningModule):
    """Runs :func:`compute_maps` under ``Trainer.predict``, so the Trainer's accelerator/devices/strategy decide
    where maps are computed: each rank takes the jobs ``j ≡ rank (mod world)``, and all ranks meet at a barrier
    at the end so that no rank reads the cache before every shard exists."""

    def __init__(
        self, model: nn.Module, cache: MapCache, jobs: list[MapJob], datasets: dict[str, Dataset], batch_size: int
    ) -> None:
        super().__init__()
        self.model, self.cache, self.jobs, self.datasets, self.batch_size = model, cache, jobs, datasets, batch_size

    def predict_dataloader(self) -> DataLoader:
        distributed = dist.is_available() and dist.is_initialized()
        numbers = _JobNumbers(len(self.jobs))
        sampler = UnpaddedDistributedSampler(numbers) if distributed else None
        return DataLoader(numbers, batch_size=1, sampler=sampler, collate_fn=lambda items: items)

    def predict_step(self, batch: list[int], batch_idx: int) -> None:
        for number in batch:
            job = self.jobs[number]
            if not self.cache.is_done(job):
                self.cache.compute(job, self.model, self.datasets[job.split], self.batch_size)

    def on_predict_end(self) -> None:
        self.trainer.strategy.barrier("roar-maps")
