"""Per-position feature statistics of one layer: the Gaussian prior Q(Z) = N(μ_R, σ_R) of IBA.

Welford's streaming mean/variance over a sample of training inputs (Schulz et al. use 5-10k samples),
merged across DDP ranks with Chan's parallel formula, and cached on disk under a key made of the model
weights, the data (a fingerprint of the loader's first batch), the layer and the sample count (the raw moments, so
``min_std`` and ``active_threshold`` apply after loading), so a second run
(or a second rank) reuses the estimate and other data or weights never do.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lit_xai.attribution.base import AttributionError, preserved_model_state
from lit_xai.attribution.information.layer_hooks import layer_output, model_device, resolve_layer
from lit_xai.storage import atomic_torch_save, load_or_discard, weights_fingerprint


@dataclass
class WelfordState:
    """Running count, mean, sum of squared deviations (M2) and non-zero count, per feature position."""

    count: Tensor  # scalar, float64
    mean: Tensor
    m2: Tensor
    nonzero: Tensor

    @classmethod
    def empty(cls, shape: torch.Size, device: torch.device) -> WelfordState:
        zeros = torch.zeros(shape, dtype=torch.float64, device=device)
        return cls(torch.zeros((), dtype=torch.float64, device=device), zeros, zeros.clone(), zeros.clone())

    @classmethod
    def from_batch(cls, features: Tensor) -> WelfordState:
        """The state of one batch ``[N, ...]`` computed in one shot."""
        x = features.detach().to(torch.float64)
        mean = x.mean(0)
        return cls(
            torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device),
            mean,
            ((x - mean) ** 2).sum(0),
            (x != 0).sum(0).to(torch.float64),
        )

    def merge(self, other: WelfordState) -> WelfordState:
        """Combine two disjoint samples (Chan et al.): exact, order-independent up to rounding."""
        total = self.count + other.count
        if float(total) == 0:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / total)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        return WelfordState(total, mean, m2, self.nonzero + other.nonzero)

    def update(self, features: Tensor) -> WelfordState:
        """The state after adding a batch ``[N, ...]`` of feature maps."""
        return self.merge(WelfordState.from_batch(features))


WELFORD_FIELDS = ("count", "mean", "m2", "nonzero")  # what the disk cache stores


def all_gather_merge(state: WelfordState) -> WelfordState:
    """Merge the per-rank states of all DDP ranks (no-op when torch.distributed is not initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return state
    world = dist.get_world_size()
    fields = [state.count.reshape(1), state.mean.flatten(), state.m2.flatten(), state.nonzero.flatten()]
    packed = torch.cat(fields)
    gathered = [torch.empty_like(packed) for _ in range(world)]
    dist.all_gather(gathered, packed)
    shape, size = state.mean.shape, state.mean.numel()
    merged: WelfordState | None = None
    for flat in gathered:
        rank_state = WelfordState(
            flat[0], flat[1 : 1 + size].view(shape), flat[1 + size : 1 + 2 * size].view(shape),
            flat[1 + 2 * size :].view(shape),
        )
        merged = rank_state if merged is None else merged.merge(rank_state)
    assert merged is not None
    return merged


@dataclass
class FeatureStatistics:
    """μ_R, σ_R (clamped ≥ ``min_std``) and the active-position mask of one layer, each ``[C, h, w]``."""

    mean: Tensor
    std: Tensor
    active: Tensor
    num_samples: int

    @classmethod
    def from_welford(cls, state: WelfordState, min_std: float, active_threshold: float) -> FeatureStatistics:
        """σ = sqrt(M2 / (n−1)) clamped at ``min_std``; a position is active if non-zero in > ``active_threshold``
        of the samples (positions active in ≤ 1% of samples are masked out in the reference)."""
        n = float(state.count)
        if n < 1:
            raise AttributionError("feature statistics need at least one sample")
        variance = state.m2 / max(n - 1.0, 1.0)
        return cls(
            mean=state.mean.float(),
            std=variance.sqrt().clamp_min(min_std).float(),
            active=(state.nonzero / n) > active_threshold,
            num_samples=int(n),
        )

    @classmethod
    def from_features(
        cls, features: Tensor, min_std: float = 0.01, active_threshold: float = 0.01
    ) -> FeatureStatistics:
        """Statistics of a batch of feature maps ``[N, C, h, w]`` (the explained batch, as a fallback)."""
        return cls.from_welford(WelfordState.from_batch(features), min_std, active_threshold)

    def to(self, device: torch.device, dtype: torch.dtype) -> FeatureStatistics:
        return FeatureStatistics(
            self.mean.to(device, dtype), self.std.to(device, dtype), self.active.to(device), self.num_samples
        )

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.cpu(), "std": self.std.cpu(), "active": self.active.cpu(),
                "num_samples": self.num_samples}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> FeatureStatistics:
        return cls(state["mean"], state["std"], state["active"], int(state["num_samples"]))


