"""ROAR map cache (sharding, resume, rank ownership), manifest (atomic, merge), grid sharding and the summary."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from lit_xai.attribution import build_method
from lit_xai.data.base import TensorImageDataset
from lit_xai.roar.grid import BASELINE, build_grid, parse_shard, shard_cells
from lit_xai.roar.manifest import Manifest, merge_manifests, read_manifest
from lit_xai.roar.map_cache import MapCache, MethodSpec, compute_maps, reduce_to_pixels
from lit_xai.roar.summary import summarize, trapezoid_auc
from lit_xai.storage import atomic_write_json, weights_fingerprint


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


def tiny_dataset(n: int = 10) -> TensorImageDataset:
    images = torch.randn(n, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    return TensorImageDataset(images, torch.zeros(n).long())


def test_weights_fingerprint_follows_the_weights() -> None:
    model = tiny_model()
    first = weights_fingerprint(model)
    assert weights_fingerprint(tiny_model()) == first
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1e-6
    assert weights_fingerprint(model) != first


def test_method_key_changes_with_config() -> None:
    keys = {MethodSpec("gradient").key, MethodSpec("gradient", reduction="sum").key,
            MethodSpec("integrated_gradients", {"steps": 8}).key, MethodSpec("integrated_gradients").key,
            MethodSpec("gradcam").key}
    assert len(keys) == 5
    assert MethodSpec("gradient", label="grad").key.startswith("grad-")


def test_method_spec_is_checked_when_configured() -> None:
    """Before the source model trains: unknown names, arguments (also for methods without a constructor) and
    reductions are an AttributionError naming them."""
    from lit_xai.attribution import AttributionError

    with pytest.raises(AttributionError, match="gradient: unknown argument"):
        MethodSpec("gradient", {"x": 1})
    with pytest.raises(AttributionError, match="unknown attribution method 'gradiant'"):
        MethodSpec("gradiant")
    with pytest.raises(AttributionError, match="reduction must be"):
        MethodSpec("gradient", reduction="max")


def test_reduce_to_pixels_sums_channels_upsamples_and_scales() -> None:
    raw = torch.tensor([[[[1.0, -3.0]], [[2.0, 1.0]]]])  # [1, 2, 1, 2]
    torch.testing.assert_close(reduce_to_pixels(raw, (1, 2), "abs_sum"), torch.tensor([[[3.0, 4.0]]]) / 4)
    torch.testing.assert_close(reduce_to_pixels(raw, (1, 2), "sum"), torch.tensor([[[3.0, -2.0]]]) / 3)
    layer = torch.rand(3, 1, 2, 2)
    assert reduce_to_pixels(layer, (8, 8)).shape == (3, 8, 8)
    assert torch.equal(reduce_to_pixels(torch.zeros(1, 1, 2, 2), (2, 2)), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="reduction"):
        reduce_to_pixels(raw, (1, 2), "max")


def test_cache_matches_direct_computation_and_resumes_only_missing_shards(tmp_path) -> None:
    model, dataset = tiny_model(), tiny_dataset(10)
    spec = MethodSpec("gradient")
    cache = MapCache(tmp_path, weights_fingerprint(model), "data", shard_size=4)
    jobs = cache.jobs(spec, "test", len(dataset))
    assert [(j.start, j.stop) for j in jobs] == [(0, 4), (4, 8), (8, 10)]
    assert compute_maps(cache, jobs, model, {"test": dataset}, batch_size=3) == 3
    maps = cache.load(spec, "test", len(dataset))
    direct = reduce_to_pixels(build_method("gradient")(model, dataset.images), (5, 5), "abs_sum")
    assert maps.dtype == torch.float16 and maps.shape == (10, 5, 5)
    torch.testing.assert_close(maps.float(), direct, atol=1e-3, rtol=1e-3)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files
    # an interrupted computation: one shard missing -> only that shard is recomputed
    kept = cache.shard_path(spec, "test", 0)
    stamp = kept.stat().st_mtime_ns
    cache.shard_path(spec, "test", 1).unlink()
    with pytest.raises(FileNotFoundError, match=r"shards \[1\] missing"):
        cache.load(spec, "test", len(dataset))
    assert compute_maps(cache, jobs, model, {"test": dataset}) == 1
    assert kept.stat().st_mtime_ns == stamp
    torch.testing.assert_close(cache.load(spec, "test", len(dataset)), maps)


def test_shard_jobs_are_split_across_ranks_by_job_number(tmp_path) -> None:
    model, dataset = tiny_model(), tiny_dataset(10)
    cache = MapCache(tmp_path, "m", "d", shard_size=2)
    jobs = cache.jobs(MethodSpec("random"), "val", len(dataset))  # 5 shards
    assert compute_maps(cache, jobs, model, {"val": dataset}, rank=1, world_size=2) == 2
    assert [cache.is_done(j) for j in jobs] == [False, True, False, True, False]
    assert compute_maps(cache, jobs, model, {"val": dataset}, rank=0, world_size=2) == 3
    assert all(cache.is_done(j) for j in jobs)


def test_manifest_records_atomically_and_reloads(tmp_path) -> None:
    manifest = Manifest(tmp_path, 1, 3)
    manifest.record("gradient/p10/seed0", {"test_acc": 0.5})
    assert manifest.path.name == "manifest-shard1of3.json"
    assert read_manifest(manifest.path) == {"gradient/p10/seed0": {"test_acc": 0.5}}
    assert "gradient/p10/seed0" in Manifest(tmp_path, 1, 3)
    assert [p.name for p in tmp_path.iterdir()] == [manifest.path.name]
    with pytest.raises(ValueError, match="shard index"):
        Manifest(tmp_path, 3, 3)


def test_manifest_of_another_configuration_is_refused(tmp_path) -> None:
    Manifest(tmp_path, fingerprint="abc").record("a", {"test_acc": 0.5})
    assert "a" in Manifest(tmp_path, fingerprint="abc")
    with pytest.raises(ValueError, match="another configuration"):
        Manifest(tmp_path, fingerprint="def")
    Manifest(tmp_path, 1, 2, fingerprint="def").record("b", {"test_acc": 0.5})
    with pytest.raises(ValueError, match="different configurations"):
        merge_manifests(sorted(tmp_path.glob("manifest-*.json")))


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path) -> None:
    path = tmp_path / "m.json"
    atomic_write_json(path, {"cells": {"a": {"test_acc": 1}}})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"cells": {"b": object()}})
    assert json.loads(path.read_text()) == {"cells": {"a": {"test_acc": 1}}}
    assert os.listdir(tmp_path) == ["m.json"]


def test_merge_unions_shards_and_rejects_conflicts(tmp_path) -> None:
    Manifest(tmp_path, 0, 2).record("a", {"test_acc": 0.1})
    Manifest(tmp_path, 1, 2).record("b", {"test_acc": 0.2})
    paths = sorted(tmp_path.glob("manifest-*.json"))
    assert merge_manifests(paths) == {"a": {"test_acc": 0.1}, "b": {"test_acc": 0.2}}
    Manifest(tmp_path, 0, 1).record("a", {"test_acc": 0.9})
    with pytest.raises(ValueError, match="different results"):
        merge_manifests(sorted(tmp_path.glob("manifest-*.json")))


def test_grid_has_a_baseline_per_seed_and_shards_partition_it() -> None:
    cells = build_grid(["random", "gradient"], [90, 10, 0], [0, 1])
    assert len(cells) == 2 * (1 + 2 * 2)
    assert [c.key for c in cells[:3]] == ["baseline/p0/seed0", "random/p10/seed0", "random/p90/seed0"]
    shards = [shard_cells(cells, i, 3) for i in range(3)]
    assert sorted(c.key for s in shards for c in s) == sorted(c.key for c in cells)
    assert [c.key for c in shards[1]] == [c.key for c in cells[1::3]]
    with pytest.raises(ValueError, match="reserved"):
        build_grid([BASELINE], [10], [0])


def test_parse_shard() -> None:
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "5"}) == (1, 5)
    for bad in ("4/4", "3", "a/b"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID"):
        parse_shard("slurm", {})


def test_summary_curves_and_auc_against_numpy() -> None:
    results = {}
    accs = {0: {0: 0.9, 10: 0.8, 50: 0.5}, 1: {0: 0.8, 10: 0.7, 50: 0.3}}
    for seed, curve in accs.items():
        for p, acc in curve.items():
            method = BASELINE if p == 0 else "gradient"
            results[f"{method}/{p}/{seed}"] = {"method": method, "percentile": p, "seed": seed, "test_acc": acc}
    curves, aucs = summarize(results)
    per_seed = [np.trapezoid([c[0], c[10], c[50]], [0.0, 0.1, 0.5]) for c in accs.values()]
    (auc,) = aucs
    assert auc.method == "gradient" and auc.seeds == 2
    assert auc.mean == pytest.approx(np.mean(per_seed)) and auc.std == pytest.approx(np.std(per_seed, ddof=1))
    point = next(c for c in curves if c.method == "gradient" and c.percentile == 50)
    assert point.mean == pytest.approx(0.4) and point.std == pytest.approx(np.std([0.5, 0.3], ddof=1))
    assert next(c for c in curves if c.method == "gradient" and c.percentile == 0).mean == pytest.approx(0.85)
    assert trapezoid_auc([0.0, 0.9], [1.0, 1.0]) == pytest.approx(0.9)
