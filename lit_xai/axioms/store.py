"""On-disk scene store: generated scenes are expensive, so they are saved in chunks and reused.

Layout: ``<root>/<scenario>-<key>/`` with ``manifest.json`` and ``chunk_<index>.pt``. The key hashes everything
that determines the scenes (model fingerprint = SHA-256 of the ``state_dict``, generation config, seed, class
count, chunk size), so a changed model or setting never reuses stale scenes. Chunk ``c`` holds the verified
scenes among scene ids ``[c·chunk_size, (c+1)·chunk_size)``; a run that is interrupted resumes at the first
missing chunk. Every file is written to a temporary name and renamed (atomic on POSIX); chunks carry a SHA-256 of
their content, so a truncated or altered chunk is reported, dropped from the manifest and generated again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from lit_xai.axioms.generation import GenerationConfig, GenerationResult, SceneBatch, SceneGenerator
from lit_xai.axioms.scenarios import get_scenario
from lit_xai.storage import atomic_torch_save, atomic_write_json, is_intact, load_checked, weights_fingerprint


class SceneStore:
    """Scenes of one (scenario, model, config, seed) on disk; :meth:`ensure` generates what is missing."""

    def __init__(
        self,
        root: str | Path,
        scenario: str,
        model: nn.Module,
        num_classes: int,
        config: GenerationConfig,
        seed: int = 0,
        chunk_size: int = 16,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.scenario = scenario
        self.model = model
        self.num_classes = num_classes
        self.config = config
        self.seed = seed
        self.chunk_size = chunk_size
        self.fingerprint = weights_fingerprint(model)
        self.identity: dict[str, Any] = {
            "scenario": scenario,
            "definition": dataclasses.asdict(get_scenario(scenario)),
            "model_fingerprint": self.fingerprint,
            "num_classes": num_classes,
            "seed": seed,
            "chunk_size": chunk_size,
            "config": dataclasses.asdict(config),
        }
        key = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:12]
        self.directory = Path(root) / f"{scenario}-{key}"

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def _chunk_path(self, index: int) -> Path:
        return self.directory / f"chunk_{index:05d}.pt"

    def manifest(self) -> dict[str, Any]:
        """The stored manifest without the chunks whose file is missing or corrupt (those are generated again)."""
        manifest: dict[str, Any] = {**self.identity, "chunks": {}}
        if self.manifest_path.is_file():
            try:
                manifest = json.loads(self.manifest_path.read_text())
            except ValueError as error:
                warnings.warn(
                    f"scene manifest {self.manifest_path} is unreadable ({error}); its chunks are generated again",
                    RuntimeWarning,
                    stacklevel=2,
                )
        manifest["chunks"] = {
            index: entry for index, entry in manifest["chunks"].items() if is_intact(self._chunk_path(int(index)))
        }
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)

    def load(self) -> SceneBatch | None:
        """All stored verified scenes (chunks in order), or ``None`` if there are none."""
        manifest = self.manifest()
        batches = []
        for index in sorted(manifest["chunks"], key=int):
            data = load_checked(self._chunk_path(int(index)))
            batches.append(SceneBatch.from_dict({**data, "scenario": self.scenario}))
        batches = [b for b in batches if len(b)]
        return SceneBatch.cat(batches, self.scenario) if batches else None

    def ensure(
        self,
        num_scenes: int,
        max_chunks: int = 100,
        progress: bool = False,
        on_chunk: Callable[[int, GenerationResult], None] | None = None,
    ) -> SceneBatch:
        """Generate chunks until at least ``num_scenes`` verified scenes exist; return the first ``num_scenes``.

        Raises ``RuntimeError`` if ``max_chunks`` chunks do not yield enough verified scenes.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        generator = SceneGenerator(self.model, self.num_classes, self.config, self.seed)
        verified = sum(c["verified"] for c in manifest["chunks"].values())
        index = 0
        while verified < num_scenes:
            if index >= max_chunks:
                raise RuntimeError(
                    f"{self.scenario}: only {verified} verified scenes after {max_chunks} chunks of {self.chunk_size}; "
                    "raise generation.iterations, relax the thresholds or allow more chunks"
                )
            if str(index) not in manifest["chunks"]:
                ids = list(range(index * self.chunk_size, (index + 1) * self.chunk_size))
                result = generator.generate(self.scenario, ids, progress=progress)
                data = {k: v for k, v in result.scenes.to_dict().items() if k != "scenario"}
                atomic_torch_save(data, self._chunk_path(index))
                manifest["chunks"][str(index)] = {
                    "attempted": result.attempted,
                    "converged": result.converged,
                    "verified": len(result.scenes),
                    "seconds": result.seconds,
                }
                self._write_manifest(manifest)
                verified += len(result.scenes)
                if on_chunk is not None:
                    on_chunk(index, result)
            index += 1
        scenes = self.load()
        assert scenes is not None
        return scenes.select(slice(0, num_scenes))

    def stats(self) -> dict[str, float]:
        """Totals over the stored chunks: attempted, converged, verified scenes and generation seconds."""
        chunks = self.manifest()["chunks"].values()
        return {k: float(sum(c[k] for c in chunks)) for k in ("attempted", "converged", "verified", "seconds")}
