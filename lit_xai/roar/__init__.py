"""ROAR (remove-and-retrain) and KAR: map cache, pixel removal, retraining grid, resume/shards, summary.

Entry point: ``python -m lit_xai roar --config configs/roar_digits.yaml`` (:mod:`lit_xai.roar.command`).
"""

from lit_xai.roar.fills import BlurFill, DatasetMeanFill, ImageMeanFill, NoiseFill, build_fill
from lit_xai.roar.grid import BASELINE, Cell, RemovedDataModule, build_grid, parse_shard, shard_cells
from lit_xai.roar.manifest import Manifest, merge_manifests
from lit_xai.roar.map_cache import MapCache, MapComputation, MethodSpec, compute_maps
from lit_xai.roar.pipeline import RemovalOptions, RoarPipeline
from lit_xai.roar.removal import PixelRemoval, rank_order, removed_count, replace_pixels, selected_pixels
from lit_xai.roar.summary import summarize, trapezoid_auc

__all__ = [
    "BASELINE", "BlurFill", "Cell", "DatasetMeanFill", "ImageMeanFill", "Manifest", "MapCache", "MapComputation",
    "MethodSpec", "NoiseFill", "PixelRemoval", "RemovalOptions", "RemovedDataModule", "RoarPipeline",
    "build_fill", "build_grid", "compute_maps", "merge_manifests",
    "parse_shard", "rank_order", "removed_count", "replace_pixels", "selected_pixels", "shard_cells", "summarize",
    "trapezoid_auc",
]
