"""Every cache detects a truncated or bit-flipped file, reports it, recomputes it, and ends with the clean result."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lit_xai.attribution.information.statistics import estimate_feature_statistics
from lit_xai.axioms.store import SceneStore
from lit_xai.data.base import TensorImageDataset
from lit_xai.roar.manifest import Manifest
from lit_xai.roar.map_cache import MapCache, MethodSpec, compute_maps
from lit_xai.storage import CorruptCacheFile, atomic_torch_save, is_intact, load_checked, weights_fingerprint


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 40] ^= 0x01  # inside the payload: torch.load alone would still succeed on many such flips
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_a_byte])
def test_checked_file_detects_damage(tmp_path: Path, damage) -> None:
    path = tmp_path / "x.pt"
    value = {"maps": torch.arange(1000, dtype=torch.float32)}
    atomic_torch_save(value, path)
    assert torch.equal(load_checked(path)["maps"], value["maps"])
    damage(path)
    with pytest.raises(CorruptCacheFile, match="x.pt"):
        load_checked(path)
    with pytest.warns(RuntimeWarning, match="corrupt cache file .*x.pt"):
        assert not is_intact(path)
    assert not path.exists()  # discarded, so its cache recomputes it


def test_unchecked_torch_file_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"a": torch.ones(2)}, path)
    with pytest.raises(CorruptCacheFile, match="no checksum header"):
        load_checked(path)


def test_cache_files_are_group_readable_under_the_usual_umask(tmp_path: Path) -> None:
    code = (
        "import os, sys, torch; os.umask(0o022); from lit_xai.storage import atomic_torch_save;"
        "atomic_torch_save(torch.ones(1), sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt")], check=True)
    assert stat.S_IMODE(os.stat(tmp_path / "m.pt").st_mode) == 0o644  # mkstemp alone gives 0o600


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()


def test_roar_map_cache_recomputes_damaged_shards(tmp_path: Path) -> None:
    model = tiny_model()
    dataset = TensorImageDataset(torch.randn(10, 2, 5, 5, generator=torch.Generator().manual_seed(1)),
                                 torch.zeros(10).long())
    spec = MethodSpec("gradient")
    cache = MapCache(tmp_path, weights_fingerprint(model), "data", shard_size=4)
    jobs = cache.jobs(spec, "test", len(dataset))
    assert compute_maps(cache, jobs, model, {"test": dataset}) == 3
    clean = cache.load(spec, "test", len(dataset))
    truncate(cache.shard_path(spec, "test", 0))
    flip_a_byte(cache.shard_path(spec, "test", 2))
    with pytest.warns(RuntimeWarning, match="corrupt cache file"), pytest.raises(FileNotFoundError, match=r"\[0, 2\]"):
        cache.load(spec, "test", len(dataset))  # reported, discarded, and named as missing
    assert compute_maps(cache, jobs, model, {"test": dataset}) == 2  # only the two damaged shards
    assert torch.equal(cache.load(spec, "test", len(dataset)), clean)


def test_roar_manifest_survives_a_truncated_file(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path, fingerprint="abc")
    manifest.record("gradient/p10/s0", {"test_acc": 0.5})
    truncate(manifest.path)
    with pytest.warns(RuntimeWarning, match="not a complete manifest"):
        reopened = Manifest(tmp_path, fingerprint="abc")
    assert len(reopened) == 0  # its cells are retrained
    assert (tmp_path / (manifest.path.name + ".corrupt")).is_file()


def test_iba_statistics_cache_recomputes_a_damaged_file(tmp_path: Path) -> None:
    model = tiny_model()
    loader = [{"image": torch.randn(8, 2, 5, 5, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    clean = estimate_feature_statistics(model, "0", loader, max_samples=16, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.pt")
    flip_a_byte(path)
    with pytest.warns(RuntimeWarning, match="corrupt cache file"):
        again = estimate_feature_statistics(model, "0", loader, max_samples=16, cache_dir=tmp_path)
    assert torch.equal(again.mean, clean.mean) and torch.equal(again.std, clean.std)
    assert is_intact(path)  # rewritten


def test_scene_store_regenerates_a_damaged_chunk(tmp_path: Path) -> None:
    from test_axioms import PatchNet, tiny_config  # the axiom tests' tiny host model and generation config

    model = PatchNet().eval()
    cfg = tiny_config(iterations=40, drive_threshold=0.0, independence_threshold=1.0)
    store = SceneStore(tmp_path, "class_sensitivity_single", model, 4, cfg, seed=0, chunk_size=2)
    clean = store.ensure(3)
    truncate(store.directory / "chunk_00001.pt")
    calls: list[int] = []
    again = SceneStore(tmp_path, "class_sensitivity_single", model, 4, cfg, seed=0, chunk_size=2)
    with pytest.warns(RuntimeWarning, match="corrupt cache file"):
        scenes = again.ensure(3, on_chunk=lambda i, r: calls.append(i))
    assert calls == [1]
    torch.testing.assert_close(scenes.patches, clean.patches)
    assert json.loads(again.manifest_path.read_text())["chunks"].keys() == {"0", "1"}