def cache_path(cache_dir: str | Path, model: nn.Module, layer: str, max_samples: int, data_key: str) -> Path:
    """``<cache_dir>/iba_stats-<weights hash[:16]>-<data_key>-<layer>-n<max_samples>.pt``."""
    safe_layer = "".join(c if c.isalnum() or c in "._-" else "_" for c in layer)
    return Path(cache_dir) / (
        f"iba_stats-{weights_fingerprint(model, chars=16)}-{data_key}-{safe_layer}-n{max_samples}.pt"
    )


def data_fingerprint(images: Tensor, chars: int = 16) -> str:
    """SHA-256 (first ``chars`` hex digits) of a batch of images: dtype, shape and bytes. The first batch of a
    training loader identifies its data, normalisation and (seeded) order; lit_xai's DataModules shuffle with a
    seeded generator, so the same DataModule gives the same key in every run."""
    tensor = images.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:chars]


def peek_first_batch(loader: Iterable[Any]) -> tuple[Iterable[Any], Any]:
    """The loader's first batch and a loader that still yields it (a one-shot iterator is chained back)."""
    iterator = iter(loader)
    first = next(iterator, None)
    if first is None:
        raise AttributionError("the loader yielded no batches: cannot estimate feature statistics")
    return (itertools.chain([first], iterator) if iterator is loader else loader), first


def shared_key(key: str) -> str:
    """Rank 0's ``key`` on every DDP rank (ranks see different shards, so their first batches differ)."""
    if not (dist.is_available() and dist.is_initialized()):
        return key
    holder = [key]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def batch_images(batch: Any) -> Tensor:
    """The image tensor of a loader batch: a dict with ``"image"``, a tensor, or a tuple/list (first element)."""
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise AttributionError(f"a batch dict needs an 'image' entry, got keys {sorted(batch)}")
        return batch["image"]
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise AttributionError(f"cannot find images in a batch of type {type(batch).__name__}")


def welford_over_loader(model: nn.Module, layer: str, loader: Iterable[Any], max_samples: int) -> WelfordState:
    """Stream the layer's activations over at most ``max_samples`` loader samples (this rank only)."""
    module = resolve_layer(model, layer)
    device = model_device(model)
    state: WelfordState | None = None
    seen = 0
    with torch.no_grad(), preserved_model_state(model):
        for batch in loader:
            images = batch_images(batch)[: max_samples - seen].to(device)
            features = layer_output(model, module, images)
            state = WelfordState.from_batch(features) if state is None else state.update(features)
            seen += images.shape[0]
            if seen >= max_samples:
                break
    if state is None:
        raise AttributionError(f"the loader yielded no batches: cannot estimate statistics of layer {layer!r}")
    return state


def estimate_feature_statistics(
    model: nn.Module,
    layer: str,
    loader: Iterable[Any],
    max_samples: int = 5000,
    cache_dir: str | Path | None = None,
    min_std: float = 0.01,
    active_threshold: float = 0.01,
) -> FeatureStatistics:
    """μ_R, σ_R and active mask of ``layer`` over ≤ ``max_samples`` loader samples, merged over DDP ranks.

    With ``cache_dir`` the Welford moments are loaded from / saved to a file keyed by the weights hash, the data
    (:func:`data_fingerprint` of the first batch, rank 0's under DDP), the layer and ``max_samples``; ``min_std``
    and ``active_threshold`` are applied to them after loading, so they need no place in the key; under DDP
    each rank streams ``max_samples / world_size`` samples of its shard, the states are merged with
    ``all_gather`` and rank 0 writes the file (atomically).
    """
    path = None
    if cache_dir is not None:
        loader, first = peek_first_batch(loader)
        path = cache_path(cache_dir, model, layer, max_samples, shared_key(data_fingerprint(batch_images(first))))
    cached = load_or_discard(path) if path is not None else None  # a corrupt file is reported and recomputed
    if cached is not None and set(cached) == set(WELFORD_FIELDS):
        return FeatureStatistics.from_welford(WelfordState(**cached), min_std, active_threshold)
    distributed = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if distributed else 1
    per_rank = -(-max_samples // world)  # each rank streams its share of the sample budget
    state = all_gather_merge(welford_over_loader(model, layer, loader, per_rank))
    is_writer = not distributed or dist.get_rank() == 0
    if path is not None and is_writer:  # the raw moments: min_std and active_threshold apply after loading
        atomic_torch_save({name: getattr(state, name).cpu() for name in WELFORD_FIELDS}, path)
    return FeatureStatistics.from_welford(state, min_std, active_threshold)
