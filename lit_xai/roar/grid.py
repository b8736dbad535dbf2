"""The retraining grid: cells (method × percentile × seed, plus the unmodified baseline), their assignment to
grid shards, the modified DataModule and the training of one cell."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import Dataset

from lit_xai.data.base import ClassificationDataModule, MappedDataset, SampleTransform, TensorImageDataset
from lit_xai.models.classifier import ClassifierModule
from lit_xai.roar.removal import PixelRemoval

BASELINE = "baseline"


@dataclass(frozen=True)
class Cell:
    """One retraining run: ``method`` (display label, or ``baseline`` for unmodified data at p=0),
    ``percentile`` of pixels replaced and training ``seed``."""

    method: str
    percentile: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.method}/p{self.percentile:g}/seed{self.seed}"

    @property
    def slug(self) -> str:
        """File-system name of the cell."""
        return self.key.replace("/", "_")


def build_grid(methods: list[str], percentiles: list[float], seeds: list[int]) -> list[Cell]:
    """All cells, seed-major (a partial grid gives complete curves for the first seeds): per seed the baseline,
    then every method at every percentile. Percentile 0 is the baseline and is not repeated per method."""
    if len(set(methods)) != len(methods):
        raise ValueError(f"method labels must be unique, got {methods}; give duplicates a 'label'")
    if BASELINE in methods:
        raise ValueError(f"{BASELINE!r} is reserved for the unmodified p=0 run; label the method differently")
    bad = [p for p in percentiles if not 0 <= p <= 100]
    if bad:
        raise ValueError(f"percentiles must lie in [0, 100], got {bad}")
    removal = sorted({float(p) for p in percentiles if p > 0})
    cells = []
    for seed in seeds:
        cells.append(Cell(BASELINE, 0.0, seed))
        cells.extend(Cell(method, p, seed) for method in methods for p in removal)
    return cells


def parse_shard(shard: str, environ: dict[str, str] | None = None) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)``. ``"slurm"`` reads ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` (an array
    ``--array=0-(n-1)``), so one sbatch line serves every task."""
    environ = dict(os.environ) if environ is None else environ
    if shard == "slurm":
        try:
            shard = f"{environ['SLURM_ARRAY_TASK_ID']}/{environ['SLURM_ARRAY_TASK_COUNT']}"
        except KeyError as error:
            raise ValueError(f"--shard slurm needs {error.args[0]} in the environment (a SLURM array task)") from None
    index, sep, count = shard.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"--shard must look like 'i/n' (e.g. 0/4) or 'slurm', got {shard!r}") from None
    if not sep or not 0 <= i < n:
        raise ValueError(f"--shard {shard!r}: expected 'i/n' with 0 <= i < n")
    return i, n


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of grid shard ``index`` of ``count``: cell ``c`` belongs to shard ``c % count``."""
    return [cell for number, cell in enumerate(cells) if number % count == index]


class RemovedDataModule(ClassificationDataModule):
    """``base`` with a per-split sample transform (pixel removal) applied *before* ``base``'s training augmentation.

    The base keeps its split (its ``seed``); ``seed`` here only drives the shuffling of this run. With
    ``materialize`` (default), a :class:`PixelRemoval` on an in-memory split is applied once to the whole split
    (batched) instead of per sample; other transforms and datasets are wrapped in :class:`MappedDataset`.
    """

    def __init__(
        self,
        base: ClassificationDataModule,
        transforms: dict[str, SampleTransform],
        seed: int = 0,
        materialize: bool = True,
    ) -> None:
        super().__init__(batch_size=base.batch_size, num_workers=base.num_workers, seed=seed, augment=False)
        self.base, self.transforms, self.materialize = base, transforms, materialize
        self._materialized: dict[str, Dataset] = {}
        self.augment = base.augment
        self.mean, self.std = base.mean, base.std
        self.num_classes, self.in_chans = base.num_classes, base.in_chans

    def prepare_data(self) -> None:
        self.base.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.base.setup(stage)

    def dataset(self, split: str) -> Dataset:
        dataset = self.base.dataset(split)
        transform = self.transforms.get(split)
        if transform is None:
            return dataset
        if self.materialize and isinstance(transform, PixelRemoval) and isinstance(dataset, TensorImageDataset):
            if split not in self._materialized:
                self._materialized[split] = transform.materialize(dataset)
            return self._materialized[split]
        return MappedDataset(dataset, transform)


def fit_and_test(
    datamodule: ClassificationDataModule,
    model_kwargs: dict[str, Any],
    trainer_kwargs: dict[str, Any],
    directory: Path,
    seed: int,
    logger: Any = False,
) -> tuple[ClassifierModule, dict[str, Any]]:
    """Train a fresh :class:`ClassifierModule` (seeded), keep the best-validation checkpoint (``val/acc``), and
    test that checkpoint. Stale checkpoints of an interrupted earlier attempt are removed first."""
    shutil.rmtree(directory, ignore_errors=True)
    L.seed_everything(seed, workers=True, verbose=False)
    module = ClassifierModule(**model_kwargs)
    checkpoint = ModelCheckpoint(dirpath=directory, filename="best", monitor="val/acc", mode="max", save_top_k=1)
    trainer = L.Trainer(
        **{**trainer_kwargs, "callbacks": [checkpoint], "logger": logger, "default_root_dir": str(directory)}
    )
    started = time.time()
    trainer.fit(module, datamodule=datamodule)
    if not checkpoint.best_model_path:
        raise RuntimeError("no best checkpoint was saved: the run must validate (check limit_val_batches)")
    tested = trainer.test(module, datamodule=datamodule, ckpt_path="best", verbose=False)
    result = {
        "test_acc": float(tested[0]["test/acc"]),
        "best_val_acc": float(checkpoint.best_model_score),
        "epochs": int(trainer.current_epoch),
        "train_seconds": round(time.time() - started, 2),
        "checkpoint": checkpoint.best_model_path,
    }
    return module, result


def finish_logger(logger: Any) -> None:
    """Close a W&B run so the next cell starts its own (no-op for ``False``/other loggers)."""
    experiment = getattr(logger, "_experiment", None)
    if experiment is not None and hasattr(experiment, "finish"):
        experiment.finish()
