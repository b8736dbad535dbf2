"""Crash-safe bookkeeping of finished ROAR cells: one JSON manifest per grid shard.

Every write goes to a temporary file in the same folder and is renamed over the target
(``os.replace`` is atomic on POSIX), so a manifest on disk is always a complete, parseable file:
a run killed at any moment loses at most the cell it was training. Each grid shard writes only its
own file (``manifest-shard<i>of<n>.json``), so concurrent shards (SLURM array tasks, sweep agents)
never write the same file; :func:`merge_manifests` reads them all back.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lit_xai.storage import atomic_write_json

MANIFEST_GLOB = "manifest-shard*.json"


class Manifest:
    """The finished cells of one grid shard: ``{cell_key: result_dict}``, persisted after every record.

    Args:
        directory: the grid's output folder.
        shard_index, shard_count: which shard of the grid this process runs (``cell c`` belongs to shard ``c % n``).
        fingerprint: identifies the configuration the results belong to (model, training, removal, data, source
            model); reopening a manifest written under another fingerprint is refused, so a resumed grid never
            mixes results of different settings.
    """

    def __init__(
        self, directory: str | Path, shard_index: int = 0, shard_count: int = 1, fingerprint: str = ""
    ) -> None:
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard index {shard_index} must lie in [0, {shard_count})")
        self.path = Path(directory) / f"manifest-shard{shard_index}of{shard_count}.json"
        self.fingerprint = fingerprint
        self.cells: dict[str, dict[str, Any]] = {}
        if self.path.exists() and not _readable(self.path):
            corrupt = self.path.with_name(self.path.name + ".corrupt")
            os.replace(self.path, corrupt)
            warnings.warn(
                f"manifest {self.path} is not a complete manifest (truncated or altered); moved it to {corrupt.name} "
                "and starting this shard's bookkeeping afresh: its cells are retrained",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.path.exists():
            stored = read_fingerprint(self.path)
            if stored != fingerprint:
                raise ValueError(
                    f"{self.path} holds results of another configuration (fingerprint {stored!r}, now "
                    f"{fingerprint!r}): use a new output_dir, or delete the manifest to retrain its cells"
                )
            self.cells = read_manifest(self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def __len__(self) -> int:
        return len(self.cells)

    def record(self, key: str, result: dict[str, Any]) -> None:
        """Add a finished cell and persist the whole manifest atomically."""
        self.cells[key] = result
        atomic_write_json(self.path, {"fingerprint": self.fingerprint, "cells": self.cells})


def _readable(path: Path) -> bool:
    try:
        read_manifest(path)
    except ValueError:
        return False
    return True


def read_manifest(path: str | Path) -> dict[str, dict[str, Any]]:
    """The ``{cell_key: result}`` mapping of one manifest file."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"manifest {path} is not valid JSON ({error}); it was not written by this pipeline") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("cells"), dict):
        raise ValueError(f"manifest {path} has no 'cells' mapping")
    return payload["cells"]


def read_fingerprint(path: str | Path) -> str:
    """The configuration fingerprint a manifest was written under."""
    read_manifest(path)
    return str(json.loads(Path(path).read_text()).get("fingerprint", ""))


def merge_manifests(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """Union of several shards' manifests. All must share one configuration fingerprint, and a cell recorded by
    two shards (e.g. after re-sharding the grid) must carry the same result in both; otherwise the merge refuses
    rather than pick one silently."""
    merged: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    paths = sorted(Path(p) for p in paths)
    fingerprints = {read_fingerprint(path) for path in paths}
    if len(fingerprints) > 1:
        raise ValueError(f"the manifests {[p.name for p in paths]} belong to different configurations {fingerprints}")
    for path in paths:
        for key, result in read_manifest(path).items():
            if key in merged and merged[key].get("test_acc") != result.get("test_acc"):
                raise ValueError(
                    f"cell {key!r} has different results in {origin[key]} and {path}; delete the stale manifest"
                )
            merged.setdefault(key, result)
            origin.setdefault(key, path)
    return merged


def find_manifests(directory: str | Path) -> list[Path]:
    """All shard manifests in a grid's output folder."""
    return sorted(Path(directory).glob(MANIFEST_GLOB))
